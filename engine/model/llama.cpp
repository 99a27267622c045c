// File: engine/model/llama.cpp
//
// The forward pass, per chunk of n tokens at positions p .. p+n-1:
//   x = embed(tokens)
//   per layer: h = rmsnorm(x) ; q, k, v = h Wq^T, h Wk^T, h Wv^T ; rope(q, k)
//              append k, v to the cache ; x += attention(q, cache) Wo^T
//              h = rmsnorm(x) ; x += (silu(h Wg^T) * (h Wu^T)) Wd^T
//   logits = rmsnorm(x_last) E^T
// Rotary embeddings rotate adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/d):
// GGUF's converter permutes Wq and Wk so that this equals Hugging Face's
// rotate-half form on the original weights.
#include "engine/model/llama.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/attention.h"
#include "engine/safetensors.h"

namespace masktune::model {
namespace {

constexpr int64_t kChunk = 256;  // tokens per causal-attention chunk of a long input

void RmsNorm(const float* x, const Tensor& weight, float eps, int64_t d, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
  for (int64_t i = 0; i < d; ++i) y[i] = x[i] * r * weight.data()[i];
}

// Rotates the first rope_dim dimensions of each head of one token's vector.
void Rope(float* x, int64_t heads, int64_t head_dim, int64_t rope_dim, float base, int64_t pos) {
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const double theta = static_cast<double>(pos) *
                         std::pow(static_cast<double>(base),
                                  -2.0 * static_cast<double>(i) / static_cast<double>(rope_dim));
    const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
    for (int64_t h = 0; h < heads; ++h) {
      float* p = x + h * head_dim + 2 * i;
      const float a = p[0], b = p[1];
      p[0] = a * c - b * s;
      p[1] = a * s + b * c;
    }
  }
}

Result<Tensor> ReadWeight(const GgufFile& f, const std::string& name, const Shape& want) {
  MT_ASSIGN_OR_RETURN(Tensor t, f.ReadTensor(name));
  if (t.shape() != want)
    return Status::Error(f.path() + ": tensor '" + name + "': expected shape " +
                         ShapeToString(want) + ", found " + ShapeToString(t.shape()));
  return t;
}

Result<QuantMatrix> ReadMatrix(const GgufFile& f, const std::string& name, int64_t rows,
                               int64_t cols) {
  MT_ASSIGN_OR_RETURN(QuantMatrix m, f.ReadMatrix(name));
  if (m.rows != rows || m.cols != cols)
    return Status::Error(f.path() + ": tensor '" + name + "': expected shape " +
                         ShapeToString({rows, cols}) + ", found " +
                         ShapeToString({m.rows, m.cols}));
  return m;
}

}  // namespace

Result<std::shared_ptr<const LlamaModel>> LlamaModel::Load(const std::string& path,
                                                           std::shared_ptr<Backend> backend) {
  if (!backend) {
    MT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> cpu, CreateBackend(Device::Cpu()));
    backend = std::move(cpu);
  }
  MT_ASSIGN_OR_RETURN(GgufFile f, GgufFile::Open(path));
  MT_ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama")
    return Status::Error(path + ": general.architecture is '" + arch +
                         "'; masktune runs Llama-family models ('llama')");
  auto m = std::make_shared<LlamaModel>();
  m->backend_ = std::move(backend);
  m->path_ = path;
  LlamaConfig& c = m->config_;
  MT_ASSIGN_OR_RETURN(c.layers, f.GetInt("llama.block_count"));
  MT_ASSIGN_OR_RETURN(c.embedding, f.GetInt("llama.embedding_length"));
  MT_ASSIGN_OR_RETURN(c.heads, f.GetInt("llama.attention.head_count"));
  c.kv_heads = c.heads;
  if (f.HasKey("llama.attention.head_count_kv")) {
    MT_ASSIGN_OR_RETURN(c.kv_heads, f.GetInt("llama.attention.head_count_kv"));
  }
  MT_ASSIGN_OR_RETURN(c.feed_forward, f.GetInt("llama.feed_forward_length"));
  MT_ASSIGN_OR_RETURN(c.context_length, f.GetInt("llama.context_length"));
  MT_ASSIGN_OR_RETURN(double eps, f.GetFloat("llama.attention.layer_norm_rms_epsilon"));
  c.rms_epsilon = static_cast<float>(eps);
  if (f.HasKey("llama.rope.freq_base")) {
    MT_ASSIGN_OR_RETURN(double base, f.GetFloat("llama.rope.freq_base"));
    c.rope_base = static_cast<float>(base);
  }
  if (c.layers <= 0 || c.embedding <= 0 || c.heads <= 0 || c.kv_heads <= 0 ||
      c.embedding % c.heads != 0 || c.heads % c.kv_heads != 0 || c.feed_forward <= 0)
    return Status::Error(path + ": inconsistent llama.* dimensions (block_count " +
                         std::to_string(c.layers) + ", embedding_length " +
                         std::to_string(c.embedding) + ", head_count " + std::to_string(c.heads) +
                         ", head_count_kv " + std::to_string(c.kv_heads) + ")");
  c.head_dim = c.embedding / c.heads;
  c.rope_dim = c.head_dim;
  if (f.HasKey("llama.rope.dimension_count")) {
    MT_ASSIGN_OR_RETURN(c.rope_dim, f.GetInt("llama.rope.dimension_count"));
  }
  if (c.rope_dim <= 0 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0)
    return Status::Error(path + ": llama.rope.dimension_count " + std::to_string(c.rope_dim) +
                         " must be even and at most the head dimension " +
                         std::to_string(c.head_dim));

  MT_ASSIGN_OR_RETURN(m->tokenizer_, Tokenizer::FromGguf(f));
  auto embd = f.ReadMatrix("token_embd.weight");
  if (!embd.ok()) return embd.status();
  m->token_embd_ = std::move(embd).value();
  if (m->token_embd_.cols != c.embedding)
    return Status::Error(path + ": tensor 'token_embd.weight': expected shape (vocab, " +
                         std::to_string(c.embedding) + "), found " +
                         ShapeToString({m->token_embd_.rows, m->token_embd_.cols}));
  c.vocab = m->token_embd_.rows;
  const int64_t E = c.embedding, qd = c.heads * c.head_dim, kvd = c.kv_heads * c.head_dim;
  MT_ASSIGN_OR_RETURN(m->output_norm_, ReadWeight(f, "output_norm.weight", {E}));
  if (f.HasTensor("output.weight")) {
    MT_ASSIGN_OR_RETURN(m->output_, ReadMatrix(f, "output.weight", c.vocab, E));
  }
  m->layers_.resize(static_cast<size_t>(c.layers));
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LlamaLayer& L = m->layers_[l];
    MT_ASSIGN_OR_RETURN(L.attn_norm, ReadWeight(f, p + "attn_norm.weight", {E}));
    MT_ASSIGN_OR_RETURN(L.wq, ReadMatrix(f, p + "attn_q.weight", qd, E));
    MT_ASSIGN_OR_RETURN(L.wk, ReadMatrix(f, p + "attn_k.weight", kvd, E));
    MT_ASSIGN_OR_RETURN(L.wv, ReadMatrix(f, p + "attn_v.weight", kvd, E));
    MT_ASSIGN_OR_RETURN(L.wo, ReadMatrix(f, p + "attn_output.weight", E, qd));
    MT_ASSIGN_OR_RETURN(L.ffn_norm, ReadWeight(f, p + "ffn_norm.weight", {E}));
    MT_ASSIGN_OR_RETURN(L.w_gate, ReadMatrix(f, p + "ffn_gate.weight", c.feed_forward, E));
    MT_ASSIGN_OR_RETURN(L.w_up, ReadMatrix(f, p + "ffn_up.weight", c.feed_forward, E));
    MT_ASSIGN_OR_RETURN(L.w_down, ReadMatrix(f, p + "ffn_down.weight", E, c.feed_forward));
  }
  return std::shared_ptr<const LlamaModel>(std::move(m));
}

size_t LlamaModel::weight_bytes() const {
  size_t bytes = output().bytes();
  for (const LlamaLayer& L : layers_)
    for (const QuantMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      bytes += w->bytes();
  return bytes;
}

Sequence::Sequence(std::shared_ptr<const LlamaModel> model, int64_t capacity)
    : model_(std::move(model)) {
  const auto& c = model_->config();
  k_cache_.resize(static_cast<size_t>(c.layers));
  v_cache_.resize(static_cast<size_t>(c.layers));
  Reserve(std::max<int64_t>(capacity, 16));
}

void Sequence::Reserve(int64_t tokens) {
  if (tokens <= capacity_) return;
  const auto& c = model_->config();
  const int64_t cap = std::max(tokens, 2 * capacity_), D = c.head_dim;
  for (auto* cache : {&k_cache_, &v_cache_})
    for (Tensor& t : *cache) {
      Tensor grown({1, c.kv_heads, cap, D});
      for (int64_t h = 0; h < c.kv_heads && capacity_ > 0; ++h)
        std::copy_n(t.data() + h * capacity_ * D, length_ * D, grown.data() + h * cap * D);
      t = std::move(grown);
    }
  capacity_ = cap;
}

Result<std::vector<float>> Sequence::Forward(std::span<const int32_t> tokens,
                                             SparseAttention* attention) {
  if (tokens.empty()) return Status::Error("Forward: no tokens");
  const auto& c = model_->config();
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab)
      return Status::Error("token id " + std::to_string(t) + " outside the vocabulary of " +
                           std::to_string(c.vocab));
  Reserve(length_ + static_cast<int64_t>(tokens.size()));
  const int64_t E = c.embedding, H = c.heads, Hkv = c.kv_heads, D = c.head_dim;
  const int64_t F = c.feed_forward;
  Backend& backend = model_->backend();
  std::vector<float> logits;

  for (size_t start = 0; start < tokens.size(); start += kChunk) {
    const int64_t n = std::min<int64_t>(kChunk, static_cast<int64_t>(tokens.size() - start));
    const int64_t pos0 = length_, keys = length_ + n;
    std::vector<float> x(static_cast<size_t>(n * E)), h(x.size());
    const QuantMatrix& embd = model_->token_embedding();
    for (int64_t i = 0; i < n; ++i)
      DequantizeRow(embd.type, embd.row(tokens[start + i]), E, &x[i * E]);
    std::vector<float> q(static_cast<size_t>(n * H * D)), k(static_cast<size_t>(n * Hkv * D)),
        v(k.size());
    std::vector<float> attn(q.size()), proj(x.size());
    std::vector<float> gate(static_cast<size_t>(n * F)), up(gate.size());
    Tensor qt({1, H, n, D});
    // Causal mask of the chunk: query i sees keys up to pos0 + i.
    Tensor mask({1, 1, n, keys});
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = pos0 + i + 1; j < keys; ++j)
        mask.data()[i * keys + j] = -std::numeric_limits<float>::infinity();

    for (int64_t l = 0; l < c.layers; ++l) {
      const LlamaLayer& L = model_->layers()[l];
      for (int64_t i = 0; i < n; ++i) RmsNorm(&x[i * E], L.attn_norm, c.rms_epsilon, E, &h[i * E]);
      const Product qkv[] = {{&L.wq, q.data()}, {&L.wk, k.data()}, {&L.wv, v.data()}};
      MT_RETURN_IF_ERROR(backend.MatMul(h.data(), n, qkv));
      for (int64_t i = 0; i < n; ++i) Rope(&q[i * H * D], H, D, c.rope_dim, c.rope_base, pos0 + i);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t hh = 0; hh < H; ++hh)
          std::copy_n(&q[(i * H + hh) * D], D, qt.data() + (hh * n + i) * D);
      // Keys and values straight into the cache, [kv head][position][dim].
      for (int64_t i = 0; i < n; ++i)
        Rope(&k[i * Hkv * D], Hkv, D, c.rope_dim, c.rope_base, pos0 + i);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t kh = 0; kh < Hkv; ++kh) {
          std::copy_n(&k[(i * Hkv + kh) * D], D,
                      k_cache_[l].data() + (kh * capacity_ + pos0 + i) * D);
          std::copy_n(&v[(i * Hkv + kh) * D], D,
                      v_cache_[l].data() + (kh * capacity_ + pos0 + i) * D);
        }

      AttentionInputs in;
      in.queries = &qt;
      in.keys = &k_cache_[l];
      in.values = &v_cache_[l];
      in.used_keys = keys;
      in.attention_mask = n > 1 ? &mask : nullptr;
      in.scaling = 1.0f / std::sqrt(static_cast<float>(D));
      in.layer = static_cast<int>(l);
      if (attention && attention->observe) attention->observe(static_cast<int>(l), in);
      const std::string where = "layer " + std::to_string(l) + ": ";
      auto resident = backend.Upload(in);
      if (!resident.ok()) return resident.status().WithContext(where);
      Result<Tensor> out = Status::Error("not run");
      if (attention && attention->stack && !attention->dense_layers.count(static_cast<int>(l))) {
        auto m = backend.BuildMask(*attention->stack, **resident, attention->state);
        if (!m.ok()) return m.status().WithContext(where);
        attention->density_sum += m->AttendedDensity();
        ++attention->masked_calls;
        out = backend.MaskedAttention(**resident, m.value());
      } else {
        out = backend.DenseAttention(**resident);
      }
      if (!out.ok()) return out.status().WithContext(where);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t hh = 0; hh < H; ++hh)
          std::copy_n(out->data() + (hh * n + i) * D, D, &attn[(i * H + hh) * D]);
      const Product o[] = {{&L.wo, proj.data()}};
      MT_RETURN_IF_ERROR(backend.MatMul(attn.data(), n, o));
      for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

      for (int64_t i = 0; i < n; ++i) RmsNorm(&x[i * E], L.ffn_norm, c.rms_epsilon, E, &h[i * E]);
      const Product gate_up[] = {{&L.w_gate, gate.data()}, {&L.w_up, up.data()}};
      MT_RETURN_IF_ERROR(backend.MatMul(h.data(), n, gate_up));
      for (size_t i = 0; i < gate.size(); ++i)
        gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
      const Product down[] = {{&L.w_down, proj.data()}};
      MT_RETURN_IF_ERROR(backend.MatMul(gate.data(), n, down));
      for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
    }
    tokens_.insert(tokens_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(start),
                   tokens.begin() + static_cast<std::ptrdiff_t>(start + n));
    length_ += n;
    if (start + n == tokens.size()) {
      RmsNorm(&x[(n - 1) * E], model_->output_norm(), c.rms_epsilon, E, h.data());
      logits.resize(static_cast<size_t>(c.vocab));
      const Product out[] = {{&model_->output(), logits.data()}};
      MT_RETURN_IF_ERROR(backend.MatMul(h.data(), 1, out));
    }
  }
  return logits;
}

Status Sequence::PrepareAttention(SparseAttention& attention) const {
  if (!attention.stack || length_ == 0) return Status::Ok();
  const auto& c = model_->config();
  const Tensor query({1, c.heads, 1, c.head_dim});  // zeros: only the key side matters
  for (int64_t l = 0; l < c.layers; ++l) {
    if (attention.dense_layers.count(static_cast<int>(l))) continue;
    AttentionInputs in;
    in.queries = &query;
    in.keys = &k_cache_[l];
    in.values = &v_cache_[l];
    in.used_keys = length_;
    in.scaling = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    in.layer = static_cast<int>(l);
    auto m = attention.stack->ComputeMask(in, attention.state);
    if (!m.ok()) return m.status().WithContext("layer " + std::to_string(l) + ": ");
  }
  return Status::Ok();
}

Status Sequence::Save(const std::string& path, const std::vector<float>& logits) const {
  const auto& c = model_->config();
  const int64_t D = c.head_dim;
  std::vector<Tensor> kv;  // exact-length copies of the caches
  kv.reserve(static_cast<size_t>(2 * c.layers));
  for (int64_t l = 0; l < c.layers; ++l)
    for (const auto* cache : {&k_cache_, &v_cache_}) {
      Tensor t({1, c.kv_heads, length_, D});
      for (int64_t h = 0; h < c.kv_heads; ++h)
        std::copy_n((*cache)[l].data() + h * capacity_ * D, length_ * D,
                    t.data() + h * length_ * D);
      kv.push_back(std::move(t));
    }
  Tensor tokens({length_}), last({static_cast<int64_t>(logits.size())}, logits);
  for (int64_t i = 0; i < length_; ++i) tokens.data()[i] = static_cast<float>(tokens_[i]);
  std::vector<std::pair<std::string, const Tensor*>> named = {{"tokens", &tokens},
                                                              {"logits", &last}};
  std::vector<std::string> names;
  names.reserve(kv.size());
  for (int64_t l = 0; l < c.layers; ++l) {
    names.push_back("layer" + std::to_string(l) + ".k");
    names.push_back("layer" + std::to_string(l) + ".v");
  }
  for (size_t i = 0; i < kv.size(); ++i) named.push_back({names[i], &kv[i]});
  return WriteSafetensors(path, named, {{"model", model_->path()}});
}

Result<std::pair<Sequence, std::vector<float>>> Sequence::Load(
    std::shared_ptr<const LlamaModel> model, const std::string& path, int64_t capacity) {
  MT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Read(path));
  const auto& c = model->config();
  MT_ASSIGN_OR_RETURN(const Tensor* tokens, f.Get("tokens", 1));
  MT_ASSIGN_OR_RETURN(const Tensor* logits, f.Get("logits", 1));
  const int64_t n = tokens->dim(0), D = c.head_dim;
  if (logits->dim(0) != c.vocab)
    return Status::Error(path + ": logits: expected " + std::to_string(c.vocab) +
                         " entries, found " + std::to_string(logits->dim(0)));
  Sequence seq(model, std::max(capacity, n));
  for (int64_t l = 0; l < c.layers; ++l)
    for (auto [suffix, cache] : {std::pair{".k", &seq.k_cache_}, {".v", &seq.v_cache_}}) {
      const std::string name = "layer" + std::to_string(l) + suffix;
      MT_ASSIGN_OR_RETURN(const Tensor* t, f.Get(name, 4));
      if (t->shape() != Shape{1, c.kv_heads, n, D})
        return Status::Error(path + ": " + name + ": expected shape " +
                             ShapeToString({1, c.kv_heads, n, D}) + ", found " +
                             ShapeToString(t->shape()));
      for (int64_t h = 0; h < c.kv_heads; ++h)
        std::copy_n(t->data() + h * n * D, n * D, (*cache)[l].data() + h * seq.capacity_ * D);
    }
  seq.tokens_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float x = tokens->data()[i];
    if (!(x >= 0 && x < static_cast<float>(c.vocab)) || x != std::floor(x))
      return Status::Error(path + ": tokens[" + std::to_string(i) + "] is not a token id");
    seq.tokens_[i] = static_cast<int32_t>(x);
  }
  seq.length_ = n;
  return std::pair{std::move(seq), logits->vec()};
}

Result<std::vector<int32_t>> Sequence::Generate(std::vector<float> logits, int64_t max_new,
                                                const std::vector<int32_t>& stop,
                                                SparseAttention* attention) {
  std::vector<int32_t> out;
  for (int64_t t = 0; t < max_new; ++t) {
    const int32_t next = ArgMax(logits);
    out.push_back(next);
    if (std::find(stop.begin(), stop.end(), next) != stop.end()) break;
    if (t + 1 == max_new) break;
    const int32_t one[1] = {next};
    MT_ASSIGN_OR_RETURN(logits, Forward(one, attention));
  }
  return out;
}

int32_t ArgMax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace masktune::model
