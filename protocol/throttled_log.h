// File: protocol/throttled_log.h
//
// A log line at most once per period: what a peer on the other end of a
// socket can make happen (a refused handshake, a dropped message) must not
// flood the log. The lines held back are counted in the next one written.
// Thread-safety: one per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace masktune::protocol {

class ThrottledLog {
 public:
  using Sink = std::function<void(const std::string&)>;
  explicit ThrottledLog(Sink sink, std::chrono::milliseconds every = std::chrono::seconds(1))
      : sink_(std::move(sink)), every_(every) {}

  void operator()(const std::string& line) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < every_) {
      ++held_;
      return;
    }
    sink_(held_ ? line + " (and " + std::to_string(held_) + " more like it)" : line);
    held_ = 0;
    last_ = now;
  }

 private:
  Sink sink_;
  std::chrono::milliseconds every_;
  std::chrono::steady_clock::time_point last_{};
  int64_t held_ = 0;
};

}  // namespace masktune::protocol
