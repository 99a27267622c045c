#include "engine/maskers/common.h"

#include <algorithm>
#include <unordered_set>

#include "engine/cpu_kernels.h"

namespace masktune {

namespace {
constexpr int64_t kTile = 64;  // keys per ScoreTile call
}  // namespace

void ParallelRows(int64_t rows, const std::function<void(int64_t)>& fn) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < rows; ++r) fn(r);
}

void ForEachScoreRow(const AttentionInputs& in, float scale,
                     const std::function<void(int64_t, float*)>& fn) {
  const int64_t B = in.batch(), H = in.heads(), Hkv = in.kv_heads(), Q = in.num_queries();
  const int64_t N = in.num_keys(), D = in.head_dim(), g = in.group();
  // Rows of one work item: g heads x qb queries, all reading the same kv head.
  const int64_t qb = std::max<int64_t>(1, std::min<int64_t>(Q, 32 / g));
  const int64_t qblocks = (Q + qb - 1) / qb;
  const int64_t items = B * Hkv * qblocks;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / (Hkv * qblocks), kvh = (item / qblocks) % Hkv;
      const int64_t i0 = (item % qblocks) * qb, i1 = std::min(Q, i0 + qb);
      const int64_t nrows = g * (i1 - i0);
      scores.resize(static_cast<size_t>(nrows * N));
      std::vector<const float*> qs, ks(kTile), next(kTile);
      for (int64_t hh = 0; hh < g; ++hh)
        for (int64_t i = i0; i < i1; ++i) qs.push_back(in.query(b, kvh * g + hh, i));
      for (int64_t jt = 0; jt < N; jt += kTile) {
        const int64_t t = std::min(kTile, N - jt);
        for (int64_t x = 0; x < t; ++x) {
          ks[x] = in.key(b, kvh, jt + x);
          next[x] = jt + kTile + x < N ? in.key(b, kvh, jt + kTile + x) : nullptr;
        }
        kernels::ScoreTile(qs.data(), nrows, ks.data(), t, D, scale, scores.data() + jt, N,
                           next.data());
      }
      for (int64_t hh = 0; hh < g; ++hh) {
        for (int64_t i = i0; i < i1; ++i) {
          float* s = scores.data() + (hh * (i1 - i0) + (i - i0)) * N;
          if (const float* m = in.mask_row(b, i))
            for (int64_t j = 0; j < N; ++j) s[j] += m[j];
          fn((b * H + kvh * g + hh) * Q + i, s);
        }
      }
    }
  }
}

void SelectTopK(const float* scores, int64_t n, int64_t k, int32_t* out,
                std::vector<float>& scratch) {
  if (k <= 0) return;
  // Threshold = the k-th largest value; take everything above it, then the
  // lowest-indexed keys equal to it until k are taken. For long rows the
  // threshold is found among the candidates above a bound estimated from a
  // strided sample, which is exact whenever at least k candidates pass
  // (else the whole row is searched).
  float thr;
  bool found = false;
  constexpr int64_t kStride = 16;
  if (n >= 4096 && k * 4 < n) {
    const int64_t m = n / kStride;
    scratch.resize(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) scratch[i] = scores[i * kStride];
    const int64_t pos = std::min(m - 1, (k * 5 / 4) / kStride + 8);  // a little below the k-th
    std::nth_element(scratch.begin(), scratch.begin() + pos, scratch.end(), std::greater<float>());
    const float bound = scratch[static_cast<size_t>(pos)];
    scratch.clear();
    for (int64_t j = 0; j < n; ++j)
      if (scores[j] >= bound) scratch.push_back(scores[j]);
    if (static_cast<int64_t>(scratch.size()) >= k) {
      std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(),
                       std::greater<float>());
      thr = scratch[static_cast<size_t>(k - 1)];
      found = true;
    }
  }
  if (!found) {
    scratch.assign(scores, scores + n);
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(),
                     std::greater<float>());
    thr = scratch[static_cast<size_t>(k - 1)];
  }
  int64_t above = 0;
  for (int64_t j = 0; j < n; ++j) above += scores[j] > thr;
  int64_t ties = k - above, w = 0;
  for (int64_t j = 0; j < n && w < k; ++j) {
    if (scores[j] > thr) {
      out[w++] = static_cast<int32_t>(j);
    } else if (scores[j] == thr && ties > 0) {
      out[w++] = static_cast<int32_t>(j);
      --ties;
    }
  }
}

void SampleDistinct(const RandomKey& key, int64_t row, int64_t n, int64_t m, int32_t* out) {
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(2 * m));
  for (int64_t j = n - m; j < n; ++j) {
    const double u =
        RandomUniform(key, (static_cast<uint64_t>(row) << 32) | static_cast<uint64_t>(j));
    const int64_t t = std::min(j, static_cast<int64_t>(u * static_cast<double>(j + 1)));
    chosen.insert(chosen.count(t) ? j : t);
  }
  int64_t w = 0;
  for (int64_t t : chosen) out[w++] = static_cast<int32_t>(t);
  std::sort(out, out + m);
}

void PseudoQuantize(float* x, int64_t n, int bits) {
  if (n == 0) return;
  const float max_quant = static_cast<float>((1 << bits) - 1);
  const float lo = *std::min_element(x, x + n), hi = *std::max_element(x, x + n);
  float range = hi - lo;
  if (range == 0.0f) range = 1.0f;
  const float scale = max_quant / range;
  for (int64_t i = 0; i < n; ++i) {
    // nearbyint rounds half to even in the default rounding mode, as torch.round does.
    const float q = std::clamp(std::nearbyint((x[i] - lo) * scale), 0.0f, max_quant);
    x[i] = q / scale + lo;
  }
}

void ExcludePrevious(const Mask& prev, int64_t row, float fill, float* scores,
                     std::vector<float>& prev_row) {
  if (prev.is_empty()) return;
  if (prev.form() == Mask::Form::kSparse) {
    prev.ForEachKept(row, [&](int64_t j, float) { scores[j] = fill; });
    return;
  }
  prev_row.resize(static_cast<size_t>(prev.shape().keys));
  prev.ExpandRow(row, prev_row.data());
  for (int64_t j = 0; j < prev.shape().keys; ++j)
    if (prev_row[j] != 0.0f) scores[j] = fill;
}

}  // namespace masktune
