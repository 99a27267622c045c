#include <doctest/doctest.h>

#include "engine/registry.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

std::string ParseError(const std::string& json) {
  auto r = MaskerRegistry::WithBuiltins().ParseJsonList(json, "");
  return r.ok() ? "" : r.status().message();
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("registry knows every deterministic masker") {
  const auto types = MaskerRegistry::WithBuiltins().Types();
  for (const char* t : {"sink", "local", "causal", "oracle_top_k", "oracle_top_p", "quest_top_k",
                        "double_sparsity_top_k", "hash_attention_top_k", "pq_top_k"})
    CHECK(std::find(types.begin(), types.end(), t) != types.end());
}

TEST_CASE("validation errors name the masker and the field") {
  CHECK(
      ParseError(R"([{"type":"snk","sink_size":4}])") ==
      "maskers[0] (snk): unknown masker type 'snk' (known: adaptive_sampling, causal, "
      "double_sparsity_top_k, "
      "hash_attention_top_k, local, magic_pig, oracle_top_k, oracle_top_p, pq_top_k, quest_top_k, "
      "random_sampling, sink)");
  CHECK(ParseError(R"([{"type":"sink","sink_size":4},{"type":"local","window":4}])") ==
        "maskers[1] (local): unknown field 'window' (local has: window_size)");
  CHECK(ParseError(R"([{"type":"oracle_top_k","heavy_size":"ten"}])") ==
        "maskers[0] (oracle_top_k): field 'heavy_size': expected a size (integer count or float "
        "fraction of the keys), found \"ten\"");
  CHECK(ParseError(R"([{"type":"sink","sink_size":0}])") ==
        "maskers[0] (sink): field 'sink_size': expected an integer count > 0, found 0");
  CHECK(ParseError(R"([{"type":"sink","sink_size":-0.5}])") ==
        "maskers[0] (sink): field 'sink_size': expected a fraction > 0, found -0.5");
  CHECK(ParseError(R"([{"type":"oracle_top_p","top_p":1.5}])") ==
        "maskers[0] (oracle_top_p): field 'top_p': expected a number in [0, 1], found 1.5");
  CHECK(ParseError(R"([{"type":"quest_top_k","heavy_size":8,"page_size":4,"label_bits":17}])") ==
        "maskers[0] (quest_top_k): field 'label_bits': expected an integer in (0, 16], found 17");
  CHECK(ParseError(R"([{"type":"quest_top_k","heavy_size":8,"page_size":4.0}])") ==
        "maskers[0] (quest_top_k): field 'page_size': expected an integer, found 4.0");
  CHECK(ParseError(R"([{"type":"quest_top_k","heavy_size":8}])") ==
        "maskers[0] (quest_top_k): missing required field 'page_size'");
  CHECK(Contains(
      ParseError(R"([{"type":"hash_attention_top_k","heavy_size":8,"hat_bits":8,
      "hat_mlp_layers":1,"hat_mlp_hidden_size":8,"hat_mlp_activation":"swish",
      "hat_weight_file":"w.safetensors"}])"),
      "field 'hat_mlp_activation': expected one of relu, silu, gelu, tanh, found \"swish\""));
  CHECK(ParseError(R"({"type":"sink"})") == "masker list must be a JSON array of objects");
  CHECK(ParseError(R"([{"sink_size":3}])") == "maskers[0]: missing string field 'type'");
  CHECK(Contains(ParseError("[{"), "masker list is not valid JSON"));
  CHECK(ParseError(R"([{"type":"sink","sink_size":[1]}])") ==
        "maskers[0] (sink): field 'sink_size': expected a number, bool or string, found [1]");
}

TEST_CASE("sizes: a float is a fraction, an integer a count, lexically") {
  auto r = MaskerRegistry::WithBuiltins().ParseJsonList(
      R"([{"type":"oracle_top_k","heavy_size":1.0},{"type":"oracle_top_k","heavy_size":1},
          {"type":"oracle_top_k","heavy_size":0.1}])",
      "");
  REQUIRE(r.ok());
  CHECK(r.value()[0].Size("heavy_size", 512) == 512);
  CHECK(r.value()[1].Size("heavy_size", 512) == 1);
  CHECK(r.value()[2].Size("heavy_size", 512) == 51);  // int(0.1 * 512) = int(51.2)
  CHECK(r.value()[2].Size("heavy_size", 777) == 77);
  CHECK(FieldValueToString(r.value()[0].values.at("heavy_size")) == "1.0");
}

TEST_CASE("defaults are filled and paths resolve against the input's folder") {
  auto r = MaskerRegistry::WithBuiltins().ParseJsonList(
      R"([{"type":"quest_top_k","heavy_size":8,"page_size":4},
          {"type":"double_sparsity_top_k","heavy_size":8,"sorted_channel_file":"c.json"},
          {"type":"double_sparsity_top_k","heavy_size":8,"sorted_channel_file":"/abs/c.json"}])",
      "/data/cases");
  REQUIRE(r.ok());
  CHECK(r.value()[0].Int("label_bits") == 16);
  CHECK(r.value()[1].Int("group_factor") == 16);
  CHECK(r.value()[1].Int("label_bits") == 4);
  CHECK(r.value()[1].Str("channel_selection") == "qk_proj");
  CHECK(r.value()[1].Str("sorted_channel_file") == "/data/cases/c.json");
  CHECK(r.value()[2].Str("sorted_channel_file") == "/abs/c.json");
}

TEST_CASE("a stack holds at most one sampling masker") {
  MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  MaskerSchema sampler;
  sampler.type = "test_sampler";
  sampler.sampling = true;
  sampler.create = [](const MaskerConfig&, const std::string&) -> Result<std::unique_ptr<Masker>> {
    return Status::Error("not used");
  };
  registry.Register(sampler);
  auto configs = registry.ParseJsonList(
      R"([{"type":"test_sampler"},{"type":"sink","sink_size":2},{"type":"test_sampler"}])", "");
  REQUIRE(configs.ok());
  auto stack = MaskerStack::Build(registry, configs.value());
  REQUIRE_FALSE(stack.ok());
  CHECK(stack.status().message() ==
        "maskers[2] (test_sampler): a stack holds at most one sampling masker; maskers[0] "
        "(test_sampler) is one already");
}

TEST_CASE("a missing side file fails when the stack is built, naming the field") {
  auto registry = MaskerRegistry::WithBuiltins();
  auto configs = registry.ParseJsonList(
      R"([{"type":"double_sparsity_top_k","heavy_size":8,"sorted_channel_file":"/no/c.json"}])",
      "");
  REQUIRE(configs.ok());
  auto stack = MaskerStack::Build(registry, configs.value());
  REQUIRE_FALSE(stack.ok());
  CHECK(stack.status().message() ==
        "maskers[0] (double_sparsity_top_k): sorted_channel_file '/no/c.json': cannot open file");
}

}  // namespace
}  // namespace masktune
