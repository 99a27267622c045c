// File: engine/model/gguf.cpp
//
// Reads GGUF files. Layout (little-endian): "GGUF", uint32 version, uint64
// tensor count, uint64 metadata count; the metadata (key string, uint32 value
// type, value); the tensor directory (name string, uint32 n_dims, uint64
// dims[n_dims] innermost first, uint32 tensor type, uint64 offset into the data
// section); padding up to general.alignment (default 32); the data section.
// A string is a uint64 length and that many bytes; an array is a uint32
// element type, a uint64 count and the elements.
//
// The file is mapped read-only. Parsing walks it with a bounds-checked Reader:
// every count and length is compared with the bytes left before anything is
// allocated, every size product is overflow-checked, and every tensor's byte
// range is checked against the file at Open, so ReadTensor cannot read out of
// bounds. Messages are built without the path and get "PATH: " in front once,
// in Open; the parts in between add the key or tensor they were reading.
//
// The block layouts and dequantisation (ggml's reference, ggml-quants.c) live
// in quant.cpp, shared with the runtime's products on quantised weights.
#include "engine/model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include "engine/model/quant.h"

namespace masktune::model {
namespace {

static_assert(std::endian::native == std::endian::little, "the reader copies values as stored");

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayNesting = 8;  // nested arrays are skipped; deeper ones are refused
constexpr uint64_t kMaxReserve = uint64_t{1} << 16;  // array elements reserved up front

// Metadata value types (the GGUF spec's numbering).
enum MetaType : uint32_t {
  kMetaU8 = 0,
  kMetaI8 = 1,
  kMetaU16 = 2,
  kMetaI16 = 3,
  kMetaU32 = 4,
  kMetaI32 = 5,
  kMetaF32 = 6,
  kMetaBool = 7,
  kMetaString = 8,
  kMetaArray = 9,
  kMetaU64 = 10,
  kMetaI64 = 11,
  kMetaF64 = 12,
};

const char* MetaTypeName(uint32_t type) {
  static constexpr const char* kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                           "int32",  "float32", "bool",   "string", "array",
                                           "uint64", "int64",   "float64"};
  return type <= kMetaF64 ? kNames[type] : "unknown";
}

// Bytes of one scalar of `type`; 0 for string, array and unknown types.
uint64_t ScalarBytes(uint32_t type) {
  switch (type) {
    case kMetaU8:
    case kMetaI8:
    case kMetaBool:
      return 1;
    case kMetaU16:
    case kMetaI16:
      return 2;
    case kMetaU32:
    case kMetaI32:
    case kMetaF32:
      return 4;
    case kMetaU64:
    case kMetaI64:
    case kMetaF64:
      return 8;
    default:
      return 0;
  }
}

// The fewest bytes one value of `type` can take in the file: bounds counts.
uint64_t MinValueBytes(uint32_t type) {
  if (type == kMetaString) return 8;  // length
  if (type == kMetaArray) return 12;  // element type + count
  return ScalarBytes(type);
}

// Name of a tensor type for messages; the ones masktune cannot read are named
// too where ggml defines them, so "Q4_K (12)" says what the file holds.
std::string TensorTypeName(uint32_t type) {
  static constexpr std::pair<uint32_t, const char*> kNames[] = {
      {0, "F32"},   {1, "F16"},   {2, "Q4_0"},  {3, "Q4_1"},  {6, "Q5_0"},  {7, "Q5_1"},
      {8, "Q8_0"},  {9, "Q8_1"},  {10, "Q2_K"}, {11, "Q3_K"}, {12, "Q4_K"}, {13, "Q5_K"},
      {14, "Q6_K"}, {15, "Q8_K"}, {28, "F64"},  {30, "BF16"}};
  for (const auto& [number, name] : kNames)
    if (number == type) return name;
  return "";
}

// How a tensor type stores its elements: `bytes` per block of `elements`.
struct BlockLayout {
  uint64_t bytes;
  uint64_t elements;
};

// The layout of the types masktune reads (quant.h knows them); nullopt for any other type.
std::optional<BlockLayout> LayoutOf(uint32_t type) {
  const auto t = static_cast<GgufTensorType>(type);
  switch (t) {
    case GgufTensorType::kF32:
    case GgufTensorType::kF16:
    case GgufTensorType::kBF16:
    case GgufTensorType::kQ8_0:
    case GgufTensorType::kQ4_0:
    case GgufTensorType::kQ4_1:
      return BlockLayout{BlockBytes(t), static_cast<uint64_t>(BlockElements(t))};
  }
  return std::nullopt;
}

// Reads little-endian values from [bytes, bytes + size) and never past it.
class Reader {
 public:
  Reader(const uint8_t* bytes, uint64_t size) : bytes_(bytes), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  // OK when `n` more bytes exist; else "truncated file: WHAT at byte P needs N bytes, M left".
  Status Need(uint64_t n, std::string_view what) const {
    if (n <= left()) return Status::Ok();
    return Status::Error("truncated file: " + std::string(what) + " at byte " +
                         std::to_string(pos_) + " needs " + std::to_string(n) +
                         (n == 1 ? " byte, " : " bytes, ") + std::to_string(left()) + " left");
  }
  // OK when `count` items of at least `min_bytes` each can fit in what is left.
  Status NeedCount(uint64_t count, uint64_t min_bytes, std::string_view what) const {
    if (count <= left() / min_bytes) return Status::Ok();
    return Status::Error("truncated file: " + std::to_string(count) + " " + std::string(what) +
                         " at byte " + std::to_string(pos_) + " cannot fit in the " +
                         std::to_string(left()) + " bytes left");
  }

  template <typename T>
  Status Get(T* out, std::string_view what) {
    MT_RETURN_IF_ERROR(Need(sizeof(T), what));
    std::memcpy(out, bytes_ + pos_, sizeof(T));  // little-endian, as the host (asserted above)
    pos_ += sizeof(T);
    return Status::Ok();
  }

  Status String(std::string* out, std::string_view what) {
    uint64_t n = 0;
    if (sizeof(n) > left()) return Need(sizeof(n), std::string(what) + " length");
    std::memcpy(&n, bytes_ + pos_, sizeof(n));
    pos_ += sizeof(n);
    if (n > left()) return Need(n, what);
    out->assign(reinterpret_cast<const char*>(bytes_ + pos_), n);
    pos_ += n;
    return Status::Ok();
  }

  Status Skip(uint64_t n, std::string_view what) {
    MT_RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return Status::Ok();
  }

 private:
  const uint8_t* bytes_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Reads a T and stores it as a W.
template <typename T, typename W>
Status ReadAs(Reader& r, const char* what, GgufValue* out) {
  T v{};
  MT_RETURN_IF_ERROR(r.Get(&v, what));
  *out = static_cast<W>(v);
  return Status::Ok();
}

// One integer, float or bool scalar of `type`, widened to int64 / double / bool.
Status ReadScalar(Reader& r, uint32_t type, GgufValue* out) {
  const char* what = MetaTypeName(type);
  switch (type) {
    case kMetaU8:
      return ReadAs<uint8_t, int64_t>(r, what, out);
    case kMetaI8:
      return ReadAs<int8_t, int64_t>(r, what, out);
    case kMetaU16:
      return ReadAs<uint16_t, int64_t>(r, what, out);
    case kMetaI16:
      return ReadAs<int16_t, int64_t>(r, what, out);
    case kMetaU32:
      return ReadAs<uint32_t, int64_t>(r, what, out);
    case kMetaI32:
      return ReadAs<int32_t, int64_t>(r, what, out);
    case kMetaI64:
      return ReadAs<int64_t, int64_t>(r, what, out);
    case kMetaF32:
      return ReadAs<float, double>(r, what, out);
    case kMetaF64:
      return ReadAs<double, double>(r, what, out);
    case kMetaBool:
      return ReadAs<uint8_t, bool>(r, what, out);  // nonzero is true
    case kMetaU64: {
      uint64_t v = 0;
      MT_RETURN_IF_ERROR(r.Get(&v, what));
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Status::Error("uint64 value " + std::to_string(v) + " exceeds the int64 range");
      *out = static_cast<int64_t>(v);
      return Status::Ok();
    }
    default:
      return Status::Error("unknown metadata value type " + std::to_string(type));
  }
}

// Moves past one value of `type` without keeping it (elements of nested arrays).
Status SkipValue(Reader& r, uint32_t type, int depth) {
  if (type == kMetaString) {
    std::string ignored;
    return r.String(&ignored, "string");
  }
  if (type != kMetaArray) {
    const uint64_t n = ScalarBytes(type);
    if (n == 0) return Status::Error("unknown metadata value type " + std::to_string(type));
    return r.Skip(n, MetaTypeName(type));
  }
  if (depth >= kMaxArrayNesting)
    return Status::Error("arrays nested more than " + std::to_string(kMaxArrayNesting) + " deep");
  uint32_t element_type = 0;
  uint64_t count = 0;
  MT_RETURN_IF_ERROR(r.Get(&element_type, "array element type"));
  MT_RETURN_IF_ERROR(r.Get(&count, "array length"));
  const uint64_t min_bytes = MinValueBytes(element_type);
  if (min_bytes == 0)
    return Status::Error("unknown array element type " + std::to_string(element_type));
  MT_RETURN_IF_ERROR(r.NeedCount(count, min_bytes, "array elements"));
  if (ScalarBytes(element_type) != 0) return r.Skip(count * min_bytes, "array elements");
  for (uint64_t i = 0; i < count; ++i) MT_RETURN_IF_ERROR(SkipValue(r, element_type, depth + 1));
  return Status::Ok();
}

Status ReadArray(Reader& r, GgufArray* out) {
  uint32_t element_type = 0;
  uint64_t count = 0;
  MT_RETURN_IF_ERROR(r.Get(&element_type, "array element type"));
  MT_RETURN_IF_ERROR(r.Get(&count, "array length"));
  const uint64_t min_bytes = MinValueBytes(element_type);
  if (min_bytes == 0)
    return Status::Error("unknown array element type " + std::to_string(element_type));
  MT_RETURN_IF_ERROR(
      r.NeedCount(count, min_bytes, std::string(MetaTypeName(element_type)) + " array elements"));
  // The count is bounded by the file, but a corrupt one could still ask for several times
  // the file's size up front: reserve at most kMaxReserve, let real elements grow the rest.
  const size_t n = static_cast<size_t>(std::min(count, kMaxReserve));
  if (element_type == kMetaArray) {  // nested: read past, keep nothing
    out->nested = true;
    for (uint64_t i = 0; i < count; ++i) MT_RETURN_IF_ERROR(SkipValue(r, kMetaArray, 1));
    return Status::Ok();
  }
  if (element_type == kMetaString) {
    out->strings.reserve(n);
    for (uint64_t i = 0; i < count; ++i) {
      std::string s;
      const Status st = r.String(&s, "string");
      if (!st.ok()) return st.WithContext("element " + std::to_string(i) + ": ");
      out->strings.push_back(std::move(s));
    }
    return Status::Ok();
  }
  if (element_type == kMetaBool) {
    out->bools.reserve(n);
  } else if (element_type == kMetaF32 || element_type == kMetaF64) {
    out->floats.reserve(n);
  } else {
    out->ints.reserve(n);
  }
  for (uint64_t i = 0; i < count; ++i) {
    GgufValue v;
    const Status st = ReadScalar(r, element_type, &v);
    if (!st.ok()) return st.WithContext("element " + std::to_string(i) + ": ");
    if (const int64_t* x = std::get_if<int64_t>(&v)) {
      out->ints.push_back(*x);
    } else if (const double* d = std::get_if<double>(&v)) {
      out->floats.push_back(*d);
    } else {
      out->bools.push_back(std::get<bool>(v));
    }
  }
  return Status::Ok();
}

Status ReadValue(Reader& r, uint32_t type, GgufValue* out) {
  if (type == kMetaString) {
    std::string s;
    MT_RETURN_IF_ERROR(r.String(&s, "string"));
    *out = std::move(s);
    return Status::Ok();
  }
  if (type == kMetaArray) {
    GgufArray a;
    MT_RETURN_IF_ERROR(ReadArray(r, &a));
    *out = std::move(a);
    return Status::Ok();
  }
  return ReadScalar(r, type, out);
}

// The whole file, mapped read-only; unmapped when the last GgufFile sharing it goes.
struct Mapping {
  const uint8_t* bytes = nullptr;  // null for an empty file
  uint64_t size = 0;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (bytes != nullptr) ::munmap(const_cast<uint8_t*>(bytes), size);
  }
};

// Opens and maps `path`; messages carry no path (Open adds it).
Result<std::shared_ptr<const Mapping>> MapFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status::Error(std::string("cannot open the file (") + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::Error(std::string("cannot stat the file (") + std::strerror(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::Error("cannot open the file (not a regular file)");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<uint64_t>(st.st_size);
  if (mapping->size > 0) {
    void* p = ::mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Status::Error(std::string("cannot map the file (") + std::strerror(err) + ")");
    }
    mapping->bytes = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping outlives the descriptor
  return std::shared_ptr<const Mapping>(std::move(mapping));
}

// Reads one tensor directory entry, checking everything that needs no other entry.
Status ReadTensorInfo(Reader& r, uint64_t index, uint64_t alignment, GgufTensorInfo* t) {
  MT_RETURN_IF_ERROR(
      r.String(&t->name, "name").WithContext("tensor entry " + std::to_string(index) + ": "));
  const std::string where = "tensor '" + t->name + "': ";
  uint32_t n_dims = 0;
  MT_RETURN_IF_ERROR(r.Get(&n_dims, "dimension count").WithContext(where));
  if (n_dims > kMaxDims)
    return Status::Error(where + std::to_string(n_dims) + " dimensions, at most " +
                         std::to_string(kMaxDims) + " allowed");
  int64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t dim = 0;
    MT_RETURN_IF_ERROR(r.Get(&dim, "dimension").WithContext(where));
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(elements, static_cast<int64_t>(dim), &elements))
      return Status::Error(where + "dimension " + std::to_string(d) + " (" + std::to_string(dim) +
                           ") makes the element count overflow int64");
    t->dims.push_back(static_cast<int64_t>(dim));
  }
  uint32_t type = 0;
  MT_RETURN_IF_ERROR(r.Get(&type, "type").WithContext(where));
  MT_RETURN_IF_ERROR(r.Get(&t->offset, "offset").WithContext(where));
  const std::optional<BlockLayout> layout = LayoutOf(type);
  if (!layout) {
    const std::string name = TensorTypeName(type);
    return Status::Error(where + "unsupported tensor type " + (name.empty() ? "" : name + " ") +
                         "(" + std::to_string(type) +
                         "); masktune reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1");
  }
  t->type = static_cast<GgufTensorType>(type);
  const int64_t row = t->dims.empty() ? 1 : t->dims[0];
  if (row % static_cast<int64_t>(layout->elements) != 0)
    return Status::Error(where + "type " + TensorTypeName(type) + " stores blocks of " +
                         std::to_string(layout->elements) +
                         " elements but the innermost dimension is " + std::to_string(row));
  if (__builtin_mul_overflow(static_cast<uint64_t>(elements) / layout->elements, layout->bytes,
                             &t->bytes))
    return Status::Error(where + "size in bytes overflows uint64");
  if (t->offset % alignment != 0)
    return Status::Error(where + "offset " + std::to_string(t->offset) +
                         " is not a multiple of the alignment " + std::to_string(alignment));
  return Status::Ok();
}

}  // namespace

// Everything but the path prefix, which Open adds to any error.
Status GgufFile::Parse() {
  const auto& mapping = *static_cast<const Mapping*>(mapping_.get());
  Reader r(mapping.bytes, mapping.size);
  char magic[4] = {};
  MT_RETURN_IF_ERROR(r.Get(&magic, "magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0)
    return Status::Error("not a GGUF file (bad magic: the file does not start with 'GGUF')");
  MT_RETURN_IF_ERROR(r.Get(&version_, "version"));
  if (version_ == 1)
    return Status::Error(
        "GGUF version 1 is not supported (its counts and lengths are 32-bit); "
        "masktune reads versions 2 and 3");
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    return Status::Error("unsupported GGUF version " + std::to_string(version_) +
                         (swapped == 2 || swapped == 3 ? " (a big-endian file?)" : "") +
                         "; masktune reads versions 2 and 3");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  MT_RETURN_IF_ERROR(r.Get(&n_tensors, "tensor count"));
  MT_RETURN_IF_ERROR(r.Get(&n_kv, "metadata count"));
  // A key-value pair takes at least 13 bytes (key length, type, a uint8); a
  // directory entry at least 24 (name length, n_dims, type, offset).
  MT_RETURN_IF_ERROR(r.NeedCount(n_kv, 13, "metadata entries"));
  MT_RETURN_IF_ERROR(r.NeedCount(n_tensors, 24, "tensor entries"));

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    MT_RETURN_IF_ERROR(
        r.String(&key, "key").WithContext("metadata entry " + std::to_string(i) + ": "));
    const std::string where = "metadata key '" + key + "': ";
    uint32_t type = 0;
    MT_RETURN_IF_ERROR(r.Get(&type, "value type").WithContext(where));
    GgufValue value;
    MT_RETURN_IF_ERROR(ReadValue(r, type, &value).WithContext(where));
    if (!metadata_.emplace(key, std::move(value)).second)
      return Status::Error("duplicate metadata key '" + key + "'");
  }

  uint64_t alignment = kDefaultAlignment;
  if (const auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    const int64_t* a = std::get_if<int64_t>(&it->second);
    if (a == nullptr) return Status::Error("metadata key 'general.alignment' is not an integer");
    if (*a <= 0 || (*a & (*a - 1)) != 0)
      return Status::Error("metadata key 'general.alignment': " + std::to_string(*a) +
                           " is not a nonzero power of two");
    alignment = static_cast<uint64_t>(*a);
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    MT_RETURN_IF_ERROR(ReadTensorInfo(r, i, alignment, &t));
    if (!tensor_index_.emplace(t.name, tensors_.size()).second)
      return Status::Error("duplicate tensor '" + t.name + "'");
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the end of the directory rounded up to the
  // alignment (at most 2^62, so the sum cannot overflow).
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  for (const GgufTensorInfo& t : tensors_) {
    uint64_t end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &end) ||
        __builtin_add_overflow(end, t.bytes, &end))
      return Status::Error("tensor '" + t.name + "': offset " + std::to_string(t.offset) +
                           " and size " + std::to_string(t.bytes) +
                           " lie past the end of the file (" + std::to_string(mapping.size) +
                           " bytes)");
    if (end > mapping.size)
      return Status::Error("tensor '" + t.name + "': data ends at byte " + std::to_string(end) +
                           ", past the end of the file (" + std::to_string(mapping.size) +
                           " bytes)");
  }
  data_ =
      data_start <= mapping.size && mapping.bytes != nullptr ? mapping.bytes + data_start : nullptr;
  return Status::Ok();
}

Result<GgufFile> GgufFile::Open(const std::string& path) {
  GgufFile f;
  f.path_ = path;
  auto mapping = MapFile(path);
  if (!mapping.ok()) return mapping.status().WithContext(path + ": ");
  f.mapping_ = std::move(mapping).value();
  MT_RETURN_IF_ERROR(f.Parse().WithContext(path + ": "));
  return f;
}

bool GgufFile::HasTensor(const std::string& name) const { return tensor_index_.count(name) != 0; }

namespace {

// The value of `key`, or null when absent.
const GgufValue* FindValue(const std::map<std::string, GgufValue>& metadata,
                           const std::string& key) {
  const auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

const char* ValueKind(const GgufValue& v) {
  switch (v.index()) {
    case 0:
      return "an integer";
    case 1:
      return "a float";
    case 2:
      return "a bool";
    case 3:
      return "a string";
    default:
      return "an array";
  }
}

Status MissingKey(const std::string& path, const std::string& key) {
  return Status::Error(path + ": missing metadata key '" + key + "'");
}

Status WrongType(const std::string& path, const std::string& key, const char* want,
                 const GgufValue& found) {
  return Status::Error(path + ": metadata key '" + key + "': expected " + want + ", found " +
                       ValueKind(found));
}

}  // namespace

Result<int64_t> GgufFile::GetInt(const std::string& key) const {
  const GgufValue* v = FindValue(metadata_, key);
  if (v == nullptr) return MissingKey(path_, key);
  if (const int64_t* x = std::get_if<int64_t>(v)) return *x;
  return WrongType(path_, key, "an integer", *v);
}

Result<double> GgufFile::GetFloat(const std::string& key) const {
  const GgufValue* v = FindValue(metadata_, key);
  if (v == nullptr) return MissingKey(path_, key);
  if (const double* x = std::get_if<double>(v)) return *x;
  if (const int64_t* x = std::get_if<int64_t>(v)) return static_cast<double>(*x);
  return WrongType(path_, key, "a number", *v);
}

Result<std::string> GgufFile::GetString(const std::string& key) const {
  const GgufValue* v = FindValue(metadata_, key);
  if (v == nullptr) return MissingKey(path_, key);
  if (const std::string* x = std::get_if<std::string>(v)) return *x;
  return WrongType(path_, key, "a string", *v);
}

Result<const GgufArray*> GgufFile::GetArray(const std::string& key) const {
  const GgufValue* v = FindValue(metadata_, key);
  if (v == nullptr) return MissingKey(path_, key);
  if (const GgufArray* x = std::get_if<GgufArray>(v)) return x;
  return WrongType(path_, key, "an array", *v);
}

Result<Tensor> GgufFile::ReadTensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  if (it == tensor_index_.end()) return Status::Error(path_ + ": missing tensor '" + name + "'");
  const GgufTensorInfo& info = tensors_[it->second];
  Tensor out(Shape(info.dims.rbegin(), info.dims.rend()));
  const int64_t n = out.size();
  if (n == 0) return out;
  // Open checked that [offset, offset + bytes) lies inside the file.
  const uint8_t* src = data_ + info.offset;
  // Row by row (dims[0] elements each; a 1-D tensor is one row), in parallel
  // for large tensors; small ones (norms, biases) are not worth waking the
  // thread team for.
  const int64_t cols = info.dims.empty() ? 1 : info.dims[0], rows = n / cols;
  const size_t row_bytes = RowBytes(info.type, cols);
  constexpr int64_t kParallelElements = 1 << 16;
#pragma omp parallel for schedule(static) if (n >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r)
    DequantizeRow(info.type, src + r * row_bytes, cols, out.data() + r * cols);
  return out;
}

Result<QuantMatrix> GgufFile::ReadMatrix(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  if (it == tensor_index_.end()) return Status::Error(path_ + ": missing tensor '" + name + "'");
  const GgufTensorInfo& info = tensors_[it->second];
  if (info.dims.size() != 2)
    return Status::Error(path_ + ": tensor '" + name + "': expected a matrix, found " +
                         std::to_string(info.dims.size()) + " dimensions");
  QuantMatrix m;
  m.type = info.type;
  m.cols = info.dims[0];
  m.rows = info.dims[1];
  m.row_bytes = RowBytes(info.type, m.cols);
  m.data = data_ + info.offset;  // Open checked that the bytes lie inside the file
  m.owner = mapping_;
  return m;
}

}  // namespace masktune::model
