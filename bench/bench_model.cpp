// bench_model: the Llama runtime's speed on this machine. Prefill (dense,
// chunked) and greedy decoding, dense and with masker stacks in every layer,
// on the default model or --model FILE.gguf.
//   bench_model [--model FILE] [--context 2048] [--decode 32]
//   bench_model --compare STACK [--contexts 2048,4096,8000] [--decode 32]
// --compare prints, per context length, dense against one stack's decode
// ms/token (prefill once, then both decodes from it) and their ratio.
// --kv-cache DIR keeps each dense prefill there (safetensors), so a rerun
// skips it.
#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "engine/model/llama.h"

using namespace masktune;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage =
    "usage: bench_model [--model FILE.gguf] [--context 2048] [--decode 32] [--kv-cache DIR]\n"
    "       bench_model --compare STACK [--contexts 2048,4096,8000] [--decode 32] ...\n"
    "The Llama runtime's prefill and decode speed, dense and with masker stacks.\n"
    "--compare: dense against STACK's decode ms/token at each context length (one\n"
    "  prefill per length, both decodes from it) and the ratio. STACK: a masker list\n"
    "  (JSON, or @FILE) or a name: magic_pig (sink 64 + local 64 + magic_pig K8 L75),\n"
    "  oracle_top_k (sink 64 + local 64 + oracle_top_k 0.1), quest.\n"
    "--kv-cache DIR: keep each dense prefill in DIR (reused when the tokens match).\n"
    "--prepare on|off: before a stack decodes, build its key-side state from the\n"
    "  prefill (MagicPIG signs the cached keys; timed apart, 'prepare ms'), as a\n"
    "  runtime does during the prefill; off: the first decoded token does it (default on).\n"
    "--stacks dense,magic_pig,...: only these of the default stacks (dense, oracle_top_k,\n"
    "  quest, magic_pig); --format json: a last line of JSON (prefill tokens/s, decode\n"
    "  ms/token per stack, peak resident MB, weight MB) for bench/vs_llama_cpp.py.\n";

const std::vector<std::pair<std::string, std::string>> kStacks = {
    {"dense", ""},
    {"oracle_top_k",
     R"([{"type":"sink","sink_size":64},{"type":"local","window_size":64},{"type":"oracle_top_k","heavy_size":0.1}])"},
    {"quest",
     R"([{"type":"sink","sink_size":64},{"type":"local","window_size":64},{"type":"quest_top_k","heavy_size":0.1,"page_size":16}])"},
    {"magic_pig",
     R"([{"type":"sink","sink_size":64},{"type":"local","window_size":64},{"type":"magic_pig","lsh_k":8,"lsh_l":75}])"},
};

double Since(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

// CPU seconds of the whole process (all threads): on a busy machine the
// wall clock also counts waiting for a core, this does not.
double CpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Decoded {
  double ms_per_token = 0, cpu_ms_per_token = 0, density = 1;
  double prepare_ms = 0, prepare_cpu_ms = 0;  // Sequence::PrepareAttention, once
  std::vector<int32_t> tokens;
};

// Greedy decoding of `decode` tokens from `seq` (consumed) with `json`'s stack,
// its key-side state first built from the prefill when `prepare` (timed apart).
Result<Decoded> Decode(const MaskerRegistry& registry, const std::string& json, model::Sequence seq,
                       const std::vector<float>& logits, int64_t decode, bool prepare) {
  model::SparseAttention sparse;
  std::optional<MaskerStack> stack;
  if (!json.empty()) {
    MT_ASSIGN_OR_RETURN(auto cfg, registry.ParseJsonList(json, ""));
    MT_ASSIGN_OR_RETURN(MaskerStack built, MaskerStack::Build(registry, cfg));
    stack.emplace(std::move(built));
    sparse.stack = &*stack;
  }
  Decoded d;
  if (prepare && stack) {
    const auto p0 = Clock::now();
    const double pc0 = CpuSeconds();
    MT_RETURN_IF_ERROR(seq.PrepareAttention(sparse));
    d.prepare_ms = 1e3 * Since(p0);
    d.prepare_cpu_ms = 1e3 * (CpuSeconds() - pc0);
  }
  const auto t0 = Clock::now();
  const double c0 = CpuSeconds();
  MT_ASSIGN_OR_RETURN(std::vector<int32_t> out, seq.Generate(logits, decode, {}, &sparse));
  // Generate runs decode - 1 forward passes (the first token comes from `logits`).
  const double passes = static_cast<double>(std::max<size_t>(1, out.size() - 1));
  d.ms_per_token = 1e3 * Since(t0) / passes;
  d.cpu_ms_per_token = 1e3 * (CpuSeconds() - c0) / passes;
  d.density = sparse.mean_density();
  d.tokens = std::move(out);
  return d;
}

// The dense prefill of `prompt`, from `cache_dir` when it holds this one.
Result<std::pair<model::Sequence, std::vector<float>>> Prefill(
    const std::shared_ptr<const model::LlamaModel>& m, const std::vector<int32_t>& prompt,
    int64_t capacity, const std::string& cache_dir, double* tokens_per_s = nullptr) {
  const std::string file = cache_dir.empty() ? ""
                                             : cache_dir + "/bench-prefill-" +
                                                   std::to_string(prompt.size()) + ".safetensors";
  if (!file.empty() && std::filesystem::exists(file)) {
    auto loaded = model::Sequence::Load(m, file, capacity);
    if (loaded.ok() && loaded->first.tokens() == prompt) {
      std::printf("prefill %zu tokens: read from %s\n", prompt.size(), file.c_str());
      return loaded;
    }
    std::fprintf(stderr, "%s: stale or unreadable, prefilling again\n", file.c_str());
  }
  model::Sequence seq(m, capacity);
  const auto t0 = Clock::now();
  MT_ASSIGN_OR_RETURN(std::vector<float> logits, seq.Forward(prompt));
  const double s = Since(t0);
  std::printf("prefill %zu tokens (dense): %.2f s = %.0f tokens/s\n", prompt.size(), s,
              static_cast<double>(prompt.size()) / s);
  if (tokens_per_s) *tokens_per_s = static_cast<double>(prompt.size()) / s;
  if (!file.empty()) {
    std::filesystem::create_directories(cache_dir);
    if (Status st = seq.Save(file, logits); !st.ok())
      std::fprintf(stderr, "kv-cache: %s\n", st.message().c_str());
  }
  return std::pair{std::move(seq), std::move(logits)};
}

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (int rc = masktune::bench::HelpOrArgError(argc, argv, kUsage); rc >= 0) return rc;
  std::string path = "models/SmolLM2-135M-Instruct.Q4_1.gguf", compare, cache_dir, stacks;
  bool json_out = false, prepare = true;
  int64_t context = 2048, decode = 32;
  std::vector<int64_t> contexts = {2048, 4096, 8000};
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string flag = argv[i], value = argv[i + 1];
      if (flag == "--model")
        path = value;
      else if (flag == "--context")
        context = std::stoll(value);
      else if (flag == "--contexts")
        contexts = ParseList(value);
      else if (flag == "--decode")
        decode = std::stoll(value);
      else if (flag == "--compare")
        compare = value;
      else if (flag == "--kv-cache")
        cache_dir = value;
      else if (flag == "--stacks")
        stacks = value;
      else if (flag == "--format" && (value == "text" || value == "json"))
        json_out = value == "json";
      else if (flag == "--prepare" && (value == "on" || value == "off"))
        prepare = value == "on";
      else {
        std::fprintf(stderr, "bench_model: unknown flag %s\n%s", flag.c_str(), kUsage);
        return 2;
      }
    }
  } catch (const std::exception&) {
    std::fprintf(stderr, "bench_model: a number was expected\n%s", kUsage);
    return 2;
  }
  if (decode < 2 || context < 1 || contexts.empty()) {
    std::fprintf(stderr, "bench_model: --decode must be at least 2, lengths positive\n");
    return 2;
  }
  std::string compare_json;
  if (!compare.empty()) {
    for (const auto& [name, json] : kStacks)
      if (compare == name) compare_json = json;
    if (compare_json.empty() && compare[0] == '@') {
      std::ifstream f(compare.substr(1));
      if (!f) {
        std::fprintf(stderr, "bench_model: cannot read %s\n", compare.c_str() + 1);
        return 2;
      }
      compare_json.assign(std::istreambuf_iterator<char>(f), {});
    } else if (compare_json.empty()) {
      compare_json = compare;
    }
  }

  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  if (!compare_json.empty())
    if (auto cfg = registry.ParseJsonList(compare_json, ""); !cfg.ok()) {
      std::fprintf(stderr, "bench_model: --compare: %s\n", cfg.status().message().c_str());
      return 2;
    }
  auto t0 = Clock::now();
  auto model = model::LlamaModel::Load(path);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().message().c_str());
    return 1;
  }
  const auto& c = model.value()->config();
  std::printf("%s: %lld layers, %lld heads (%lld kv), head_dim %lld; load %.2f s\n", path.c_str(),
              (long long)c.layers, (long long)c.heads, (long long)c.kv_heads, (long long)c.head_dim,
              Since(t0));
  // A context of ordinary text, repeated to length.
  const auto sentence = model.value()->tokenizer().Encode(
      "The quick brown fox jumps over the lazy dog while the river runs to the sea. ");
  auto prompt_of = [&](int64_t n) {
    std::vector<int32_t> prompt;
    while (static_cast<int64_t>(prompt.size()) < n)
      prompt.insert(prompt.end(), sentence.begin(), sentence.end());
    prompt.resize(static_cast<size_t>(n));
    return prompt;
  };

  if (!compare_json.empty()) {
    struct Row {
      int64_t context;
      double dense, sparse, dense_cpu, sparse_cpu, density, prepare_cpu;
      bool same;
    };
    std::vector<Row> rows;
    for (int64_t n : contexts) {
      if (n + decode > c.context_length) {
        std::fprintf(stderr, "bench_model: %lld + %lld tokens exceed the model's context %lld\n",
                     (long long)n, (long long)decode, (long long)c.context_length);
        return 2;
      }
      auto pre = Prefill(model.value(), prompt_of(n), n + decode + 1, cache_dir);
      if (!pre.ok()) {
        std::fprintf(stderr, "%s\n", pre.status().message().c_str());
        return 1;
      }
      // Dense decodes from a copy; the stack takes the prefill itself.
      auto dense = Decode(registry, "", pre->first, pre->second, decode, prepare);
      if (!dense.ok()) {
        std::fprintf(stderr, "dense: %s\n", dense.status().message().c_str());
        return 1;
      }
      auto sparse =
          Decode(registry, compare_json, std::move(pre->first), pre->second, decode, prepare);
      if (!sparse.ok()) {
        std::fprintf(stderr, "%s: %s\n", compare.c_str(), sparse.status().message().c_str());
        return 1;
      }
      rows.push_back({n, dense->ms_per_token, sparse->ms_per_token, dense->cpu_ms_per_token,
                      sparse->cpu_ms_per_token, sparse->density, sparse->prepare_cpu_ms,
                      dense->tokens == sparse->tokens});
      std::printf(
          "  context %6lld: dense %7.1f ms/token (cpu %.1f), %s %7.1f ms/token (cpu %.1f, "
          "density %.3f): %.2fx dense; prepare %.0f ms (cpu %.0f)\n",
          (long long)n, dense->ms_per_token, dense->cpu_ms_per_token, compare.c_str(),
          sparse->ms_per_token, sparse->cpu_ms_per_token, sparse->density,
          sparse->ms_per_token / dense->ms_per_token, sparse->prepare_ms, sparse->prepare_cpu_ms);
      std::fflush(stdout);
    }
    std::printf("\n%-8s %14s %14s %8s %10s %10s %9s %8s %11s %s\n", "context", "dense ms/tok",
                "stack ms/tok", "ratio", "dense cpu", "stack cpu", "cpu ratio", "density",
                "prepare cpu", "same tokens");
    for (const Row& r : rows)
      std::printf("%-8lld %14.1f %14.1f %8.2f %10.1f %10.1f %9.2f %8.3f %11.0f %s\n",
                  (long long)r.context, r.dense, r.sparse, r.sparse / r.dense, r.dense_cpu,
                  r.sparse_cpu, r.sparse_cpu / r.dense_cpu, r.density, r.prepare_cpu,
                  r.same ? "yes" : "no");
    return 0;
  }

  double pre_tokens_per_s = 0;  // stays 0 when the prefill comes from --kv-cache
  auto pre = Prefill(model.value(), prompt_of(context), context + decode + 1, cache_dir,
                     &pre_tokens_per_s);
  if (!pre.ok()) {
    std::fprintf(stderr, "%s\n", pre.status().message().c_str());
    return 1;
  }
  std::printf("decode %lld tokens after the context, greedy:\n", (long long)decode);
  std::vector<std::pair<std::string, std::string>> chosen;
  for (const auto& stack : kStacks)
    if (stacks.empty() || ("," + stacks + ",").find("," + stack.first + ",") != std::string::npos)
      chosen.push_back(stack);
  if (chosen.empty()) {
    std::fprintf(stderr, "bench_model: --stacks: none of '%s' is a stack name\n%s", stacks.c_str(),
                 kUsage);
    return 2;
  }
  nlohmann::json report = {
      {"context", context},
      {"decode", decode},
      {"prefill_tokens_per_s", pre_tokens_per_s},
      {"weights_mb", static_cast<double>(model.value()->weight_bytes()) / 1e6}};
  for (size_t i = 0; i < chosen.size(); ++i) {
    const auto& [name, json] = chosen[i];
    // Each run decodes from a copy of the prefill, except the last, which takes it.
    const bool last = i + 1 == chosen.size();
    auto out = last ? Decode(registry, json, std::move(pre->first), pre->second, decode, prepare)
                    : Decode(registry, json, pre->first, pre->second, decode, prepare);
    if (!out.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), out.status().message().c_str());
      return 1;
    }
    std::printf("  %-14s %7.1f ms/token  %6.1f tokens/s  cpu %7.1f ms/token  density %.3f\n",
                name.c_str(), out->ms_per_token, 1e3 / out->ms_per_token, out->cpu_ms_per_token,
                out->density);
    report["stacks"][name] = {{"decode_ms_per_token", out->ms_per_token},
                              {"cpu_ms_per_token", out->cpu_ms_per_token},
                              {"density", out->density},
                              {"prepare_ms", out->prepare_ms}};
    if (name == "dense") report["decode_ms_per_token"] = out->ms_per_token;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  report["max_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
  if (json_out) std::printf("%s\n", report.dump().c_str());
  return 0;
}
