#include "engine/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>

#include "engine/registry.h"

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
  // Only a regular file has a size to check before reading: a folder, a device
  // (/dev/zero, /dev/urandom: endless) or a pipe is refused at once.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return Status::Error(where + "cannot open file (" + std::strerror(errno) + ")");
  if (S_ISDIR(st.st_mode)) return Status::Error(where + "is a folder, not a safetensors file");
  if (!S_ISREG(st.st_mode)) {
    return Status::Error(where +
                         "is not a regular file (a device, pipe or socket); expected a "
                         "safetensors file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(where + "cannot open file (" + std::strerror(errno) + ")");
  if (file_size < 8) {
    return Status::Error(where + "truncated: " + std::to_string(file_size) +
                         " bytes, too short for the 8-byte header length");
  }
  unsigned char len_bytes[8];
  if (!in.read(reinterpret_cast<char*>(len_bytes), 8))
    return Status::Error(where + "read failed at the header length");
  const uint64_t header_len = ReadLe64(len_bytes);
  // Checked against the file's size before anything is allocated.
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return Status::Error(where + "truncated or not safetensors: header length " +
                         std::to_string(header_len) + " exceeds the " +
                         std::to_string(file_size - 8) + " bytes after it" +
                         (header_len > kMaxHeaderBytes ? " (or the 100 MiB limit)" : ""));
  }
  std::string text(header_len, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(header_len)))
    return Status::Error(where + "truncated while reading the header (the file shrank?)");
  if (Status s = CheckJsonText(text, ""); !s.ok()) return s.WithContext(where + "header: ");
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    return Status::Error(where + "header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) return Status::Error(where + "header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_len = file_size - data_start;
  struct Entry {
    std::string name, dtype;
    Shape shape;
    uint64_t count, begin, end;
  };
  std::vector<Entry> entries;
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
    uint64_t count = 1, nonzero = 1;
    for (const json& d : js) {
      if (!d.is_number_unsigned())
        return Status::Error(tw + "shape holds a non-integer or negative");
      const uint64_t dim = d.get<uint64_t>();
      // A shape larger than the file cannot be backed by it (and must not overflow);
      // dimensions beside a 0 are held to the file's size too.
      if (dim != 0 && nonzero > data_len / dim) {
        return Status::Error(tw + "shape " + js.dump() + " is larger than the file (" +
                             std::to_string(data_len) + " bytes of data)");
      }
      if (dim != 0) nonzero *= dim;
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
                           std::to_string(end >= begin ? end - begin : 0) +
                           (end < begin ? " (end before begin)" : ""));
    }
    if (end > data_len) {
      return Status::Error(tw + "truncated: data ends at byte " + std::to_string(end) +
                           " of the data section, which has " + std::to_string(data_len));
    }
    entries.push_back({name, dtype, std::move(shape), count, begin, end});
  }
  // As the format requires: the tensors tile the data section, without overlaps or gaps.
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const Entry* last = nullptr;
  for (const Entry* e : order) {
    const std::string tw = where + "tensor '" + e->name + "': ";
    if (e->begin < covered) {
      return Status::Error(tw + "data_offsets [" + std::to_string(e->begin) + ", " +
                           std::to_string(e->end) + "] overlap those of tensor '" + last->name +
                           "' [" + std::to_string(last->begin) + ", " + std::to_string(last->end) +
                           "]");
    }
    if (e->begin > covered) {
      return Status::Error(tw + "data_offsets start at byte " + std::to_string(e->begin) +
                           ": bytes " + std::to_string(covered) + " to " +
                           std::to_string(e->begin) + " of the data section belong to no tensor");
    }
    covered = e->end;
    last = e;
  }
  if (covered != data_len) {
    return Status::Error(where + "the data section has " + std::to_string(data_len) +
                         " bytes but its tensors cover " + std::to_string(covered) +
                         " (trailing bytes, or not safetensors)");
  }

  std::vector<unsigned char> raw;
  try {
    for (const Entry& e : entries) {
      const std::string tw = where + "tensor '" + e.name + "': ";
      std::vector<float> values(e.count);
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      if (e.dtype == "F32") {
        if (e.count > 0 && !in.read(reinterpret_cast<char*>(values.data()),
                                    static_cast<std::streamsize>(e.count * 4)))
          return Status::Error(tw + "truncated while reading (the file shrank?)");
      } else {
        raw.resize(e.count * 2);
        if (e.count > 0 && !in.read(reinterpret_cast<char*>(raw.data()),
                                    static_cast<std::streamsize>(e.count * 2)))
          return Status::Error(tw + "truncated while reading (the file shrank?)");
        const bool half = e.dtype == "F16";
        for (uint64_t i = 0; i < e.count; ++i) {
          const uint16_t h = static_cast<uint16_t>(raw[2 * i] | (raw[2 * i + 1] << 8));
          values[i] = half ? HalfToFloat(h) : BFloat16ToFloat(h);
        }
      }
      file.tensors_.emplace(e.name, Tensor(e.shape, std::move(values)));
    }
  } catch (const std::bad_alloc&) {
    return Status::Error(where + "not enough memory to read its " + std::to_string(data_len) +
                         " bytes of tensors");
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
    header[name] = {
        {"dtype", "F32"}, {"shape", t->shape()}, {"data_offsets", {offset, offset + bytes}}};
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
    out.write(reinterpret_cast<const char*>(t->data()),
              static_cast<std::streamsize>(t->size() * 4));
  }
  if (!out) return Status::Error(path + ": write failed");
  return Status::Ok();
}

}  // namespace masktune
