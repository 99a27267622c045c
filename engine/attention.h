// File: engine/attention.h
//
// Masked and dense attention on the CPU (the reference backend), and the
// metrics of a call. For each (batch, head, query) row, with
// s_j = scaling * <q, k_j> + attention_mask_j:
//     w_j = exp(s_j - max s) / p_j over keys kept with probability p_j > 0
//     out = sum_j w_j v_j / sum_j w_j
// An empty or full mask means dense attention (w_j = exp(s_j - max s)). The
// max is taken over the kept keys, which leaves the result unchanged and keeps
// it finite where all kept scores lie far below the row's maximum. A row with
// no usable key (none kept, or all at -inf) outputs zeros. Grouped-query
// attention: query head h reads kv head h / (heads / kv_heads).
// Thread-safety: the functions are reentrant; they use all cores (OpenMP).
#pragma once

#include "engine/mask.h"
#include "engine/masker.h"
#include "engine/tensor.h"

namespace masktune {

// How masked attention reads keys and values: kStream reads them once per kv
// head (all keys, or with a sparse mask the union of the group's kept keys),
// kGather only each row's kept keys (cost ~ density x heads). kAuto streams
// sparse masks and picks by density and group size for dense-form ones.
// All paths compute the same result up to float rounding.
enum class AttentionPath { kAuto, kStream, kGather };

// out [batch, heads, queries, head_dim]. Inputs must pass CheckAttentionInputs.
Tensor DenseAttention(const AttentionInputs& in);
// `mask` has in.mask_shape().
Tensor MaskedAttention(const AttentionInputs& in, const Mask& mask,
                       AttentionPath path = AttentionPath::kAuto);

// ||out - ref||_2 / ||ref||_2 over the whole tensor (0 when both are zero).
double RelativeL2Error(const Tensor& out, const Tensor& ref);

// OK when every score s_j = scaling * <q, k_j> + attention_mask_j, and every
// partial sum of the dot product, stays within 99% of the float range, so
// that finite inputs give finite scores; else "scores overflow: ..." naming
// the row, the key and the tensors. A bound on the norms settles ordinary
// inputs in one pass over q and k; only when it fails is each score checked.
// Inputs must pass CheckAttentionInputs.
Status CheckScoreRange(const AttentionInputs& in);

}  // namespace masktune
