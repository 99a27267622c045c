#include "engine/tensor.h"

namespace masktune {

std::string ShapeToString(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Status CheckRank(const Tensor& t, const std::string& name, int rank) {
  if (t.rank() == rank) return Status::Ok();
  return Status::Error("tensor '" + name + "': expected rank " + std::to_string(rank) +
                       ", found rank " + std::to_string(t.rank()) + " with shape " +
                       ShapeToString(t.shape()));
}

}  // namespace masktune

#include <cmath>

namespace masktune {
Status CheckFinite(const Tensor& t, const std::string& name) {
  for (int64_t i = 0; i < t.size(); ++i) {
    if (!std::isfinite(t.data()[i]))
      return Status::Error("tensor '" + name + "' holds a non-finite value (" +
                           std::to_string(t.data()[i]) + ") at flat index " + std::to_string(i));
  }
  return Status::Ok();
}
}  // namespace masktune
