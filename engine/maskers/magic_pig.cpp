// magic_pig: LSH sampling (MagicPIG). A key is kept when its sign-random-
// projection signature collides with the query's in at least one of L tables
// of K bits, and is written with its collision probability
// 1 - (1 - (1 - theta/pi)^K)^L, so that the sparse output is an unbiased-
// weight estimate of dense attention (spec: "magic_pig").
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "engine/cpu_kernels.h"
#include "engine/maskers/common.h"
#include "engine/maskers/magic_pig_math.h"
#include "engine/maskers/maskers.h"
#include "engine/random.h"
#include "engine/safetensors.h"

namespace masktune {
namespace {

constexpr uint32_t kPurposeProjections = 0x5049u;  // "PI"

class MagicPigMasker : public Masker {
 public:
  MagicPigMasker(MaskerConfig c, std::string slot, std::shared_ptr<SafetensorsFile> projections)
      : config_(std::move(c)), slot_(std::move(slot)), file_(std::move(projections)) {
    K_ = config_.Int("lsh_k");
    L_ = config_.Int("lsh_l");
    // Signatures are packed as lanes of the narrowest width that holds K
    // bits, several tables per 64-bit word, so a match test reads L bytes
    // (K <= 8) instead of 8 L, and compares a word of lanes at once.
    lane_bits_ = K_ <= 8 ? 8 : K_ <= 16 ? 16 : K_ <= 32 ? 32 : 64;
    lanes_ = 64 / lane_bits_;
    words_ = (L_ + lanes_ - 1) / lanes_;
    if (lane_bits_ < 64) {
      for (int64_t i = 0; i < lanes_; ++i) {
        low_ |= uint64_t{1} << (i * lane_bits_);
        high_ |= uint64_t{1} << (i * lane_bits_ + lane_bits_ - 1);
      }
    }
    simple_lsh_ = config_.Str("transform") == "simple_lsh";
  }

  static Result<std::unique_ptr<MagicPigMasker>> Create(const MaskerConfig& c,
                                                        const std::string& slot) {
    std::shared_ptr<SafetensorsFile> file;
    if (!c.Str("projections_file").empty()) {
      auto f = SafetensorsFile::Read(c.Str("projections_file"));
      if (!f.ok()) return f.status().WithContext("projections_file: ");
      file = std::make_shared<SafetensorsFile>(std::move(f).value());
    }
    return std::make_unique<MagicPigMasker>(c, slot, std::move(file));
  }

  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev,
                       LayerState& state) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t B = in.batch(), H = in.heads(), Q = shape.queries, N = shape.keys;
    const int64_t D = in.head_dim(), g = in.group(), E = simple_lsh_ ? D + 1 : D;
    const int64_t bits = K_ * L_;
    MT_ASSIGN_OR_RETURN(const Tensor* rt, Projections(in.layer, E, state));  // [bits, E]

    // Key mean per (batch, head), from the layer's first call.
    Tensor& mean = state.tensors[slot_ + ".key_mean"];
    if (mean.rank() == 0) {
      mean = Tensor({B, H, D});
      if (config_.Bool("center")) {
        // Summed once per kv head, written to each query head of its group.
        ParallelRows(B * in.kv_heads(), [&](int64_t bkv) {
          const int64_t b = bkv / in.kv_heads(), kvh = bkv % in.kv_heads();
          std::vector<double> acc(static_cast<size_t>(D), 0.0);
          for (int64_t j = 0; j < N; ++j)
            for (int64_t d = 0; d < D; ++d) acc[d] += in.key(b, kvh, j)[d];
          for (int64_t h = kvh * g; h < (kvh + 1) * g; ++h)
            for (int64_t d = 0; d < D; ++d)
              mean.data()[(b * H + h) * D + d] =
                  static_cast<float>(acc[d] / static_cast<double>(N));
        });
      }
    } else if (mean.dim(0) != B || mean.dim(1) != H || mean.dim(2) != D) {
      return Status::Error("the layer's cached key mean " + ShapeToString(mean.shape()) +
                           " does not fit this call");
    }
    // Key-side state per kv head (the query heads of a group share the key
    // mean, so their key norms and signatures are equal): norms of the
    // centred keys [B, Hkv, cap] and signatures word-major [B, Hkv, words,
    // cap] (the match scan streams one word of every key at a time), for the
    // first `count` keys; cap grows by doubling, so a decode step signs and
    // stores only its new keys. The transform's M is the maximum norm.
    Tensor& norms = state.tensors[slot_ + ".key_norms"];
    std::vector<uint64_t>& codes = state.codes[slot_ + ".key_codes"];
    std::vector<uint64_t>& count_slot = state.codes[slot_ + ".key_count"];
    const int64_t Hkv = in.kv_heads();
    if (count_slot.empty()) count_slot.assign(1, 0);
    const int64_t cached = static_cast<int64_t>(count_slot[0]);
    int64_t cap = norms.rank() == 3 ? norms.dim(2) : 0;
    if (cached > N)
      return Status::Error("this call brings " + std::to_string(N) + " keys, fewer than the " +
                           std::to_string(cached) + " cached for layer " +
                           std::to_string(in.layer));
    if (cached > 0 && (norms.dim(0) != B || norms.dim(1) != Hkv ||
                       static_cast<int64_t>(codes.size()) != B * Hkv * words_ * cap))
      return Status::Error("cached key signatures do not fit this call");
    if (N > cap) {  // grow, keeping the cached keys
      const int64_t grown_cap = std::max(N, 2 * cap);
      Tensor grown({B, Hkv, grown_cap});
      std::vector<uint64_t> grown_codes(static_cast<size_t>(B * Hkv * words_ * grown_cap));
      for (int64_t bh = 0; bh < B * Hkv; ++bh)
        std::copy_n(norms.data() + bh * cap, cached, grown.data() + bh * grown_cap);
      for (int64_t bw = 0; bw < B * Hkv * words_; ++bw)
        std::copy_n(codes.data() + bw * cap, cached, grown_codes.data() + bw * grown_cap);
      norms = std::move(grown);
      codes = std::move(grown_codes);
      cap = grown_cap;
    }
    // Work items: (batch, kv head, block of new keys).
    constexpr int64_t kSignBlock = 64;
    const int64_t blocks = (N - cached + kSignBlock - 1) / kSignBlock;
    ParallelRows(B * Hkv * blocks, [&](int64_t item) {
      const int64_t bh = item / blocks, j0 = cached + (item % blocks) * kSignBlock;
      const int64_t b = bh / Hkv, kvh = bh % Hkv;
      const float* mu = mean.data() + (b * H + kvh * g) * D;
      for (int64_t j = j0; j < std::min(N, j0 + kSignBlock); ++j) {
        const float* k = in.key(b, kvh, j);
        float s = 0;
        for (int64_t d = 0; d < D; ++d) s += (k[d] - mu[d]) * (k[d] - mu[d]);
        norms.data()[bh * cap + j] = std::sqrt(s);
      }
    });
    float M = 0;
    for (int64_t bh = 0; bh < B * Hkv; ++bh)
      for (int64_t j = 0; j < N; ++j) M = std::max(M, norms.data()[bh * cap + j]);
    if (M == 0) M = 1;
    // Signatures of the keys not yet signed, a block of keys per projection pass.
    ParallelRows(B * Hkv * blocks, [&](int64_t item) {
      const int64_t bh = item / blocks, j0 = cached + (item % blocks) * kSignBlock;
      const int64_t j1 = std::min(N, j0 + kSignBlock), n = j1 - j0;
      const int64_t b = bh / Hkv, kvh = bh % Hkv;
      const float* mu = mean.data() + (b * H + kvh * g) * D;
      std::vector<float> x(static_cast<size_t>(n * E)), proj(static_cast<size_t>(n * bits));
      std::vector<uint64_t> code(static_cast<size_t>(words_));
      for (int64_t j = j0; j < j1; ++j)
        Transform(in.key(b, kvh, j), mu, D, norms.data()[bh * cap + j], M, true,
                  x.data() + (j - j0) * E);
      SignRows(x.data(), n, *rt, E, proj.data());
      for (int64_t j = j0; j < j1; ++j) {
        Pack(proj.data() + (j - j0) * bits, code.data(), false);
        for (int64_t w = 0; w < words_; ++w) codes[(bh * words_ + w) * cap + j] = code[w];
      }
    });
    count_slot[0] = static_cast<uint64_t>(N);
    // Queries: signatures, matches, and the collision probability of matches.
    // A work item is a query of up to 32 heads of one kv-head group (fewer
    // when that leaves threads idle): their matches are found head by head,
    // then the union of their matched keys is read once, in key order, for
    // the dot products of every head of the item (heads that did not match
    // a key drop its value). The values do not depend on the split.
    std::vector<std::vector<int32_t>> kept(static_cast<size_t>(shape.rows()));
    std::vector<std::vector<float>> prob(static_cast<size_t>(shape.rows()));
    const int64_t queries = B * Hkv * Q;
    const int64_t threads = std::max<int64_t>(1, omp_get_max_threads());
    const int64_t per_item =
        std::clamp<int64_t>(g * queries / threads, 1, std::min<int64_t>(g, 32));
    const int64_t chunks = (g + per_item - 1) / per_item;
    ParallelRows(queries * chunks, [&](int64_t item) {
      const int64_t bq = item / chunks, r0 = (item % chunks) * per_item;
      const int64_t rows = std::min(per_item, g - r0);
      const int64_t b = bq / (Hkv * Q), kvh = (bq / Q) % Hkv, i = bq % Q;
      const int64_t bkv = b * Hkv + kvh;
      const uint64_t* kc = codes.data() + bkv * words_ * cap;
      // x~ of each head's query, its code, and the terms of its cosines.
      std::vector<float> xs(static_cast<size_t>(rows * E)), qc(static_cast<size_t>(D)),
          proj(static_cast<size_t>(bits)), x_mu(static_cast<size_t>(rows)),
          inv_xq(static_cast<size_t>(rows));
      std::vector<uint64_t> qcodes(static_cast<size_t>(rows * words_));
      std::vector<const float*> x_rows(static_cast<size_t>(rows));
      const float inv_m = simple_lsh_ ? 1.0f / M : 1.0f;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = kvh * g + r0 + r;
        const float* mu = mean.data() + (b * H + h) * D;
        const float* q = in.query(b, h, i);
        float* x = xs.data() + r * E;
        float qn2 = 0;
        for (int64_t d = 0; d < D; ++d) {
          qc[d] = q[d] - mu[d];
          qn2 += qc[d] * qc[d];
        }
        const float qn = std::sqrt(qn2);
        Transform(q, mu, D, qn, M, false, x);
        Sign(x, *rt, E, proj.data(), qcodes.data() + r * words_, true);
        // |q~| and <x, mu>, as the reference's cosine needs them: <x~, k~_j> =
        // (<x, k_j> - <x, mu>) / M over the head dimension (the augmented
        // coordinate of q~ is 0).
        float xq2 = 0;
        for (int64_t e = 0; e < E; ++e) xq2 += x[e] * x[e];
        const float xq = std::sqrt(xq2);
        x_mu[r] = Dot(x, mu, D);
        inv_xq[r] = 1.0f / (xq + 1e-8f);
        x_rows[r] = x;
      }
      // A table matches when its lane of key ^ query is zero; blocks of keys,
      // one word of each at a time, so the loop vectorises. The union is
      // listed without branches (matches are random: a branch per key would
      // mispredict often), each key with the bit set of heads that matched it.
      constexpr int64_t kBlock = 512;
      std::vector<uint8_t> hit(static_cast<size_t>(rows * kBlock));
      thread_local std::vector<int32_t> union_keys;
      thread_local std::vector<uint32_t> union_heads;
      union_keys.resize(static_cast<size_t>(N));
      union_heads.resize(static_cast<size_t>(N));
      int64_t u = 0;
      for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
        const int64_t nb = std::min(kBlock, N - j0);
        std::fill(hit.begin(), hit.end(), uint8_t{0});
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t w = 0; w < words_; ++w)
            kernels::MatchLanes(kc + w * cap + j0, nb, qcodes[r * words_ + w],
                                static_cast<int>(lane_bits_), low_, high_, &hit[r * kBlock]);
        for (int64_t j = 0; j < nb; ++j) {
          uint32_t heads = 0;
          for (int64_t r = 0; r < rows; ++r)
            heads |= static_cast<uint32_t>(hit[r * kBlock + j] != 0) << r;
          union_keys[u] = static_cast<int32_t>(j0 + j);
          union_heads[u] = heads;
          u += heads != 0;
        }
      }
      thread_local std::vector<const float*> key_rows;
      thread_local std::vector<float> dots, kn_of, head_dots;
      key_rows.resize(static_cast<size_t>(u));
      for (int64_t t = 0; t < u; ++t) key_rows[t] = in.key(b, kvh, union_keys[t]);
      dots.resize(static_cast<size_t>(rows * u));
      magic_pig::GroupDots(x_rows.data(), rows, key_rows.data(), u, D, dots.data());
      // Per head: its matched keys, the cosine with each (the dot product,
      // then the norms, as the reference computes them), their collision
      // probabilities in one vectorised pass (magic_pig_math.h), and the keys
      // whose probability did not underflow to 0 (a probability-0 key cannot
      // be weighted).
      kn_of.resize(static_cast<size_t>(u));
      head_dots.resize(static_cast<size_t>(u));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = (b * H + kvh * g + r0 + r) * Q + i;
        auto& out_keys = kept[row];
        auto& out_p = prob[row];
        out_keys.resize(static_cast<size_t>(u));
        int64_t n = 0;
        for (int64_t t = 0; t < u; ++t) {
          const int32_t j = union_keys[t];
          out_keys[n] = j;
          head_dots[n] = (dots[r * u + t] - x_mu[r]) * inv_m;
          kn_of[n] = norms.data()[bkv * cap + j];
          n += (union_heads[t] >> r) & 1u;
        }
        out_p.resize(static_cast<size_t>(n));
        magic_pig::Cosines(head_dots.data(), kn_of.data(), n, M, inv_xq[r], simple_lsh_,
                           out_p.data());
        magic_pig::CollisionProbabilities(out_p.data(), n, K_, L_, out_p.data());
        int64_t kept_n = 0;
        for (int64_t t = 0; t < n; ++t) {
          out_keys[kept_n] = out_keys[t];
          out_p[kept_n] = out_p[t];
          kept_n += out_p[t] > 0.0f;
        }
        out_keys.resize(static_cast<size_t>(kept_n));
        out_p.resize(static_cast<size_t>(kept_n));
      }
    });
    return prev.Merge(Mask::FromRows(shape, kept, prob));
  }

 private:
  // x~ of a key (is_key) or query: centred, then the simple-LSH transform.
  void Transform(const float* v, const float* mu, int64_t D, float norm, float M, bool is_key,
                 float* x) const {
    if (!simple_lsh_) {
      for (int64_t d = 0; d < D; ++d) x[d] = v[d] - mu[d];
      return;
    }
    if (is_key) {
      for (int64_t d = 0; d < D; ++d) x[d] = (v[d] - mu[d]) / M;
      x[D] = std::sqrt(std::max(0.0f, M * M - norm * norm)) / M;
    } else {
      for (int64_t d = 0; d < D; ++d) x[d] = (v[d] - mu[d]) / (norm + 1e-8f);
      x[D] = 0.0f;
    }
  }

  // proj[r * bits + t] = <x_r, R_t> for n rows x_r of E floats. The head_dim
  // part goes through the vectorised score kernel (rows of R^T are E apart;
  // the kernel reads their first D floats; each dot product is computed the
  // same way for any n), the augmentation coordinate is added after.
  void SignRows(const float* x, int64_t n, const Tensor& rt, int64_t E, float* proj) const {
    const int64_t bits = K_ * L_, D = simple_lsh_ ? E - 1 : E;
    thread_local std::vector<const float*> cols, rows;
    cols.resize(static_cast<size_t>(bits));
    rows.resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < bits; ++t) cols[t] = rt.data() + t * E;
    for (int64_t r = 0; r < n; ++r) rows[r] = x + r * E;
    kernels::ScoreTile(rows.data(), n, cols.data(), bits, D, 1.0f, proj, bits);
    if (simple_lsh_)
      for (int64_t r = 0; r < n; ++r)
        for (int64_t t = 0; t < bits; ++t) proj[r * bits + t] += x[r * E + D] * cols[t][D];
  }

  // Packs sign(proj) > 0 into L codes of K bits, `words_` words. Table l
  // sits in lane l % lanes of word l / lanes. Unused lanes are 0 in keys and
  // all ones in queries, so they never match.
  void Pack(const float* proj, uint64_t* code, bool is_query) const {
    const uint64_t lane_mask = lane_bits_ == 64 ? ~uint64_t{0} : (uint64_t{1} << lane_bits_) - 1;
    for (int64_t w = 0; w < words_; ++w) code[w] = 0;
    for (int64_t l = 0; l < words_ * lanes_; ++l) {
      uint64_t c = 0;
      if (l < L_) {
        for (int64_t k = 0; k < K_; ++k) c |= static_cast<uint64_t>(proj[l * K_ + k] > 0.0f) << k;
      } else if (is_query) {
        c = lane_mask;
      }
      code[l / lanes_] |= c << ((l % lanes_) * lane_bits_);
    }
  }

  void Sign(const float* x, const Tensor& rt, int64_t E, float* proj, uint64_t* code,
            bool is_query) const {
    SignRows(x, 1, rt, E, proj);
    Pack(proj, code, is_query);
  }

  // R transposed, [K*L, E]: from the projections file, or drawn from the seed.
  Result<const Tensor*> Projections(int layer, int64_t E, LayerState& state) const {
    Tensor& rt = state.tensors[slot_ + ".projections_t"];
    if (rt.rank() == 2) return &rt;
    const int64_t bits = K_ * L_;
    rt = Tensor({bits, E});
    if (file_) {
      const std::string name = "layer" + std::to_string(layer) + ".projections";
      MT_ASSIGN_OR_RETURN(const Tensor* r, file_->Get(name, 2));
      if (r->shape() != Shape{E, bits})
        return Status::Error(file_->path() + ": " + name + ": expected shape " +
                             ShapeToString({E, bits}) + " (head_dim" + (simple_lsh_ ? " + 1" : "") +
                             ", lsh_k * lsh_l), found " + ShapeToString(r->shape()));
      for (int64_t e = 0; e < E; ++e)
        for (int64_t t = 0; t < bits; ++t) rt.data()[t * E + e] = r->data()[e * bits + t];
    } else {
      // Standard normal draws keyed by (seed + layer): the same on any thread count or device.
      const RandomKey key{static_cast<uint64_t>(config_.Int("seed") + layer), 0,
                          kPurposeProjections};
      for (int64_t e = 0; e < E; ++e)
        for (int64_t t = 0; t < bits; ++t)
          rt.data()[t * E + e] =
              static_cast<float>(RandomNormal(key, static_cast<uint64_t>(e * bits + t)));
    }
    return &rt;
  }

  MaskerConfig config_;
  std::string slot_;
  std::shared_ptr<SafetensorsFile> file_;
  int64_t K_ = 0, L_ = 0;
  int64_t lane_bits_ = 64, lanes_ = 1, words_ = 0;
  uint64_t low_ = 0, high_ = 0;  // the lowest and highest bit of every lane
  bool simple_lsh_ = true;
};

}  // namespace

MaskerSchema MagicPigSchema() {
  MaskerSchema s;
  s.type = "magic_pig";
  s.reference_name = "MagicPigConfig";
  s.help = "MagicPIG: LSH sampling, each kept key weighted by its collision probability";
  s.sampling = true;
  FieldSpec center;
  center.name = "center";
  center.type = FieldType::kBool;
  center.default_value = true;
  center.help = "centre keys and queries on the key mean of the layer's first call";
  FieldSpec packing;
  packing.name = "packing";
  packing.type = FieldType::kString;
  packing.choices = {"int64", "float32"};
  packing.default_value = std::string("int64");
  packing.help = "the reference's signature packing; both give the same result";
  FieldSpec file;
  file.name = "projections_file";
  file.type = FieldType::kPath;
  file.default_value = std::string("");
  file.help =
      "safetensors with layer{L}.projections (head_dim+1, lsh_k*lsh_l); default: drawn from seed";
  FieldSpec transform;
  transform.name = "transform";
  transform.type = FieldType::kString;
  transform.choices = {"simple_lsh", "none"};
  transform.default_value = std::string("simple_lsh");
  transform.help = "simple_lsh (the reference's asymmetric MIPS transform) or none";
  s.fields = {IntField("lsh_k", Range{0, 64, true, false}, "bits per table (packed in 64)"),
              IntField("lsh_l", Range{0, 4096, true, false}, "tables"),
              center,
              packing,
              IntField("seed", Range{0, 1e18, false, false}, "projection seed (with the layer)",
                       int64_t{42}),
              file,
              transform};
  s.create = Factory<MagicPigMasker>(&MagicPigMasker::Create);
  return s;
}

}  // namespace masktune
