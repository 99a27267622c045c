// hash_attention_top_k: top-k on inner products of learned bit signatures
// (HashAttention) (spec: "hash_attention_top_k").
#include <cmath>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"
#include "engine/safetensors.h"

namespace masktune {
namespace {

enum class Activation { kRelu, kSilu, kGelu, kTanh };

float Activate(Activation a, float x) {
  switch (a) {
    case Activation::kRelu:
      return x > 0.0f ? x : 0.0f;
    case Activation::kSilu:
      return x / (1.0f + std::exp(-x));
    case Activation::kGelu:
      return 0.5f * x * (1.0f + std::erf(x * static_cast<float>(M_SQRT1_2)));
    case Activation::kTanh:
      return std::tanh(x);
  }
  return x;
}

// One side's MLP (query or key) for one layer: matrices [heads, in, out], biases [heads, out].
struct Mlp {
  std::vector<const Tensor*> matrix, bias;

  // sign(MLP_h(x)) for head h into sig (bits entries).
  void Signature(const float* x, int64_t h, Activation act, float* sig, std::vector<float>& a,
                 std::vector<float>& b) const {
    a.assign(x, x + matrix[0]->dim(1));
    for (size_t i = 0; i < matrix.size(); ++i) {
      const int64_t in = matrix[i]->dim(1), out = matrix[i]->dim(2);
      const float* w = matrix[i]->data() + h * in * out;
      const float* bias_h = bias[i]->data() + h * out;
      b.assign(static_cast<size_t>(out), 0.0f);
      for (int64_t e = 0; e < out; ++e) {
        double acc = 0.0;  // exact sums keep signs near zero closest to the true value
        for (int64_t d = 0; d < in; ++d) acc += static_cast<double>(a[d]) * w[d * out + e];
        b[e] = static_cast<float>(acc) + bias_h[e];
        if (i + 1 < matrix.size()) b[e] = Activate(act, b[e]);
      }
      a.swap(b);
    }
    for (size_t e = 0; e < a.size(); ++e) sig[e] = static_cast<float>((a[e] > 0) - (a[e] < 0));
  }
};

class HashAttentionTopKMasker : public Masker {
 public:
  HashAttentionTopKMasker(MaskerConfig c, std::string slot, std::shared_ptr<SafetensorsFile> w)
      : config_(std::move(c)), slot_(std::move(slot)), weights_(std::move(w)) {
    const std::string& a = config_.Str("hat_mlp_activation");
    act_ = a == "relu"   ? Activation::kRelu
           : a == "silu" ? Activation::kSilu
           : a == "gelu" ? Activation::kGelu
                         : Activation::kTanh;
  }

  static Result<std::unique_ptr<HashAttentionTopKMasker>> Create(const MaskerConfig& c,
                                                                 const std::string& slot) {
    auto file = SafetensorsFile::Read(c.Str("hat_weight_file"));
    if (!file.ok()) return file.status().WithContext("hat_weight_file: ");
    return std::make_unique<HashAttentionTopKMasker>(
        c, slot, std::make_shared<SafetensorsFile>(std::move(file).value()));
  }

  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev,
                       LayerState& state) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t n = shape.keys, H = in.heads(), Q = shape.queries;
    const int64_t k = config_.Size("heavy_size", n);
    if (n <= k) return Mask::Full(shape);
    MT_ASSIGN_OR_RETURN(Mlp qmlp, LoadMlp(in.layer, "query", H, in.head_dim()));
    MT_ASSIGN_OR_RETURN(Mlp kmlp, LoadMlp(in.layer, "key", H, in.head_dim()));
    const int64_t bits = config_.Int("hat_bits");
    MT_ASSIGN_OR_RETURN(const Tensor* ksig, KeySignatures(in, kmlp, bits, state));

    std::vector<float> qsig(static_cast<size_t>(shape.rows() * bits));
    ParallelRows(shape.rows(), [&](int64_t row) {
      thread_local std::vector<float> a, b;
      const int64_t bb = shape.batch_of(row), h = (row / Q) % H, i = shape.query_of(row);
      qmlp.Signature(in.query(bb, h, i), h, act_, qsig.data() + row * bits, a, b);
    });
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * k));
    ParallelRows(shape.rows(), [&](int64_t row) {
      thread_local std::vector<float> scores, prev_row, scratch;
      const int64_t bb = shape.batch_of(row), h = (row / Q) % H, i = shape.query_of(row);
      const float* sk = ksig->data() + (bb * H + h) * ksig->dim(2) * bits;
      const float* m = in.mask_row(bb, i);
      scores.resize(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j)
        scores[j] = Dot(qsig.data() + row * bits, sk + j * bits, bits) + (m ? m[j] : 0.0f);
      ExcludePrevious(prev, row, kLowest, scores.data(), prev_row);
      SelectTopK(scores.data(), n, k, idx.data() + row * k, scratch);
    });
    return prev.Merge(Mask::FromRowIndices(shape, idx, k, 1.0f));
  }

 private:
  Result<Mlp> LoadMlp(int layer, const std::string& side, int64_t heads, int64_t head_dim) const {
    Mlp mlp;
    const int64_t layers = config_.Int("hat_mlp_layers");
    const int64_t hidden = config_.Int("hat_mlp_hidden_size"), bits = config_.Int("hat_bits");
    for (int64_t i = 0; i < layers; ++i) {
      const std::string suffix = "." + std::to_string(i);
      const std::string prefix = "layer" + std::to_string(layer) + "." + side;
      MT_ASSIGN_OR_RETURN(const Tensor* w, weights_->Get(prefix + "_matrix" + suffix, 3));
      MT_ASSIGN_OR_RETURN(const Tensor* b, weights_->Get(prefix + "_bias" + suffix, 2));
      const int64_t in = i == 0 ? head_dim : hidden, out = i + 1 == layers ? bits : hidden;
      if (w->shape() != Shape{heads, in, out} || b->shape() != Shape{heads, out})
        return Status::Error(weights_->path() + ": " + prefix + "_{matrix,bias}" + suffix +
                             ": expected shapes " + ShapeToString({heads, in, out}) + " and " +
                             ShapeToString({heads, out}) + ", found " + ShapeToString(w->shape()) +
                             " and " + ShapeToString(b->shape()));
      mlp.matrix.push_back(w);
      mlp.bias.push_back(b);
    }
    return mlp;
  }

  // Key signatures [batch, heads, keys, bits], cached in the layer state and
  // extended with the new keys of this call.
  Result<const Tensor*> KeySignatures(const AttentionInputs& in, const Mlp& kmlp, int64_t bits,
                                      LayerState& state) const {
    const int64_t B = in.batch(), H = in.heads(), n = in.num_keys(), g = in.group();
    Tensor& cache = state.tensors[slot_ + ".key_signatures"];
    int64_t cached = 0;
    if (cache.rank() == 4) {
      if (cache.dim(0) != B || cache.dim(1) != H || cache.dim(3) != bits)
        return Status::Error("cached key signatures " + ShapeToString(cache.shape()) +
                             " do not fit this call's batch " + std::to_string(B) + ", heads " +
                             std::to_string(H));
      cached = cache.dim(2);
      if (cached > n)
        return Status::Error("this call brings " + std::to_string(n) + " keys, fewer than the " +
                             std::to_string(cached) + " cached for layer " +
                             std::to_string(in.layer));
      if (cached == n) return &cache;
    }
    Tensor grown({B, H, n, bits});
    for (int64_t bh = 0; bh < B * H; ++bh)
      std::copy_n(cache.data() + bh * cached * bits, cached * bits, grown.data() + bh * n * bits);
    ParallelRows(B * H, [&](int64_t bh) {
      thread_local std::vector<float> a, b;
      const int64_t bb = bh / H, h = bh % H;
      for (int64_t j = cached; j < n; ++j)
        kmlp.Signature(in.key(bb, h / g, j), h, act_, grown.data() + (bh * n + j) * bits, a, b);
    });
    cache = std::move(grown);
    return &cache;
  }

  MaskerConfig config_;
  std::string slot_;
  std::shared_ptr<SafetensorsFile> weights_;
  Activation act_;
};

}  // namespace

MaskerSchema HashAttentionTopKSchema() {
  MaskerSchema s;
  s.type = "hash_attention_top_k";
  s.reference_name = "HashAttentionTopKMaskerConfig";
  s.help = "HashAttention: top-k on inner products of learned bit signatures";
  FieldSpec act;
  act.name = "hat_mlp_activation";
  act.type = FieldType::kString;
  act.choices = {"relu", "silu", "gelu", "tanh"};
  act.help = "activation between MLP layers";
  FieldSpec file;
  file.name = "hat_weight_file";
  file.type = FieldType::kPath;
  file.help = "safetensors with layer{L}.{query,key}_{matrix,bias}.{i}";
  const Range positive{0, 1e300, true, false};
  s.fields = {SizeField("heavy_size", "keys to keep per row (float: fraction of the keys)"),
              IntField("hat_bits", positive, "signature length in bits"),
              IntField("hat_mlp_layers", positive, "MLP layers per side"),
              IntField("hat_mlp_hidden_size", positive, "MLP hidden width"),
              act,
              file};
  s.create = Factory<HashAttentionTopKMasker>(&HashAttentionTopKMasker::Create);
  return s;
}

}  // namespace masktune
