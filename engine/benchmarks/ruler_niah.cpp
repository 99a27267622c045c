// ruler_niah: a Llama-family model (engine/model) on RULER needle-in-a-
// haystack tasks (engine/benchmarks/ruler_tasks.h), with a trial's masker
// stack in every attention layer but `dense_layers`.
//
// Each sample's prompt is the model's chat template around
//   user: {context}\n{question}     assistant: {answer prefix}
// split in two: the context part (template start + context) and the
// question part (the rest). Setup B runs the context densely and the
// question and the answer with the stack; setup A runs the whole prompt
// densely and only the answer with the stack. The dense part does not depend
// on the trial: it is computed once per worker, kept in memory, and copied
// (a Sequence is a value) into each trial.
#include "engine/benchmarks/ruler_niah.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>

#include "engine/benchmarks/benchmark.h"
#include "engine/benchmarks/ruler_tasks.h"
#include "engine/model/llama.h"

namespace masktune {
namespace {

using model::LlamaModel;
using model::Sequence;
using model::SparseAttention;
using Clock = std::chrono::steady_clock;

struct PreparedSample {
  std::string task;
  std::vector<std::string> expected;
  std::vector<int32_t> question;  // tokens run per trial (setup B); empty in setup A
  // The dense part, processed, in memory when there is no prefill cache.
  // With one, only its file is kept (a 4096-token prefix of SmolLM2 is 190 MB:
  // 8 tasks x 20 samples in memory would not fit) and each trial reads it back
  // and runs `dense_question` (setup A's question) densely on top.
  std::optional<Sequence> prefix;
  std::vector<float> logits;  // after the prefix (with `prefix` only)
  std::string file;
  std::vector<int32_t> context, dense_question;
  int64_t capacity = 0;
};

Result<std::pair<Sequence, std::vector<float>>> DensePrefix(
    const std::shared_ptr<const LlamaModel>& model, const std::vector<int32_t>& tokens,
    int64_t capacity, const std::string& cache_dir, const std::string& name);

class RulerNiahBenchmark : public Benchmark {
 public:
  RulerNiahBenchmark(std::shared_ptr<const LlamaModel> model, std::vector<std::string> tasks,
                     std::vector<PreparedSample> samples, std::set<int> dense_layers,
                     int64_t max_new, std::function<void(const RulerProgress&)> progress)
      : model_(std::move(model)),
        tasks_(std::move(tasks)),
        samples_(std::move(samples)),
        dense_layers_(std::move(dense_layers)),
        max_new_(max_new),
        progress_(std::move(progress)) {}

  Result<Metrics> Run(const MaskerRegistry& registry,
                      const std::vector<MaskerConfig>& configs) override {
    return RunSteps(registry, configs, {});
  }
  int64_t Steps() const override { return static_cast<int64_t>(samples_.size()); }

  // Samples run with the tasks interleaved (sample 0 of every task, then
  // sample 1, ...), so that the metrics after each step, which a scheduler
  // reads, cover every task early; each sample is independent of the order.
  Result<Metrics> RunSteps(const MaskerRegistry& registry, const std::vector<MaskerConfig>& configs,
                           const StepCallback& on_step) override {
    MT_ASSIGN_OR_RETURN(MaskerStack stack, MaskerStack::Build(registry, configs));
    struct TaskSums {
      double score = 0, density = 0, seconds = 0;
      int64_t n = 0, tokens = 0;
    };
    std::map<std::string, TaskSums> sums;
    const size_t per_task = samples_.size() / std::max<size_t>(1, tasks_.size());
    std::vector<size_t> order;
    for (size_t i = 0; i < per_task; ++i)
      for (size_t t = 0; t < tasks_.size(); ++t) order.push_back(t * per_task + i);
    for (size_t step = 0; step < order.size(); ++step) {
      const PreparedSample& s = samples_[order[step]];
      std::optional<Sequence> loaded;
      std::vector<float> logits = s.logits;
      if (!s.prefix) {
        const std::filesystem::path file(s.file);
        MT_ASSIGN_OR_RETURN(auto pre,
                            DensePrefix(model_, s.context, s.capacity, file.parent_path().string(),
                                        file.filename().string()));
        loaded.emplace(std::move(pre.first));
        logits = std::move(pre.second);
        if (!s.dense_question.empty()) {
          MT_ASSIGN_OR_RETURN(logits, loaded->Forward(s.dense_question));
        }
      }
      Sequence seq = s.prefix ? *s.prefix : std::move(*loaded);  // a copy of the shared prefix
      SparseAttention attention;
      attention.stack = &stack;
      attention.dense_layers = dense_layers_;
      const auto start = Clock::now();
      if (!s.question.empty()) {
        MT_ASSIGN_OR_RETURN(logits, seq.Forward(s.question, &attention));
      }
      MT_ASSIGN_OR_RETURN(
          std::vector<int32_t> answer,
          seq.Generate(std::move(logits), max_new_, model_->tokenizer().stop_tokens(), &attention));
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      const auto& stop = model_->tokenizer().stop_tokens();
      if (!answer.empty() && std::find(stop.begin(), stop.end(), answer.back()) != stop.end())
        answer.pop_back();
      TaskSums& t = sums[s.task];
      const double score = ruler::Score(model_->tokenizer().Decode(answer), s.expected);
      t.score += score;
      if (progress_)
        progress_({"sample", s.task, static_cast<int64_t>(step) + 1,
                   static_cast<int64_t>(samples_.size()), score >= 1.0});
      t.density += attention.mean_density();
      t.seconds += seconds;
      t.tokens += static_cast<int64_t>(s.question.size() + answer.size());
      ++t.n;
      if (on_step && step + 1 < order.size() &&
          !on_step(static_cast<int64_t>(step) + 1, Summarize(sums)))
        return Summarize(sums);
    }
    Metrics m = Summarize(sums);
    if (on_step) (void)on_step(static_cast<int64_t>(order.size()), m);
    return m;
  }

 private:
  // The metrics of the samples run so far (tasks without any yet left out).
  template <class Sums>
  Metrics Summarize(const std::map<std::string, Sums>& sums) const {
    Metrics m;
    double accuracy = 0, density = 0, seconds = 0, tokens = 0, n = 0;
    for (const auto& task : tasks_) {
      auto it = sums.find(task);
      if (it == sums.end() || it->second.n == 0) continue;
      const Sums& t = it->second;
      n += 1;
      m[task + ".accuracy"] = t.score / static_cast<double>(t.n);
      m[task + ".density"] = t.density / static_cast<double>(t.n);
      m[task + ".tokens_per_second"] = static_cast<double>(t.tokens) / t.seconds;
      accuracy += m[task + ".accuracy"];
      density += m[task + ".density"];
      seconds += t.seconds;
      tokens += static_cast<double>(t.tokens);
    }
    m["accuracy"] = accuracy / n;
    m["error"] = 1.0 - accuracy / n;  // so the reference objectives (default, sparsity_N) apply
    m["density"] = density / n;
    m["tokens_per_second"] = tokens / seconds;
    return m;
  }

  std::shared_ptr<const LlamaModel> model_;
  std::vector<std::string> tasks_;
  std::vector<PreparedSample> samples_;
  std::set<int> dense_layers_;
  int64_t max_new_;
  std::function<void(const RulerProgress&)> progress_;
};

// The file name of a sample's dense prefix in the prefill cache: readable
// parts, then a hash of everything the prefix depends on (model file and
// size, the prompt's tokens).
std::string CacheName(const std::string& model_path, const std::string& task, int64_t tokens,
                      uint64_t seed, int64_t index, const std::vector<int32_t>& prompt) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  };
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(model_path, ec);
  mix(model_path.data(), model_path.size());
  mix(&size, sizeof size);
  mix(prompt.data(), prompt.size() * sizeof(int32_t));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return task + "-" + std::to_string(tokens) + "-s" + std::to_string(seed) + "-" +
         std::to_string(index) + "-" + hex + ".safetensors";
}

// The dense prefix of a sample: read from the prefill cache when it holds
// it, else computed (and written there, atomically, when there is a cache).
Result<std::pair<Sequence, std::vector<float>>> DensePrefix(
    const std::shared_ptr<const LlamaModel>& model, const std::vector<int32_t>& tokens,
    int64_t capacity, const std::string& cache_dir, const std::string& name) {
  const std::string file = cache_dir.empty() ? "" : cache_dir + "/" + name;
  if (!file.empty() && std::filesystem::exists(file)) {
    auto loaded = Sequence::Load(model, file, capacity);
    if (loaded.ok() && loaded->first.tokens() == tokens) return loaded;
    std::fprintf(
        stderr, "ruler_niah: ignoring prefill cache file %s: %s\n", file.c_str(),
        loaded.ok() ? "its tokens differ from the prompt's" : loaded.status().message().c_str());
  }
  Sequence seq(model, capacity);
  MT_ASSIGN_OR_RETURN(std::vector<float> logits, seq.Forward(tokens));
  if (!file.empty()) {
    const std::string tmp = file + ".tmp" + std::to_string(::getpid());
    MT_RETURN_IF_ERROR(seq.Save(tmp, logits));
    std::error_code ec;
    std::filesystem::rename(tmp, file, ec);
    if (ec) return Status::Error("ruler_niah: prefill cache " + file + ": " + ec.message());
  }
  return std::pair{std::move(seq), std::move(logits)};
}

}  // namespace

std::string DefaultModelPath() {
  constexpr const char* kDefaultModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (const char* env = std::getenv("MASKTUNE_MODEL"); env && *env) return env;
  if (std::filesystem::exists(kDefaultModel)) return kDefaultModel;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = exe.parent_path().parent_path() / kDefaultModel;
    if (std::filesystem::exists(beside)) return beside.string();
  }
  return kDefaultModel;
}

Result<std::shared_ptr<const LlamaModel>> SharedModel(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const LlamaModel>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  if (auto m = loaded[path].lock()) return m;
  if (!std::filesystem::exists(path))
    return Status::Error("ruler_niah: no model file '" + path +
                         "' (scripts/fetch_model.sh fetches the default one)");
  MT_ASSIGN_OR_RETURN(auto m, LlamaModel::Load(path));
  loaded[path] = m;
  return m;
}

Result<RulerPrompt> BuildRulerPrompt(const model::Tokenizer& tok, const std::string& task,
                                     int64_t context_tokens, uint64_t seed, int64_t index) {
  const ruler::TokenCounter count = [&](const std::string& text) {
    return static_cast<int64_t>(tok.Encode(text, false).size());
  };
  MT_ASSIGN_OR_RETURN(ruler::Sample s, ruler::Generate(task, context_tokens, seed, index, count));
  // Split the templated prompt at the end of the context.
  const std::string prompt =
      tok.ApplyChatTemplate({{"user", s.context + "\n" + s.question}}, true) + s.answer_prefix;
  const size_t cut = prompt.find(s.context) + s.context.size();
  return RulerPrompt{tok.Encode(prompt.substr(0, cut)), tok.Encode(prompt.substr(cut)),
                     std::move(s.expected)};
}

Result<std::unique_ptr<Benchmark>> CreateRulerNiahBenchmark(
    const nlohmann::json& spec, std::function<void(const RulerProgress&)> progress) {
  const std::string path = spec.value("model", std::string()).empty()
                               ? DefaultModelPath()
                               : spec["model"].get<std::string>();
  MT_ASSIGN_OR_RETURN(auto model, SharedModel(path));
  const auto tasks = spec.value("tasks", std::vector<std::string>{"niah_single_1"});
  const int64_t context_tokens = spec.value("context_tokens", int64_t{2048});
  const int64_t samples = spec.value("samples", int64_t{4});
  const uint64_t seed = spec.value("seed", uint64_t{0});
  const bool setup_a = spec.value("setup", std::string("B")) == "A";
  const int64_t max_new = spec.value("max_new_tokens", int64_t{32});
  if (context_tokens < 1 || context_tokens + max_new > model->config().context_length)
    return Status::Error("ruler_niah: context_tokens " + std::to_string(context_tokens) +
                         " (plus " + std::to_string(max_new) +
                         " new tokens) is beyond the model's context of " +
                         std::to_string(model->config().context_length) + " tokens");
  for (const auto& task : tasks)
    MT_RETURN_IF_ERROR(ruler::FindTask(task).status().WithContext("ruler_niah: "));
  std::set<int> dense_layers;
  for (int64_t l : spec.value("dense_layers", std::vector<int64_t>{})) {
    if (l >= model->config().layers)
      return Status::Error("ruler_niah: dense_layers: layer " + std::to_string(l) +
                           " does not exist (the model has " +
                           std::to_string(model->config().layers) + " layers)");
    dense_layers.insert(static_cast<int>(l));
  }
  const std::string cache_dir = spec.value("prefill_cache", std::string());
  if (!cache_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(cache_dir, ec);
    if (ec) return Status::Error("ruler_niah: prefill_cache '" + cache_dir + "': " + ec.message());
  }
  const model::Tokenizer& tok = model->tokenizer();

  std::vector<PreparedSample> prepared;
  for (const auto& task : tasks)
    for (int64_t i = 0; i < samples; ++i) {
      MT_ASSIGN_OR_RETURN(RulerPrompt p, BuildRulerPrompt(tok, task, context_tokens, seed, i));
      std::vector<int32_t> context = std::move(p.context), question = std::move(p.question);
      const int64_t capacity = static_cast<int64_t>(context.size() + question.size()) + max_new + 1;
      // Both setups start from the dense context (one cache file serves both);
      // setup A runs the question densely on top of it.
      const std::string name = CacheName(path, task, context_tokens, seed, i, context);
      PreparedSample sample{task,    std::move(p.expected), {}, std::nullopt, {}, {}, {}, {},
                            capacity};
      if (setup_a) {
        sample.dense_question = std::move(question);
        question.clear();
      }
      sample.question = std::move(question);
      if (cache_dir.empty()) {
        MT_ASSIGN_OR_RETURN(auto prefix, DensePrefix(model, context, capacity, "", name));
        if (setup_a) {
          MT_ASSIGN_OR_RETURN(prefix.second, prefix.first.Forward(sample.dense_question));
        }
        sample.prefix.emplace(std::move(prefix.first));
        sample.logits = std::move(prefix.second);
      } else {
        // Computed and written now when absent; a present file is read (and
        // checked against the tokens) by each trial, not here as well.
        sample.file = cache_dir + "/" + name;
        if (!std::filesystem::exists(sample.file)) {
          MT_RETURN_IF_ERROR(DensePrefix(model, context, capacity, cache_dir, name).status());
        }
        sample.context = std::move(context);
      }
      prepared.push_back(std::move(sample));
      if (progress)
        progress({"prefill", task, static_cast<int64_t>(prepared.size()),
                  static_cast<int64_t>(tasks.size()) * samples, false});
    }
  return std::unique_ptr<Benchmark>(
      new RulerNiahBenchmark(std::move(model), tasks, std::move(prepared), std::move(dense_layers),
                             max_new, std::move(progress)));
}

}  // namespace masktune
