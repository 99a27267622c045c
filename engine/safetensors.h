// File: engine/safetensors.h
//
// Reading and writing the safetensors format: an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then
// the raw little-endian data. F32, F16 and BF16 tensors are read as float32;
// tensors are written as F32. Every malformed file is an error that names the
// file and, where it applies, the tensor: a truncated file, a header that does
// not describe the data, an unsupported dtype. Hostile files fail fast: only a
// regular file is read (not a folder, device or pipe), its header length is
// checked against its size before anything is allocated, the header JSON goes
// through CheckJsonText (nesting, 1e999, repeated keys: engine/registry.h),
// shapes are held to the file's size, and the tensors must tile the data
// section without overlap, gap or trailing bytes, as the format requires.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/status.h"
#include "engine/tensor.h"

namespace masktune {

class SafetensorsFile {
 public:
  // Reads the whole file, tensor by tensor. Fails on any inconsistency; never
  // returns partial data.
  static Result<SafetensorsFile> Read(const std::string& path);

  const std::string& path() const { return path_; }
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor `name`, checked to have rank `rank` (-1: any). The error names
  // the file and the tensor ("x.safetensors: missing tensor 'k'").
  Result<const Tensor*> Get(const std::string& name, int rank = -1) const;

 private:
  std::string path_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (name, tensor) as F32, with string `metadata` in the header.
Status WriteSafetensors(const std::string& path,
                        const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

// IEEE half and bfloat16 to float, exposed for tests.
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t h);

}  // namespace masktune
