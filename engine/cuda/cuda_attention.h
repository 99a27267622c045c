// File: engine/cuda/cuda_attention.h
//
// Attention on an NVIDIA GPU, with the CPU engine's contract (engine/attention.h):
// s_j = scaling * <q, k_j> + attention_mask_j; w_j = exp(s_j - max) / p_j over
// the kept keys (every key for dense attention, an empty or a full mask); out =
// sum_j w_j v_j / sum_j w_j; a row with no usable key outputs zeros; query head
// h reads kv head h / (heads / kv_heads); only the first `used_keys` rows of the
// key buffer are read. q, k and v travel to the device in `DType` (converted
// from float32, round to nearest even); scores, softmax and sums are float32.
//
// Kernels (engine/cuda/attention.cu), shaped for decoding (few queries, long
// rows): the keys of each (batch, kv head) are split into chunks over thread
// blocks, each block scores every query row of its kv head (up to 8) against
// its chunk, so each key and value row is read once per block; masked
// attention gathers each row's kept keys from a CSR copy of the mask. A second
// kernel merges the chunks' partial softmax states.
//
// Built without CUDA (engine/cuda/cuda_stub.cpp), Available() is false and
// everything else returns an error. Thread-safety: the free functions may be
// called from several threads (each call has its own buffers); a
// DeviceAttention is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/mask.h"
#include "engine/masker.h"
#include "engine/status.h"
#include "engine/tensor.h"

namespace masktune::cuda {

// True when the binary was built with CUDA and a device is present.
bool Available();
// The name of device 0 ("NVIDIA H100 80GB HBM3"); "" when none.
std::string DeviceName();
// Peak memory bandwidth of device 0 in bytes per second (0 when none): the
// data-sheet figure for the H100 (SXM 3.35e12, PCIe 2.0e12, NVL 3.9e12) and
// the H200 (4.8e12), else memory clock * bus width * 2 (double data rate).
double PeakBandwidthBytesPerSecond();

enum class DType { kF32, kF16, kBF16 };
const char* DTypeName(DType dtype);  // "f32", "f16", "bf16"
int DTypeBytes(DType dtype);         // 4, 2, 2

// masktune::DenseAttention / MaskedAttention computed on the GPU: inputs are
// checked (CheckAttentionInputs; head_dim at most 256), copied in `dtype`, the
// output comes back as float32 [batch, heads, queries, head_dim].
Result<Tensor> DenseAttention(const AttentionInputs& in, DType dtype = DType::kF32);
// `mask` has in.mask_shape(); an empty or full mask means dense attention.
Result<Tensor> MaskedAttention(const AttentionInputs& in, const Mask& mask,
                               DType dtype = DType::kF32);

// Shape of the inputs held by a DeviceAttention (keys = keys used).
struct AttentionDims {
  int64_t batch = 1, heads = 1, kv_heads = 1, queries = 1, keys = 1, head_dim = 128;
  float scaling = 1.0f;
};

// Device-resident inputs, a device mask and a device output, for callers that
// run attention repeatedly (benchmarks time the kernels alone, without host
// <-> device copies). Move-only; frees its device memory when destroyed.
class DeviceAttention {
 public:
  // Copies q, k, v (converted to `dtype`) and the attention mask, if any.
  static Result<DeviceAttention> Upload(const AttentionInputs& in, DType dtype);
  // q, k, v drawn uniformly from [-1, 1) on the device (a hash of `seed` and
  // the element index); no attention mask.
  static Result<DeviceAttention> Random(const AttentionDims& dims, DType dtype, uint32_t seed);

  DeviceAttention(DeviceAttention&&) noexcept;
  DeviceAttention& operator=(DeviceAttention&&) noexcept;
  ~DeviceAttention();

  const AttentionDims& dims() const;
  DType dtype() const;

  // Copies `mask` (shape (batch, heads, queries, keys)) to the device as CSR:
  // row offsets, key indices, keep probabilities. An empty or full mask is
  // kept as a flag: RunMasked then runs dense attention.
  Status SetMask(const Mask& mask);
  // Entries of the device mask (kept (row, key) pairs); -1 when the mask is
  // empty or full, or none was set.
  int64_t kept_entries() const;

  // Launch the kernels into the device output (asynchronously: errors of the
  // kernels themselves show at Output or Time).
  Status RunDense();
  Status RunMasked();  // fails when no mask was set
  // The output of the last run, [batch, heads, queries, head_dim].
  Result<Tensor> Output() const;

  // Runs `launches` times after one warm-up run, each run timed alone with
  // CUDA events; seconds per run. flush_l2: overwrite a buffer twice the L2
  // size before each run (outside the timed span), so K and V come from memory.
  Result<std::vector<double>> Time(bool masked, int launches, bool flush_l2 = true);

 private:
  struct Impl;
  explicit DeviceAttention(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace masktune::cuda
