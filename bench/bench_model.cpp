// bench_model: the Llama runtime's speed on this machine. Prefill (dense,
// chunked) and greedy decoding, dense and with masker stacks in every layer,
// on the default model or --model FILE.gguf.
//   bench_model [--model FILE] [--context 2048] [--decode 32]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "engine/model/llama.h"

using namespace masktune;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (int rc = masktune::bench::HelpOrArgError(
          argc, argv,
          "usage: bench_model [--model FILE.gguf] [--context 2048] [--decode 32]\n"
          "The Llama runtime's prefill and decode speed, dense and with masker stacks.\n");
      rc >= 0)
    return rc;
  std::string path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  int64_t context = 2048, decode = 32;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model"))
      path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--context"))
      context = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--decode"))
      decode = std::stoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: bench_model [--model FILE] [--context N] [--decode N]\n");
      return 2;
    }
  }
  auto t0 = Clock::now();
  auto model = model::LlamaModel::Load(path);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().message().c_str());
    return 1;
  }
  auto secs = [](Clock::time_point a) {
    return std::chrono::duration<double>(Clock::now() - a).count();
  };
  const auto& c = model.value()->config();
  std::printf("%s: %lld layers, %lld heads (%lld kv), head_dim %lld; load + dequantise %.2f s\n",
              path.c_str(), (long long)c.layers, (long long)c.heads, (long long)c.kv_heads,
              (long long)c.head_dim, secs(t0));
  // A context of ordinary text, repeated to length.
  const auto sentence = model.value()->tokenizer().Encode(
      "The quick brown fox jumps over the lazy dog while the river runs to the sea. ");
  std::vector<int32_t> prompt;
  while (static_cast<int64_t>(prompt.size()) < context)
    prompt.insert(prompt.end(), sentence.begin(), sentence.end());
  prompt.resize(static_cast<size_t>(context));

  model::Sequence base(model.value(), context + decode + 1);
  t0 = Clock::now();
  auto logits = base.Forward(prompt);
  if (!logits.ok()) return 1;
  const double prefill = secs(t0);
  std::printf("prefill %lld tokens (dense): %.2f s = %.0f tokens/s\n", (long long)context, prefill,
              static_cast<double>(context) / prefill);

  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  const std::vector<std::pair<std::string, std::string>> stacks = {
      {"dense", ""},
      {"sink+local+oracle_top_k 0.1",
       R"([{"type":"sink","sink_size":64},{"type":"local","window_size":64},{"type":"oracle_top_k","heavy_size":0.1}])"},
      {"sink+local+quest 0.1",
       R"([{"type":"sink","sink_size":64},{"type":"local","window_size":64},{"type":"quest_top_k","heavy_size":0.1,"page_size":16}])"},
      {"sink+local+magic_pig K8 L75",
       R"([{"type":"sink","sink_size":64},{"type":"local","window_size":64},{"type":"magic_pig","lsh_k":8,"lsh_l":75}])"},
  };
  std::printf("decode %lld tokens after the context, greedy:\n", (long long)decode);
  for (const auto& [name, json] : stacks) {
    model::SparseAttention sparse;
    std::optional<MaskerStack> stack;
    if (!json.empty()) {
      auto cfg = registry.ParseJsonList(json, "");
      auto built = MaskerStack::Build(registry, cfg.value());
      stack.emplace(std::move(built).value());
      sparse.stack = &*stack;
    }
    model::Sequence seq = base;
    t0 = Clock::now();
    auto out = seq.Generate(logits.value(), decode, {}, &sparse);
    const double s = secs(t0);
    if (!out.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), out.status().message().c_str());
      return 1;
    }
    std::printf("  %-30s %7.1f ms/token  %6.1f tokens/s  density %.3f\n", name.c_str(),
                1e3 * s / static_cast<double>(out->size()), static_cast<double>(out->size()) / s,
                sparse.mean_density());
  }
  return 0;
}
