// File: engine/model/gguf.cpp
//
// GGUF layout (little-endian): "GGUF", uint32 version, uint64 tensor count,
// uint64 metadata count, the metadata (key string, uint32 type, value), the
// tensor directory (name, uint32 n_dims, uint64 dims[n_dims], uint32 type,
// uint64 offset), padding to the alignment, then the data. Strings are a
// uint64 length and bytes. Every count and length is checked against the
// bytes left before anything is allocated.
#include "engine/model/gguf.h"

#include <cstring>
#include <fstream>
#include <limits>

#include "engine/safetensors.h"

namespace masktune::model {
namespace {

enum MetaType : uint32_t {
  kU8 = 0, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64,
};

// Reads little-endian values from a byte buffer; the first failure sticks
// and names the offset.
class Reader {
 public:
  Reader(const std::vector<uint8_t>& b, std::string path) : b_(b), path_(std::move(path)) {}
  bool ok() const { return err_.empty(); }
  const std::string& error() const { return err_; }
  size_t pos() const { return pos_; }
  size_t left() const { return b_.size() - pos_; }

  void Fail(const std::string& what) {
    if (err_.empty()) err_ = path_ + ": " + what;
  }
  bool Need(uint64_t n, const char* what) {
    if (!ok()) return false;
    if (n > left()) {
      Fail(std::string("truncated file: ") + what + " at byte " + std::to_string(pos_) +
           " needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left");
      return false;
    }
    return true;
  }
  template <typename T>
  T Get(const char* what) {
    T v{};
    if (!Need(sizeof(T), what)) return v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string String(const char* what) {
    const uint64_t n = Get<uint64_t>(what);
    if (!Need(n, what)) return {};
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  void Skip(uint64_t n, const char* what) {
    if (Need(n, what)) pos_ += n;
  }

 private:
  const std::vector<uint8_t>& b_;
  std::string path_;
  size_t pos_ = 0;
  std::string err_;
};

size_t ScalarSize(uint32_t t) {
  switch (t) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    default: return 0;
  }
}

// One scalar of type t as int64 / double / bool; false on a uint64 beyond int64.
bool ReadScalar(Reader& r, uint32_t t, GgufValue& out) {
  switch (t) {
    case kU8: out = int64_t{r.Get<uint8_t>("value")}; break;
    case kI8: out = int64_t{r.Get<int8_t>("value")}; break;
    case kU16: out = int64_t{r.Get<uint16_t>("value")}; break;
    case kI16: out = int64_t{r.Get<int16_t>("value")}; break;
    case kU32: out = int64_t{r.Get<uint32_t>("value")}; break;
    case kI32: out = int64_t{r.Get<int32_t>("value")}; break;
    case kI64: out = r.Get<int64_t>("value"); break;
    case kU64: {
      const uint64_t v = r.Get<uint64_t>("value");
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
      out = static_cast<int64_t>(v);
      break;
    }
    case kF32: out = double{r.Get<float>("value")}; break;
    case kF64: out = r.Get<double>("value"); break;
    case kBool: out = r.Get<uint8_t>("value") != 0; break;
    default: return false;
  }
  return true;
}

Status ReadValue(Reader& r, uint32_t type, const std::string& key, GgufValue& out) {
  auto bad = [&](const std::string& m) { return Status::Error("key '" + key + "': " + m); };
  if (type == kString) {
    out = r.String("string value");
  } else if (type == kArray) {
    const uint32_t et = r.Get<uint32_t>("array type");
    const uint64_t n = r.Get<uint64_t>("array length");
    if (!r.ok()) return Status::Ok();
    GgufArray a;
    if (et == kArray) {  // nested: skipped
      a.nested = true;
      for (uint64_t i = 0; i < n && r.ok(); ++i) {
        GgufValue ignored;
        MT_RETURN_IF_ERROR(ReadValue(r, kArray, key, ignored));
      }
    } else if (et == kString) {
      if (n > r.left() / 8) return bad("array of " + std::to_string(n) + " strings exceeds the file");
      a.strings.reserve(n);
      for (uint64_t i = 0; i < n && r.ok(); ++i) a.strings.push_back(r.String("array string"));
    } else {
      const size_t sz = ScalarSize(et);
      if (sz == 0) return bad("unknown array element type " + std::to_string(et));
      if (n > r.left() / sz) return bad("array of " + std::to_string(n) + " elements exceeds the file");
      for (uint64_t i = 0; i < n && r.ok(); ++i) {
        GgufValue v;
        if (!ReadScalar(r, et, v)) return bad("uint64 element beyond the int64 range");
        if (auto* x = std::get_if<int64_t>(&v)) a.ints.push_back(*x);
        else if (auto* d = std::get_if<double>(&v)) a.floats.push_back(*d);
        else a.bools.push_back(std::get<bool>(v));
      }
    }
    out = std::move(a);
  } else if (ScalarSize(type) == 0) {
    return bad("unknown metadata type " + std::to_string(type));
  } else if (!ReadScalar(r, type, out)) {
    return bad("uint64 value beyond the int64 range");
  }
  return Status::Ok();
}

// Bytes of a tensor with `elements` elements and innermost dim `row` of `type`;
// 0 with `why` set when the type is unknown or the row does not fill blocks.
uint64_t TensorBytes(GgufTensorType type, uint64_t elements, uint64_t row, std::string& why) {
  switch (type) {
    case GgufTensorType::kF32: return elements * 4;
    case GgufTensorType::kF16:
    case GgufTensorType::kBF16: return elements * 2;
    case GgufTensorType::kQ4_0:
    case GgufTensorType::kQ4_1:
    case GgufTensorType::kQ8_0: {
      if (row % 32 != 0) {
        why = "innermost dimension " + std::to_string(row) + " is not a multiple of the block (32)";
        return 0;
      }
      const uint64_t block = type == GgufTensorType::kQ4_0 ? 18 : type == GgufTensorType::kQ4_1 ? 20 : 34;
      return elements / 32 * block;
    }
  }
  why = "unsupported tensor type " + std::to_string(static_cast<uint32_t>(type)) +
        " (masktune reads F32, F16, BF16, Q8_0, Q4_0, Q4_1)";
  return 0;
}

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

}  // namespace

Result<GgufFile> GgufFile::Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(path + ": cannot open the file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Reader r(bytes, path);
  GgufFile f;
  f.path_ = path;
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0)
    return Status::Error(path + ": not a GGUF file (bad magic)");
  r.Skip(4, "magic");
  f.version_ = r.Get<uint32_t>("version");
  if (!r.ok()) return Status::Error(r.error());
  if (f.version_ != 2 && f.version_ != 3)
    return Status::Error(path + ": unsupported GGUF version " + std::to_string(f.version_) +
                         " (masktune reads versions 2 and 3)");
  const uint64_t n_tensors = r.Get<uint64_t>("tensor count");
  const uint64_t n_kv = r.Get<uint64_t>("metadata count");
  if (!r.ok()) return Status::Error(r.error());
  // Each entry takes at least 12 bytes; larger counts cannot fit the file.
  if (n_kv > r.left() / 12 || n_tensors > r.left() / 12)
    return Status::Error(path + ": " + std::to_string(n_kv) + " metadata entries and " +
                         std::to_string(n_tensors) + " tensors cannot fit in the file");
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.String("metadata key");
    const uint32_t type = r.Get<uint32_t>("metadata type");
    if (!r.ok()) return Status::Error(r.error());
    GgufValue v;
    MT_RETURN_IF_ERROR(ReadValue(r, type, key, v).WithContext(path + ": "));
    if (!r.ok()) return Status::Error(r.error() + " (key '" + key + "')");
    if (!f.metadata_.emplace(key, std::move(v)).second)
      return Status::Error(path + ": duplicate metadata key '" + key + "'");
  }
  uint64_t alignment = 32;
  if (f.HasKey("general.alignment")) {
    MT_ASSIGN_OR_RETURN(int64_t a, f.GetInt("general.alignment"));
    if (a <= 0 || (a & (a - 1)) != 0)
      return Status::Error(path + ": general.alignment " + std::to_string(a) +
                           " is not a power of two");
    alignment = static_cast<uint64_t>(a);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.String("tensor name");
    const uint32_t n_dims = r.Get<uint32_t>("tensor dims");
    if (!r.ok()) return Status::Error(r.error());
    if (n_dims == 0 || n_dims > 4)
      return Status::Error(path + ": tensor '" + t.name + "': " + std::to_string(n_dims) +
                           " dimensions (1 to 4 allowed)");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t x = r.Get<uint64_t>("tensor dim");
      if (x == 0 || x > (uint64_t{1} << 40) || elements > (uint64_t{1} << 62) / x)
        return Status::Error(path + ": tensor '" + t.name + "': dimension " + std::to_string(x) +
                             " out of range");
      elements *= x;
      t.dims.push_back(static_cast<int64_t>(x));
    }
    t.type = static_cast<GgufTensorType>(r.Get<uint32_t>("tensor type"));
    t.offset = r.Get<uint64_t>("tensor offset");
    if (!r.ok()) return Status::Error(r.error());
    std::string why;
    t.bytes = TensorBytes(t.type, elements, static_cast<uint64_t>(t.dims[0]), why);
    if (t.bytes == 0) return Status::Error(path + ": tensor '" + t.name + "': " + why);
    if (t.offset % alignment != 0)
      return Status::Error(path + ": tensor '" + t.name + "': offset " + std::to_string(t.offset) +
                           " is not a multiple of the alignment " + std::to_string(alignment));
    for (const auto& other : f.tensors_)
      if (other.name == t.name) return Status::Error(path + ": duplicate tensor '" + t.name + "'");
    f.tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  const uint64_t data_size = bytes.size() > data_start ? bytes.size() - data_start : 0;
  for (const auto& t : f.tensors_)
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      return Status::Error(path + ": tensor '" + t.name + "': data ends at byte " +
                           std::to_string(data_start + t.offset + t.bytes) +
                           ", past the end of the file (" + std::to_string(bytes.size()) +
                           " bytes)");
  f.data_.assign(bytes.begin() + static_cast<std::ptrdiff_t>(std::min<uint64_t>(data_start, bytes.size())),
                 bytes.end());
  return f;
}

bool GgufFile::HasTensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return true;
  return false;
}

namespace {
template <typename T>
const T* Find(const std::map<std::string, GgufValue>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? nullptr : std::get_if<T>(&it->second);
}
}  // namespace

Result<int64_t> GgufFile::GetInt(const std::string& key) const {
  if (!HasKey(key)) return Status::Error(path_ + ": missing metadata key '" + key + "'");
  if (auto* v = Find<int64_t>(metadata_, key)) return *v;
  return Status::Error(path_ + ": metadata key '" + key + "' is not an integer");
}

Result<double> GgufFile::GetFloat(const std::string& key) const {
  if (!HasKey(key)) return Status::Error(path_ + ": missing metadata key '" + key + "'");
  if (auto* v = Find<double>(metadata_, key)) return *v;
  if (auto* v = Find<int64_t>(metadata_, key)) return static_cast<double>(*v);
  return Status::Error(path_ + ": metadata key '" + key + "' is not a number");
}

Result<std::string> GgufFile::GetString(const std::string& key) const {
  if (!HasKey(key)) return Status::Error(path_ + ": missing metadata key '" + key + "'");
  if (auto* v = Find<std::string>(metadata_, key)) return *v;
  return Status::Error(path_ + ": metadata key '" + key + "' is not a string");
}

Result<const GgufArray*> GgufFile::GetArray(const std::string& key) const {
  if (!HasKey(key)) return Status::Error(path_ + ": missing metadata key '" + key + "'");
  if (auto* v = Find<GgufArray>(metadata_, key)) return v;
  return Status::Error(path_ + ": metadata key '" + key + "' is not an array");
}

Result<Tensor> GgufFile::ReadTensor(const std::string& name) const {
  const GgufTensorInfo* info = nullptr;
  for (const auto& t : tensors_)
    if (t.name == name) info = &t;
  if (!info) return Status::Error(path_ + ": missing tensor '" + name + "'");
  Shape shape(info->dims.rbegin(), info->dims.rend());
  Tensor out(shape);
  const uint8_t* src = data_.data() + info->offset;
  float* dst = out.data();
  const int64_t n = out.size();
  switch (info->type) {
    case GgufTensorType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case GgufTensorType::kF16:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) dst[i] = Half(src + 2 * i);
      break;
    case GgufTensorType::kBF16:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = BFloat16ToFloat(h);
      }
      break;
    case GgufTensorType::kQ8_0:  // per 32: f16 scale d, 32 int8 q; x = d q
#pragma omp parallel for schedule(static)
      for (int64_t blk = 0; blk < n / 32; ++blk) {
        const uint8_t* p = src + blk * 34;
        const float d = Half(p);
        for (int i = 0; i < 32; ++i) dst[blk * 32 + i] = d * static_cast<float>(static_cast<int8_t>(p[2 + i]));
      }
      break;
    case GgufTensorType::kQ4_0:  // f16 d, 16 bytes: low nibbles 0..15, high 16..31; x = d (q - 8)
    case GgufTensorType::kQ4_1: {  // f16 d, f16 m, nibbles as above; x = d q + m
      const bool q41 = info->type == GgufTensorType::kQ4_1;
      const int64_t block = q41 ? 20 : 18;
#pragma omp parallel for schedule(static)
      for (int64_t blk = 0; blk < n / 32; ++blk) {
        const uint8_t* p = src + blk * block;
        const float d = Half(p), m = q41 ? Half(p + 2) : 0.0f;
        const uint8_t* qs = p + (q41 ? 4 : 2);
        const int offset = q41 ? 0 : 8;  // Q4_0 is centred on 8
        float* o = dst + blk * 32;
        for (int i = 0; i < 16; ++i) {
          o[i] = static_cast<float>((qs[i] & 0x0F) - offset) * d + m;
          o[i + 16] = static_cast<float>((qs[i] >> 4) - offset) * d + m;
        }
      }
      break;
    }
  }
  return out;
}

}  // namespace masktune::model
