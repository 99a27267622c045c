#include "engine/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/maskers/common.h"

namespace masktune {
namespace {

constexpr int64_t kTile = 64;  // keys scored together before the softmax update

// The online-softmax state of one row: running max m, denominator d, and the
// unnormalised output o (head_dim floats, stored by the caller).
struct SoftmaxState {
  float m = -std::numeric_limits<float>::infinity();
  float d = 0.0f;

  // Folds a tile of scores s[0..t) with weights 1/p (p == nullptr: all 1) and
  // value rows v[0..t) into (m, d, o).
  template <typename ValueRow>
  void Update(const float* s, const float* p, int64_t t, ValueRow&& v, float* o, int64_t D) {
    float tile_max = -std::numeric_limits<float>::infinity();
    for (int64_t x = 0; x < t; ++x) tile_max = std::max(tile_max, s[x]);
    if (tile_max == -std::numeric_limits<float>::infinity()) return;  // all masked
    const float m_new = std::max(m, tile_max);
    if (m_new > m) {
      const float alpha = std::exp(m - m_new);  // exp(-inf) = 0 on the first tile
      d *= alpha;
      for (int64_t e = 0; e < D; ++e) o[e] *= alpha;
      m = m_new;
    }
    for (int64_t x = 0; x < t; ++x) {
      float w = std::exp(s[x] - m);
      if (p) w /= p[x];
      d += w;
      const float* vr = v(x);
      for (int64_t e = 0; e < D; ++e) o[e] += w * vr[e];
    }
  }

  // Merges another partial state (over disjoint keys) into this one.
  void Merge(const SoftmaxState& other, const float* o_other, float* o, int64_t D) {
    if (other.m == -std::numeric_limits<float>::infinity()) return;
    const float m_new = std::max(m, other.m);
    const float a = std::exp(m - m_new), b = std::exp(other.m - m_new);
    d = d * a + other.d * b;
    for (int64_t e = 0; e < D; ++e) o[e] = o[e] * a + o_other[e] * b;
    m = m_new;
  }
};

void Normalize(const SoftmaxState& st, const float* o, float* out, int64_t D) {
  const float inv = st.d > 0.0f ? 1.0f / st.d : 0.0f;
  for (int64_t e = 0; e < D; ++e) out[e] = o[e] * inv;
}

}  // namespace

Status CheckAttentionInputs(const AttentionInputs& in) {
  if (!in.queries || !in.keys || !in.values) return Status::Error("q, k and v are required");
  MT_RETURN_IF_ERROR(CheckRank(*in.queries, "q", 4));
  MT_RETURN_IF_ERROR(CheckRank(*in.keys, "k", 4));
  MT_RETURN_IF_ERROR(CheckRank(*in.values, "v", 4));
  const Shape& q = in.queries->shape();
  const Shape& k = in.keys->shape();
  const Shape& v = in.values->shape();
  const std::string shapes = ": q " + ShapeToString(q) + ", k " + ShapeToString(k) + ", v " +
                             ShapeToString(v);
  if (k != v) return Status::Error("k and v must have the same shape" + shapes);
  if (q[0] != k[0]) return Status::Error("q and k disagree on batch" + shapes);
  if (q[3] != k[3]) return Status::Error("q and k disagree on head_dim" + shapes);
  if (k[1] == 0 || q[1] % k[1] != 0)
    return Status::Error("heads of q must be a multiple of kv_heads of k" + shapes);
  if (q[2] > k[2]) return Status::Error("more queries than keys" + shapes);
  for (int64_t x : q)
    if (x == 0) return Status::Error("q has an empty dimension" + shapes);
  if (k[2] == 0) return Status::Error("k has no keys" + shapes);
  if (in.attention_mask) {
    const Shape want{q[0], 1, q[2], k[2]};
    if (in.attention_mask->shape() != want)
      return Status::Error("attention_mask: expected shape " + ShapeToString(want) + ", found " +
                           ShapeToString(in.attention_mask->shape()));
    for (float x : in.attention_mask->vec())
      if (std::isnan(x) || x == std::numeric_limits<float>::infinity())
        return Status::Error("attention_mask holds NaN or +inf; expected 0 or -inf entries");
  }
  if (!std::isfinite(in.scaling)) return Status::Error("scaling is not finite");
  return Status::Ok();
}

Tensor DenseAttention(const AttentionInputs& in) {
  const int64_t B = in.batch(), H = in.heads(), Hkv = in.kv_heads(), Q = in.num_queries();
  const int64_t N = in.num_keys(), D = in.head_dim(), g = in.group();
  // Work items: (batch, kv head, query block, key chunk). The query heads of a
  // kv head are scored together, so each key and value row is read once per
  // item; key chunks give both cores work when there are few kv heads.
  const int64_t qb = std::max<int64_t>(1, std::min<int64_t>(Q, 16 / g));
  const int64_t qblocks = (Q + qb - 1) / qb;
  const int64_t base = B * Hkv * qblocks;
  const int64_t threads = omp_get_max_threads();
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>((N + 1023) / 1024, (4 * threads + base - 1) / base));
  const int64_t chunk_len = (N + chunks - 1) / chunks;
  const int64_t rows_per_item = g * qb;
  // Partial results per (item, chunk, row): the state and D floats of o.
  std::vector<SoftmaxState> states(static_cast<size_t>(base * chunks * rows_per_item));
  std::vector<float> partial(states.size() * static_cast<size_t>(D), 0.0f);

#pragma omp parallel
  {
    std::vector<float> s(static_cast<size_t>(rows_per_item * kTile));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < base * chunks; ++it) {
      const int64_t item = it / chunks, c = it % chunks;
      const int64_t b = item / (Hkv * qblocks), kvh = (item / qblocks) % Hkv;
      const int64_t i0 = (item % qblocks) * qb, i1 = std::min(Q, i0 + qb), nq = i1 - i0;
      const int64_t j0 = c * chunk_len, j1 = std::min(N, j0 + chunk_len);
      for (int64_t jt = j0; jt < j1; jt += kTile) {
        const int64_t t = std::min(kTile, j1 - jt);
        for (int64_t hh = 0; hh < g; ++hh) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t r = hh * nq + (i - i0);
            const float* q = in.query(b, kvh * g + hh, i);
            const float* m = in.mask_row(b, i);
            for (int64_t x = 0; x < t; ++x)
              s[r * kTile + x] = Dot(q, in.key(b, kvh, jt + x), D) * in.scaling + (m ? m[jt + x] : 0.0f);
          }
        }
        for (int64_t r = 0; r < g * nq; ++r) {
          const size_t slot = static_cast<size_t>(it * rows_per_item + r);
          states[slot].Update(s.data() + r * kTile, nullptr, t,
                              [&](int64_t x) { return in.value(b, kvh, jt + x); },
                              partial.data() + slot * D, D);
        }
      }
    }
  }

  Tensor out({B, H, Q, D});
#pragma omp parallel for
  for (int64_t item = 0; item < base; ++item) {
    const int64_t b = item / (Hkv * qblocks), kvh = (item / qblocks) % Hkv;
    const int64_t i0 = (item % qblocks) * qb, i1 = std::min(Q, i0 + qb), nq = i1 - i0;
    for (int64_t r = 0; r < g * nq; ++r) {
      const size_t first = static_cast<size_t>(item * chunks * rows_per_item + r);
      SoftmaxState st = states[first];
      float* o = partial.data() + first * D;
      for (int64_t c = 1; c < chunks; ++c) {
        const size_t slot = first + static_cast<size_t>(c * rows_per_item);
        st.Merge(states[slot], partial.data() + slot * D, o, D);
      }
      const int64_t h = kvh * g + r / nq, i = i0 + r % nq;
      Normalize(st, o, out.data() + ((b * H + h) * Q + i) * D, D);
    }
  }
  return out;
}

Tensor MaskedAttention(const AttentionInputs& in, const Mask& mask) {
  if (mask.is_empty() || mask.is_full()) return DenseAttention(in);
  const MaskShape shape = in.mask_shape();
  const int64_t H = in.heads(), Q = shape.queries, D = in.head_dim(), g = in.group();
  Tensor out({shape.batch, H, Q, D});
#pragma omp parallel
  {
    std::vector<int32_t> idx;
    std::vector<float> prob, s(kTile), o(static_cast<size_t>(D));
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < shape.rows(); ++row) {
      const int64_t b = shape.batch_of(row), h = (row / Q) % H, i = shape.query_of(row);
      idx.clear();
      prob.clear();
      mask.ForEachKept(row, [&](int64_t j, float p) {
        idx.push_back(static_cast<int32_t>(j));
        prob.push_back(p);
      });
      const float* q = in.query(b, h, i);
      const float* m = in.mask_row(b, i);
      SoftmaxState st;
      std::fill(o.begin(), o.end(), 0.0f);
      const int64_t kept = static_cast<int64_t>(idx.size());
      for (int64_t x0 = 0; x0 < kept; x0 += kTile) {
        const int64_t t = std::min(kTile, kept - x0);
        for (int64_t x = 0; x < t; ++x) {
          const int64_t j = idx[x0 + x];
          s[x] = Dot(q, in.key(b, h / g, j), D) * in.scaling + (m ? m[j] : 0.0f);
        }
        st.Update(s.data(), prob.data() + x0, t,
                  [&](int64_t x) { return in.value(b, h / g, idx[x0 + x]); }, o.data(), D);
      }
      Normalize(st, o.data(), out.data() + row * D, D);
    }
  }
  return out;
}

double RelativeL2Error(const Tensor& out, const Tensor& ref) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < ref.size(); ++i) {
    const double diff = static_cast<double>(out.data()[i]) - ref.data()[i];
    num += diff * diff;
    den += static_cast<double>(ref.data()[i]) * ref.data()[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

}  // namespace masktune
