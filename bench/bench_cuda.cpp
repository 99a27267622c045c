// bench_cuda: times the CUDA attention kernels on one decode step (1 query x
// 32 heads x 8 kv heads x head_dim 128, bf16) for batch 1 and 8 and 8K, 32K
// and 128K keys: dense, and masked with 10% and 2% of each row's keys kept
// (random sets, p = 1). Inputs live on the device (no host copies timed);
// each run (chunk kernel + combine) is timed alone with CUDA events after an
// L2 flush; the median of the runs is printed.
//
// Bytes read, counted as the kernels read them: dense reads every key and
// value row once per kv head; the masked kernel gathers each row's kept keys
// once per query row (the heads of a group read their kept keys separately,
// even where the sets overlap), plus 8 bytes of key index and probability per
// entry. Bandwidth is those bytes over the time, also as a share of the
// device's peak. Usage: bench_cuda [--launches 50]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "engine/cuda/cuda_attention.h"

using namespace masktune;

namespace {

double Median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  const size_t n = t.size();
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

// `per_row` distinct random keys per row, sorted, kept with p = 1.
Mask RandomKeptSets(const MaskShape& shape, int64_t per_row, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> all(static_cast<size_t>(shape.keys));
  std::iota(all.begin(), all.end(), 0);
  std::vector<int32_t> indices;
  indices.reserve(static_cast<size_t>(shape.rows() * per_row));
  for (int64_t r = 0; r < shape.rows(); ++r)  // selection sampling keeps the order
    std::sample(all.begin(), all.end(), std::back_inserter(indices), per_row, gen);
  return Mask::FromRowIndices(shape, indices, per_row, 1.0f);
}

}  // namespace

int main(int argc, char** argv) {
  if (int rc = masktune::bench::HelpOrArgError(
          argc, argv,
          "usage: bench_cuda [--launches 50]\n"
          "Times the CUDA attention kernels (dense, 10% and 2% masked) at 8K/32K/128K keys.\n");
      rc >= 0)
    return rc;
  int launches = 50;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--launches") == 0 && i + 1 < argc) {
      launches = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_cuda [--launches N]\n");
      return 2;
    }
  }
  if (!cuda::Available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  const double peak = cuda::PeakBandwidthBytesPerSecond();
  std::printf("device: %s, peak memory bandwidth %.2f TB/s\n", cuda::DeviceName().c_str(),
              peak / 1e12);
  std::printf(
      "decode step: 1 query x 32 heads x 8 kv heads x head_dim 128, bf16; median of %d "
      "runs, L2 flushed before each\n\n",
      launches);
  std::printf("%5s %7s %6s %10s %10s %8s %7s %8s\n", "batch", "keys", "kept", "time_us", "MB_read",
              "TB/s", "%peak", "speedup");

  const cuda::DType dtype = cuda::DType::kBF16;
  const double esize = cuda::DTypeBytes(dtype);
  for (int64_t batch : {1, 8}) {
    for (int64_t keys : {8192, 32768, 131072}) {
      cuda::AttentionDims dims;
      dims.batch = batch;
      dims.heads = 32;
      dims.kv_heads = 8;
      dims.queries = 1;
      dims.keys = keys;
      dims.head_dim = 128;
      dims.scaling = 1.0f / std::sqrt(128.0f);
      auto dev = cuda::DeviceAttention::Random(dims, dtype, 1);
      if (!dev.ok()) {
        std::fprintf(stderr, "bench_cuda: %s\n", dev.status().message().c_str());
        return 1;
      }
      auto report = [&](const char* kept, double seconds, double bytes, double dense_seconds) {
        const double bw = bytes / seconds;
        std::printf("%5lld %7lld %6s %10.1f %10.1f %8.3f %6.1f%% %7.2fx\n",
                    static_cast<long long>(batch), static_cast<long long>(keys), kept,
                    seconds * 1e6, bytes / 1e6, bw / 1e12, peak > 0 ? 100.0 * bw / peak : 0.0,
                    dense_seconds / seconds);
        std::fflush(stdout);
      };
      auto dense = dev->Time(false, launches);
      if (!dense.ok()) {
        std::fprintf(stderr, "bench_cuda: %s\n", dense.status().message().c_str());
        return 1;
      }
      const double dense_s = Median(*dense);
      const double dense_bytes = 2.0 * static_cast<double>(batch * dims.kv_heads * keys) *
                                 static_cast<double>(dims.head_dim) * esize;
      report("100%", dense_s, dense_bytes, dense_s);

      const MaskShape shape{batch, dims.heads, dims.queries, keys};
      for (double density : {0.10, 0.02}) {
        const int64_t per_row = std::max<int64_t>(1, static_cast<int64_t>(density * keys));
        Status st = dev->SetMask(RandomKeptSets(shape, per_row, 7));
        if (!st.ok()) {
          std::fprintf(stderr, "bench_cuda: %s\n", st.message().c_str());
          return 1;
        }
        auto masked = dev->Time(true, launches);
        if (!masked.ok()) {
          std::fprintf(stderr, "bench_cuda: %s\n", masked.status().message().c_str());
          return 1;
        }
        const double entries = static_cast<double>(dev->kept_entries());
        const double bytes = entries * (2.0 * static_cast<double>(dims.head_dim) * esize + 8.0);
        report(density == 0.10 ? "10%" : "2%", Median(*masked), bytes, dense_s);
      }
    }
  }
  return 0;
}
