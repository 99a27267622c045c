// File: engine/cuda/cuda_stub.cpp
//
// The CUDA engine's API in a build without CUDA (MASKTUNE_CUDA=OFF or no
// nvcc): no device is ever available and every call returns an error.
#include "engine/cuda/cuda_attention.h"

namespace masktune::cuda {
namespace {

Status NoCuda() { return Status::Error("masktune was built without CUDA"); }

}  // namespace

bool Available() { return false; }
std::string DeviceName() { return ""; }
double PeakBandwidthBytesPerSecond() { return 0.0; }

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}
int DTypeBytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

Result<Tensor> DenseAttention(const AttentionInputs&, DType) { return NoCuda(); }
Result<Tensor> MaskedAttention(const AttentionInputs&, const Mask&, DType) { return NoCuda(); }

// No DeviceAttention can be made here; the members exist for the linker.
struct DeviceAttention::Impl {
  AttentionDims dims;
  DType dtype = DType::kF32;
};

DeviceAttention::DeviceAttention(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceAttention::DeviceAttention(DeviceAttention&&) noexcept = default;
DeviceAttention& DeviceAttention::operator=(DeviceAttention&&) noexcept = default;
DeviceAttention::~DeviceAttention() = default;

Result<DeviceAttention> DeviceAttention::Upload(const AttentionInputs&, DType) { return NoCuda(); }
Result<DeviceAttention> DeviceAttention::Random(const AttentionDims&, DType, uint32_t) {
  return NoCuda();
}
const AttentionDims& DeviceAttention::dims() const { return impl_->dims; }
DType DeviceAttention::dtype() const { return impl_->dtype; }
Status DeviceAttention::SetMask(const Mask&) { return NoCuda(); }
int64_t DeviceAttention::kept_entries() const { return -1; }
Status DeviceAttention::RunDense() { return NoCuda(); }
Status DeviceAttention::RunMasked() { return NoCuda(); }
Result<Tensor> DeviceAttention::Output() const { return NoCuda(); }
Result<std::vector<double>> DeviceAttention::Time(bool, int, bool) { return NoCuda(); }

}  // namespace masktune::cuda
