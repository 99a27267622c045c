// bench_attention: times masked attention and each masker on one decode step
// (1 query x 32 heads x 8 kv heads x N keys x head_dim 128 by default) and
// prints achieved GB/s beside the machine's copy bandwidth measured in the
// same run (a STREAM-style copy), so the figures read as a share of what the
// memory system can do. Usage:
//   bench_attention [--keys 32768,131072] [--heads 32] [--kv-heads 8]
//                   [--head-dim 128] [--queries 1] [--repeat 7] [--only NAME]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "engine/attention.h"
#include "engine/registry.h"
#include "engine/safetensors.h"
#include "engine/timing.h"

using namespace masktune;

namespace {

// STREAM copy over arrays far larger than the caches: bytes read + written per second.
Timing CopyBandwidth(int repeat) {
  const size_t n = size_t{64} << 20;  // 256 MiB per array
  std::vector<float> a(n, 1.0f), b(n, 0.0f);
  const Timing t = TimeCalls(repeat, [&] {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) b[i] = a[i];
  });
  const double bytes = 2.0 * static_cast<double>(n) * sizeof(float);
  return {bytes / t.median, bytes / t.best};  // bytes per second
}

void Fill(Tensor& t, uint32_t seed) {
  // A fast counter hash instead of a normal generator: gigabytes of input in a second.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < t.size(); ++i) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    t.data()[i] = static_cast<float>(x) * (2.0f / 4294967296.0f) - 1.0f;
  }
}

std::vector<int64_t> ParseList(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    out.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
    if (*p == ',') ++p;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (int rc = masktune::bench::HelpOrArgError(
          argc, argv,
          "usage: bench_attention [--keys 32768,131072] [--heads 32] [--kv-heads 8] [--head-dim "
          "128]\n"
          "                       [--queries 1] [--repeat 7] [--only NAME]\n"
          "Times masked attention and each masker on one decode step; prints GB/s beside the\n"
          "machine's copy bandwidth measured in the same run.\n");
      rc >= 0)
    return rc;
  std::vector<int64_t> key_counts = {32768, 131072};
  int64_t heads = 32, kv_heads = 8, head_dim = 128, queries = 1;
  int repeat = 7;
  std::string only;  // run only rows whose name contains this ("dense": dense attention only)
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--keys")
      key_counts = ParseList(argv[i + 1]);
    else if (f == "--heads")
      heads = std::atoll(argv[i + 1]);
    else if (f == "--kv-heads")
      kv_heads = std::atoll(argv[i + 1]);
    else if (f == "--head-dim")
      head_dim = std::atoll(argv[i + 1]);
    else if (f == "--queries")
      queries = std::atoll(argv[i + 1]);
    else if (f == "--repeat")
      repeat = std::atoi(argv[i + 1]);
    else if (f == "--only")
      only = argv[i + 1];
    else {
      std::fprintf(stderr, "bench_attention: unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  // Bandwidths are compared best against best: on a shared machine the best of
  // several runs is the figure least disturbed by neighbours.
  const Timing copy_bw = CopyBandwidth(repeat);
  std::printf(
      "threads %d, copy bandwidth %.2f GB/s best, %.2f GB/s median "
      "(STREAM copy, read + write, 2 x 256 MiB)\n",
      omp_get_max_threads(), copy_bw.best / 1e9, copy_bw.median / 1e9);

  // Side files for the learned maskers, in a temporary folder.
  const auto dir = std::filesystem::temp_directory_path() / "masktune_bench";
  std::filesystem::create_directories(dir);
  {
    std::ofstream ch(dir / "channels.json");
    ch << "{\"model.layers.0.self_attn.qk_proj\": [";
    for (int64_t h = 0; h < heads; ++h) {
      ch << (h ? "," : "") << "[";
      for (int64_t d = 0; d < head_dim; ++d) ch << (d ? "," : "") << (d * 7 + h) % head_dim;
      ch << "]";
    }
    ch << "]}";
    Tensor w0({heads, head_dim, 32}), w1({heads, 32, 32}), b({heads, 32});
    Fill(w0, 11);
    Fill(w1, 12);
    Fill(b, 13);
    if (!WriteSafetensors((dir / "hat.safetensors").string(), {{"layer0.query_matrix.0", &w0},
                                                               {"layer0.query_bias.0", &b},
                                                               {"layer0.query_matrix.1", &w1},
                                                               {"layer0.query_bias.1", &b},
                                                               {"layer0.key_matrix.0", &w0},
                                                               {"layer0.key_bias.0", &b},
                                                               {"layer0.key_matrix.1", &w1},
                                                               {"layer0.key_bias.1", &b}})
             .ok())
      return 1;
  }
  const std::string d = dir.string() + "/";
  const std::vector<std::pair<std::string, std::string>> stacks = {
      {"sink 128", R"([{"type":"sink","sink_size":128}])"},
      {"local 128", R"([{"type":"local","window_size":128}])"},
      {"oracle_top_k 0.1", R"([{"type":"oracle_top_k","heavy_size":0.1}])"},
      {"oracle_top_p 0.9", R"([{"type":"oracle_top_p","top_p":0.9}])"},
      {"quest_top_k 0.1 page 16", R"([{"type":"quest_top_k","heavy_size":0.1,"page_size":16}])"},
      {"pq_top_k 0.1 sub 8 bits 8",
       R"([{"type":"pq_top_k","heavy_size":0.1,"pq_sub_dim":8,"pq_bits":8}])"},
      {"double_sparsity 0.1 gf 8",
       R"([{"type":"double_sparsity_top_k","heavy_size":0.1,"group_factor":8,"sorted_channel_file":")" +
           d + R"(channels.json"}])"},
      {"hash_attention 0.1 (cached)",
       R"([{"type":"hash_attention_top_k","heavy_size":0.1,"hat_bits":32,"hat_mlp_layers":2,"hat_mlp_hidden_size":32,"hat_mlp_activation":"silu","hat_weight_file":")" +
           d + R"(hat.safetensors"}])"},
      {"sink+local+oracle_top_k 0.1",
       R"([{"type":"sink","sink_size":128},{"type":"local","window_size":128},{"type":"oracle_top_k","heavy_size":0.1}])"},
      {"sink+local+adaptive_sampling",
       R"([{"type":"sink","sink_size":128},{"type":"local","window_size":128},{"type":"adaptive_sampling","base_rate_sampling":0.05,"epsilon":0.25,"delta":0.25,"init_offset":128,"local_offset":128}])"},
      {"sink+local+magic_pig K8 L75",
       R"([{"type":"sink","sink_size":128},{"type":"local","window_size":128},{"type":"magic_pig","lsh_k":8,"lsh_l":75}])"},
      {"sink+local+magic_pig K10 L150",
       R"([{"type":"sink","sink_size":128},{"type":"local","window_size":128},{"type":"magic_pig","lsh_k":10,"lsh_l":150}])"},
  };
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();

  for (int64_t n : key_counts) {
    Tensor q({1, heads, queries, head_dim}), k({1, kv_heads, n, head_dim}), v(k.shape());
    Fill(q, 1);
    Fill(k, 2);
    Fill(v, 3);
    AttentionInputs in;
    in.queries = &q;
    in.keys = &k;
    in.values = &v;
    in.scaling = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const double kv_bytes = 2.0 * static_cast<double>(k.size()) * sizeof(float);
    std::printf(
        "\n%lld queries x %lld heads x %lld kv heads x %lld keys x head_dim %lld "
        "(K+V %.0f MiB), median of %d\n",
        static_cast<long long>(queries), static_cast<long long>(heads),
        static_cast<long long>(kv_heads), static_cast<long long>(n),
        static_cast<long long>(head_dim), kv_bytes / (1 << 20), repeat);
    const Timing dense = TimeCalls(repeat, [&] { (void)DenseAttention(in); });
    const double dense_s = dense.median;
    std::printf("  %-30s %9.2f ms median, %.2f ms best: %.2f GB/s (K+V) = %.1f%% of copy bw\n",
                "dense attention", dense.median * 1e3, dense.best * 1e3,
                kv_bytes / dense.best / 1e9, 100.0 * kv_bytes / dense.best / copy_bw.best);
    std::printf("  %-30s %9s %9s %9s %9s %9s   (medians)\n", "stack", "mask ms", "attn ms",
                "total ms", "x dense", "density");
    for (const auto& [name, json] : stacks) {
      if (name.find(only) == std::string::npos) continue;
      auto configs = registry.ParseJsonList(json, "");
      auto stack = configs.ok() ? MaskerStack::Build(registry, configs.value())
                                : Result<MaskerStack>(configs.status());
      if (!stack.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), stack.status().message().c_str());
        return 1;
      }
      // Signing every key costs seconds at 128K: MagicPIG runs there only when asked for.
      if (name.find("magic_pig") != std::string::npos && n > 32768 &&
          only.find("magic") == std::string::npos)
        continue;
      StackState state;  // kept across calls: cached key-side work, as in decoding
      const auto first = std::chrono::steady_clock::now();
      auto mask = stack->ComputeMask(in, state);
      const double first_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
      if (!mask.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), mask.status().message().c_str());
        return 1;
      }
      const double mask_s = TimeCalls(repeat, [&] { (void)stack->ComputeMask(in, state); }).median;
      const double attn_s =
          TimeCalls(repeat, [&] { (void)MaskedAttention(in, mask.value()); }).median;
      std::printf("  %-30s %9.2f %9.2f %9.2f %9.2f %9.4f", name.c_str(), mask_s * 1e3, attn_s * 1e3,
                  (mask_s + attn_s) * 1e3, (mask_s + attn_s) / dense_s, mask->Density());
      if (first_s > 2 * mask_s + 1e-3)  // key-side work cached by the first call
        std::printf("   first call %.0f ms = %.2f us per key", first_s * 1e3, first_s * 1e6 / n);
      std::printf("\n");
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
