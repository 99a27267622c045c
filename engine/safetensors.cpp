#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace masktune {
namespace {

using json = nlohmann::json;

// Header larger than this is refused rather than allocated (the format caps it at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

uint64_t ReadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

int DtypeBytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3FFu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float BFloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

Result<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  const std::string where = path + ": ";
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(where + "cannot open file (" + std::strerror(errno) + ")");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  if (bytes.size() < 8) {
    return Status::Error(where + "truncated: " + std::to_string(bytes.size()) +
                         " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_len = ReadLe64(bytes.data());
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    return Status::Error(where + "truncated or not safetensors: header length " +
                         std::to_string(header_len) + " exceeds the " +
                         std::to_string(bytes.size() - 8) + " bytes after it");
  }
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(header_len));
  } catch (const json::parse_error& e) {
    return Status::Error(where + "header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) return Status::Error(where + "header is not a JSON object");

  const unsigned char* data = bytes.data() + 8 + header_len;
  const uint64_t data_len = bytes.size() - 8 - header_len;
  const uint64_t data_len_limit = data_len + 1;  // element counts above this cannot fit
  SafetensorsFile file;
  file.path_ = path;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Status::Error(where + "__metadata__ is not an object");
      for (auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          return Status::Error(where + "__metadata__ value '" + k + "' is not a string");
        }
        file.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string tw = where + "tensor '" + name + "': ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return Status::Error(tw + "header entry needs dtype, shape and data_offsets");
    }
    if (!entry["dtype"].is_string()) return Status::Error(tw + "dtype is not a string");
    const std::string dtype = entry["dtype"].get<std::string>();
    const int elem = DtypeBytes(dtype);
    if (elem == 0) {
      return Status::Error(tw + "unsupported dtype " + dtype + " (expected F32, F16 or BF16)");
    }
    const json& js = entry["shape"];
    const json& jo = entry["data_offsets"];
    if (!js.is_array()) return Status::Error(tw + "shape is not a list");
    Shape shape;
    uint64_t count = 1;
    for (const json& d : js) {
      if (!d.is_number_unsigned()) return Status::Error(tw + "shape holds a non-integer or negative");
      const uint64_t dim = d.get<uint64_t>();
      // A shape larger than the file cannot be backed by it (and must not overflow).
      if (dim != 0 && count > data_len_limit / dim)
        return Status::Error(tw + "shape " + js.dump() + " is larger than the file");
      count *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() ||
        !jo[1].is_number_unsigned()) {
      return Status::Error(tw + "data_offsets is not a pair of non-negative integers");
    }
    const uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
    if (end < begin || end - begin != count * static_cast<uint64_t>(elem)) {
      return Status::Error(tw + "header does not match the data: shape " + ShapeToString(shape) +
                           " of " + dtype + " needs " + std::to_string(count * elem) +
                           " bytes, data_offsets span " +
                           std::to_string(end >= begin ? end - begin : 0));
    }
    if (end > data_len) {
      return Status::Error(tw + "truncated: data ends at byte " + std::to_string(end) +
                           " of the data section, which has " + std::to_string(data_len));
    }
    std::vector<float> values(count);
    const unsigned char* src = data + begin;
    if (dtype == "F32") {
      std::memcpy(values.data(), src, count * 4);
    } else {
      const bool half = dtype == "F16";
      for (uint64_t i = 0; i < count; ++i) {
        const uint16_t h = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
        values[i] = half ? HalfToFloat(h) : BFloat16ToFloat(h);
      }
    }
    file.tensors_.emplace(name, Tensor(std::move(shape), std::move(values)));
  }
  return file;
}

Result<const Tensor*> SafetensorsFile::Get(const std::string& name, int rank) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return Status::Error(path_ + ": missing tensor '" + name + "'");
  if (rank >= 0) MT_RETURN_IF_ERROR(CheckRank(it->second, name, rank).WithContext(path_ + ": "));
  return &it->second;
}

Status WriteSafetensors(const std::string& path,
                        const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  // Offsets follow name order, the order a json object lists its keys in.
  std::vector<std::pair<std::string, const Tensor*>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : sorted) {
    const uint64_t bytes = static_cast<uint64_t>(t->size()) * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t->shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';  // align the data section, as the format advises
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Status::Error(path + ": cannot create file (" + std::strerror(errno) + ")");
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((text.size() >> (8 * i)) & 0xFF);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : sorted) {
    out.write(reinterpret_cast<const char*>(t->data()), static_cast<std::streamsize>(t->size() * 4));
  }
  if (!out) return Status::Error(path + ": write failed");
  return Status::Ok();
}

}  // namespace masktune
