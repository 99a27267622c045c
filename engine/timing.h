// File: engine/timing.h
//
// Wall-clock timing of repeated calls, for `attend --repeat` and bench/:
// the median (the typical call) and the best (the call least disturbed by
// other work on a shared machine).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace masktune {

struct Timing {
  double median = 0.0, best = 0.0;  // seconds per call
};

// Runs fn() `repeat` times (at least once).
template <typename Fn>
Timing TimeCalls(int repeat, Fn&& fn) {
  std::vector<double> t;
  for (int r = 0; r < std::max(repeat, 1); ++r) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  const size_t n = t.size();
  return {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0]};
}

}  // namespace masktune
