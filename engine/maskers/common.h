// File: engine/maskers/common.h
//
// Pieces several maskers share: the parallel score loop over query rows, the
// top-k selection with its tie rule, pseudo-quantisation, and the factory
// helper. Internal to engine/maskers.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "engine/masker.h"
#include "engine/random.h"

namespace masktune {

inline constexpr float kLowest = std::numeric_limits<float>::lowest();
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// <a, b> over n floats, with independent lanes the compiler vectorises.
inline float Dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 8;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

// Calls fn(row, scores) for every (batch, head, query) row, with
// scores[j] = scale * <q, k_j> + attention_mask[j] for all keys j. Runs in
// parallel over kv-head groups and query blocks (each key row is read once per
// block); fn runs on the worker thread and may write only to its own row's
// output. `scores` is scratch owned by the loop and may be modified.
void ForEachScoreRow(const AttentionInputs& in, float scale,
                     const std::function<void(int64_t row, float* scores)>& fn);

// Runs fn(row) for every row in [0, rows) on all cores.
void ParallelRows(int64_t rows, const std::function<void(int64_t row)>& fn);

// Writes into `out` (k entries, increasing) the indices of the k largest of
// scores[0 .. n), ties at the threshold broken by the lower index. k <= n.
// `scratch` is reused between calls.
void SelectTopK(const float* scores, int64_t n, int64_t k, int32_t* out,
                std::vector<float>& scratch);

// m distinct integers in [0, n), uniformly (Floyd's algorithm), sorted, into
// out; draw t of `row` uses counter (row << 32 | t) under `key`.
void SampleDistinct(const RandomKey& key, int64_t row, int64_t n, int64_t m, int32_t* out);

// Pseudo-quantises x[0 .. n) in place with `bits` bits (the spec's formula,
// round half to even).
void PseudoQuantize(float* x, int64_t n, int bits);

// Applies the previous mask to a score row: keys it keeps get `fill`.
void ExcludePrevious(const Mask& prev, int64_t row, float fill, float* scores,
                     std::vector<float>& prev_row);

// Factory glue: wraps `make` (returning Result<unique_ptr<T>>) into a schema's create.
template <typename T, typename Make>
auto Factory(Make make) {
  return [make](const MaskerConfig& c, const std::string& slot) -> Result<std::unique_ptr<Masker>> {
    Result<std::unique_ptr<T>> m = make(c, slot);
    if (!m.ok()) return m.status();
    return std::unique_ptr<Masker>(std::move(m).value());
  };
}

}  // namespace masktune
