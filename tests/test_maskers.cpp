#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>

#include "engine/benchmarks/benchmark.h"
#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"
#include "engine/registry.h"
#include "engine/safetensors.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

using testing::Case;
using testing::KeptKeys;

// Builds the stack from JSON and runs it once.
Mask Run(const std::string& json, const AttentionInputs& in, StackState* state = nullptr,
         const std::string& base_dir = "") {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto configs = registry.ParseJsonList(json, base_dir);
  REQUIRE_MESSAGE(configs.ok(), configs.status().message());
  auto stack = MaskerStack::Build(registry, configs.value());
  REQUIRE_MESSAGE(stack.ok(), stack.status().message());
  StackState local;
  auto mask = stack->ComputeMask(in, state ? *state : local);
  REQUIRE_MESSAGE(mask.ok(), mask.status().message());
  return std::move(mask).value();
}

std::string RunError(const std::string& json, const AttentionInputs& in, int layer = 0,
                     StackState* state = nullptr) {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto configs = registry.ParseJsonList(json, "");
  if (!configs.ok()) return configs.status().message();
  auto stack = MaskerStack::Build(registry, configs.value());
  if (!stack.ok()) return stack.status().message();
  StackState local;
  AttentionInputs call = in;
  call.layer = layer;
  auto mask = stack->ComputeMask(call, state ? *state : local);
  return mask.ok() ? "" : mask.status().message();
}

std::vector<int64_t> Range(int64_t a, int64_t b) {
  std::vector<int64_t> v(static_cast<size_t>(b - a));
  std::iota(v.begin(), v.end(), a);
  return v;
}

// Keys of row (b, h, i) sorted by the unscaled score, best first, ties by index.
std::vector<int64_t> RankByScore(const AttentionInputs& in, int64_t b, int64_t h, int64_t i) {
  const int64_t n = in.num_keys();
  std::vector<double> s(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < in.head_dim(); ++d)
      dot += static_cast<double>(in.query(b, h, i)[d]) * in.key(b, h / in.group(), j)[d];
    s[j] = dot + (in.attention_mask ? in.mask_row(b, i)[j] : 0.0);
  }
  std::vector<int64_t> order = Range(0, n);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return s[x] > s[y]; });
  return order;
}

TEST_CASE("sizes at or above the key count give full attention") {
  Case c(1, 2, 1, 2, 30, 8, 1, true);
  CHECK(Run(R"([{"type":"sink","sink_size":30}])", c.in).is_full());
  CHECK_FALSE(Run(R"([{"type":"sink","sink_size":29}])", c.in).is_full());
  CHECK(Run(R"([{"type":"local","window_size":28}])", c.in).is_full());  // keys <= w + queries
  CHECK_FALSE(Run(R"([{"type":"local","window_size":27}])", c.in).is_full());
  CHECK(Run(R"([{"type":"oracle_top_k","heavy_size":30}])", c.in).is_full());
  CHECK(Run(R"([{"type":"oracle_top_k","heavy_size":1.0}])", c.in).is_full());
  CHECK(Run(R"([{"type":"oracle_top_p","top_p":1.0}])", c.in).is_full());
  CHECK(Run(R"([{"type":"quest_top_k","heavy_size":30,"page_size":4}])", c.in).is_full());
  // A full mask passes through every later masker unchanged.
  CHECK(Run(R"([{"type":"sink","sink_size":64},{"type":"local","window_size":2},
                {"type":"causal"},{"type":"oracle_top_k","heavy_size":1}])",
            c.in)
            .is_full());
}

TEST_CASE("float sizes are fractions of the keys, integers are counts") {
  Case c(1, 2, 2, 1, 40, 8, 2);
  CHECK(KeptKeys(Run(R"([{"type":"sink","sink_size":0.25}])", c.in), 0) == Range(0, 10));
  CHECK(KeptKeys(Run(R"([{"type":"sink","sink_size":3}])", c.in), 1) == Range(0, 3));
  CHECK(Run(R"([{"type":"oracle_top_k","heavy_size":1}])", c.in).CountNonzero() == 2);
  CHECK(Run(R"([{"type":"oracle_top_k","heavy_size":0.1}])", c.in).CountNonzero() == 8);
  // int(0.99 * 40) = 39: one key short of full.
  CHECK(Run(R"([{"type":"oracle_top_k","heavy_size":0.99}])", c.in).CountNonzero() == 78);
}

TEST_CASE("local window of several queries under a causal mask") {
  Case c(1, 1, 1, 3, 20, 4, 3, true);  // queries at positions 17, 18, 19
  const Mask m = Run(R"([{"type":"sink","sink_size":2},{"type":"local","window_size":4}])", c.in);
  CHECK(KeptKeys(m, 0) == std::vector<int64_t>{0, 1, 14, 15, 16, 17});
  CHECK(KeptKeys(m, 1) == std::vector<int64_t>{0, 1, 15, 16, 17, 18});
  CHECK(KeptKeys(m, 2) == std::vector<int64_t>{0, 1, 16, 17, 18, 19});
  // Keys an earlier masker kept after the query's position are cleared by local.
  const Mask late =
      Run(R"([{"type":"sink","sink_size":19},{"type":"local","window_size":2}])", c.in);
  CHECK(KeptKeys(late, 0) == Range(0, 18));
  CHECK(KeptKeys(late, 2) == Range(0, 20));
}

TEST_CASE("causal clears keys after each query and leaves an empty mask empty") {
  Case c(1, 2, 1, 2, 12, 4, 4, true);
  CHECK(Run(R"([{"type":"causal"}])", c.in).is_empty());
  const Mask m = Run(R"([{"type":"sink","sink_size":11},{"type":"causal"}])", c.in);
  CHECK(KeptKeys(m, 0) == Range(0, 11));  // position 10: key 10 stays, key 11 is not kept
  CHECK(KeptKeys(m, 1) == Range(0, 11));  // position 11: sink kept 0..10
  const Mask m2 = Run(R"([{"type":"oracle_top_k","heavy_size":11},{"type":"causal"}])", c.in);
  CHECK(KeptKeys(m2, 0).back() <= 10);
}

TEST_CASE("oracle top-k: grouped-query heads rank against their kv head") {
  Case c(2, 8, 2, 1, 200, 16, 5);
  const Mask m = Run(R"([{"type":"oracle_top_k","heavy_size":7}])", c.in);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 8; ++h) {
      auto best = RankByScore(c.in, b, h, 0);
      best.resize(7);
      std::sort(best.begin(), best.end());
      CHECK(KeptKeys(m, b * 8 + h) == best);
    }
}

TEST_CASE("oracle top-k skips keys an earlier masker kept, and forbidden keys") {
  Case c(1, 2, 1, 4, 64, 8, 6, true);
  const Mask m =
      Run(R"([{"type":"sink","sink_size":4},{"type":"oracle_top_k","heavy_size":5}])", c.in);
  for (int64_t row = 0; row < 8; ++row) {
    const auto kept = KeptKeys(m, row);
    CHECK(kept.size() == 9);  // overlapping maskers: the top-k adds 5 new keys
    const int64_t pos = 60 + row % 4;
    for (int64_t j : kept) CHECK(j <= pos);
    // The 5 new keys are the best-scoring keys outside the sink.
    auto order = RankByScore(c.in, 0, row / 4, row % 4);
    std::vector<int64_t> want = Range(0, 4);
    for (int64_t j : order)
      if (j >= 4 && want.size() < 9) want.push_back(j);
    std::sort(want.begin(), want.end());
    CHECK(kept == want);
  }
}

TEST_CASE("oracle top-k prefers keys already kept over forbidden ones when short of keys") {
  Case c(1, 1, 1, 2, 10, 4, 7, true);  // query 0 may see keys 0..8
  const Mask m =
      Run(R"([{"type":"sink","sink_size":6},{"type":"oracle_top_k","heavy_size":4}])", c.in);
  // Only keys 6, 7, 8 are new and allowed for query 0; the fourth pick is a
  // sink key (a no-op), never the forbidden key 9.
  CHECK(KeptKeys(m, 0) == Range(0, 9));
  CHECK(KeptKeys(m, 1) == Range(0, 10));
}

TEST_CASE("top-k ties go to the lower key index") {
  std::vector<float> scores = {1, 3, 2, 3, 3, 0, 2};
  std::vector<float> scratch;
  auto top = [&](int64_t k) {
    std::vector<int32_t> out(static_cast<size_t>(k));
    SelectTopK(scores.data(), 7, k, out.data(), scratch);
    return out;
  };
  CHECK(top(3) == std::vector<int32_t>{1, 3, 4});
  CHECK(top(4) == std::vector<int32_t>{1, 2, 3, 4});
  CHECK(top(5) == std::vector<int32_t>{1, 2, 3, 4, 6});
  // Long rows take the sampled-bound path: the same answer as a full sort,
  // ties included, whether or not the bound lets k candidates through.
  std::mt19937 gen(3);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n = 5000 + trial * 997, k = 1 + trial * 37;
    std::vector<float> row(static_cast<size_t>(n));
    for (float& x : row) x = static_cast<float>(static_cast<int>(gen() % 200));  // many ties
    if (trial % 5 == 0) std::sort(row.begin(), row.end());  // adversarial for the sample
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) order[j] = static_cast<int32_t>(j);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    std::vector<int32_t> want(order.begin(), order.begin() + k);
    std::sort(want.begin(), want.end());
    std::vector<int32_t> got(static_cast<size_t>(k));
    SelectTopK(row.data(), n, k, got.data(), scratch);
    CHECK(got == want);
  }
}

TEST_CASE("oracle top-p keeps the smallest set holding the mass") {
  Case c(1, 1, 1, 1, 6, 2, 8);
  c.in.scaling = 1.0f;
  // Scores log(8), log(4), log(2), log(1)... via q = (1, 0), k_j = (log w_j, 0).
  const float w[6] = {8, 1, 4, 0.5f, 2, 0.5f};
  c.q.data()[0] = 1;
  c.q.data()[1] = 0;
  for (int j = 0; j < 6; ++j) {
    c.k.data()[j * 2] = std::log(w[j]);
    c.k.data()[j * 2 + 1] = 0;
  }
  // Total 16: 8 is 0.5, 8+4 = 0.75, 8+4+2 = 0.875.
  CHECK(KeptKeys(Run(R"([{"type":"oracle_top_p","top_p":0.5}])", c.in), 0) ==
        std::vector<int64_t>{0, 2});  // u_0 = 0.5 <= 0.5, so the threshold is the next value
  CHECK(KeptKeys(Run(R"([{"type":"oracle_top_p","top_p":0.7}])", c.in), 0) ==
        std::vector<int64_t>{0, 2});
  CHECK(KeptKeys(Run(R"([{"type":"oracle_top_p","top_p":0.8}])", c.in), 0) ==
        std::vector<int64_t>{0, 2, 4});
  CHECK(KeptKeys(Run(R"([{"type":"oracle_top_p","top_p":0.9}])", c.in), 0) ==
        std::vector<int64_t>{0, 1, 2, 4});
  // 15/16 <= 0.95: the threshold is 0.5, and both keys at it are kept.
  CHECK(KeptKeys(Run(R"([{"type":"oracle_top_p","top_p":0.95}])", c.in), 0) == Range(0, 6));
}

TEST_CASE("oracle top-p agrees with the reference's sort-and-cumsum on long rows with ties") {
  Case c(1, 4, 2, 2, 3000, 16, 31, true);
  // Keys on a coarse grid, so that many scores tie.
  for (float& x : c.k.vec()) x = std::round(x * 2.0f) / 2.0f;
  for (float& x : c.q.vec()) x = std::round(x);
  for (double top_p : {0.05, 0.3, 0.5, 0.9, 0.999}) {
    CAPTURE(top_p);
    const Mask m = Run(R"([{"type":"oracle_top_p","top_p":)" + std::to_string(top_p) + "}]", c.in);
    for (int64_t row = 0; row < 8; ++row) {
      const int64_t h = row / 2, i = row % 2, n = 3000;
      std::vector<float> e(n);
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        e[j] = Dot(c.in.query(0, h, i), c.in.key(0, h / 2, j), 16) * c.in.scaling +
               c.in.mask_row(0, i)[j];
        mx = std::max(mx, e[j]);
      }
      for (float& x : e) x = std::exp(x - mx);
      std::vector<float> sorted = e;
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      std::vector<float> cum(n);
      double acc = 0;
      for (int64_t t = 0; t < n; ++t) cum[t] = static_cast<float>(acc += sorted[t]);
      int64_t t_star = 0;
      while (t_star < n && cum[t_star] / cum[n - 1] <= static_cast<float>(top_p)) ++t_star;
      const float thr = sorted[std::min(t_star, n - 1)];
      std::vector<int64_t> want;
      for (int64_t j = 0; j < n; ++j)
        if (e[j] >= thr) want.push_back(j);
      CHECK(KeptKeys(m, row) == want);
    }
  }
}

TEST_CASE("pseudo-quantisation rounds half to even on a uniform grid") {
  std::vector<float> x = {0.0f, 0.5f, 1.5f, 3.0f};
  PseudoQuantize(x.data(), 4, 2);  // 3 levels over [0, 3]: scale 1
  CHECK(x == std::vector<float>{0.0f, 0.0f, 2.0f, 3.0f});
  std::vector<float> flat = {2.0f, 2.0f};
  PseudoQuantize(flat.data(), 2, 4);  // zero range reads as 1
  CHECK(flat == std::vector<float>{2.0f, 2.0f});
}

TEST_CASE("quest picks the pages with the best upper bound") {
  Case c(1, 2, 1, 1, 50, 4, 9);
  // heavy 20, page 8: kp = min(7, max(3, 20 / 8 = 2)) = 3 pages; the last page has 2 keys.
  const Mask m = Run(R"([{"type":"quest_top_k","heavy_size":20,"page_size":8}])", c.in);
  for (int64_t h = 0; h < 2; ++h) {
    std::vector<std::pair<float, int64_t>> bound;
    for (int64_t p = 0; p < 7; ++p) {
      float s = 0;
      for (int64_t d = 0; d < 4; ++d) {
        float lo = 1e30f, hi = -1e30f;
        for (int64_t j = p * 8; j < std::min<int64_t>(50, p * 8 + 8); ++j) {
          lo = std::min(lo, c.in.key(0, 0, j)[d]);
          hi = std::max(hi, c.in.key(0, 0, j)[d]);
        }
        const float q = c.in.query(0, h, 0)[d];
        s += std::max(q * lo, q * hi);
      }
      bound.push_back({-s, p});
    }
    std::sort(bound.begin(), bound.end());
    std::vector<int64_t> want;
    for (int t = 0; t < 3; ++t)
      for (int64_t j = bound[t].second * 8; j < std::min<int64_t>(50, bound[t].second * 8 + 8); ++j)
        want.push_back(j);
    std::sort(want.begin(), want.end());
    CHECK(KeptKeys(m, h) == want);
  }
}

TEST_CASE("quest gates by the attention mask and skips pages with no allowed key") {
  Case c(1, 1, 1, 4, 40, 4, 10, true);  // positions 36..39; page 9 = keys 36..39
  const Mask m = Run(R"([{"type":"quest_top_k","heavy_size":4,"page_size":4}])", c.in);
  for (int64_t i = 0; i < 4; ++i) {
    const auto kept = KeptKeys(m, i);
    CHECK(kept.size() >= 8);  // three pages, part of the last one perhaps forbidden
    for (int64_t j : kept) CHECK(j <= 36 + i);
  }
}

TEST_CASE("double sparsity reads the channel file and names what is wrong in it") {
  testing::TempDir dir;
  Case c(1, 2, 1, 1, 64, 8, 12);
  std::ofstream(dir / "ch.json")
      << R"({"model.layers.0.self_attn.qk_proj": [[7,6,5,4,3,2,1,0],[0,1,2,3,4,5,6,7]],
                                        "model.layers.1.self_attn.qk_proj": [[0,1]],
                                        "model.layers.2.self_attn.qk_proj": [[0,9,1,1],[0,1,2,3]]})";
  const std::string stack = R"([{"type":"double_sparsity_top_k","heavy_size":6,"group_factor":4,
                                 "label_bits":16,"sorted_channel_file":")" +
                            dir / "ch.json" + "\"}]";
  const Mask m = Run(stack, c.in);
  // Head 1 uses channels 0, 1: its top keys by q0*k0 + q1*k1.
  std::vector<std::pair<float, int64_t>> s;
  for (int64_t j = 0; j < 64; ++j) {
    const float* k = c.in.key(0, 0, j);
    const float* q = c.in.query(0, 1, 0);
    s.push_back({-(q[0] * k[0] + q[1] * k[1]), j});
  }
  std::sort(s.begin(), s.end());
  std::vector<int64_t> want;
  for (int t = 0; t < 6; ++t) want.push_back(s[t].second);
  std::sort(want.begin(), want.end());
  CHECK(KeptKeys(m, 1) == want);
  CHECK(RunError(stack, c.in, 3).find("key 'model.layers.3.self_attn.qk_proj': missing") !=
        std::string::npos);
  CHECK(RunError(stack, c.in, 1)
            .find("expected a list of 2 per-head channel lists, found 1 entries") !=
        std::string::npos);
  CHECK(RunError(stack, c.in, 2).find("head 0: channel 9 is not an index in [0, 8)") !=
        std::string::npos);
}

TEST_CASE("hash attention caches key signatures per layer and extends them") {
  testing::TempDir dir;
  // One linear layer (4 -> 4 bits) per side, identity weights: signature = sign(x).
  Tensor eye({1, 4, 4}), bias({1, 4});
  for (int d = 0; d < 4; ++d) eye.data()[d * 4 + d] = 1;
  REQUIRE(WriteSafetensors(dir / "w.safetensors", {{"layer0.query_matrix.0", &eye},
                                                   {"layer0.query_bias.0", &bias},
                                                   {"layer0.key_matrix.0", &eye},
                                                   {"layer0.key_bias.0", &bias}})
              .ok());
  const std::string stack = R"([{"type":"hash_attention_top_k","heavy_size":3,"hat_bits":4,
      "hat_mlp_layers":1,"hat_mlp_hidden_size":4,"hat_mlp_activation":"relu",
      "hat_weight_file":")" +
                            dir / "w.safetensors" + "\"}]";
  Case c(1, 1, 1, 1, 40, 4, 13);
  // Key 37 matches the query's signs exactly; 38 matches 3 of 4.
  for (int d = 0; d < 4; ++d) {
    c.q.data()[d] = d % 2 ? 1.0f : -1.0f;
    for (int64_t j = 0; j < 40; ++j) c.k.data()[j * 4 + d] = d % 2 ? -1.0f : 1.0f;  // all opposite
    c.k.data()[37 * 4 + d] = c.q.data()[d];
    c.k.data()[38 * 4 + d] = d == 0 ? 1.0f : c.q.data()[d];
    c.k.data()[39 * 4 + d] = d < 2 ? c.q.data()[d] : -c.q.data()[d];
  }
  StackState state;
  Case small(1, 1, 1, 1, 30, 4, 13);
  std::copy_n(c.k.data(), 30 * 4, small.k.data());
  std::copy_n(c.q.data(), 4, small.q.data());
  Run(stack, small.in, &state);
  CHECK(state[0].tensors.begin()->second.shape() == Shape{1, 1, 30, 4});
  const Mask m = Run(stack, c.in, &state);  // 10 new keys signed on this call
  CHECK(state[0].tensors.begin()->second.shape() == Shape{1, 1, 40, 4});
  CHECK(KeptKeys(m, 0) == std::vector<int64_t>{37, 38, 39});
  CHECK(RunError(stack, small.in, 0, &state).find("brings 30 keys, fewer than the 40 cached") !=
        std::string::npos);
  CHECK(RunError(stack, c.in, 1).find("missing tensor 'layer1.query_matrix.0'") !=
        std::string::npos);
}

}  // namespace
}  // namespace masktune

namespace masktune {
namespace {

// Over independent projection seeds, MagicPIG keeps each key with exactly
// the probability it writes: the honesty its estimate rests on.
TEST_CASE("magic_pig keeps each key with the probability it writes") {
  Case c(1, 1, 1, 1, 48, 16, 41);
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  for (auto [K, L] : {std::pair{2, 4}, std::pair{4, 8}, std::pair{6, 3}}) {
    CAPTURE(K);
    CAPTURE(L);
    constexpr int kSeeds = 800;
    std::vector<int> hits(48, 0);
    std::vector<float> p(48, -1.0f);
    // Unbiasedness: the importance-weighted sums average to the dense ones.
    std::vector<double> num(16, 0.0), num2(16, 0.0), dense_num(16, 0.0);
    double den = 0, den2 = 0, dense_den = 0;
    std::vector<double> e(48);
    for (int j = 0; j < 48; ++j) {
      double s = 0;
      for (int d = 0; d < 16; ++d) s += c.q.data()[d] * c.k.data()[j * 16 + d];
      e[j] = std::exp(s * c.in.scaling);
      dense_den += e[j];
      for (int d = 0; d < 16; ++d) dense_num[d] += e[j] * c.v.data()[j * 16 + d];
    }
    for (int seed = 0; seed < kSeeds; ++seed) {
      const Mask m = Run(R"([{"type":"magic_pig","lsh_k":)" + std::to_string(K) + R"(,"lsh_l":)" +
                             std::to_string(L) + R"(,"seed":)" + std::to_string(seed) + "}]",
                         c.in);
      double s_den = 0;
      std::vector<double> s_num(16, 0.0);
      m.ForEachKept(0, [&](int64_t j, float prob) {
        ++hits[j];
        if (p[j] < 0) p[j] = prob;
        CHECK(prob == p[j]);  // the probability does not depend on the draw
        s_den += e[j] / prob;
        for (int d = 0; d < 16; ++d) s_num[d] += e[j] / prob * c.v.data()[j * 16 + d];
      });
      den += s_den;
      den2 += s_den * s_den;
      for (int d = 0; d < 16; ++d) num[d] += s_num[d], num2[d] += s_num[d] * s_num[d];
    }
    int checked = 0;
    for (int j = 0; j < 48; ++j) {
      if (p[j] < 0) continue;  // never kept: its probability must be small
      const double f = static_cast<double>(hits[j]) / kSeeds;
      const double sd = std::sqrt(p[j] * (1 - p[j]) / kSeeds);
      CAPTURE(j);
      CHECK(std::fabs(f - p[j]) <= 4.5 * sd + 1.5 / kSeeds);
      ++checked;
    }
    CHECK(checked >= 24);
    // The means of the estimates lie within 4.5 standard errors of the dense sums.
    auto close = [&](double sum, double sum2, double truth) {
      const double mean = sum / kSeeds, var = sum2 / kSeeds - mean * mean;
      return std::fabs(mean - truth) <= 4.5 * std::sqrt(std::max(var, 0.0) / kSeeds) + 1e-9;
    };
    CHECK(close(den, den2, dense_den));
    for (int d = 0; d < 16; ++d) {
      CAPTURE(d);
      CHECK(close(num[d], num2[d], dense_num[d]));
    }
  }
}

TEST_CASE("magic_pig bad input names the field") {
  Case c(1, 2, 1, 1, 40, 8, 43);
  CHECK(RunError(R"([{"type":"magic_pig","lsh_k":65,"lsh_l":4}])", c.in) ==
        "maskers[0] (magic_pig): field 'lsh_k': expected an integer in (0, 64], found 65");
  testing::TempDir dir;
  Tensor wrong({8, 16});
  REQUIRE(WriteSafetensors(dir / "p.safetensors", {{"layer0.projections", &wrong}}).ok());
  CHECK(RunError(R"([{"type":"magic_pig","lsh_k":4,"lsh_l":4,"projections_file":")" +
                     dir / "p.safetensors" + "\"}]",
                 c.in)
            .find("layer0.projections: expected shape (9, 16) (head_dim + 1, lsh_k * lsh_l), found "
                  "(8, 16)") != std::string::npos);
  CHECK(
      RunError(
          R"([{"type":"magic_pig","lsh_k":4,"lsh_l":4},{"type":"magic_pig","lsh_k":2,"lsh_l":2}])",
          c.in) ==
      "maskers[1] (magic_pig): a stack holds at most one sampling masker; maskers[0] (magic_pig) "
      "is one already");
}

TEST_CASE("magic_pig signs appended keys only, and stays reproducible from its seed") {
  Case c(1, 2, 1, 1, 64, 16, 44);
  StackState state;
  Case first(1, 2, 1, 1, 48, 16, 44);
  std::copy_n(c.k.data(), 48 * 16, first.k.data());
  std::copy_n(c.q.data(), 2 * 16, first.q.data());
  const std::string stack = R"([{"type":"magic_pig","lsh_k":3,"lsh_l":6,"seed":7}])";
  Run(stack, first.in, &state);
  // Signatures per kv head (its query heads share them), room for `cap` keys
  // per word, the first `count` signed: 6 tables of 3 bits are six byte
  // lanes, one word per key.
  const std::vector<uint64_t>& codes = state[0].codes.at("magic_pig#0.key_codes");
  const std::vector<uint64_t>& count = state[0].codes.at("magic_pig#0.key_count");
  CHECK(count == std::vector<uint64_t>{48});
  CHECK(codes.size() == 1 * 1 * 48);
  const std::vector<uint64_t> signed48 = codes;
  const Mask grown = Run(stack, c.in, &state);
  CHECK(count == std::vector<uint64_t>{64});
  CHECK(codes.size() == 96);  // doubled: the next decode steps sign in place
  CHECK(std::equal(signed48.begin(), signed48.end(), codes.begin()));  // kept, not re-signed
  Case more(1, 2, 1, 1, 65, 16, 44);
  std::copy_n(c.k.data(), 64 * 16, more.k.data());
  std::copy_n(c.q.data(), 2 * 16, more.q.data());
  Run(stack, more.in, &state);
  CHECK(count == std::vector<uint64_t>{65});
  CHECK(codes.size() == 96);
  CHECK(Run(stack, c.in).Density() > 0.0);
  CHECK(RunError(stack, first.in, 0, &state).find("brings 48 keys, fewer than the 65 cached") !=
        std::string::npos);
  // Same seed, same mask; on any thread count.
  const Mask a = Run(stack, c.in), b = Run(stack, c.in);
  CHECK(a.ToDense().vec() == b.ToDense().vec());
}

}  // namespace
}  // namespace masktune

namespace masktune {
namespace {

TEST_CASE("random_sampling draws distinct keys and writes their true inclusion probability") {
  Case c(1, 2, 1, 3, 50, 8, 51, true);
  constexpr int kSeeds = 1000;
  std::vector<int> hits(50, 0);
  for (int seed = 0; seed < kSeeds; ++seed) {
    const Mask m = Run(
        R"([{"type":"random_sampling","sampling_rate":0.3,"seed":)" + std::to_string(seed) + "}]",
        c.in);
    for (int64_t row = 0; row < 6; ++row) {
      int count = 0;
      m.ForEachKept(row, [&](int64_t j, float p) {
        CHECK(p == doctest::Approx(15.0 / 50));  // m / N with m = int(0.3 * 50) = 15
        if (row == 0) ++hits[j];
        ++count;
      });
      CHECK(count == 15);  // distinct: no key twice
    }
  }
  // Each key's frequency matches 0.3 within binomial bounds.
  const double sd = std::sqrt(0.3 * 0.7 / kSeeds);
  for (int j = 0; j < 50; ++j) {
    CAPTURE(j);
    CHECK(std::fabs(hits[j] / double(kSeeds) - 0.3) <= 4.5 * sd);
  }
  // Same seed, same draws; rows and layers draw differently.
  const std::string s = R"([{"type":"random_sampling","sampling_rate":0.3,"seed":9}])";
  CHECK(Run(s, c.in).ToDense().vec() == Run(s, c.in).ToDense().vec());
  CHECK(KeptKeys(Run(s, c.in), 0) != KeptKeys(Run(s, c.in), 1));
  CHECK(Run(R"([{"type":"random_sampling","sampling_rate":1.0}])", c.in).is_full());
  CHECK(
      RunError(R"([{"type":"random_sampling","sampling_rate":0}])", c.in) ==
      "maskers[0] (random_sampling): field 'sampling_rate': expected a number in (0, 1], found 0");
  CHECK(RunError(R"([{"type":"random_sampling","sampling_rate":1.5}])", c.in) ==
        "maskers[0] (random_sampling): field 'sampling_rate': expected a number in (0, 1], found "
        "1.5");
}

}  // namespace
}  // namespace masktune

namespace masktune {
namespace {

TEST_CASE("adaptive_sampling: the normal quantile and the budget formula by hand") {
  CHECK(AdaptiveSamplingQuantile(0.95) == doctest::Approx(1.6448536269514722).epsilon(1e-10));
  CHECK(AdaptiveSamplingQuantile(0.975) == doctest::Approx(1.959963984540054).epsilon(1e-10));
  CHECK(AdaptiveSamplingQuantile(0.999) == doctest::Approx(3.090232306167813).epsilon(1e-10));
  CHECK(AdaptiveSamplingQuantile(0.01) == doctest::Approx(-2.3263478740408408).epsilon(1e-10));
  // Equal weights: sigma is 0 (floored at 1e-8), the budget falls to the base sample's size.
  Case flat(1, 1, 1, 1, 12, 4, 61);
  std::fill(flat.q.vec().begin(), flat.q.vec().end(), 0.0f);
  const Mask m =
      Run(R"([{"type":"adaptive_sampling","base_rate_sampling":4,"epsilon":0.1,"delta":0.1}])",
          flat.in);
  CHECK(KeptKeys(m, 0).size() == 4);
  m.ForEachKept(0, [](int64_t, float p) { CHECK(p == doctest::Approx(4.0 / 12)); });
  // Known weights, and a base sample of the whole range: every term is fixed.
  Case c(1, 1, 1, 1, 40, 2, 62);
  c.in.scaling = 1.0f;
  c.q.data()[0] = 1;
  c.q.data()[1] = 0;
  std::vector<double> w(40);
  for (int j = 0; j < 40; ++j) {
    w[j] = 1.0 + (j % 7) * 0.5 + (j == 20 ? 6.0 : 0.0);
    c.k.data()[j * 2] = static_cast<float>(std::log(w[j]));
    c.k.data()[j * 2 + 1] = 0;
  }
  const double mx = *std::max_element(w.begin(), w.end());
  // init 4, local 4: range [4, 36), R = 32; base = 32 (all of it).
  double S = 0, sum = 0, sum2 = 0;
  for (int j = 0; j < 40; ++j) S += w[j] / mx;
  for (int j = 4; j < 36; ++j) sum += w[j] / mx, sum2 += (w[j] / mx) * (w[j] / mx);
  const double sigma = std::sqrt((sum2 - 32 * (sum / 32) * (sum / 32)) / 31);
  const double Sb = sum;                // * R / nb = 1
  const double z = 1.2815515655446004;  // Phi^-1(0.9)
  const double eps = 0.05;
  const auto b = static_cast<int64_t>(std::pow(z * sigma * 32 / (eps * (S + Sb)), 2));
  const int64_t want = std::clamp<int64_t>(std::clamp<int64_t>(b, 1, 32), 32, 32);
  const Mask a = Run(
      R"([{"type":"adaptive_sampling","base_rate_sampling":32,"epsilon":0.05,"delta":0.1,"init_offset":4,"local_offset":4}])",
      c.in);
  CHECK(static_cast<int64_t>(KeptKeys(a, 0).size()) == want);
  // A smaller base sample keeps the formula's budget between nb and R.
  const Mask small = Run(
      R"([{"type":"adaptive_sampling","base_rate_sampling":0.25,"epsilon":0.3,"delta":0.2,"init_offset":4,"local_offset":4}])",
      c.in);
  const auto kept = KeptKeys(small, 0);
  CHECK(kept.size() >= 8);  // nb = int(0.25 * 32)
  CHECK(kept.size() <= 32);
  for (int64_t j : kept) CHECK((j >= 4 && j < 36));
  // Off, full, and bad fields.
  CHECK(Run(R"([{"type":"adaptive_sampling","base_rate_sampling":0,"epsilon":0.1,"delta":0.1}])",
            c.in)
            .is_empty());
  CHECK(
      Run(R"([{"type":"adaptive_sampling","base_rate_sampling":0.1,"epsilon":0.1,"delta":0.1,"init_offset":20,"local_offset":19}])",
          c.in)
          .is_full());
  CHECK(RunError(
            R"([{"type":"adaptive_sampling","base_rate_sampling":0.1,"epsilon":1.0,"delta":0.1}])",
            c.in) ==
        "maskers[0] (adaptive_sampling): field 'epsilon': expected a number in (0, 1), found 1.0");
}

// The spec's budget uses z = Phi^-1(1 - delta): each side of the error is
// bounded with probability 1 - delta, so both together with 1 - 2 delta.
TEST_CASE("adaptive_sampling meets its epsilon bound on the denominator as the spec's z promises") {
  Case c(1, 1, 1, 1, 2000, 16, 63);
  const double eps = 0.1, delta = 0.1;
  // The dense denominator (with the max subtracted as the masker does).
  std::vector<double> s(2000);
  double mx = -INFINITY;
  for (int j = 0; j < 2000; ++j) {
    double d = 0;
    for (int t = 0; t < 16; ++t) d += c.q.data()[t] * c.k.data()[j * 16 + t];
    s[j] = d * c.in.scaling;
    mx = std::max(mx, s[j]);
  }
  double dense = 0;
  for (double x : s) dense += std::exp(x - mx);
  constexpr int kSeeds = 300;
  int within = 0, above = 0, below = 0;
  for (int seed = 0; seed < kSeeds; ++seed) {
    const Mask m =
        Run(R"([{"type":"sink","sink_size":16},{"type":"local","window_size":16},)"
            R"({"type":"adaptive_sampling","base_rate_sampling":0.05,"epsilon":0.1,"delta":0.1,)"
            R"("init_offset":16,"local_offset":16,"seed":)" +
                std::to_string(seed) + "}]",
            c.in);
    double est = 0;
    m.ForEachKept(0, [&](int64_t j, float p) { est += std::exp(s[j] - mx) / p; });
    within += std::fabs(est - dense) / dense <= eps;
    above += est > (1 + eps) * dense;
    below += est < (1 - eps) * dense;
  }
  MESSAGE("runs within epsilon: " << within << " / " << kSeeds << " (above " << above << ", below "
                                  << below << ")");
  const double slack = 4 * std::sqrt(delta * (1 - delta) / kSeeds);  // four binomial sd
  CHECK(within >= (1 - 2 * delta - slack) * kSeeds);
  CHECK(above <= (delta + slack) * kSeeds);
  CHECK(below <= (delta + slack) * kSeeds);
}

}  // namespace
}  // namespace masktune

namespace masktune {
namespace {

// Wider tables pack fewer lanes per word (16, 32 and 64 bits): keep
// frequencies still match the written probabilities.
TEST_CASE("magic_pig with 16-, 32- and 64-bit table lanes keeps each key as often as it says") {
  Case c(1, 1, 1, 1, 32, 16, 71);
  // Keys from near the query to far from it, so probabilities span (0, 1).
  for (int j = 0; j < 32; ++j)
    for (int d = 0; d < 16; ++d)
      c.k.data()[j * 16 + d] = c.q.data()[d] + 0.08f * j * c.k.data()[j * 16 + d];
  for (int K : {12, 20, 40}) {
    CAPTURE(K);
    constexpr int kSeeds = 400;
    std::vector<int> hits(32, 0);
    std::vector<float> p(32, -1.0f);
    for (int seed = 0; seed < kSeeds; ++seed) {
      const Mask m = Run(R"([{"type":"magic_pig","lsh_k":)" + std::to_string(K) +
                             R"(,"lsh_l":3,"center":false,"transform":"none","seed":)" +
                             std::to_string(seed) + "}]",
                         c.in);
      m.ForEachKept(0, [&](int64_t j, float prob) {
        ++hits[j];
        p[j] = prob;
      });
    }
    int checked = 0;
    for (int j = 0; j < 32; ++j) {
      if (p[j] < 0) continue;
      const double f = static_cast<double>(hits[j]) / kSeeds;
      CAPTURE(j);
      CHECK(std::fabs(f - p[j]) <= 4.5 * std::sqrt(p[j] * (1 - p[j]) / kSeeds) + 1.5 / kSeeds);
      ++checked;
    }
    CHECK(checked >= 4);
  }
}

TEST_CASE("pq_top_k with a centroid per key ranks exactly as oracle_top_k") {
  Case c(1, 4, 2, 3, 50, 8, 31, true);
  // 2^6 = 64 >= 50 keys: k-means++ makes every key its own centroid.
  const Mask pq = Run(R"([{"type":"pq_top_k","heavy_size":7,"pq_sub_dim":2,"pq_bits":6}])", c.in);
  const Mask oracle = Run(R"([{"type":"oracle_top_k","heavy_size":7}])", c.in);
  for (int64_t row = 0; row < 12; ++row) CHECK(KeptKeys(pq, row) == KeptKeys(oracle, row));
}

TEST_CASE("pq_top_k learns the cluster means and codes appended keys against them") {
  // Two kv heads? One: 2-d keys in two tight clusters around (2, 0) and (-2, 1).
  Case c(1, 1, 1, 1, 12, 2, 32);
  for (int64_t j = 0; j < 12; ++j) {
    float* k = c.k.data() + j * 2;
    const float e = 0.01f * static_cast<float>(j % 3);
    if (j % 2 == 0)
      k[0] = 2.0f + e, k[1] = 0.0f - e;
    else
      k[0] = -2.0f + e, k[1] = 1.0f;
  }
  c.q.data()[0] = 1.0f, c.q.data()[1] = 0.0f;
  StackState state;
  const std::string stack = R"([{"type":"pq_top_k","heavy_size":3,"pq_sub_dim":2,"pq_bits":1}])";
  const Mask m = Run(stack, c.in, &state);
  // The (2, 0) cluster scores 2 for all its keys: ties go to the lower index.
  CHECK(KeptKeys(m, 0) == std::vector<int64_t>{0, 2, 4});
  const Tensor& cent = state[0].tensors.at("pq_top_k#0.centroids");
  REQUIRE(cent.shape() == Shape{1, 1, 1, 2, 2});
  std::vector<std::pair<float, float>> got = {{cent.data()[0], cent.data()[1]},
                                              {cent.data()[2], cent.data()[3]}};
  std::sort(got.begin(), got.end());
  CHECK(got[0].first == doctest::Approx(-2.0 + 0.01).epsilon(1e-5));
  CHECK(got[0].second == doctest::Approx(1.0));
  CHECK(got[1].first == doctest::Approx(2.0 + 0.01).epsilon(1e-5));
  CHECK(got[1].second == doctest::Approx(-0.01).epsilon(1e-5));
  const std::vector<uint16_t> first = state[0].labels.at("pq_top_k#0.codes");
  REQUIRE(first.size() == 12);
  for (int64_t j = 2; j < 12; ++j) CHECK(first[j] == first[j % 2]);

  // Decode: two more keys, one near each cluster. The codebook stays; only they are coded.
  Case d(1, 1, 1, 1, 14, 2, 33);
  std::copy_n(c.k.data(), 24, d.k.data());
  d.k.data()[24] = -1.5f, d.k.data()[25] = 0.8f;  // near (-2, 1)
  d.k.data()[26] = 3.0f, d.k.data()[27] = 0.1f;   // near (2, 0)
  std::copy_n(c.q.data(), 2, d.q.data());
  const Mask m2 = Run(stack, d.in, &state);
  const auto& codes = state[0].labels.at("pq_top_k#0.codes");
  REQUIRE(codes.size() == 14);
  CHECK(std::equal(first.begin(), first.end(), codes.begin()));
  CHECK(codes[12] == first[1]);
  CHECK(codes[13] == first[0]);
  CHECK(state[0].tensors.at("pq_top_k#0.centroids").vec() == cent.vec());
  CHECK(KeptKeys(m2, 0) == std::vector<int64_t>{0, 2, 4});
}

TEST_CASE("pq_top_k finds most of the true top keys on random data, the same from its seed") {
  Case c(1, 2, 1, 2, 2000, 16, 34);
  const std::string stack = R"([{"type":"pq_top_k","heavy_size":100,"pq_sub_dim":4,"pq_bits":6}])";
  const Mask pq = Run(stack, c.in);
  const Mask oracle = Run(R"([{"type":"oracle_top_k","heavy_size":100}])", c.in);
  // Chance would give 100 * 100 / 2000 = 5 of the true top 100 in common.
  auto check_recall = [&](const Mask& m, const std::string& what) {
    for (int64_t row = 0; row < 4; ++row) {
      const auto a = KeptKeys(m, row), b = KeptKeys(oracle, row);
      std::vector<int64_t> common;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
      INFO(what, " row ", row, ": ", common.size(), " of the true top 100");
      CHECK(common.size() >= 50);
    }
  };
  check_recall(pq, "all keys");
  CHECK(KeptKeys(Run(stack, c.in), 3) == KeptKeys(pq, 3));
  // Learning on a sample of 64 * 8 = 512 of the 2000 keys costs little recall.
  check_recall(Run(R"([{"type":"pq_top_k","heavy_size":100,"pq_sub_dim":4,"pq_bits":6,
                        "train_keys_per_centroid":8}])",
                   c.in),
               "sampled");
  const Mask other =
      Run(R"([{"type":"pq_top_k","heavy_size":100,"pq_sub_dim":4,"pq_bits":6,"seed":7}])", c.in);
  bool differs = false;
  for (int64_t row = 0; row < 4; ++row) differs |= KeptKeys(other, row) != KeptKeys(pq, row);
  CHECK(differs);
}

TEST_CASE("pq_top_k bad input names the field") {
  Case c(1, 1, 1, 1, 40, 6, 35);
  CHECK(RunError(R"([{"type":"pq_top_k","heavy_size":4,"pq_sub_dim":4,"pq_bits":4}])", c.in) ==
        "maskers[0] (pq_top_k): pq_sub_dim 4 does not divide the head dimension 6");
  CHECK(RunError(R"([{"type":"pq_top_k","heavy_size":4,"pq_sub_dim":3,"pq_bits":13}])", c.in) ==
        "maskers[0] (pq_top_k): field 'pq_bits': expected an integer in (0, 12], found 13");
  CHECK(RunError(R"([{"type":"pq_top_k","heavy_size":4,"pq_sub_dim":3}])", c.in) ==
        "maskers[0] (pq_top_k): missing required field 'pq_bits'");
  StackState state;
  const std::string stack = R"([{"type":"pq_top_k","heavy_size":4,"pq_sub_dim":3,"pq_bits":2}])";
  Run(stack, c.in, &state);
  Case shorter(1, 1, 1, 1, 30, 6, 36);
  CHECK(RunError(stack, shorter.in, 0, &state) ==
        "maskers[0] (pq_top_k): this call brings 30 keys, fewer than the 40 cached for layer 0");
}

TEST_CASE("attention_error: an empty masker list is dense attention, density 1 and error 0") {
  const nlohmann::json spec = {{"name", "attention_error"},
                               {"synthetic",
                                {{"keys", 256},
                                 {"heads", 4},
                                 {"kv_heads", 2},
                                 {"head_dim", 16},
                                 {"queries", 3},
                                 {"samples", 2},
                                 {"seed", 3}}}};
  auto bench = CreateBenchmark(spec);
  REQUIRE_MESSAGE(bench.ok(), bench.status().message());
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto metrics = [&](const std::string& list) {
    auto configs = registry.ParseJsonList(list, "");
    REQUIRE_MESSAGE(configs.ok(), configs.status().message());
    auto m = bench.value()->Run(registry, configs.value());
    REQUIRE_MESSAGE(m.ok(), m.status().message());
    return m.value();
  };
  // The old code reported density 0 for the empty mask: under sparsity_N the
  // dense baseline (error 0, density 0) looked like the best trial.
  Metrics dense = metrics("[]");
  CHECK(dense["density"] == 1.0);
  CHECK(dense["density_max"] == 1.0);
  // Masked attention on an empty mask is the dense kernel itself: exactly 0.
  CHECK(dense["error"] == 0.0);
  CHECK(dense["error_max"] == 0.0);
  CHECK(dense["recall"] == 1.0);
  // A full mask from a masker says the same; a sparse stack is unchanged.
  Metrics full = metrics(R"([{"type":"oracle_top_k","heavy_size":1.0}])");
  CHECK(full["density"] == 1.0);
  CHECK(full["error"] == 0.0);
  Metrics sink = metrics(R"([{"type":"sink","sink_size":32}])");
  CHECK(sink["density"] == 32.0 / 256.0);
  CHECK(sink["error"] > 0.0);
}

}  // namespace
}  // namespace masktune
