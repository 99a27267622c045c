// File: engine/backend.h
//
// Where attention runs, behind one interface (as ggml's backends): a Backend
// for a Device (engine/device.h) uploads q, k, v once (BackendInputs),
// builds a masker stack's mask, and runs masked and dense attention on what
// it holds. CpuBackend wraps engine/attention.h (the inputs stay where they
// are); CudaBackend wraps engine/cuda/cuda_attention.h's DeviceAttention (q,
// k, v resident on the GPU, the mask copied there per call as CSR). Both
// compute the CPU engine's contract; outputs come back as float32 host
// tensors [batch, heads, queries, head_dim].
//
// It also runs the model runtime's linear layers (MatMul on GGUF blocks,
// engine/model/quant.h): the Llama runtime (engine/model/llama.h) does every
// product and every attention call through its model's backend.
//
// Masks are built on the host for every backend today (the maskers run on
// the CPU); BuildMask is the seam where a device backend builds them on the
// GPU, and MatMul the one where it runs cuBLAS or device quant kernels
// (issue 16, part 2): both default to the CPU code.
//
// Thread-safety: a Backend may be shared; a BackendInputs is used by one
// thread at a time.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "engine/device.h"
#include "engine/mask.h"
#include "engine/masker.h"
#include "engine/model/quant.h"
#include "engine/registry.h"
#include "engine/status.h"
#include "engine/tensor.h"

namespace masktune {

// Attention inputs held by a backend. Keeps pointers to the host tensors it
// was made from (masks are built from them, the CPU reads them in place):
// they must outlive it.
class BackendInputs {
 public:
  virtual ~BackendInputs() = default;
  const AttentionInputs& host() const { return host_; }

 protected:
  explicit BackendInputs(const AttentionInputs& host) : host_(host) {}

 private:
  AttentionInputs host_;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // Checks `in` (CheckAttentionInputs) and makes it resident on the backend.
  virtual Result<std::unique_ptr<BackendInputs>> Upload(const AttentionInputs& in) = 0;
  // The stack's mask for these inputs (`state`: the stack's per-layer state).
  virtual Result<Mask> BuildMask(const MaskerStack& stack, const BackendInputs& in,
                                 StackState& state);
  // `mask` has in.host().mask_shape(); an empty or full mask is dense attention.
  virtual Result<Tensor> MaskedAttention(BackendInputs& in, const Mask& mask) = 0;
  virtual Result<Tensor> DenseAttention(BackendInputs& in) = 0;
  // Products sharing the host input x [n, cols], each into its host y [n,
  // rows] (model::MatMul's contract). Base: the CPU kernels.
  virtual Status MatMul(const float* x, int64_t n, std::span<const model::Product> products);
};

// The backend of `device`, which Activate must have accepted; cuda without a
// CUDA device (or build) is an error naming the device.
Result<std::unique_ptr<Backend>> CreateBackend(const Device& device);

}  // namespace masktune
