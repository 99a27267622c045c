// File: engine/model/llama.h
//
// A Llama-family transformer run natively on the engine: weights from a GGUF
// file, RMSNorm, rotary embeddings, grouped-query attention and a SwiGLU feed-forward, as GGUF's
// "llama" architecture describes them (SmolLM2 is one). The weight matrices stay in their GGUF form
// inside the mapped file (quant.h): a decoded token's matrix-vector products
// run on the blocks; a prefill chunk dequantises one tile of rows at a time
// and multiplies it with every token of the chunk through BLAS (OpenBLAS).
// Attention goes through the engine: dense, or masked by a masker stack with
// its per-layer state kept across decode steps.
//
// A `Sequence` is one token stream and its KV cache. It is a value: copying
// one after a dense prefill is how the prefill is shared by every trial.
// Thread-safety: a const LlamaModel may be shared by any number of
// Sequences on any threads; a Sequence is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/masker.h"
#include "engine/model/gguf.h"
#include "engine/model/quant.h"
#include "engine/model/tokenizer.h"
#include "engine/registry.h"
#include "engine/status.h"
#include "engine/tensor.h"

namespace masktune::model {

struct LlamaConfig {
  int64_t layers = 0, embedding = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t feed_forward = 0, vocab = 0, context_length = 0, rope_dim = 0;
  float rms_epsilon = 1e-5f, rope_base = 10000.0f;
};

struct LlamaLayer {
  Tensor attn_norm, ffn_norm;
  QuantMatrix wq, wk, wv, wo;  // wq [heads*head_dim, embedding], ...
  QuantMatrix w_gate, w_up, w_down;
};

class LlamaModel {
 public:
  // Reads the architecture from the GGUF's llama.* keys and every weight.
  // Errors name the file and the key or tensor.
  // Products and attention run on `backend` (engine/backend.h; null: the CPU's).
  static Result<std::shared_ptr<const LlamaModel>> Load(const std::string& path,
                                                        std::shared_ptr<Backend> backend = nullptr);

  const std::string& path() const { return path_; }
  const LlamaConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const std::vector<LlamaLayer>& layers() const { return layers_; }
  const QuantMatrix& token_embedding() const { return token_embd_; }
  const Tensor& output_norm() const { return output_norm_; }
  const QuantMatrix& output() const { return output_.data ? output_ : token_embd_; }  // tied
  // Bytes of weight matrices (as stored) read per decoded token.
  size_t weight_bytes() const;
  Backend& backend() const { return *backend_; }

 private:
  std::string path_;
  LlamaConfig config_;
  Tokenizer tokenizer_;
  Tensor output_norm_;
  QuantMatrix token_embd_, output_;
  std::vector<LlamaLayer> layers_;
  std::shared_ptr<Backend> backend_;
};

// How a forward pass computes attention: dense when `stack` is null or the
// layer is in `dense_layers`; otherwise the stack's mask (its state per
// layer in `state`), with the density of each masked call accumulated.
// `observe`, when set, sees each layer's attention inputs of every call
// (dense or masked) before attention runs: masktune capture copies them.
struct SparseAttention {
  const MaskerStack* stack = nullptr;
  std::function<void(int layer, const AttentionInputs&)> observe;
  std::set<int> dense_layers;
  StackState state;
  double density_sum = 0;
  int64_t masked_calls = 0;
  double mean_density() const { return masked_calls ? density_sum / masked_calls : 1.0; }
};

class Sequence {
 public:
  // `capacity`: tokens the KV cache holds before it has to grow (it grows
  // by doubling when exceeded, so this is a hint).
  Sequence(std::shared_ptr<const LlamaModel> model, int64_t capacity);

  int64_t length() const { return length_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }

  // Appends `tokens` (positions length() ..), returns the logits [vocab] of
  // the last one. Long inputs run in chunks of causal attention.
  // `attention` null: dense.
  Result<std::vector<float>> Forward(std::span<const int32_t> tokens,
                                     SparseAttention* attention = nullptr);

  // Builds `attention`'s per-layer key-side state from the keys in the
  // cache (MagicPIG's key mean, norms and signatures, PQCache's codebooks,
  // HashAttention's key signatures) before decoding, so that the first
  // decoded token's call finds its keys prepared and does only its own: each
  // masked layer runs the stack once over the cached keys with one zero
  // query and discards the mask (no density counted). The cached keys are
  // then the layer's first call (its key mean is theirs), as when the
  // maskers see the prefill. Call it after a dense prefill (Forward or
  // Load); without it the first decoded token does this work.
  Status PrepareAttention(SparseAttention& attention) const;

  // The processed tokens, their KV cache and `logits` as a safetensors file
  // (tensors layer{L}.k / layer{L}.v [1, kv_heads, length, head_dim],
  // tokens, logits; metadata: the model file). Load checks every shape
  // against `model`; errors name the file.
  Status Save(const std::string& path, const std::vector<float>& logits) const;
  static Result<std::pair<Sequence, std::vector<float>>> Load(
      std::shared_ptr<const LlamaModel> model, const std::string& path, int64_t capacity);

  // Greedy decoding from `logits` (those of the last token so far): appends
  // up to `max_new` tokens, stopping after one of `stop`. Returns the new
  // tokens (a stop token included).
  Result<std::vector<int32_t>> Generate(std::vector<float> logits, int64_t max_new,
                                        const std::vector<int32_t>& stop,
                                        SparseAttention* attention = nullptr);

 private:
  void Reserve(int64_t tokens);

  std::shared_ptr<const LlamaModel> model_;
  int64_t length_ = 0, capacity_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<Tensor> k_cache_, v_cache_;  // per layer [1, kv_heads, capacity, head_dim]
};

// Index of the largest logit (the lower index on ties).
int32_t ArgMax(std::span<const float> logits);

}  // namespace masktune::model
