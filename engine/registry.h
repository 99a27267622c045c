// File: engine/registry.h
//
// The masker registry: type name -> schema and factory. It validates masker
// configurations (JSON lists here; sweep files reuse CheckFieldValue) and
// builds maskers and stacks. A registry is a value passed to whoever needs
// it; `MaskerRegistry::WithBuiltins()` holds every masker masktune ships.
// Thread-safety: const methods may run concurrently.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "engine/mask.h"
#include "engine/masker.h"
#include "engine/status.h"

namespace masktune {

class MaskerRegistry {
 public:
  static MaskerRegistry WithBuiltins();

  // Adds a schema; a second schema of the same type replaces the first.
  void Register(MaskerSchema schema);
  const MaskerSchema* Find(const std::string& type) const;
  std::vector<std::string> Types() const;

  // Validates `given` (field -> value, as written by the user) for masker
  // `type`: unknown type, unknown field, wrong type, out-of-range value and a
  // missing required field are errors naming the masker and the field. Fills
  // defaults; resolves relative kPath values against `base_dir` ("" = as is).
  Result<MaskerConfig> Validate(const std::string& type,
                                const std::map<std::string, FieldValue>& given,
                                const std::string& base_dir) const;

  // Parses a JSON masker list `[{"type": "sink", "sink_size": 4}, ...]`.
  // Errors start with "maskers[i] (type): ".
  Result<std::vector<MaskerConfig>> ParseJsonList(const std::string& json_text,
                                                  const std::string& base_dir) const;

 private:
  std::map<std::string, MaskerSchema> schemas_;
};

// A field value as JSON and back; the int/float distinction survives (1.0 stays a float).
nlohmann::json FieldValueToJson(const FieldValue& value);
// Fails on arrays, objects, null and integers beyond int64.
Result<FieldValue> FieldValueFromJson(const nlohmann::json& value);

// How deep JSON that masktune reads from users may nest (masker lists, safetensors
// headers, case metadata). Deeper text is refused before parsing: nlohmann's
// serializer recurses, and a value nested 100,000 deep overflows the stack.
inline constexpr int kMaxJsonDepth = 64;

// Checks JSON text before it is parsed: nesting deeper than kMaxJsonDepth, a
// number beyond the range of a double (1e999) and a key repeated in one object
// are errors naming the place as `root` plus the path to it ("maskers[0].heavy_size:
// number 1e999 is beyond the range of a double (line 1, column 30)"). Any other
// syntax error is left to the parser.
Status CheckJsonText(std::string_view text, const std::string& root);

// OK when `value` fits `spec` (type and range); else "field 'name': expected
// ..., found ..." (the caller prefixes the masker and place).
Status CheckFieldValue(const FieldSpec& spec, const FieldValue& value);

// Maskers in order, each receiving the mask of the ones before it.
class MaskerStack {
 public:
  // Builds every masker; rejects a stack with two sampling maskers.
  static Result<MaskerStack> Build(const MaskerRegistry& registry,
                                   const std::vector<MaskerConfig>& configs);

  // Runs the stack on one call; `state` holds the per-layer caches across calls.
  Result<Mask> ComputeMask(const AttentionInputs& in, StackState& state) const;
  size_t size() const { return maskers_.size(); }

 private:
  std::vector<std::string> types_;
  std::vector<std::shared_ptr<const Masker>> maskers_;
};

}  // namespace masktune
