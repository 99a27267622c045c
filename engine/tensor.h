// File: engine/tensor.h
//
// A float32 tensor: a shape and a contiguous row-major buffer it owns. The
// engine computes in float32 only; other dtypes are converted on reading.
// Views are plain `const float*` plus the shape here; nothing is shared or
// reference-counted. Thread-safety: a const Tensor may be read from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/status.h"

namespace masktune {

using Shape = std::vector<int64_t>;

std::string ShapeToString(const Shape& shape);  // "(1, 4, 512, 64)"

// Number of elements of `shape`; 1 for a scalar (empty shape).
int64_t NumElements(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Shape shape, float fill = 0.0f)
      : shape_(std::move(shape)), data_(static_cast<size_t>(NumElements(shape_)), fill) {}
  Tensor(Shape shape, std::vector<float> data) : shape_(std::move(shape)), data_(std::move(data)) {}

  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int64_t size() const { return static_cast<int64_t>(data_.size()); }
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  std::vector<float>& vec() { return data_; }
  const std::vector<float>& vec() const { return data_; }

  // Element of a rank-4 tensor, for tests and small loops (no bounds check).
  float at(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return data_[static_cast<size_t>(((a * shape_[1] + b) * shape_[2] + c) * shape_[3] + d)];
  }

 private:
  Shape shape_;
  std::vector<float> data_;
};

// OK when `t` has rank `rank`; otherwise an error naming `name`.
Status CheckRank(const Tensor& t, const std::string& name, int rank);

}  // namespace masktune

namespace masktune {
// OK when every element of `t` is finite; otherwise names `name` and the first bad index.
Status CheckFinite(const Tensor& t, const std::string& name);
}  // namespace masktune
