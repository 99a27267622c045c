// File: engine/benchmarks/synthetic.h
//
// attention_error's synthetic attention: q, k, v with the statistics of a
// real model's decode-step attention (SmolLM2-135M on RULER prompts, as
// `masktune capture` records it), drawn from the seed alone.
// Thread-safety: SynthesizeAttention is a pure function of its arguments.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "engine/masker.h"
#include "engine/tensor.h"

namespace masktune {

// One attention call: q [1, heads, queries, head_dim], k and v [1, kv_heads,
// keys, head_dim], a causal additive mask [1, 1, queries, keys] when there
// are several queries, scaling 1/sqrt(head_dim).
struct AttentionSample {
  Tensor q, k, v, mask;
  bool has_mask = false;
  float scaling = 1.0f;

  AttentionInputs Inputs() const {
    AttentionInputs in;
    in.queries = &q;
    in.keys = &k;
    in.values = &v;
    in.attention_mask = has_mask ? &mask : nullptr;
    in.scaling = scaling;
    return in;
  }
};

// Sample `index` of the synthetic spec {"keys", "heads", "kv_heads",
// "head_dim", "queries", "seed"} (defaults 4096, 8, 2, 64, 1, 0; the sweep
// parser has checked them). Philox keyed by (seed, index, purpose): the same
// sample on any machine and thread count.
AttentionSample SynthesizeAttention(const nlohmann::json& spec, int64_t index);

}  // namespace masktune
