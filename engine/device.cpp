#include "engine/device.h"

#include <cstdlib>
#include <vector>

#include "engine/cuda/cuda_attention.h"

namespace masktune {

std::string Device::ToString() const { return cuda() ? "cuda:" + std::to_string(index) : "cpu"; }

Result<Device> Device::Parse(std::string_view text) {
  auto bad = [&] {
    return Status::Error("device '" + std::string(text) +
                         "': expected cpu, cuda or cuda:N (N a GPU index, 0..1023)");
  };
  if (text == "cpu") return Device::Cpu();
  if (text == "cuda") return Device::Cuda(0);
  if (text.substr(0, 5) != "cuda:" || text.size() == 5 || text.size() > 9) return bad();
  int n = 0;
  for (char c : text.substr(5)) {
    if (c < '0' || c > '9') return bad();
    n = n * 10 + (c - '0');
  }
  if (n > 1023) return bad();
  return Device::Cuda(n);
}

Device DefaultDevice() { return cuda::Available() ? Device::Cuda(0) : Device::Cpu(); }

Status Activate(const Device& device) {
  if (!device.cuda()) return Status::Ok();
#ifndef MASKTUNE_HAVE_CUDA
  return Status::Error("masktune was built without CUDA (cmake -DMASKTUNE_CUDA=ON)");
#else
  std::string visible;
  if (device.index > 0) {
    // The Nth of the devices this process may see, as CUDA numbers them.
    const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
    if (env && *env) {
      std::vector<std::string> ids(1);
      for (const char* p = env; *p; ++p) {
        if (*p == ',')
          ids.emplace_back();
        else
          ids.back().push_back(*p);
      }
      if (device.index >= static_cast<int>(ids.size()))
        return Status::Error("no CUDA device " + std::to_string(device.index) +
                             " (CUDA_VISIBLE_DEVICES=" + env + " lists " +
                             std::to_string(ids.size()) + ")");
      visible = ids[static_cast<size_t>(device.index)];
    } else {
      visible = std::to_string(device.index);
    }
    setenv("CUDA_VISIBLE_DEVICES", visible.c_str(), 1);
  }
  if (!cuda::Available())
    return Status::Error("no CUDA device " + std::to_string(device.index) +
                         (visible.empty() ? "" : " (CUDA_VISIBLE_DEVICES=" + visible + ")"));
  return Status::Ok();
#endif
}

}  // namespace masktune
