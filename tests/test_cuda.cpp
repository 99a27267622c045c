// The CUDA engine against the CPU engine: dense and masked attention on random
// cases and on every golden case. Without a CUDA device every test here is
// skipped by its decorator (counted as skipped in doctest's summary; the
// reason is printed once), so the suite passes on machines without one.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "engine/attention.h"
#include "engine/cuda/cuda_attention.h"
#include "engine/registry.h"
#include "engine/safetensors.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

using cuda::DType;

// Every test case below is in this suite: skipped, with the reason, when there is no device.
TEST_SUITE_BEGIN("cuda" * doctest::skip(!cuda::Available()) *
                 doctest::description("no CUDA device"));

// max |got - ref| / max |ref| (the max difference when ref is all zeros);
// infinity for a shape mismatch or a NaN.
double RelDiff(const Tensor& got, const Tensor& ref) {
  if (got.shape() != ref.shape()) return std::numeric_limits<double>::infinity();
  double diff = 0.0, scale = 0.0;
  for (int64_t i = 0; i < ref.size(); ++i) {
    const double g = got.data()[i], r = ref.data()[i];
    if (std::isnan(g) || std::isnan(r)) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::fabs(g - r));
    scale = std::max(scale, std::fabs(r));
  }
  return scale > 0.0 ? diff / scale : diff;
}

// x rounded to the nearest value of `dtype` (ties to even), as the upload does.
float RoundTo(float x, DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return x;
    case DType::kF16:
      return static_cast<float>(static_cast<_Float16>(x));
    case DType::kBF16: {
      if (std::isnan(x)) return x;
      uint32_t u;
      std::memcpy(&u, &x, 4);
      u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
      std::memcpy(&x, &u, 4);
      return x;
    }
  }
  return x;
}

// Random inputs whose keys and values sit in a buffer of `cap` >= `keys` rows
// per kv head; the rows past `keys` hold NaN, so reading them would show.
struct GpuCase {
  Tensor q, k, v, mask;
  AttentionInputs in;

  GpuCase(int64_t b, int64_t h, int64_t hkv, int64_t nq, int64_t n, int64_t d, int64_t cap,
          bool causal, uint32_t seed)
      : q(testing::RandomTensor({b, h, nq, d}, seed)),
        k(testing::RandomTensor({b, hkv, cap, d}, seed + 1)),
        v(testing::RandomTensor({b, hkv, cap, d}, seed + 2)) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (Tensor* t : {&k, &v})
      for (int64_t x = 0; x < b * hkv; ++x)
        std::fill(t->data() + (x * cap + n) * d, t->data() + (x + 1) * cap * d, nan);
    if (causal) mask = testing::CausalMask(b, nq, n);
    in.queries = &q;
    in.keys = &k;
    in.values = &v;
    in.attention_mask = causal ? &mask : nullptr;
    in.scaling = 1.0f / std::sqrt(static_cast<float>(d));
    in.used_keys = n;
  }
  GpuCase(const GpuCase&) = delete;

  void Round(DType dtype) {
    for (Tensor* t : {&q, &k, &v})
      for (float& x : t->vec()) x = RoundTo(x, dtype);
  }
};

// Each key kept with probability `density`, with a keep probability in
// (0, 1]. Some rows keep nothing; some keep only the last key, which the
// causal mask hides from every query but the last (those rows output zeros).
Mask RandomSparseMask(const MaskShape& shape, double density, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(shape.rows()));
  std::vector<std::vector<float>> values(rows.size());
  for (int64_t r = 0; r < shape.rows(); ++r) {
    if (r % 11 == 5) continue;
    if (r % 13 == 7) {
      rows[r].push_back(static_cast<int32_t>(shape.keys - 1));
      values[r].push_back(0.5f);
      continue;
    }
    for (int64_t j = 0; j < shape.keys; ++j)
      if (unit(gen) < density) {
        rows[r].push_back(static_cast<int32_t>(j));
        values[r].push_back(1.0f - unit(gen));  // (0, 1]
      }
  }
  return Mask::FromRows(shape, rows, values);
}

// The same kind of mask in the dense form (one float per entry).
Mask RandomDenseFormMask(const MaskShape& shape, double density, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> p(static_cast<size_t>(shape.rows() * shape.keys), 0.0f);
  for (float& x : p)
    if (unit(gen) < density) x = 1.0f - unit(gen);
  return Mask::Dense(shape, std::move(p));
}

struct Dims {
  int64_t b, h, hkv, q, n, d, cap;
  bool causal;
};

TEST_CASE("cuda: dense and masked attention match the CPU engine") {
  const Dims cases[] = {
      {1, 8, 2, 1, 100, 64, 128, false},        // one chunk, used_keys < buffer
      {2, 8, 2, 3, 4097, 128, 4200, true},      // causal, 12 rows per kv head (2 tiles of 8)
      {1, 32, 8, 1, 40000, 128, 40960, false},  // long rows: many chunks
      {2, 32, 8, 3, 4097, 64, 4097, true},
      {1, 8, 2, 3, 40000, 64, 40000, true},
      {2, 32, 8, 1, 100, 128, 100, false},
      {1, 4, 2, 2, 300, 32, 300, true},  // head_dim below the layout's 64
      {1, 2, 1, 1, 25, 8, 25, false},
      {1, 6, 2, 1, 1000, 96, 1024, false},    // 16-byte loads, lanes past 96 idle
      {1, 4, 1, 2, 500, 7, 512, true},        // head_dim 7: element-wise loads
      {1, 8, 8, 1, 3000, 256, 3000, false},   // head_dim 256, no grouping
      {1, 16, 2, 1, 2000, 256, 2100, false},  // group 8
  };
  uint32_t seed = 100;
  for (const Dims& s : cases) {
    CAPTURE(s.b);
    CAPTURE(s.h);
    CAPTURE(s.hkv);
    CAPTURE(s.q);
    CAPTURE(s.n);
    CAPTURE(s.d);
    seed += 10;
    GpuCase c(s.b, s.h, s.hkv, s.q, s.n, s.d, s.cap, s.causal, seed);
    REQUIRE(CheckAttentionInputs(c.in).ok());
    const MaskShape shape = c.in.mask_shape();
    const Mask sparse = RandomSparseMask(shape, 0.1, seed + 3);
    const Mask dense_form = RandomDenseFormMask(shape, 0.5, seed + 4);
    const Mask empty = Mask::Empty(shape), full = Mask::Full(shape);
    const Tensor cpu_dense = DenseAttention(c.in);
    const Tensor cpu_sparse = MaskedAttention(c.in, sparse);
    const Tensor cpu_dense_form = MaskedAttention(c.in, dense_form);

    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      CAPTURE(cuda::DTypeName(dtype));
      // Against the CPU on the float32 inputs: the dtype's rounding shows.
      const double tol = dtype == DType::kF32 ? 1e-4 : 2e-2;
      auto dense = cuda::DenseAttention(c.in, dtype);
      REQUIRE_MESSAGE(dense.ok(), dense.status().message());
      CHECK(RelDiff(*dense, cpu_dense) <= tol);
      for (const Mask* m : {&empty, &full}) {
        auto out = cuda::MaskedAttention(c.in, *m, dtype);
        REQUIRE_MESSAGE(out.ok(), out.status().message());
        CHECK(RelDiff(*out, cpu_dense) <= tol);
      }
      auto out = cuda::MaskedAttention(c.in, sparse, dtype);
      REQUIRE_MESSAGE(out.ok(), out.status().message());
      CHECK(RelDiff(*out, cpu_sparse) <= tol);
      // Rows with no usable key are exact zeros.
      for (int64_t r = 0; r < shape.rows(); ++r) {
        const bool none = r % 11 == 5 || (r % 13 == 7 && s.causal && shape.query_of(r) < s.q - 1);
        if (!none) continue;
        for (int64_t e = 0; e < s.d; ++e) REQUIRE(out->data()[r * s.d + e] == 0.0f);
      }
      auto out_df = cuda::MaskedAttention(c.in, dense_form, dtype);
      REQUIRE_MESSAGE(out_df.ok(), out_df.status().message());
      CHECK(RelDiff(*out_df, cpu_dense_form) <= tol);
    }

    // On inputs already rounded to the dtype, the upload is exact: what is left
    // is float32 summation order, as for float32 inputs.
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      CAPTURE(cuda::DTypeName(dtype));
      GpuCase r(s.b, s.h, s.hkv, s.q, s.n, s.d, s.cap, s.causal, seed);
      r.Round(dtype);
      auto dense = cuda::DenseAttention(r.in, dtype);
      REQUIRE_MESSAGE(dense.ok(), dense.status().message());
      CHECK(RelDiff(*dense, DenseAttention(r.in)) <= 1e-4);
      auto out = cuda::MaskedAttention(r.in, sparse, dtype);
      REQUIRE_MESSAGE(out.ok(), out.status().message());
      CHECK(RelDiff(*out, MaskedAttention(r.in, sparse)) <= 1e-4);
    }
  }
}

TEST_CASE("cuda: masked kernel with every key kept equals the dense kernel") {
  // Device-side random inputs (as the benchmark uses), long rows.
  cuda::AttentionDims dims;
  dims.batch = 2;
  dims.heads = 32;
  dims.kv_heads = 8;
  dims.keys = 33000;
  dims.head_dim = 128;
  dims.scaling = 1.0f / std::sqrt(128.0f);
  const MaskShape shape{dims.batch, dims.heads, dims.queries, dims.keys};
  std::vector<int32_t> all(static_cast<size_t>(shape.rows() * shape.keys));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i % shape.keys);
  const Mask every = Mask::FromRowIndices(shape, all, shape.keys, 1.0f);  // sparse form
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    CAPTURE(cuda::DTypeName(dtype));
    auto dev = cuda::DeviceAttention::Random(dims, dtype, 7);
    REQUIRE_MESSAGE(dev.ok(), dev.status().message());
    REQUIRE(dev->RunDense().ok());
    auto dense = dev->Output();
    REQUIRE(dense.ok());
    REQUIRE(dev->SetMask(every).ok());
    CHECK(dev->kept_entries() == shape.rows() * shape.keys);
    REQUIRE(dev->RunMasked().ok());
    auto masked = dev->Output();
    REQUIRE(masked.ok());
    CHECK(RelDiff(*masked, *dense) <= 1e-5);
    double norm = 0.0;
    for (float x : dense->vec()) norm += static_cast<double>(x) * x;
    CHECK(norm > 0.0);
    CHECK(std::isfinite(norm));
    auto t = dev->Time(true, 3);
    REQUIRE_MESSAGE(t.ok(), t.status().message());
    CHECK(t->size() == 3);
    for (double x : *t) CHECK(x > 0.0);
  }
}

TEST_CASE("cuda: bad inputs are errors") {
  GpuCase wide(1, 2, 1, 1, 10, 300, 10, false, 1);
  auto r = cuda::DenseAttention(wide.in);
  CHECK_FALSE(r.ok());
  GpuCase c(1, 2, 1, 1, 10, 8, 10, false, 2);
  auto m = cuda::MaskedAttention(c.in, Mask::Full({1, 2, 1, 11}));
  CHECK_FALSE(m.ok());
  auto dev = cuda::DeviceAttention::Upload(c.in, DType::kF32);
  REQUIRE(dev.ok());
  CHECK_FALSE(dev->RunMasked().ok());  // no mask set
}

std::string GoldenDir() {
  const char* env = std::getenv("MASKTUNE_GOLDEN_DIR");
  return env ? env : MASKTUNE_GOLDEN_DIR;
}

TEST_CASE("cuda: golden cases match the CPU engine and the reference") {
  using json = nlohmann::json;
  const std::string dir = GoldenDir();
  std::ifstream manifest_file(dir + "/manifest.json");
  REQUIRE_MESSAGE(manifest_file.good(), "golden cases missing: no " << dir << "/manifest.json");
  const json manifest = json::parse(manifest_file);
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  int checked = 0;
  for (const json& entry : manifest) {
    const std::string name = entry["name"].get<std::string>();
    CAPTURE(name);
    auto file = SafetensorsFile::Read(dir + "/" + entry["file"].get<std::string>());
    REQUIRE_MESSAGE(file.ok(), file.status().message());
    const json meta = json::parse(file->metadata().at("case"));
    bool covered = true;
    for (const json& m : meta["maskers"]) covered &= registry.Find(m["type"]) != nullptr;
    if (!covered) continue;
    testing::GoldenCall call = testing::BuildGoldenCall(*file, meta, registry, dir);
    REQUIRE_MESSAGE(call.mask.ok(), call.mask.status().message());
    const AttentionInputs& in = call.in;
    auto& mask = call.mask;

    auto gpu = cuda::MaskedAttention(in, mask.value());
    REQUIRE_MESSAGE(gpu.ok(), gpu.status().message());
    CHECK(RelDiff(*gpu, MaskedAttention(in, mask.value())) <= 1e-4);
    auto gpu_dense = cuda::DenseAttention(in);
    REQUIRE_MESSAGE(gpu_dense.ok(), gpu_dense.status().message());
    CHECK(testing::MaxAbsDiff(*gpu_dense, *file->Get("dense_out").value()) <= 1e-4f);
    // The reference's own mask reproduces the reference's output.
    const Tensor& em = *file->Get("expected_mask").value();
    auto gpu_ref = cuda::MaskedAttention(in, Mask::Dense(in.mask_shape(), em.vec()));
    REQUIRE_MESSAGE(gpu_ref.ok(), gpu_ref.status().message());
    CHECK(testing::MaxAbsDiff(*gpu_ref, *file->Get("expected_out").value()) <= 1e-4f);
    ++checked;
  }
  MESSAGE("cuda golden: " << checked << " cases checked");
  CHECK(checked >= 47);
}

TEST_SUITE_END();

}  // namespace
}  // namespace masktune
