// Test helpers: deterministic random tensors, a naive double-precision
// attention to check the engine against, temporary folders.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "engine/attention.h"
#include "engine/mask.h"
#include "engine/masker.h"
#include "engine/registry.h"
#include "engine/safetensors.h"
#include "engine/tensor.h"

namespace masktune::testing {

inline Tensor RandomTensor(Shape shape, uint32_t seed, float scale = 1.0f) {
  Tensor t(std::move(shape));
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  for (float& x : t.vec()) x = dist(gen);
  return t;
}

// Causal additive mask (batch, 1, queries, keys): 0 up to each query's position, -inf after.
inline Tensor CausalMask(int64_t batch, int64_t queries, int64_t keys) {
  Tensor m({batch, 1, queries, keys});
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < queries; ++i)
      for (int64_t j = 0; j < keys; ++j)
        if (j > keys - queries + i)
          m.data()[(b * queries + i) * keys + j] = -std::numeric_limits<float>::infinity();
  return m;
}

// Owns the tensors an AttentionInputs points to.
struct Case {
  Tensor q, k, v, mask;
  bool has_mask = false;
  AttentionInputs in;

  Case(int64_t batch, int64_t heads, int64_t kv_heads, int64_t queries, int64_t keys,
       int64_t head_dim, uint32_t seed, bool causal = false)
      : q(RandomTensor({batch, heads, queries, head_dim}, seed)),
        k(RandomTensor({batch, kv_heads, keys, head_dim}, seed + 1)),
        v(RandomTensor({batch, kv_heads, keys, head_dim}, seed + 2)),
        has_mask(causal) {
    if (causal) mask = CausalMask(batch, queries, keys);
    Bind();
  }
  Case(const Case&) = delete;
  void Bind() {
    in.queries = &q;
    in.keys = &k;
    in.values = &v;
    in.attention_mask = has_mask ? &mask : nullptr;
    in.scaling = 1.0f / std::sqrt(static_cast<float>(q.dim(3)));
  }
};

// The spec's formula, straight from the definition, in double: w_j =
// exp(s_j - max over all keys) / p_j over kept keys; empty or full mask = dense.
inline Tensor NaiveAttention(const AttentionInputs& in, const Mask* mask) {
  const int64_t B = in.batch(), H = in.heads(), Q = in.num_queries(), N = in.num_keys();
  const int64_t D = in.head_dim(), g = in.group();
  Tensor out({B, H, Q, D});
  std::vector<float> p(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Q; ++i) {
        const int64_t row = (b * H + h) * Q + i;
        const bool dense = !mask || mask->is_empty() || mask->is_full();
        if (!dense) mask->ExpandRow(row, p.data());
        std::vector<double> s(static_cast<size_t>(N));
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < N; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += static_cast<double>(in.query(b, h, i)[d]) * in.key(b, h / g, j)[d];
          s[j] = dot * in.scaling + (in.attention_mask ? in.mask_row(b, i)[j] : 0.0);
          m = std::max(m, s[j]);
        }
        std::vector<double> o(static_cast<size_t>(D), 0.0);
        double den = 0;
        for (int64_t j = 0; j < N; ++j) {
          double w = std::exp(s[j] - m);
          if (!dense) w = p[j] > 0 ? w / p[j] : 0.0;
          den += w;
          for (int64_t d = 0; d < D; ++d) o[d] += w * in.value(b, h / g, j)[d];
        }
        for (int64_t d = 0; d < D; ++d)
          out.data()[row * D + d] = den > 0 ? static_cast<float>(o[d] / den) : 0.0f;
      }
  return out;
}

inline float MaxAbsDiff(const Tensor& a, const Tensor& b) {
  float m = 0;
  for (int64_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a.data()[i] - b.data()[i]));
  return m;
}

// A fresh folder under the system temp dir, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("masktune_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Kept key indices of one row.
inline std::vector<int64_t> KeptKeys(const Mask& m, int64_t row) {
  std::vector<int64_t> out;
  m.ForEachKept(row, [&](int64_t j, float) { out.push_back(j); });
  return out;
}

// A golden case's attention call (q, k, v, attention_mask, scaling from the
// file and its "case" metadata) and the mask its masker list builds.
struct GoldenCall {
  AttentionInputs in;
  Result<Mask> mask = Status::Error("not built");
};
inline GoldenCall BuildGoldenCall(const SafetensorsFile& file, const nlohmann::json& meta,
                                  const MaskerRegistry& registry, const std::string& dir) {
  GoldenCall c;
  c.in.queries = file.Get("q", 4).value();
  c.in.keys = file.Get("k", 4).value();
  c.in.values = file.Get("v", 4).value();
  c.in.attention_mask = file.Has("attention_mask") ? file.Get("attention_mask").value() : nullptr;
  c.in.scaling = meta["scaling"].get<float>();
  if (Status s = CheckAttentionInputs(c.in); !s.ok()) {
    c.mask = s;
    return c;
  }
  auto configs = registry.ParseJsonList(meta["maskers"].dump(), dir);
  if (!configs.ok()) {
    c.mask = configs.status();
    return c;
  }
  auto stack = MaskerStack::Build(registry, configs.value());
  if (!stack.ok()) {
    c.mask = stack.status();
    return c;
  }
  StackState state;
  c.mask = stack->ComputeMask(c.in, state);
  return c;
}

}  // namespace masktune::testing
