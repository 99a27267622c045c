#include "engine/registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

std::string TypeName(FieldType t) {
  switch (t) {
    case FieldType::kSize:
      return "a size (integer count or float fraction of the keys)";
    case FieldType::kInt:
      return "an integer";
    case FieldType::kFloat:
      return "a number";
    case FieldType::kBool:
      return "true or false";
    case FieldType::kString:
      return "a string";
    case FieldType::kPath:
      return "a file path";
  }
  return "?";
}

std::string Quote(const FieldValue& v) {
  if (std::holds_alternative<std::string>(v)) return "\"" + std::get<std::string>(v) + "\"";
  return FieldValueToString(v);
}

Status Expected(const FieldSpec& spec, const std::string& what, const FieldValue& found) {
  return Status::Error("field '" + spec.name + "': expected " + what + ", found " + Quote(found));
}

}  // namespace

std::string Range::ToString() const {
  auto num = [](double x) {
    if (x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string(static_cast<int64_t>(x));
    std::string s = std::to_string(x);
    while (s.back() == '0') s.pop_back();
    return s;
  };
  const bool no_lo = lo <= -1e300, no_hi = hi >= 1e300;
  if (no_hi && !no_lo) return (lo_open ? "> " : ">= ") + num(lo);
  if (no_lo && !no_hi) return (hi_open ? "< " : "<= ") + num(hi);
  if (no_lo && no_hi) return "any value";
  return "in " + std::string(lo_open ? "(" : "[") + num(lo) + ", " + num(hi) +
         (hi_open ? ")" : "]");
}

std::string FieldValueToString(const FieldValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  // Floats keep a decimal point, since that is what makes them fractions.
  nlohmann::json j = std::get<double>(v);
  std::string s = j.dump();
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

nlohmann::json FieldValueToJson(const FieldValue& value) {
  return std::visit([](const auto& x) { return nlohmann::json(x); }, value);
}

Result<FieldValue> FieldValueFromJson(const nlohmann::json& v) {
  if (v.is_boolean()) return FieldValue(v.get<bool>());
  // get<int64_t> would wrap 2^63 and above into negatives.
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return Status::Error("integer " + v.dump() + " is beyond the 64-bit range");
  if (v.is_number_integer()) return FieldValue(v.get<int64_t>());
  if (v.is_number_float()) return FieldValue(v.get<double>());
  if (v.is_string()) return FieldValue(v.get<std::string>());
  std::string found = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (found.size() > 100) found = found.substr(0, 100) + "...";
  return Status::Error("expected a number, bool or string, found " + found);
}

double MaskerConfig::Float(const std::string& f) const {
  const FieldValue& v = values.at(f);
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return std::get<double>(v);
}

int64_t MaskerConfig::Size(const std::string& f, int64_t keys) const {
  // Sizes past 2^52 keys all mean "more than the keys" (a mask has at most
  // 2^31 - 1); capping them keeps maskers' sums (w + queries) from overflowing,
  // and the cast below defined (1e20 * keys is beyond int64).
  constexpr int64_t kCap = int64_t{1} << 52;
  const FieldValue& v = values.at(f);
  if (auto* i = std::get_if<int64_t>(&v)) return std::min(*i, kCap);
  // Python's int(x * keys): the product in double, truncated toward zero.
  const double x = std::get<double>(v) * static_cast<double>(keys);
  return x >= static_cast<double>(kCap) ? kCap : static_cast<int64_t>(x);
}

const FieldSpec* MaskerSchema::Find(const std::string& field) const {
  for (const FieldSpec& f : fields)
    if (f.name == field) return &f;
  return nullptr;
}

FieldSpec SizeField(const std::string& name, std::string help,
                    std::optional<FieldValue> default_value) {
  FieldSpec f;
  f.name = name;
  f.type = FieldType::kSize;
  f.default_value = std::move(default_value);
  f.int_range = Range{0, 1e300, true, false};
  f.float_range = Range{0, 1e300, true, false};
  f.help = std::move(help);
  return f;
}

FieldSpec IntField(const std::string& name, Range range, std::string help,
                   std::optional<FieldValue> default_value) {
  FieldSpec f;
  f.name = name;
  f.type = FieldType::kInt;
  f.int_range = range;
  f.default_value = std::move(default_value);
  f.help = std::move(help);
  return f;
}

Status CheckFieldValue(const FieldSpec& spec, const FieldValue& value) {
  const bool is_int = std::holds_alternative<int64_t>(value);
  const bool is_float = std::holds_alternative<double>(value);
  switch (spec.type) {
    case FieldType::kSize:
      if (is_int && !spec.int_range.Contains(static_cast<double>(std::get<int64_t>(value))))
        return Expected(spec, "an integer count " + spec.int_range.ToString(), value);
      if (is_float && !spec.float_range.Contains(std::get<double>(value)))
        return Expected(spec, "a fraction " + spec.float_range.ToString(), value);
      if (!is_int && !is_float) return Expected(spec, TypeName(spec.type), value);
      return Status::Ok();
    case FieldType::kInt:
      if (!is_int) return Expected(spec, TypeName(spec.type), value);
      if (!spec.int_range.Contains(static_cast<double>(std::get<int64_t>(value))))
        return Expected(spec, "an integer " + spec.int_range.ToString(), value);
      return Status::Ok();
    case FieldType::kFloat: {
      if (!is_int && !is_float) return Expected(spec, TypeName(spec.type), value);
      const double x =
          is_int ? static_cast<double>(std::get<int64_t>(value)) : std::get<double>(value);
      if (!std::isfinite(x) || !spec.float_range.Contains(x))
        return Expected(spec, "a number " + spec.float_range.ToString(), value);
      return Status::Ok();
    }
    case FieldType::kBool:
      if (!std::holds_alternative<bool>(value)) return Expected(spec, TypeName(spec.type), value);
      return Status::Ok();
    case FieldType::kString:
    case FieldType::kPath: {
      if (!std::holds_alternative<std::string>(value))
        return Expected(spec, TypeName(spec.type), value);
      const std::string& s = std::get<std::string>(value);
      // An optional path (default "") may stay empty: "no file".
      const bool optional = spec.default_value && std::get_if<std::string>(&*spec.default_value) &&
                            std::get<std::string>(*spec.default_value).empty();
      if (spec.type == FieldType::kPath && s.empty() && !optional)
        return Expected(spec, "a non-empty file path", value);
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end()) {
        std::string list;
        for (const auto& c : spec.choices) list += (list.empty() ? "" : ", ") + c;
        return Expected(spec, "one of " + list, value);
      }
      return Status::Ok();
    }
  }
  return Status::Ok();
}

MaskerRegistry MaskerRegistry::WithBuiltins() {
  MaskerRegistry r;
  for (MaskerSchema& s : BuiltinMaskerSchemas()) r.Register(std::move(s));
  return r;
}

void MaskerRegistry::Register(MaskerSchema schema) {
  std::string type = schema.type;
  schemas_[type] = std::move(schema);
}

const MaskerSchema* MaskerRegistry::Find(const std::string& type) const {
  auto it = schemas_.find(type);
  return it == schemas_.end() ? nullptr : &it->second;
}

std::vector<std::string> MaskerRegistry::Types() const {
  std::vector<std::string> out;
  for (const auto& [type, schema] : schemas_) out.push_back(type);
  return out;
}

Result<MaskerConfig> MaskerRegistry::Validate(const std::string& type,
                                              const std::map<std::string, FieldValue>& given,
                                              const std::string& base_dir) const {
  const MaskerSchema* schema = Find(type);
  if (!schema) {
    std::string known;
    for (const auto& t : Types()) known += (known.empty() ? "" : ", ") + t;
    return Status::Error("unknown masker type '" + type + "' (known: " + known + ")");
  }
  MaskerConfig config;
  config.type = type;
  for (const auto& [name, value] : given) {
    const FieldSpec* spec = schema->Find(name);
    if (!spec) {
      std::string fields;
      for (const auto& f : schema->fields) fields += (fields.empty() ? "" : ", ") + f.name;
      return Status::Error("unknown field '" + name + "' (" + type +
                           " has: " + (fields.empty() ? "no fields" : fields) + ")");
    }
    MT_RETURN_IF_ERROR(CheckFieldValue(*spec, value));
    FieldValue v = value;
    if (spec->type == FieldType::kPath && !base_dir.empty()) {
      std::filesystem::path p(std::get<std::string>(v));
      if (p.is_relative()) v = (std::filesystem::path(base_dir) / p).lexically_normal().string();
    }
    config.values[name] = std::move(v);
  }
  for (const FieldSpec& spec : schema->fields) {
    if (config.values.count(spec.name)) continue;
    if (!spec.default_value) return Status::Error("missing required field '" + spec.name + "'");
    config.values[spec.name] = *spec.default_value;
  }
  return config;
}

namespace {

// Decodes the body of a JSON string (escapes included) well enough to compare
// keys: \uXXXX and surrogate pairs become UTF-8; anything malformed is kept
// as written (the parser reports it).
std::string DecodeJsonString(std::string_view raw) {
  std::string out;
  auto put = [&out](uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  };
  auto hex4 = [&raw](size_t at, uint32_t& cp) {
    if (at + 4 > raw.size()) return false;
    cp = 0;
    for (size_t k = at; k < at + 4; ++k) {
      const char c = raw[k];
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (d < 0) return false;
      cp = cp * 16 + static_cast<uint32_t>(d);
    }
    return true;
  };
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\' || i + 1 >= raw.size()) {
      out += raw[i];
      continue;
    }
    const char e = raw[++i];
    switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'u': {
        uint32_t cp = 0, lo = 0;
        if (!hex4(i + 1, cp)) {
          out += "\\u";
          break;
        }
        i += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 2 < raw.size() && raw[i + 1] == '\\' &&
            raw[i + 2] == 'u' && hex4(i + 3, lo) && lo >= 0xDC00 && lo < 0xE000) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          i += 6;
        }
        put(cp);
        break;
      }
      default:
        out += e;  // \" \\ \/ (and anything else, which the parser rejects)
    }
  }
  return out;
}

// A key as it appears in an error: control characters escaped, at most 64 bytes.
std::string PrintableKey(const std::string& key) {
  std::string out;
  for (unsigned char c : key.substr(0, 64)) {
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return key.size() > 64 ? out + "..." : out;
}

}  // namespace

Status CheckJsonText(std::string_view text, const std::string& root) {
  struct Level {
    bool object = false;
    bool expect_key = false;  // objects: the next string is a key
    bool has_key = false;
    int64_t index = 0;  // arrays: the element being read
    std::string key;    // objects: the key of the value being read
    std::set<std::string> keys;
  };
  std::vector<Level> stack;
  size_t line = 1, line_start = 0;
  auto path = [&]() {
    std::string p = root;
    size_t shown = 0;
    for (const Level& l : stack) {
      if (++shown > 8) {  // a path 64 levels deep says no more than its first steps
        p += "...";
        break;
      }
      if (!l.object) {
        p += '[';
        p += std::to_string(l.index);
        p += ']';
      } else if (l.has_key) {
        if (!p.empty()) p += '.';
        p += PrintableKey(l.key);
      }
    }
    return p.empty() ? std::string("top level") : p;
  };
  auto place = [&](size_t at) {
    return " (line " + std::to_string(line) + ", column " + std::to_string(at - line_start + 1) +
           ")";
  };
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const char c = text[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < n && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
      if (j >= n) return Status::Ok();  // unterminated: the parser says where
      if (!stack.empty() && stack.back().object && stack.back().expect_key) {
        Level& top = stack.back();
        std::string key = DecodeJsonString(text.substr(i + 1, j - i - 1));
        if (!top.keys.insert(key).second) {
          top.has_key = false;  // the path names the object holding the key
          return Status::Error(path() + ": duplicate key '" + PrintableKey(key) + "'" + place(i));
        }
        top.key = std::move(key);
        top.has_key = true;
        top.expect_key = false;
      }
      i = j + 1;
      continue;
    }
    if (c == '{' || c == '[') {
      if (stack.size() >= static_cast<size_t>(kMaxJsonDepth))
        return Status::Error(path() + ": nested deeper than " + std::to_string(kMaxJsonDepth) +
                             " levels" + place(i));
      Level l;
      l.object = c == '{';
      l.expect_key = l.object;
      stack.push_back(std::move(l));
    } else if (c == '}' || c == ']') {
      if (!stack.empty()) stack.pop_back();
    } else if (c == ',') {
      if (!stack.empty()) {
        Level& top = stack.back();
        if (top.object) {
          top.expect_key = true;
          top.has_key = false;
        } else {
          ++top.index;
        }
      }
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t j = i;
      while (j < n && std::strchr("+-0123456789.eE", text[j]) != nullptr && text[j] != '\0') ++j;
      const std::string token(text.substr(i, j - i));
      if (std::isinf(std::strtod(token.c_str(), nullptr))) {
        return Status::Error(path() + ": number " + token.substr(0, 64) +
                             (token.size() > 64 ? "..." : "") + " is beyond the range of a double" +
                             place(i));
      }
      i = j;
      continue;
    } else if (c == '\n') {
      ++line;
      line_start = i + 1;
    }
    ++i;
  }
  return Status::Ok();
}

Result<std::vector<MaskerConfig>> MaskerRegistry::ParseJsonList(const std::string& json_text,
                                                                const std::string& base_dir) const {
  using json = nlohmann::json;
  if (Status s = CheckJsonText(json_text, "maskers"); !s.ok())
    return s.WithContext("masker list: ");
  json list;
  try {
    list = json::parse(json_text);
  } catch (const json::exception& e) {
    return Status::Error(std::string("masker list is not valid JSON: ") + e.what());
  }
  if (!list.is_array()) return Status::Error("masker list must be a JSON array of objects");
  // A value as an error shows it: one line, at most 100 characters.
  auto shown = [](const json& v) {
    std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
    return s.size() > 100 ? s.substr(0, 100) + "..." : s;
  };
  std::vector<MaskerConfig> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& item = list[i];
    std::string where = "maskers[" + std::to_string(i) + "]";
    if (!item.is_object())
      return Status::Error(where + ": expected an object, found " + shown(item));
    if (!item.contains("type")) return Status::Error(where + ": missing string field 'type'");
    if (!item["type"].is_string())
      return Status::Error(where + ": field 'type': expected a string, found " +
                           shown(item["type"]));
    const std::string type = item["type"].get<std::string>();
    where += " (" + PrintableKey(type) + "): ";
    std::map<std::string, FieldValue> given;
    for (auto& [key, val] : item.items()) {
      if (key == "type") continue;
      auto value = FieldValueFromJson(val);
      if (!value.ok())
        return value.status().WithContext(where + "field '" + PrintableKey(key) + "': ");
      given[key] = std::move(value).value();
    }
    auto config = Validate(type, given, base_dir);
    if (!config.ok()) return config.status().WithContext(where);
    out.push_back(std::move(config).value());
  }
  return out;
}

Result<MaskerStack> MaskerStack::Build(const MaskerRegistry& registry,
                                       const std::vector<MaskerConfig>& configs) {
  // The stack's shape is checked before any masker loads its side files.
  int sampling = -1;
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string where = "maskers[" + std::to_string(i) + "] (" + configs[i].type + "): ";
    const MaskerSchema* schema = registry.Find(configs[i].type);
    if (!schema) return Status::Error(where + "unknown masker type");
    if (!schema->sampling) continue;
    if (sampling >= 0)
      return Status::Error(where + "a stack holds at most one sampling masker; maskers[" +
                           std::to_string(sampling) + "] (" + configs[sampling].type +
                           ") is one already");
    sampling = static_cast<int>(i);
  }
  MaskerStack stack;
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string where = "maskers[" + std::to_string(i) + "] (" + configs[i].type + "): ";
    auto masker = registry.Find(configs[i].type)
                      ->create(configs[i], configs[i].type + "#" + std::to_string(i));
    if (!masker.ok()) return masker.status().WithContext(where);
    stack.types_.push_back(configs[i].type);
    stack.maskers_.push_back(std::move(masker).value());
  }
  return stack;
}

Result<Mask> MaskerStack::ComputeMask(const AttentionInputs& in, StackState& state) const {
  MT_RETURN_IF_ERROR(CheckAttentionInputs(in));
  Mask mask = Mask::Empty(in.mask_shape());
  LayerState& layer = state[in.layer];
  for (size_t i = 0; i < maskers_.size(); ++i) {
    auto next = maskers_[i]->AddMask(in, mask, layer);
    if (!next.ok())
      return next.status().WithContext("maskers[" + std::to_string(i) + "] (" + types_[i] + "): ");
    mask = std::move(next).value();
  }
  return mask;
}

}  // namespace masktune
