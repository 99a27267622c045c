// File: engine/device.h
//
// Where a worker's attention runs, chosen once: parsed from --device (cpu |
// cuda | cuda:N), made current with Activate before anything touches CUDA,
// then handed to every benchmark (CreateBenchmark) and to the backend
// (engine/backend.h), which honour it or refuse it with a message.
//
// One process drives one GPU (DESIGN.md, "Multi-GPU nodes"): `cuda:N` narrows
// CUDA_VISIBLE_DEVICES to the Nth visible device, so the CUDA engine, which
// always works on device 0 of what it sees, runs on GPU N.
#pragma once

#include <string>
#include <string_view>

#include "engine/status.h"

namespace masktune {

struct Device {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // cuda:N; 0 for cpu

  static Device Cpu() { return {}; }
  static Device Cuda(int index = 0) { return {Kind::kCuda, index}; }
  bool cuda() const { return kind == Kind::kCuda; }
  // "cpu", "cuda:N".
  std::string ToString() const;
  bool operator==(const Device&) const = default;

  // "cpu", "cuda" (= cuda:0) or "cuda:N" (N a decimal in 0..1023); an error
  // quotes the text and says what is accepted.
  static Result<Device> Parse(std::string_view text);
};

// cuda:0 when this binary has CUDA and a device is present, else cpu.
Device DefaultDevice();

// Makes `device` this process's: the CPU always works; cuda:N needs a build
// with CUDA ("masktune was built without CUDA ...") and a device N ("no CUDA
// device N"); the message does not repeat the device. For cuda:N, narrows CUDA_VISIBLE_DEVICES to
// that device first, so call this once, before any other CUDA call of the process.
Status Activate(const Device& device);

}  // namespace masktune
