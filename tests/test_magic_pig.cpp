// MagicPIG's vectorised collision probability (engine/maskers/magic_pig_math.h)
// against libm's acosf/powf over dense sweeps of inputs, and the runtime's
// PrepareAttention, which signs the prefill's keys before decoding.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "engine/maskers/common.h"
#include "engine/maskers/magic_pig_math.h"
#include "engine/model/llama.h"
#include "engine/registry.h"

namespace masktune {
namespace {

// Floats in order as integers (negative floats below positive ones), so the
// distance of two floats in ulps is the difference.
int64_t Ordinal(float f) {
  int32_t i;
  std::memcpy(&i, &f, 4);
  return i < 0 ? -static_cast<int64_t>(i & 0x7fffffff) : i;
}
int64_t Ulps(float a, float b) { return std::llabs(Ordinal(a) - Ordinal(b)); }

// Cosines in [-1, 1]: 2^22 + 1 evenly spaced, and 2^15 consecutive floats on
// each side of -1, -0.5, 0, 0.5 and 1 (where acos is steep or switches branch).
std::vector<float> CosineSweep() {
  std::vector<float> xs;
  constexpr int kSteps = 1 << 22;
  for (int i = 0; i <= kSteps; ++i) xs.push_back(-1.0f + 2.0f * static_cast<float>(i) / kSteps);
  for (float s : {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f})
    for (float dir : {-2.0f, 2.0f}) {
      float x = s;
      for (int i = 0; i < (1 << 15); ++i) {
        x = std::nextafter(x, dir);
        if (std::fabs(x) > 1.0f) break;
        xs.push_back(x);
      }
    }
  return xs;
}

// The libm formula the masker used before (and the spec writes).
float LibmProbability(float c, int64_t K, int64_t L) {
  const float theta = std::acos(c);
  const float p1 = std::pow(1.0f - theta / static_cast<float>(M_PI), static_cast<float>(K));
  return 1.0f - std::pow(1.0f - p1, static_cast<float>(L));
}

TEST_CASE("magic_pig math: acos is within 1 ulp of acosf and correctly rounded over a sweep") {
  const std::vector<float> xs = CosineSweep();
  int64_t worst_libm = 0, worst_exact = 0;
  for (float x : xs) {
    const float a = magic_pig::Acos(x);
    worst_libm = std::max(worst_libm, Ulps(a, std::acos(x)));
    worst_exact = std::max(worst_exact, Ulps(a, static_cast<float>(std::acos(double{x}))));
  }
  MESSAGE(xs.size() << " cosines: acos within " << worst_libm << " ulp of acosf, " << worst_exact
                    << " of acos in double rounded to float");
  CHECK(worst_libm <= 1);
  CHECK(worst_exact <= 1);
  CHECK(magic_pig::Acos(1.0f) == 0.0f);
  CHECK(magic_pig::Acos(-1.0f) == static_cast<float>(M_PI));  // so 1 - theta / pi is 0, not < 0
  CHECK(magic_pig::Acos(0.0f) == std::acos(0.0f));
}

TEST_CASE("magic_pig math: integer powers are within 1 ulp of powf") {
  for (int64_t n : {0, 1, 2, 3, 7, 8, 16, 32, 64, 75, 100, 1000, 4096}) {
    int64_t worst = 0;
    constexpr int kSteps = 1 << 20;
    for (int i = 0; i <= kSteps; ++i) {
      const float x = static_cast<float>(i) / kSteps;
      worst = std::max(worst, Ulps(magic_pig::PowInt(x, n), std::pow(x, static_cast<float>(n))));
    }
    CAPTURE(n);
    CHECK(worst <= 1);
  }
  CHECK(magic_pig::PowInt(0.0f, 8) == 0.0f);
  CHECK(magic_pig::PowInt(1.0f, 4096) == 1.0f);
  CHECK(magic_pig::PowInt(0.5f, 0) == 1.0f);
}

TEST_CASE("magic_pig math: probabilities within (L + 2) * 2^-24 of libm's; vector = scalar") {
  // Each of acos and the powers is within 1 ulp, every other step is the
  // same float operation; 1 ulp of 1 - p1 (2^-24 near 1) moves (1 - p1)^L
  // by up to L * 2^-24, the final power adds 1 ulp: |dp| <= (L + 1) 2^-24
  // to first order. Measured (this sweep): K8 L75 4.47e-6, K4 L16 1.0e-6,
  // K64 L4096 1.9e-4; 99.4% of the K8 L75 values are bit-identical.
  const std::vector<float> xs = CosineSweep();
  std::vector<float> p(xs.size());
  for (auto [K, L] : std::vector<std::pair<int64_t, int64_t>>{
           {8, 75}, {4, 16}, {8, 32}, {1, 1}, {3, 6}, {16, 200}, {64, 4096}}) {
    magic_pig::CollisionProbabilities(xs.data(), static_cast<int64_t>(xs.size()), K, L, p.data());
    double worst = 0;
    int64_t same = 0, vector_vs_scalar = 0, outside = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const float ref = LibmProbability(xs[i], K, L);
      worst = std::max(worst, static_cast<double>(std::fabs(p[i] - ref)));
      same += p[i] == ref;
      vector_vs_scalar += p[i] != magic_pig::CollisionProbability(xs[i], K, L);
      outside += !(p[i] >= 0.0f && p[i] <= 1.0f);
    }
    CAPTURE(K);
    CAPTURE(L);
    MESSAGE("K " << K << " L " << L << ": max |p - libm| " << worst << ", "
                 << 100.0 * static_cast<double>(same) / static_cast<double>(xs.size())
                 << "% identical");
    CHECK(worst <= static_cast<double>(L + 2) * std::ldexp(1.0, -24));
    CHECK(vector_vs_scalar == 0);
    CHECK(outside == 0);
  }
  // The ends: a key along the query always collides, one opposite never.
  float ends[2] = {1.0f, -1.0f}, pe[2];
  magic_pig::CollisionProbabilities(ends, 2, 8, 75, pe);
  CHECK(pe[0] == 1.0f);
  CHECK(pe[1] == 0.0f);
}

TEST_CASE("magic_pig math: cosines equal the masker's scalar expressions bit for bit") {
  // Keys' centred norms up to M, dot products of either sign, both transforms.
  constexpr int64_t n = 100000;
  std::vector<float> dot(n), kn(n), got(n);
  const float M = 7.25f, inv_xq = 1.0f / (1.0f + 1e-8f);
  for (int64_t t = 0; t < n; ++t) {
    kn[t] = M * static_cast<float>(t % 1000) / 999.0f;
    dot[t] = (static_cast<float>((t * 7919) % 2001) - 1000.0f) / 999.0f * (t % 3 ? 1.0f : 1.5f);
  }
  for (bool simple_lsh : {true, false}) {
    magic_pig::Cosines(dot.data(), kn.data(), n, M, inv_xq, simple_lsh, got.data());
    int64_t differ = 0, clamped = 0;
    for (int64_t t = 0; t < n; ++t) {
      float xk = kn[t];
      if (simple_lsh) {
        const float aug = std::sqrt(std::max(0.0f, M * M - kn[t] * kn[t])) / M;
        xk = std::sqrt((kn[t] / M) * (kn[t] / M) + aug * aug);
      }
      const float want = std::clamp(dot[t] * inv_xq / (xk + 1e-8f), -1.0f, 1.0f);
      differ += std::memcmp(&want, &got[t], 4) != 0;
      clamped += std::fabs(want) == 1.0f;
    }
    CAPTURE(simple_lsh);
    CHECK(differ == 0);
    CHECK(clamped > 0);  // the clamp is exercised
  }
}

TEST_CASE("magic_pig math: a group's dot products equal Dot's bit for bit") {
  for (int64_t d : {64, 67, 5, 128}) {
    constexpr int64_t rows = 5, n = 301;
    std::vector<float> x(static_cast<size_t>(rows * d)), k(static_cast<size_t>(n * d));
    for (size_t e = 0; e < x.size(); ++e) x[e] = std::sin(0.37f * static_cast<float>(e)) * 3.1f;
    for (size_t e = 0; e < k.size(); ++e) k[e] = std::cos(0.11f * static_cast<float>(e)) / 1.7f;
    std::vector<const float*> xr(rows), kr(n);
    for (int64_t r = 0; r < rows; ++r) xr[r] = x.data() + r * d;
    for (int64_t t = 0; t < n; ++t) kr[t] = k.data() + ((t * 37) % n) * d;  // scattered rows
    std::vector<float> out(static_cast<size_t>(rows * n));
    magic_pig::GroupDots(xr.data(), rows, kr.data(), n, d, out.data());
    int64_t differ = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < n; ++t) {
        const float want = Dot(xr[r], kr[t], d);
        differ += std::memcmp(&want, &out[r * n + t], 4) != 0;
      }
    CAPTURE(d);
    CHECK(differ == 0);
  }
}

TEST_CASE(
    "magic_pig: PrepareAttention signs the prefill's keys; the first decode step signs its own") {
  const std::string path = MASKTUNE_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) {
    MESSAGE("skipped: no " << path << " (scripts/setup.sh fetches it)");
    return;
  }
  auto model = model::LlamaModel::Load(path);
  REQUIRE(model.ok());
  const auto& c = model.value()->config();
  std::vector<int32_t> prompt;
  const auto sentence = model.value()->tokenizer().Encode(
      "The quick brown fox jumps over the lazy dog while the river runs to the sea. ");
  while (prompt.size() < 120) prompt.insert(prompt.end(), sentence.begin(), sentence.end());
  prompt.resize(120);
  model::Sequence seq(model.value(), 130);
  auto logits = seq.Forward(prompt);
  REQUIRE(logits.ok());

  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto configs = registry.ParseJsonList(
      R"([{"type":"sink","sink_size":4},{"type":"local","window_size":8},
          {"type":"magic_pig","lsh_k":4,"lsh_l":16}])",
      "");
  REQUIRE(configs.ok());
  auto stack = MaskerStack::Build(registry, configs.value());
  REQUIRE(stack.ok());
  auto prepared = [&](model::SparseAttention& s) {
    s.stack = &stack.value();
    s.dense_layers = {0};
    REQUIRE(seq.PrepareAttention(s).ok());
  };
  model::SparseAttention sparse, again;
  prepared(sparse);
  prepared(again);
  CHECK(sparse.masked_calls == 0);    // the discarded masks count no density
  CHECK(sparse.state.count(0) == 0);  // dense layers are left alone
  REQUIRE(static_cast<int64_t>(sparse.state.size()) == c.layers - 1);
  for (int64_t l = 1; l < c.layers; ++l) {
    const LayerState& st = sparse.state.at(static_cast<int>(l));
    CAPTURE(l);
    REQUIRE(st.codes.count("magic_pig#2.key_count"));
    CHECK(st.codes.at("magic_pig#2.key_count") == std::vector<uint64_t>{120});
    // Deterministic: a second preparation signs the same.
    CHECK(st.codes.at("magic_pig#2.key_codes") ==
          again.state.at(static_cast<int>(l)).codes.at("magic_pig#2.key_codes"));
  }
  const std::vector<uint64_t> before = sparse.state.at(5).codes.at("magic_pig#2.key_codes");
  const int64_t cap = sparse.state.at(5).tensors.at("magic_pig#2.key_norms").dim(2);
  // The first decoded token's call finds the 120 keys and signs only its own.
  const std::vector<int32_t> one = {model::ArgMax(logits.value())};
  REQUIRE(seq.Forward(one, &sparse).ok());
  CHECK(sparse.masked_calls == c.layers - 1);
  const LayerState& st = sparse.state.at(5);
  CHECK(st.codes.at("magic_pig#2.key_count") == std::vector<uint64_t>{121});
  const std::vector<uint64_t>& after = st.codes.at("magic_pig#2.key_codes");
  const int64_t cap2 = st.tensors.at("magic_pig#2.key_norms").dim(2);
  const int64_t words = static_cast<int64_t>(before.size()) / (c.kv_heads * cap);
  REQUIRE(static_cast<int64_t>(after.size()) == c.kv_heads * words * cap2);
  int64_t changed = 0;
  for (int64_t hw = 0; hw < c.kv_heads * words; ++hw)
    for (int64_t j = 0; j < 120; ++j) changed += after[hw * cap2 + j] != before[hw * cap + j];
  CHECK(changed == 0);

  // Without a stack it does nothing.
  model::SparseAttention none;
  CHECK(seq.PrepareAttention(none).ok());
  CHECK(none.state.empty());
}

}  // namespace
}  // namespace masktune
