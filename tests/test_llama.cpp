// The Llama runtime against an independent implementation: Hugging Face
// transformers loading the same GGUF (tools/make_model_reference.py wrote
// tests/data/smollm2_reference.json): logits of the last prompt position and
// greedy tokens. Skips, saying so, when the model file is absent.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/benchmarks/benchmark.h"
#include "engine/benchmarks/ruler_niah.h"
#include "engine/model/llama.h"
#include "engine/safetensors.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune::model {
namespace {

struct Reference {
  nlohmann::json json;
  std::shared_ptr<const LlamaModel> model;
};

// The reference and the model, loaded once for every test here; null model when absent.
const Reference& Ref() {
  static Reference r = [] {
    Reference out;
    std::ifstream in(MASKTUNE_SOURCE_DIR "/tests/data/smollm2_reference.json");
    out.json = nlohmann::json::parse(in);
    const std::string path =
        MASKTUNE_SOURCE_DIR "/models/" + out.json["model_file"].get<std::string>();
    if (std::filesystem::exists(path)) {
      auto m = LlamaModel::Load(path);
      if (m.ok())
        out.model = m.value();
      else
        MESSAGE(m.status().message());
    }
    return out;
  }();
  return r;
}

#define REQUIRE_MODEL()                                                              \
  if (!Ref().model) {                                                                \
    MESSAGE("skipped: no models/SmolLM2-135M-Instruct.Q4_1.gguf (make fetches it)"); \
    return;                                                                          \
  }

TEST_CASE("llama: SmolLM2's configuration is read from the GGUF") {
  REQUIRE_MODEL();
  const LlamaConfig& c = Ref().model->config();
  CHECK(c.layers == 30);
  CHECK(c.embedding == 576);
  CHECK(c.heads == 9);
  CHECK(c.kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.feed_forward == 1536);
  CHECK(c.vocab == 49152);
  CHECK(c.rope_base == 100000.0f);
  CHECK(c.rms_epsilon == doctest::Approx(1e-5));
}

TEST_CASE("llama: logits and greedy tokens match transformers on the same GGUF") {
  REQUIRE_MODEL();
  for (const auto& c : Ref().json["model_cases"]) {
    CAPTURE(c["name"].get<std::string>());
    const auto ids = c["input_ids"].get<std::vector<int32_t>>();
    Sequence seq(Ref().model, static_cast<int64_t>(ids.size()) + 32);
    auto logits = seq.Forward(ids);
    REQUIRE_MESSAGE(logits.ok(), logits.status().message());
    const auto& last = c["last_logits"];
    const auto top_ids = last["top_ids"].get<std::vector<int32_t>>();
    const auto top_values = last["top_values"].get<std::vector<double>>();
    // Float32 on both sides, different summation orders: measured within
    // 2.5e-5 on logits of 15 to 35; the stated tolerance is 1e-3.
    double worst = 0;
    for (size_t t = 0; t < top_ids.size(); ++t)
      worst = std::max(worst, std::fabs(logits.value()[top_ids[t]] - top_values[t]));
    MESSAGE(c["name"].get<std::string>() << ": largest top-50 logit difference " << worst);
    CHECK(worst < 1e-3);
    double mean = 0;
    for (float x : logits.value()) mean += x;
    mean /= static_cast<double>(logits->size());
    CHECK(mean == doctest::Approx(last["mean"].get<double>()).epsilon(1e-3));
    CHECK(ArgMax(logits.value()) == top_ids[0]);
    const auto& greedy = c["greedy"];
    auto out = seq.Generate(logits.value(), greedy["max_new_tokens"].get<int64_t>(),
                            Ref().model->tokenizer().stop_tokens());
    REQUIRE(out.ok());
    CHECK(out.value() == greedy["ids"].get<std::vector<int32_t>>());
  }
}

TEST_CASE("llama: chunked prefill, token-by-token decoding and a saved prefix agree") {
  REQUIRE_MODEL();
  const auto& c = Ref().json["model_cases"][2];  // the ~200-token text
  const auto ids = c["input_ids"].get<std::vector<int32_t>>();
  Sequence whole(Ref().model, 16);  // grows while it runs
  auto a = whole.Forward(ids);
  REQUIRE(a.ok());
  Sequence steps(Ref().model, 300);
  const size_t half = ids.size() / 2;
  REQUIRE(steps.Forward(std::span(ids).first(half)).ok());
  Result<std::vector<float>> b = Status::Error("unset");
  for (size_t i = half; i < ids.size(); ++i) b = steps.Forward(std::span(ids).subspan(i, 1));
  REQUIRE(b.ok());
  float diff = 0;
  for (size_t i = 0; i < a->size(); ++i)
    diff = std::max(diff, std::fabs(a.value()[i] - b.value()[i]));
  CHECK(diff < 1e-3f);

  testing::TempDir dir;
  REQUIRE(steps.Save(dir / "prefix.safetensors", b.value()).ok());
  auto loaded = Sequence::Load(Ref().model, dir / "prefix.safetensors", 400);
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().message());
  CHECK(loaded->first.tokens() == ids);
  CHECK(loaded->second == b.value());
  const int32_t next[1] = {ArgMax(b.value())};
  auto x = steps.Forward(next), y = loaded->first.Forward(next);
  REQUIRE((x.ok() && y.ok()));
  CHECK(x.value() == y.value());
}

TEST_CASE("llama: a masker stack runs in every layer but the dense ones") {
  REQUIRE_MODEL();
  const auto& c = Ref().json["model_cases"][3];  // the RULER-like needle prompt
  const auto ids = c["input_ids"].get<std::vector<int32_t>>();
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto configs = registry.ParseJsonList(
      R"([{"type":"sink","sink_size":4},{"type":"local","window_size":8},
          {"type":"oracle_top_k","heavy_size":16}])",
      "");
  REQUIRE(configs.ok());
  auto stack = MaskerStack::Build(registry, configs.value());
  REQUIRE(stack.ok());
  Sequence seq(Ref().model, 200);
  auto prefix = seq.Forward(std::span(ids).first(ids.size() - 10));
  REQUIRE(prefix.ok());
  SparseAttention sparse;
  sparse.stack = &stack.value();
  sparse.dense_layers = {0, 16};
  auto logits = seq.Forward(std::span(ids).last(10), &sparse);
  REQUIRE(logits.ok());
  CHECK(sparse.masked_calls == 28);  // 30 layers, 2 dense, one chunk
  // 10 queries over 143 keys keep at most 4 + 8 + 16 each (fewer where causal).
  CHECK(sparse.mean_density() < 28.0 / 134.0);
  CHECK(sparse.mean_density() > 0.1);
  // Layer state is kept per layer: the same stack state grows with decoding.
  auto out = seq.Generate(logits.value(), 4, {}, &sparse);
  REQUIRE(out.ok());
  CHECK(sparse.masked_calls == 28 + 3 * 28);
}

// A backend that counts what the model asks of it, doing it on the CPU's.
class CountingBackend : public Backend {
 public:
  CountingBackend() : cpu_(std::move(CreateBackend(Device::Cpu())).value()) {}
  Device device() const override { return cpu_->device(); }
  Result<std::unique_ptr<BackendInputs>> Upload(const AttentionInputs& in) override {
    ++uploads;
    return cpu_->Upload(in);
  }
  Result<Mask> BuildMask(const MaskerStack& stack, const BackendInputs& in,
                         StackState& state) override {
    ++masks;
    return cpu_->BuildMask(stack, in, state);
  }
  Result<Tensor> MaskedAttention(BackendInputs& in, const Mask& mask) override {
    ++masked;
    return cpu_->MaskedAttention(in, mask);
  }
  Result<Tensor> DenseAttention(BackendInputs& in) override {
    ++dense;
    return cpu_->DenseAttention(in);
  }
  Status MatMul(const float* x, int64_t n, std::span<const Product> products) override {
    ++matmuls;
    for (const Product& p : products) weights_read += p.w->bytes();
    return cpu_->MatMul(x, n, products);
  }
  void Reset() {
    uploads = masks = masked = dense = matmuls = 0;
    weights_read = 0;
  }
  int64_t uploads = 0, masks = 0, masked = 0, dense = 0, matmuls = 0;
  size_t weights_read = 0;

 private:
  std::unique_ptr<Backend> cpu_;
};

// The runtime's products and attention all go through its model's backend
// (engine/backend.h), the seam a GPU backend takes over: a decoded token is
// 4 product calls per layer and the output's, reading every weight once, and
// one attention call per layer; the logits equal the default backend's.
TEST_CASE("llama: every product and attention call goes through the model's backend") {
  REQUIRE_MODEL();
  auto counting = std::make_shared<CountingBackend>();
  auto model = LlamaModel::Load(Ref().model->path(), counting);
  REQUIRE(model.ok());
  const auto& c = Ref().json["model_cases"][3];
  const auto ids = c["input_ids"].get<std::vector<int32_t>>();
  Sequence mine(model.value(), 200), reference(Ref().model, 200);
  auto a = mine.Forward(std::span(ids).first(ids.size() - 1));
  auto b = reference.Forward(std::span(ids).first(ids.size() - 1));
  REQUIRE((a.ok() && b.ok()));
  CHECK(a.value() == b.value());
  const int64_t layers = Ref().model->config().layers;
  counting->Reset();
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto configs = registry.ParseJsonList(R"([{"type":"sink","sink_size":4}])", "");
  REQUIRE(configs.ok());
  auto stack = MaskerStack::Build(registry, configs.value());
  REQUIRE(stack.ok());
  SparseAttention sparse;
  sparse.stack = &stack.value();
  sparse.dense_layers = {0};
  auto next = mine.Forward(std::span(ids).last(1), &sparse);
  REQUIRE(next.ok());
  CHECK(counting->matmuls == 4 * layers + 1);
  CHECK(counting->weights_read == Ref().model->weight_bytes());
  CHECK(counting->uploads == layers);
  CHECK(counting->dense == 1);  // layer 0
  CHECK(counting->masks == layers - 1);
  CHECK(counting->masked == layers - 1);
}

TEST_CASE("llama: bad model files and token ids are clear errors") {
  testing::TempDir dir;
  std::ofstream(dir / "x.gguf") << "GGUF";
  auto m = LlamaModel::Load(dir / "x.gguf");
  REQUIRE(!m.ok());
  CHECK(m.status().message().find("x.gguf: truncated file") != std::string::npos);
  CHECK(LlamaModel::Load(dir / "none.gguf").status().message().find("cannot open") !=
        std::string::npos);
  REQUIRE_MODEL();
  Sequence seq(Ref().model, 8);
  const int32_t bad[1] = {49152};
  CHECK(seq.Forward(bad).status().message() == "token id 49152 outside the vocabulary of 49152");
}

}  // namespace
}  // namespace masktune::model

namespace masktune {
namespace {

std::vector<MaskerConfig> Stack(const std::string& json) {
  auto c = MaskerRegistry::WithBuiltins().ParseJsonList(json, "");
  REQUIRE_MESSAGE(c.ok(), c.status().message());
  return c.value();
}

TEST_CASE(
    "ruler_niah: a stack inside the model answers needles; setups A and B; the prefill cache") {
  if (!model::Ref().model) {
    MESSAGE("skipped: no models/SmolLM2-135M-Instruct.Q4_1.gguf (make fetches it)");
    return;
  }
  testing::TempDir dir;
  nlohmann::json spec = {{"name", "ruler_niah"},
                         {"model", model::Ref().model->path()},
                         {"tasks", {"niah_single_1", "niah_multivalue"}},
                         {"context_tokens", 384},
                         {"samples", 2},
                         {"seed", 3},
                         {"setup", "B"},
                         {"max_new_tokens", 24},
                         {"dense_layers", {0}},
                         {"prefill_cache", dir.path.string()}};
  auto bench = CreateBenchmark(spec);
  REQUIRE_MESSAGE(bench.ok(), bench.status().message());
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  // Keeping every key is dense attention: the model finds the needle.
  auto all = bench.value()->Run(registry, Stack(R"([{"type":"oracle_top_k","heavy_size":1.0}])"));
  REQUIRE_MESSAGE(all.ok(), all.status().message());
  CHECK(all->at("niah_single_1.accuracy") == 1.0);
  CHECK(all->at("density") == 1.0);
  CHECK(all->at("error") == 1.0 - all->at("accuracy"));
  CHECK(all->at("tokens_per_second") > 0);
  for (const char* m :
       {"niah_multivalue.accuracy", "niah_multivalue.density", "niah_single_1.tokens_per_second"})
    CHECK(all->count(m) == 1);
  // Two keys per query row are too few to read a needle.
  auto starved = bench.value()->Run(
      registry, Stack(R"([{"type":"sink","sink_size":1},{"type":"local","window_size":1}])"));
  REQUIRE(starved.ok());
  CHECK(starved->at("density") < 0.02);
  CHECK(starved->at("accuracy") < all->at("accuracy"));
  // Setup A processes the question densely too, on top of the same cached context.
  auto cached = [&] {
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path))
      files += e.path().extension() == ".safetensors";
    return files;
  };
  CHECK(cached() == 4);  // one per task and sample
  spec["setup"] = "A";
  auto a = CreateBenchmark(spec);
  REQUIRE(a.ok());
  CHECK(cached() == 4);
  auto starved_a = a.value()->Run(
      registry, Stack(R"([{"type":"sink","sink_size":1},{"type":"local","window_size":1}])"));
  REQUIRE(starved_a.ok());
  CHECK(starved_a->at("niah_single_1.density") < 0.02);
  // A second benchmark with setup B reads its prefixes back from the cache: same answers.
  spec["setup"] = "B";
  auto again = CreateBenchmark(spec);
  REQUIRE(again.ok());
  auto all2 = again.value()->Run(registry, Stack(R"([{"type":"oracle_top_k","heavy_size":1.0}])"));
  REQUIRE(all2.ok());
  CHECK(all2->at("accuracy") == all->at("accuracy"));
}

TEST_CASE("ruler_niah: bad specs are clear errors") {
  auto missing = CreateBenchmark({{"name", "ruler_niah"}, {"model", "/nonexistent/m.gguf"}});
  REQUIRE(!missing.ok());
  CHECK(missing.status().message() ==
        "ruler_niah: no model file '/nonexistent/m.gguf' (scripts/fetch_model.sh fetches the "
        "default one)");
  if (!model::Ref().model) return;
  auto layer = CreateBenchmark(
      {{"name", "ruler_niah"}, {"model", model::Ref().model->path()}, {"dense_layers", {30}}});
  CHECK(layer.status().message() ==
        "ruler_niah: dense_layers: layer 30 does not exist (the model has 30 layers)");
}

TEST_CASE(
    "masktune ruler: a table and a JSON line; a stack keeping every key scores as dense; bad input "
    "exits 2") {
  using testing::CheckBadInput;
  using testing::Masktune;
  if (!model::Ref().model) {
    MESSAGE("skipped: no model");
    return;
  }
  const std::string model = " --model " + model::Ref().model->path();
  const std::string common =
      model + " --task niah_single_1,niah_multikey_1 --length 384 --samples 2";
  const auto dense = Masktune("ruler" + common);
  REQUIRE_MESSAGE(dense.code == 0, dense.output);
  CHECK(dense.output.rfind("task                accuracy   density  decode tokens/s  samples\n",
                           0) == 0);
  CHECK(dense.output.find("\nniah_multikey_1 ") != std::string::npos);
  CHECK(dense.output.find("\nall ") != std::string::npos);
  const std::string last =
      dense.output.substr(dense.output.rfind('\n', dense.output.size() - 2) + 1);
  const auto d = nlohmann::json::parse(last);
  CHECK(d["density"] == 1.0);
  CHECK(d["samples"] == 4);
  CHECK(d["accuracy"].get<double>() >= 0.0);
  CHECK(d["accuracy"].get<double>() <= 1.0);
  CHECK(d["tokens_per_s"].get<double>() > 0.0);
  CHECK(d["tasks"]["niah_single_1"]["samples"] == 2);
  // oracle_top_k with every key kept is the dense computation: the same answers.
  const auto all =
      Masktune("ruler" + common + " --maskers '[{\"type\":\"oracle_top_k\",\"heavy_size\":1.0}]'");
  REQUIRE_MESSAGE(all.code == 0, all.output);
  const auto a =
      nlohmann::json::parse(all.output.substr(all.output.rfind('\n', all.output.size() - 2) + 1));
  CHECK(a["accuracy"] == d["accuracy"]);
  for (const char* t : {"niah_single_1", "niah_multikey_1"})
    CHECK(a["tasks"][t]["accuracy"] == d["tasks"][t]["accuracy"]);
  CheckBadInput(Masktune("ruler" + model + " --task nope --length 384"),
                "unknown task 'nope' (valid: niah_single_1");
  CheckBadInput(Masktune("ruler" + model + " --length 100000"),
                "is beyond the model's context of 8192 tokens");
  CheckBadInput(Masktune("ruler" + model + " --length 384 --maskers '[{\"type\":\"sink\"}]'"),
                "--maskers: maskers[0] (sink): missing required field 'sink_size'");
  CheckBadInput(Masktune("ruler" + model + " --length 384 --maskers @/dev/zero"),
                "is not a regular file");
  CheckBadInput(Masktune("ruler" + model + " --length 384 --dense-layers 0,x"),
                "--dense-layers: expected layer numbers");
  CheckBadInput(Masktune("ruler --model /nonexistent.gguf --length 384"),
                "no model file '/nonexistent.gguf'");
}

TEST_CASE("capture: files per sample and layer that attend reads, keys equal to the KV cache") {
  if (!model::Ref().model) {
    MESSAGE("skipped: no models/SmolLM2-135M-Instruct.Q4_1.gguf (make fetches it)");
    return;
  }
  using testing::Masktune;
  const auto& m = model::Ref().model;
  testing::TempDir dir;
  const std::string out = dir / "cap";
  const auto r =
      Masktune("capture --model " + m->path() +
               " --task niah_single_1 --length 256 --samples 2 --layers 0,29 --out " + out);
  REQUIRE_MESSAGE(r.code == 0, r.output);
  CHECK(nlohmann::json::parse(r.output)["files"] == 4);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(out))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{
                     "niah_single_1-s00-l00.safetensors", "niah_single_1-s00-l29.safetensors",
                     "niah_single_1-s01-l00.safetensors", "niah_single_1-s01-l29.safetensors"});

  // The same prompt through the API: dense prefill, then the first generated token.
  auto prompt = BuildRulerPrompt(m->tokenizer(), "niah_single_1", 256, 0, 1);
  REQUIRE(prompt.ok());
  std::vector<int32_t> tokens = prompt->context;
  tokens.insert(tokens.end(), prompt->question.begin(), prompt->question.end());
  const int64_t n = static_cast<int64_t>(tokens.size());
  model::Sequence seq(m, 16);  // a cache that grows: captured copies hold only the used keys
  auto logits = seq.Forward(tokens);
  REQUIRE(logits.ok());
  const int32_t next[1] = {model::ArgMax(logits.value())};
  auto step = seq.Forward(next);
  REQUIRE(step.ok());
  REQUIRE(seq.Save(dir / "seq.safetensors", step.value()).ok());
  auto cache = SafetensorsFile::Read(dir / "seq.safetensors");
  REQUIRE(cache.ok());

  auto file = SafetensorsFile::Read(out + "/niah_single_1-s01-l29.safetensors");
  REQUIRE(file.ok());
  const Tensor& q = *file->Get("q", 4).value();
  const Tensor& k = *file->Get("k", 4).value();
  const Tensor& v = *file->Get("v", 4).value();
  CHECK(q.shape() == Shape{1, 9, 1, 64});
  CHECK(k.shape() == Shape{1, 3, n + 1, 64});
  CHECK(v.shape() == Shape{1, 3, n + 1, 64});
  CHECK_FALSE(file->Has("attention_mask"));
  CHECK(k.vec() == cache->Get("layer29.k").value()->vec());
  CHECK(v.vec() == cache->Get("layer29.v").value()->vec());
  CHECK(k.vec() != cache->Get("layer0.k").value()->vec());
  const auto meta = nlohmann::json::parse(file->metadata().at("case"));
  CHECK(meta["scaling"].get<double>() == doctest::Approx(0.125));
  CHECK(meta["task"] == "niah_single_1");
  CHECK(meta["sample"] == 1);
  CHECK(meta["layer"] == 29);
  CHECK(meta["length"] == 256);
  CHECK(meta["position"] == n);

  // attend takes the file: dense is exact; a sparse stack is not.
  const std::string input = " --device cpu --input " + out + "/niah_single_1-s01-l29.safetensors";
  const auto dense = Masktune("attend" + input + " --maskers '[]'");
  REQUIRE_MESSAGE(dense.code == 0, dense.output);
  const auto d = nlohmann::json::parse(dense.output);
  CHECK(d["error"].get<double>() == 0.0);
  CHECK(d["density"].get<double>() == 1.0);
  const auto sparse =
      Masktune("attend" + input + " --maskers '[{\"type\":\"sink\",\"sink_size\":16}]'");
  REQUIRE_MESSAGE(sparse.code == 0, sparse.output);
  CHECK(nlohmann::json::parse(sparse.output)["error"].get<double>() > 0.0);
  // attention_error's folder mode reads the folder: [] is dense there too.
  auto bench = CreateBenchmark({{"name", "attention_error"}, {"folder", out}});
  REQUIRE_MESSAGE(bench.ok(), bench.status().message());
  auto metrics = bench.value()->Run(MaskerRegistry::WithBuiltins(), {});
  REQUIRE(metrics.ok());
  CHECK(metrics->at("error") == 0.0);
  CHECK(metrics->at("density") == 1.0);
}

TEST_CASE("capture: bad inputs exit 2 with one line") {
  if (!model::Ref().model) {
    MESSAGE("skipped: no models/SmolLM2-135M-Instruct.Q4_1.gguf (make fetches it)");
    return;
  }
  using testing::CheckBadInput;
  using testing::Masktune;
  testing::TempDir dir;
  const std::string common =
      "capture --model " + model::Ref().model->path() + " --out " + (dir / "cap");
  CheckBadInput(Masktune(common + " --task nope --length 256"),
                "unknown task 'nope' (valid: niah_single_1");
  CheckBadInput(Masktune(common + " --length 100000"),
                "is beyond the model's context of 8192 tokens");
  CheckBadInput(Masktune(common + " --length 256 --layers 0,x"), "--layers: expected 'all'");
  CheckBadInput(Masktune(common + " --length 256 --layers 30"),
                "--layers: layer 30 does not exist (the model has 30 layers)");
  CheckBadInput(Masktune(common + " --length 256 --layers ''"), "--layers: expected 'all'");
  CheckBadInput(Masktune("capture --model /nonexistent.gguf --out " + (dir / "cap")),
                "no model file '/nonexistent.gguf'");
  CheckBadInput(Masktune("capture --length 256"), "--out is required");
  CHECK_FALSE(std::filesystem::exists(dir / "cap/niah_single_1-s00-l00.safetensors"));
}

}  // namespace
}  // namespace masktune
