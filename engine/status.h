// File: engine/status.h
//
// Errors cross module boundaries as values. A `Status` is OK or carries one
// message that already names what and where ("q.safetensors: tensor 'k':
// expected rank 4, found 3"). `Result<T>` holds a T or a non-OK Status, in the
// manner of absl::StatusOr. Both are [[nodiscard]]: an ignored error is a bug.
// Thread-safety: plain values; a const object may be shared between threads.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace masktune {

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message), true); }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

  // Returns this error with `context` in front ("file.json: " + message).
  Status WithContext(const std::string& context) const {
    return ok() ? *this : Error(context + message_);
  }

 private:
  Status(std::string message, bool failed) : message_(std::move(message)), failed_(failed) {}
  std::string message_;
  bool failed_ = false;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  // Implicit on purpose, so `return value;` and `return Status::Error(..);` both read naturally.
  Result(T value) : value_(std::move(value)) {}          // NOLINT
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: must not be OK

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace masktune

// Returns early from the enclosing function when `expr` (a Status) failed.
#define MT_RETURN_IF_ERROR(expr)     \
  do {                               \
    ::masktune::Status _st = (expr); \
    if (!_st.ok()) return _st;       \
  } while (0)

#define MT_CONCAT_INNER(a, b) a##b
#define MT_CONCAT(a, b) MT_CONCAT_INNER(a, b)
// `MT_ASSIGN_OR_RETURN(auto x, ResultExpr());` binds the value or returns the error.
#define MT_ASSIGN_OR_RETURN(lhs, expr) \
  MT_ASSIGN_OR_RETURN_IMPL(MT_CONCAT(_res_, __LINE__), lhs, expr)
#define MT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
