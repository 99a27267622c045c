// bench_quant: matrix-vector products on quantised weights (engine/model/
// quant.h), per block type and kernel, against OpenBLAS's sgemv on the
// dequantised float32 matrix (what the runtime did before). Two working
// sets: one 1536x576 matrix that stays in cache (compute speed), and a
// stack of them the size of SmolLM2-135M's weights (memory speed, as in
// decoding). One run prints every figure; compare ratios within it.
//   bench_quant [--megabytes 100] [--threads N]
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "engine/model/quant.h"

extern "C" void openblas_set_num_threads(int);

using namespace masktune::model;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kRows = 1536, kCols = 576;

std::vector<uint8_t> RandomMatrix(GgufTensorType type, std::mt19937& rng) {
  std::vector<uint8_t> data(RowBytes(type, kCols) * kRows);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  // Sane scales: every 16-bit half / float becomes a small number.
  const size_t block = BlockBytes(type);
  if (BlockElements(type) == 32) {
    for (size_t off = 0; off < data.size(); off += block) {
      const uint16_t h = 0x2C00;  // 1/16
      std::memcpy(&data[off], &h, 2);
      if (type == GgufTensorType::kQ4_1) std::memcpy(&data[off + 2], &h, 2);
    }
  } else if (type == GgufTensorType::kF16) {
    for (size_t off = 0; off < data.size(); off += 2) data[off + 1] &= 0x3B;
  } else if (type == GgufTensorType::kF32) {
    auto* f = reinterpret_cast<float*>(data.data());
    for (int64_t i = 0; i < kRows * kCols; ++i) f[i] = static_cast<float>(rng() % 1000) / 1000.0f;
  }
  return data;
}

// Seconds per pass over `mats` (each y = W x over all rows, rows split over the threads).
template <typename Fn>
double Time(int64_t passes, Fn&& pass) {
  pass();  // warm up
  const auto t0 = Clock::now();
  for (int64_t p = 0; p < passes; ++p) pass();
  return std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(passes);
}

}  // namespace

int main(int argc, char** argv) {
  if (int rc = masktune::bench::HelpOrArgError(
          argc, argv,
          "usage: bench_quant [--megabytes 100] [--threads N]\n"
          "Matrix-vector products on GGUF block types per kernel (avx512, avx2, scalar)\n"
          "against sgemv on float32: GB/s of weights read, cache-resident and streaming.\n");
      rc >= 0)
    return rc;
  double megabytes = 100;
  int threads = omp_get_max_threads();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--megabytes"))
      megabytes = std::stod(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_quant: unknown option %s (see --help)\n", argv[i]);
      return 2;
    }
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(1);
  std::mt19937 rng(1);
  std::vector<float> x(kCols), y(kRows);
  for (float& v : x) v = static_cast<float>(rng() % 2000) / 1000.0f - 1.0f;
  std::printf("%lld x %lld matrices, %d threads; GB/s of stored weights read (higher is better)\n",
              static_cast<long long>(kRows), static_cast<long long>(kCols), threads);
  std::printf("%-6s %-7s %12s %12s %14s\n", "type", "kernel", "in cache", "streaming",
              "bytes/weight");
  const std::pair<GgufTensorType, const char*> types[] = {
      {GgufTensorType::kQ4_1, "Q4_1"}, {GgufTensorType::kQ4_0, "Q4_0"},
      {GgufTensorType::kQ8_0, "Q8_0"}, {GgufTensorType::kF16, "F16"},
      {GgufTensorType::kBF16, "BF16"}, {GgufTensorType::kF32, "F32"}};
  auto product = [&](const QuantMatrix& w, Kernel k) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < threads; ++t)
      MatVecRows(w, x.data(), y.data(), kRows * t / threads, kRows * (t + 1) / threads, k);
  };
  for (const auto& [type, name] : types) {
    const size_t bytes = RowBytes(type, kCols) * kRows;
    const int64_t count = std::max<int64_t>(1, static_cast<int64_t>(megabytes * 1e6 / bytes));
    std::vector<std::vector<uint8_t>> data;
    std::vector<QuantMatrix> mats;
    for (int64_t i = 0; i < count; ++i) data.push_back(RandomMatrix(type, rng));
    for (auto& d : data)
      mats.push_back(QuantMatrix{type, kRows, kCols, bytes / kRows, d.data(), {}});
    for (Kernel k : {Kernel::kAvx512, Kernel::kAvx2, Kernel::kScalar}) {
      const double hot = Time(400, [&] { product(mats[0], k); });
      const double cold = Time(3, [&] {
        for (const auto& m : mats) product(m, k);
      });
      std::printf("%-6s %-7s %12.2f %12.2f %14.3f\n", name, KernelName(k), bytes / hot / 1e9,
                  static_cast<double>(bytes) * static_cast<double>(count) / cold / 1e9,
                  static_cast<double>(bytes) / (kRows * kCols));
    }
  }
  // The float32 baseline through OpenBLAS (one single-threaded sgemv per slice of rows).
  const int64_t count =
      std::max<int64_t>(1, static_cast<int64_t>(megabytes * 1e6 / (kRows * kCols * 4)));
  std::vector<std::vector<float>> dense(static_cast<size_t>(count),
                                        std::vector<float>(kRows * kCols, 0.5f));
  auto sgemv = [&](const std::vector<float>& w) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int64_t lo = kRows * t / threads, rows = kRows * (t + 1) / threads - lo;
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(rows), kCols, 1.0f,
                  w.data() + lo * kCols, kCols, x.data(), 1, 0.0f, y.data() + lo, 1);
    }
  };
  const double hot = Time(400, [&] { sgemv(dense[0]); });
  const double cold = Time(3, [&] {
    for (const auto& w : dense) sgemv(w);
  });
  const double b = kRows * kCols * 4.0;
  std::printf("%-6s %-7s %12.2f %12.2f %14.3f\n", "F32", "sgemv", b / hot / 1e9,
              b * static_cast<double>(count) / cold / 1e9, 4.0);
  std::printf(
      "(a decoded token reads every weight once: time per token ~ bytes/weight x "
      "weights / streaming GB/s)\n");
  return 0;
}
