#include "engine/backend.h"

#include "engine/attention.h"
#include "engine/cuda/cuda_attention.h"

namespace masktune {
namespace {

class CpuInputs : public BackendInputs {
 public:
  explicit CpuInputs(const AttentionInputs& in) : BackendInputs(in) {}
};

class CpuBackend : public Backend {
 public:
  Device device() const override { return Device::Cpu(); }
  Result<std::unique_ptr<BackendInputs>> Upload(const AttentionInputs& in) override {
    MT_RETURN_IF_ERROR(CheckAttentionInputs(in));
    return std::unique_ptr<BackendInputs>(new CpuInputs(in));
  }
  Result<Tensor> MaskedAttention(BackendInputs& in, const Mask& mask) override {
    if (!(mask.shape() == in.host().mask_shape()))
      return Status::Error("masked attention: the mask's shape does not match the inputs'");
    return masktune::MaskedAttention(in.host(), mask);
  }
  Result<Tensor> DenseAttention(BackendInputs& in) override {
    return masktune::DenseAttention(in.host());
  }
};

// q, k, v on the GPU in float32 (the CPU engine's precision), for the
// backend's whole life; each masked call copies its mask there.
class CudaInputs : public BackendInputs {
 public:
  CudaInputs(const AttentionInputs& in, cuda::DeviceAttention resident)
      : BackendInputs(in), resident(std::move(resident)) {}
  cuda::DeviceAttention resident;
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(const Device& device) : device_(device) {}
  Device device() const override { return device_; }
  Result<std::unique_ptr<BackendInputs>> Upload(const AttentionInputs& in) override {
    MT_RETURN_IF_ERROR(CheckAttentionInputs(in));
    MT_ASSIGN_OR_RETURN(cuda::DeviceAttention resident,
                        cuda::DeviceAttention::Upload(in, cuda::DType::kF32));
    return std::unique_ptr<BackendInputs>(new CudaInputs(in, std::move(resident)));
  }
  Result<Tensor> MaskedAttention(BackendInputs& in, const Mask& mask) override {
    cuda::DeviceAttention& d = static_cast<CudaInputs&>(in).resident;
    MT_RETURN_IF_ERROR(d.SetMask(mask));
    MT_RETURN_IF_ERROR(d.RunMasked());
    return d.Output();
  }
  Result<Tensor> DenseAttention(BackendInputs& in) override {
    cuda::DeviceAttention& d = static_cast<CudaInputs&>(in).resident;
    MT_RETURN_IF_ERROR(d.RunDense());
    return d.Output();
  }

 private:
  Device device_;
};

}  // namespace

Result<Mask> Backend::BuildMask(const MaskerStack& stack, const BackendInputs& in,
                                StackState& state) {
  return stack.ComputeMask(in.host(), state);
}

Status Backend::MatMul(const float* x, int64_t n, std::span<const model::Product> products) {
  model::MatMul(x, n, products);
  return Status::Ok();
}

Result<std::unique_ptr<Backend>> CreateBackend(const Device& device) {
  if (!device.cuda()) return std::unique_ptr<Backend>(new CpuBackend());
  if (!cuda::Available())
    return Status::Error("device " + device.ToString() +
#ifdef MASKTUNE_HAVE_CUDA
                         ": no CUDA device");
#else
                         ": masktune was built without CUDA");
#endif
  return std::unique_ptr<Backend>(new CudaBackend(device));
}

}  // namespace masktune
