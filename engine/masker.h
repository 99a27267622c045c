// File: engine/masker.h
//
// The Masker contract. A masker reads one attention call (queries, keys,
// values, attention mask, scaling, layer) and the mask built so far by the
// maskers before it, and returns the next mask (see ../shared/spec/maskers.md
// for what each computes). Each masker type declares its configuration once,
// as a MaskerSchema: the fields, their types, defaults and valid ranges. The
// same schema validates JSON masker lists and sweep files and defines search
// spaces. Thread-safety: a Masker is immutable after construction; per-layer
// caches live in the LayerState the caller passes in.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/mask.h"
#include "engine/status.h"
#include "engine/tensor.h"

namespace masktune {

// One attention call. Shapes: queries [batch, heads, queries, head_dim];
// keys, values [batch, kv_heads, keys, head_dim]; attention_mask (optional,
// additive, 0 or -inf) [batch, 1, queries, keys]. heads % kv_heads == 0.
struct AttentionInputs {
  const Tensor* queries = nullptr;
  const Tensor* keys = nullptr;
  const Tensor* values = nullptr;
  const Tensor* attention_mask = nullptr;
  float scaling = 1.0f;
  int layer = 0;
  // Keys and values may sit in a larger buffer (a KV cache with room to
  // grow along dim 2): only the first `used_keys` rows of each kv head are
  // keys of this call. -1: all of keys->dim(2).
  int64_t used_keys = -1;

  int64_t batch() const { return queries->dim(0); }
  int64_t heads() const { return queries->dim(1); }
  int64_t num_queries() const { return queries->dim(2); }
  int64_t head_dim() const { return queries->dim(3); }
  int64_t kv_heads() const { return keys->dim(1); }
  int64_t num_keys() const { return used_keys >= 0 ? used_keys : keys->dim(2); }
  int64_t group() const { return heads() / kv_heads(); }  // query heads per kv head
  MaskShape mask_shape() const { return {batch(), heads(), num_queries(), num_keys()}; }

  // Query row (batch b, head h, query i) and the key/value row it reads.
  const float* query(int64_t b, int64_t h, int64_t i) const {
    return queries->data() + ((b * heads() + h) * num_queries() + i) * head_dim();
  }
  const float* key(int64_t b, int64_t kvh, int64_t j) const {
    return keys->data() + ((b * kv_heads() + kvh) * keys->dim(2) + j) * head_dim();
  }
  const float* value(int64_t b, int64_t kvh, int64_t j) const {
    return values->data() + ((b * kv_heads() + kvh) * values->dim(2) + j) * head_dim();
  }
  // The additive mask row of (b, i), or nullptr when there is none.
  const float* mask_row(int64_t b, int64_t i) const {
    return attention_mask ? attention_mask->data() + (b * num_queries() + i) * num_keys() : nullptr;
  }
};

// OK when the shapes fit together as described above; the error names the
// tensors and their shapes. Also rejects NaN or +inf in the attention mask.
Status CheckAttentionInputs(const AttentionInputs& in);

// Per-layer state that lives across calls of one layer (decode steps):
// maskers cache key-side work here under their own slot name.
struct LayerState {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::vector<uint64_t>> codes;   // packed bit signatures
  std::map<std::string, std::vector<uint16_t>> labels;  // small integer labels (PQ codes)
};
using StackState = std::map<int, LayerState>;  // layer index -> state

// ---------------------------------------------------------------------------
// Configuration schema

using FieldValue = std::variant<int64_t, double, bool, std::string>;

enum class FieldType {
  kSize,  // float = fraction of the key count (int(x * keys)); integer = a count
  kInt,
  kFloat,  // an integer literal is accepted and read as a float
  kBool,
  kString,  // one of `choices` when choices are given
  kPath,    // a file path; relative paths resolve against the input's folder
};

struct Range {
  double lo = -1e300, hi = 1e300;
  bool lo_open = false, hi_open = false;
  bool Contains(double x) const {
    return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  }
  std::string ToString() const;  // "(0, 1]"
};

struct FieldSpec {
  std::string name;
  FieldType type = FieldType::kInt;
  std::optional<FieldValue> default_value;  // nullopt: the field is required
  Range int_range;                          // kSize counts and kInt
  Range float_range;                        // kSize fractions and kFloat
  std::vector<std::string> choices;         // kString
  std::string help;
};

// A validated configuration: every field of the schema has a value.
struct MaskerConfig {
  std::string type;
  std::map<std::string, FieldValue> values;

  int64_t Int(const std::string& f) const { return std::get<int64_t>(values.at(f)); }
  double Float(const std::string& f) const;  // an int or a float field
  bool Bool(const std::string& f) const { return std::get<bool>(values.at(f)); }
  const std::string& Str(const std::string& f) const { return std::get<std::string>(values.at(f)); }
  // A size field resolved against `keys`: int(x * keys) for a float, n for an int.
  int64_t Size(const std::string& f, int64_t keys) const;
};

std::string FieldValueToString(const FieldValue& v);

class Masker {
 public:
  virtual ~Masker() = default;
  // Returns the mask after this masker. `prev` is the mask of the maskers
  // before it (Mask::Empty for the first). Fails only on bad side inputs
  // (a channel file without this layer, weights of the wrong shape).
  virtual Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev,
                               LayerState& state) const = 0;
};

struct MaskerSchema {
  std::string type;            // "oracle_top_k"
  std::string reference_name;  // the reference's config class, "OracleTopKConfig"
  std::string help;
  bool sampling = false;  // at most one sampling masker per stack
  std::vector<FieldSpec> fields;
  // Builds the masker from a validated config; `slot` names its LayerState
  // entries so two maskers of one type in a stack do not collide.
  std::function<Result<std::unique_ptr<Masker>>(const MaskerConfig&, const std::string& slot)>
      create;

  const FieldSpec* Find(const std::string& field) const;
};

// Common field specs, so that every masker spells a shared field the same way.
FieldSpec SizeField(const std::string& name, std::string help,
                    std::optional<FieldValue> default_value = std::nullopt);
FieldSpec IntField(const std::string& name, Range range, std::string help,
                   std::optional<FieldValue> default_value = std::nullopt);

}  // namespace masktune
