// masktune capture: real attention for the attention_error benchmark. Runs a
// Llama-family model (engine/model) on RULER needle tasks: a dense prefill of
// the templated prompt (context + question), then one decode step, the first
// generated token, during which each selected layer's attention inputs are
// copied out: the step's queries, the keys and values in use, the scaling.
// One safetensors file per sample and layer, in the form attention_error's
// folder mode and `masktune attend --input` read.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "engine/benchmarks/ruler_niah.h"
#include "engine/benchmarks/ruler_tasks.h"
#include "engine/model/llama.h"
#include "engine/safetensors.h"

namespace masktune::cli {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct CaptureOptions {
  std::string model, task = "niah_single_1", layers = "0,8,16", out;
  int64_t length = 2048, samples = 1, seed = 0;
};

int Fail(const std::string& message, int code = kExitBadInput) {
  std::fprintf(stderr, "masktune capture: %s\n", message.c_str());
  return code;
}

// "all" or comma-separated layer numbers, each below `layers`.
Result<std::set<int>> ParseLayers(const std::string& text, int64_t layers) {
  std::set<int> out;
  if (text == "all") {
    for (int64_t l = 0; l < layers; ++l) out.insert(static_cast<int>(l));
    return out;
  }
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0)
      return Status::Error("--layers: expected 'all' or layer numbers like 0,8,16, found '" + item +
                           "'");
    if (v >= layers)
      return Status::Error("--layers: layer " + item + " does not exist (the model has " +
                           std::to_string(layers) + " layers)");
    out.insert(static_cast<int>(v));
  }
  if (out.empty()) return Status::Error("--layers: expected 'all' or layer numbers like 0,8,16");
  return out;
}

// Copy of the first `used` rows of each head of a [1, heads, capacity, D] buffer.
Tensor UsedRows(const Tensor& t, int64_t used) {
  const int64_t heads = t.dim(1), cap = t.dim(2), D = t.dim(3);
  Tensor out({1, heads, used, D});
  for (int64_t h = 0; h < heads; ++h)
    std::copy_n(t.data() + h * cap * D, used * D, out.data() + h * used * D);
  return out;
}

std::string Padded(int64_t value, int64_t largest) {
  const int width = std::max<int>(2, static_cast<int>(std::to_string(largest).size()));
  std::string s = std::to_string(value);
  return std::string(static_cast<size_t>(std::max<int>(0, width - static_cast<int>(s.size()))),
                     '0') +
         s;
}

int RunCapture(const CaptureOptions& o) {
  if (Status s = ruler::FindTask(o.task).status(); !s.ok()) return Fail("--task: " + s.message());
  const std::string path = o.model.empty() ? DefaultModelPath() : o.model;
  if (!std::filesystem::exists(path))
    return Fail("--model: no model file '" + path +
                "' (scripts/fetch_model.sh fetches the default one)");
  auto model_or = SharedModel(path);
  if (!model_or.ok()) return Fail("--model: " + model_or.status().message());
  const auto& model = model_or.value();
  const model::LlamaConfig& c = model->config();
  auto layers = ParseLayers(o.layers, c.layers);
  if (!layers.ok()) return Fail(layers.status().message());
  if (o.length + 1 > c.context_length)
    return Fail("--length " + std::to_string(o.length) + " (plus the decoded token) is beyond " +
                "the model's context of " + std::to_string(c.context_length) + " tokens");
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec || !std::filesystem::is_directory(o.out))
    return Fail("--out '" + o.out + "': " + (ec ? ec.message() : "not a folder"), kExitFailure);

  const auto start = Clock::now();
  int64_t files = 0;
  uintmax_t bytes = 0;
  for (int64_t i = 0; i < o.samples; ++i) {
    auto prompt = BuildRulerPrompt(model->tokenizer(), o.task, o.length, o.seed, i);
    if (!prompt.ok()) return Fail(prompt.status().message());
    std::vector<int32_t> tokens = prompt->context;
    tokens.insert(tokens.end(), prompt->question.begin(), prompt->question.end());
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n + 1 > c.context_length)
      return Fail("--length " + std::to_string(o.length) + ": the prompt of sample " +
                  std::to_string(i) + " is " + std::to_string(n) +
                  " tokens, beyond the model's context of " + std::to_string(c.context_length));
    model::Sequence seq(model, n + 1);
    auto logits = seq.Forward(tokens);  // dense prefill
    if (!logits.ok())
      return Fail("sample " + std::to_string(i) + ": " + logits.status().message(), kExitFailure);
    Status written = Status::Ok();
    model::SparseAttention observer;  // dense, observed
    observer.observe = [&](int layer, const AttentionInputs& in) {
      if (!layers->count(layer) || !written.ok()) return;
      const Tensor q = *in.queries;
      const Tensor k = UsedRows(*in.keys, in.num_keys()), v = UsedRows(*in.values, in.num_keys());
      const json meta = {
          {"scaling", in.scaling},
          {"readme",
           "masktune capture: queries of the first decode step after a dense prefill "
           "of a RULER prompt; k, v: the KV cache in use (keys 0..position)"},
          {"model", std::filesystem::path(path).filename().string()},
          {"task", o.task},
          {"sample", i},
          {"seed", o.seed},
          {"layer", layer},
          {"length", o.length},
          {"prompt_tokens", n},
          {"position", n}};
      const std::string file =
          (std::filesystem::path(o.out) / (o.task + "-s" + Padded(i, o.samples - 1) + "-l" +
                                           Padded(layer, c.layers - 1) + ".safetensors"))
              .string();
      written = WriteSafetensors(file, {{"q", &q}, {"k", &k}, {"v", &v}}, {{"case", meta.dump()}});
      if (written.ok()) {
        ++files;
        bytes += std::filesystem::file_size(file, ec);
      }
    };
    const int32_t next[1] = {model::ArgMax(logits.value())};
    auto step = seq.Forward(next, &observer);  // the first generated token
    if (!step.ok())
      return Fail("sample " + std::to_string(i) + ": " + step.status().message(), kExitFailure);
    if (!written.ok()) return Fail(written.message(), kExitFailure);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%s\n",
              json({{"files", files}, {"bytes", bytes}, {"seconds", seconds}, {"out", o.out}})
                  .dump()
                  .c_str());
  return kExitOk;
}

}  // namespace

Action AddCaptureCommand(CLI::App& app) {
  auto o = std::make_shared<CaptureOptions>();
  CLI::App* cmd = app.add_subcommand(
      "capture",
      "Run a real model on RULER needle tasks and write each selected layer's attention\n"
      "inputs of the first decode step (q, k, v) as safetensors, for attention_error's\n"
      "folder mode and `masktune attend --input`.");
  cmd->add_option(
      "--model", o->model,
      "a Llama-family GGUF file (default: $MASKTUNE_MODEL, else the SmolLM2 model setup fetched)");
  cmd->add_option("--task", o->task,
                  "one task: niah_single_1..3, niah_multikey_1..3, niah_multivalue, "
                  "niah_multiquery (default niah_single_1)");
  cmd->add_option("--length", o->length, "context tokens per sample (default 2048)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--samples", o->samples, "samples (default 1)")->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", o->seed, "the samples' seed (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--layers", o->layers, "layers to capture: 0,8,16 (default) or all");
  cmd->add_option("--out", o->out, "folder to write into (created if missing)")->required();
  cmd->footer(
      "Writes OUT/TASK-sSAMPLE-lLAYER.safetensors (numbers zero-padded, so names sort), F32:\n"
      "  q [1, heads, 1, head_dim]      the first decoded token's queries (after RoPE)\n"
      "  k, v [1, kv_heads, keys, head_dim]   the KV cache in use, keys = prompt tokens + 1\n"
      "and metadata 'case': {\"scaling\", \"readme\", \"model\", \"task\", \"sample\", \"seed\",\n"
      "\"layer\", \"length\", \"prompt_tokens\", \"position\"}. No attention_mask: one decode "
      "query\n"
      "sees every key. Then prints one JSON line {\"files\", \"bytes\", \"seconds\", \"out\"}.\n"
      "Example:\n"
      "  masktune capture --task niah_single_1 --length 2048 --samples 2 --layers 0,8,16 \\\n"
      "    --out captured/\n"
      "  masktune attend --input captured/niah_single_1-s00-l08.safetensors --maskers '[]'\n"
      "Exit codes: 0 done; 2 bad input (unknown task, bad --layers, a length beyond the\n"
      "model's context, no model file); 1 a runtime failure (the model, writing files).");
  return [o] { return RunCapture(*o); };
}

}  // namespace masktune::cli
