#include "engine/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "engine/cpu_kernels.h"

namespace masktune {
namespace {

constexpr int64_t kTile = 64;  // keys scored together before the softmax update
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The online-softmax state of one row: running max m and denominator d; the
// unnormalised output o (head_dim floats) is stored by the caller.
struct SoftmaxState {
  float m = kNegInf;
  float d = 0.0f;

  // Turns a tile of scores s[0..t) into weights exp(s - m) / p in place
  // (p == nullptr: all 1), rescaling o and d to the tile's new maximum. The
  // caller then adds sum_x s[x] v_x to o.
  void Weigh(float* s, const float* p, int64_t t, float* o, int64_t D) {
    float tile_max = kNegInf;
    for (int64_t x = 0; x < t; ++x) tile_max = std::max(tile_max, s[x]);
    if (tile_max == kNegInf) {  // every key of the tile is masked out
      std::fill_n(s, t, 0.0f);
      return;
    }
    if (tile_max > m) {
      const float alpha = std::exp(m - tile_max);  // exp(-inf) = 0 on the first tile
      d *= alpha;
      for (int64_t e = 0; e < D; ++e) o[e] *= alpha;
      m = tile_max;
    }
    for (int64_t x = 0; x < t; ++x) s[x] -= m;
    kernels::ExpInPlace(s, t);
    if (p)  // selects, not branches, so the loop vectorises
      for (int64_t x = 0; x < t; ++x) {
        const bool kept = p[x] > 0.0f;
        const float w = s[x] / (kept ? p[x] : 1.0f);
        s[x] = kept ? w : 0.0f;
      }
    for (int64_t x = 0; x < t; ++x) d += s[x];
  }

  // Merges another partial state (over disjoint keys) into this one.
  void Merge(const SoftmaxState& other, const float* o_other, float* o, int64_t D) {
    if (other.m == kNegInf) return;
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
  const std::string shapes =
      ": q " + ShapeToString(q) + ", k " + ShapeToString(k) + ", v " + ShapeToString(v);
  if (k != v) return Status::Error("k and v must have the same shape" + shapes);
  if (q[0] != k[0]) return Status::Error("q and k disagree on batch" + shapes);
  if (q[3] != k[3]) return Status::Error("q and k disagree on head_dim" + shapes);
  if (k[1] == 0 || q[1] % k[1] != 0)
    return Status::Error("heads of q must be a multiple of kv_heads of k" + shapes);
  if (in.used_keys > k[2])
    return Status::Error("used_keys " + std::to_string(in.used_keys) + " exceeds the key buffer" +
                         shapes);
  const int64_t n = in.num_keys();
  if (q[2] > n) return Status::Error("more queries than keys" + shapes);
  for (int64_t x : q)
    if (x == 0) return Status::Error("q has an empty dimension" + shapes);
  if (n == 0) return Status::Error("k has no keys" + shapes);
  if (in.attention_mask) {
    const Shape want{q[0], 1, q[2], n};
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

namespace {

// Streams every key and value row once per (kv head, query block): the query
// heads of a kv head are scored together. With a mask, keys it drops score
// -inf and kept keys weigh 1/p; a sparse mask visits only the keys some row
// of the block keeps (their union), in key order, so a key is read once for
// the group however many of its heads keep it.
Tensor StreamingAttention(const AttentionInputs& in, const Mask* mask) {
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
    std::vector<const float*> qs(static_cast<size_t>(rows_per_item)), ks(kTile), vs(kTile);
    std::vector<const float*> kn(kTile), vn(kTile);
    std::vector<float*> os(static_cast<size_t>(rows_per_item));
    std::vector<float> p;        // kept probabilities of the item's rows over the visited keys
    std::vector<int32_t> visit;  // sparse masks: the keys the item visits
    std::vector<uint8_t> seen;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < base * chunks; ++it) {
      const int64_t item = it / chunks, c = it % chunks;
      const int64_t b = item / (Hkv * qblocks), kvh = (item / qblocks) % Hkv;
      const int64_t i0 = (item % qblocks) * qb, i1 = std::min(Q, i0 + qb), nq = i1 - i0;
      const int64_t j0 = c * chunk_len, j1 = std::min(N, j0 + chunk_len);
      const int64_t nrows = g * nq;
      for (int64_t r = 0; r < nrows; ++r) {
        qs[r] = in.query(b, kvh * g + r / nq, i0 + r % nq);
        os[r] = partial.data() + static_cast<size_t>(it * rows_per_item + r) * D;
      }
      // The keys this item visits: all of [j0, j1), or with a sparse mask only
      // the union of its rows' kept keys there (each read once for the group).
      const bool sparse = mask && mask->form() == Mask::Form::kSparse;
      int64_t count = j1 - j0;
      if (sparse) {  // a byte per key of the chunk marks the union (no sort)
        seen.assign(static_cast<size_t>(j1 - j0), 0);
        for (int64_t r = 0; r < nrows; ++r) {
          const Mask::RowEntries e = mask->SparseRow((b * H + kvh * g + r / nq) * Q + i0 + r % nq);
          const int32_t* first = std::lower_bound(e.cols, e.cols + e.size, j0);
          for (const int32_t* c = first; c != e.cols + e.size && *c < j1; ++c) seen[*c - j0] = 1;
        }
        visit.clear();
        for (int64_t j = j0; j < j1; ++j)
          if (seen[j - j0]) visit.push_back(static_cast<int32_t>(j));
        count = static_cast<int64_t>(visit.size());
      }
      auto key_at = [&](int64_t x) { return sparse ? visit[x] : j0 + x; };
      if (mask) {
        p.resize(static_cast<size_t>(nrows * count));
        for (int64_t r = 0; r < nrows; ++r) {
          const int64_t row = (b * H + kvh * g + r / nq) * Q + i0 + r % nq;
          float* pr = p.data() + r * count;
          if (!sparse) {
            mask->ExpandRow(row, pr, j0, j1);
            continue;
          }
          // The row's kept keys are a sorted subset of the sorted union.
          const Mask::RowEntries e = mask->SparseRow(row);
          int64_t at = std::lower_bound(e.cols, e.cols + e.size, j0) - e.cols;
          std::fill_n(pr, count, 0.0f);
          for (int64_t x = 0; x < count && at < e.size && e.cols[at] < j1; ++x)
            if (e.cols[at] == visit[x]) pr[x] = e.values[at++];
        }
      }
      for (int64_t x0 = 0; x0 < count; x0 += kTile) {
        const int64_t t = std::min(kTile, count - x0);
        // This tile's rows, and the next tile's to prefetch while this one
        // computes (the hardware prefetcher alone does not run far enough ahead).
        for (int64_t x = 0; x < t; ++x) {
          const int64_t j = key_at(x0 + x);
          ks[x] = in.key(b, kvh, j);
          vs[x] = in.value(b, kvh, j);
          const bool next = x0 + kTile + x < count;
          kn[x] = next ? in.key(b, kvh, key_at(x0 + kTile + x)) : nullptr;
          vn[x] = next ? in.value(b, kvh, key_at(x0 + kTile + x)) : nullptr;
        }
        kernels::ScoreTile(qs.data(), nrows, ks.data(), t, D, in.scaling, s.data(), kTile,
                           kn.data());
        for (int64_t r = 0; r < nrows; ++r) {
          float* sr = s.data() + r * kTile;
          if (const float* m = in.mask_row(b, i0 + r % nq))
            for (int64_t x = 0; x < t; ++x) sr[x] += m[key_at(x0 + x)];
          const float* pr = mask ? p.data() + r * count + x0 : nullptr;
          if (pr)
            for (int64_t x = 0; x < t; ++x) sr[x] = pr[x] <= 0.0f ? kNegInf : sr[x];
          states[static_cast<size_t>(it * rows_per_item + r)].Weigh(sr, pr, t, os[r], D);
        }
        kernels::AccumulateTile(os.data(), nrows, s.data(), kTile, vs.data(), t, D, vn.data());
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

// Gathers each row's kept keys: reads only what the mask keeps, but per query
// head. Best for sparse masks.
Tensor GatherAttention(const AttentionInputs& in, const Mask& mask) {
  const MaskShape shape = in.mask_shape();
  const int64_t H = in.heads(), Q = shape.queries, D = in.head_dim(), g = in.group();
  Tensor out({shape.batch, H, Q, D});
#pragma omp parallel
  {
    std::vector<int32_t> idx;
    std::vector<float> prob, s(kTile), o(static_cast<size_t>(D));
    std::vector<const float*> ks(kTile), vs(kTile), kn(kTile), vn(kTile);
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
      float* o_ptr = o.data();
      SoftmaxState st;
      std::fill(o.begin(), o.end(), 0.0f);
      const int64_t kept = static_cast<int64_t>(idx.size());
      for (int64_t x0 = 0; x0 < kept; x0 += kTile) {
        const int64_t t = std::min(kTile, kept - x0);
        // Gathered rows: the next tile's are prefetched while this one computes.
        for (int64_t x = 0; x < t; ++x) {
          ks[x] = in.key(b, h / g, idx[x0 + x]);
          vs[x] = in.value(b, h / g, idx[x0 + x]);
          const bool next = x0 + kTile + x < kept;
          kn[x] = next ? in.key(b, h / g, idx[x0 + kTile + x]) : nullptr;
          vn[x] = next ? in.value(b, h / g, idx[x0 + kTile + x]) : nullptr;
        }
        kernels::ScoreTile(&q, 1, ks.data(), t, D, in.scaling, s.data(), kTile, kn.data());
        if (m)
          for (int64_t x = 0; x < t; ++x) s[x] += m[idx[x0 + x]];
        st.Weigh(s.data(), prob.data() + x0, t, o_ptr, D);
        kernels::AccumulateTile(&o_ptr, 1, s.data(), kTile, vs.data(), t, D, vn.data());
      }
      Normalize(st, o.data(), out.data() + row * D, D);
    }
  }
  return out;
}

}  // namespace

Tensor DenseAttention(const AttentionInputs& in) { return StreamingAttention(in, nullptr); }

Tensor MaskedAttention(const AttentionInputs& in, const Mask& mask, AttentionPath path) {
  if (mask.is_empty() || mask.is_full()) return DenseAttention(in);
  if (path == AttentionPath::kAuto) {
    // A sparse mask streams only the union of each group's kept keys: never
    // more bytes than gathering (density * group of the keys, per query
    // head) nor than streaming all keys. A dense-form mask: gathering reads
    // density * group times the bytes streaming reads, at a random-access
    // premium (about 2x here): stream once that is the larger.
    if (mask.form() == Mask::Form::kSparse)
      path = AttentionPath::kStream;
    else
      path = mask.Density() * static_cast<double>(in.group()) * 2.0 >= 1.0 ? AttentionPath::kStream
                                                                           : AttentionPath::kGather;
  }
  return path == AttentionPath::kStream ? StreamingAttention(in, &mask) : GatherAttention(in, mask);
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

Status CheckScoreRange(const AttentionInputs& in) {
  const double limit = 0.99 * std::numeric_limits<float>::max();
  const int64_t B = in.batch(), H = in.heads(), Q = in.num_queries(), N = in.num_keys();
  const int64_t D = in.head_dim(), g = in.group(), Hkv = in.kv_heads();
  const double scale = std::fabs(static_cast<double>(in.scaling));
  auto norm = [D](const float* x) {
    double s = 0.0;
    for (int64_t d = 0; d < D; ++d) s += static_cast<double>(x[d]) * x[d];
    return std::sqrt(s);
  };
  auto max_abs = [](const float* x, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(x[i])) m = std::max(m, std::fabs(static_cast<double>(x[i])));
    return m;
  };
  // sum_d |q_d k_d| <= |q| |k| bounds every partial sum of every dot product.
  double qn = 0.0, kn = 0.0, mm = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Q; ++i) qn = std::max(qn, norm(in.query(b, h, i)));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t j = 0; j < N; ++j) kn = std::max(kn, norm(in.key(b, h, j)));
  if (in.attention_mask) mm = max_abs(in.attention_mask->data(), in.attention_mask->size());
  if (qn * kn * std::max(1.0, scale) + mm < limit) return Status::Ok();

  // The bound failed: check each score in double.
  auto fmt = [](double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", x);
    return std::string(buf);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Q; ++i) {
        const float* q = in.query(b, h, i);
        const float* m = in.mask_row(b, i);
        for (int64_t j = 0; j < N; ++j) {
          const float* k = in.key(b, h / g, j);
          double dot = 0.0, mag = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            const double x = static_cast<double>(q[d]) * k[d];
            dot += x;
            mag += std::fabs(x);
          }
          const double mj = m ? m[j] : 0.0;
          const double s = in.scaling * dot + (std::isfinite(mj) ? mj : 0.0);
          const bool unscaled = mag >= limit, scaled = mag * scale >= limit;
          const bool total = std::isfinite(mj) && std::fabs(s) >= limit;
          if (!unscaled && !scaled && !total) continue;
          const std::string at = " at q[" + std::to_string(b) + ", " + std::to_string(h) + ", " +
                                 std::to_string(i) + "] and k[" + std::to_string(b) + ", " +
                                 std::to_string(h / g) + ", " + std::to_string(j) + "]";
          std::string what;
          if (unscaled) {
            what = "<q, k> reaches " + fmt(mag);
          } else if (scaled) {
            what = "scaling * <q, k> reaches " + fmt(mag * scale) + " (scaling " + fmt(in.scaling) +
                   ")";
          } else {
            what = "scaling * <q, k> + attention_mask reaches " + fmt(s) + " (attention_mask " +
                   fmt(mj) + ")";
          }
          return Status::Error(
              "scores overflow: " + what + at + ", beyond the float range (" +
              fmt(std::numeric_limits<float>::max()) + "); tensor 'q' holds " + "values up to " +
              fmt(max_abs(in.queries->data(), in.queries->size())) + ", tensor 'k' up to " +
              fmt(max_abs(in.keys->data(), in.keys->size())));
        }
      }
  return Status::Ok();
}

}  // namespace masktune
