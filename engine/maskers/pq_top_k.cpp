// pq_top_k: PQCache. Keys are product-quantised (k-means per batch, kv head
// and sub-space, learned on the layer's first call and kept), and the
// heavy_size keys with the best approximate scores are kept (spec: "pq_top_k").
//
// Layer state under the slot: "<slot>.centroids" [B, Hkv, S, C, sub] and
// "<slot>.codes" (one label per key and sub-space, [B, Hkv, N, S]); keys that
// arrive in later calls are coded against the existing codebook. Heads that
// share a kv head share its codebook (their keys are the same vectors).
#include <algorithm>
#include <limits>
#include <numeric>

#include "engine/cpu_kernels.h"
#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

constexpr uint32_t kPurposeKMeans = 0x5051u;  // "PQ"

// A sub-space's codebook laid out dimension-major ([sub][C]) for
// kernels::SquaredDistances.
struct Codebook {
  int64_t c = 0, sub = 0;
  std::vector<float> t;     // [sub][C]
  std::vector<float> dist;  // scratch [C]

  Codebook(int64_t c_, int64_t sub_) : c(c_), sub(sub_), t(c_ * sub_), dist(c_) {}
  void Load(const float* centroids) {  // [C][sub]
    for (int64_t i = 0; i < c; ++i)
      for (int64_t d = 0; d < sub; ++d) t[d * c + i] = centroids[i * sub + d];
  }
  // The nearest centroid to x; ties to the lower index.
  uint16_t Nearest(const float* x) {
    kernels::SquaredDistances(x, t.data(), c, sub, dist.data());
    return static_cast<uint16_t>(std::min_element(dist.begin(), dist.end()) - dist.begin());
  }
};

class PqTopKMasker : public Masker {
 public:
  PqTopKMasker(MaskerConfig c, std::string slot) : config_(std::move(c)), slot_(std::move(slot)) {}

  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev,
                       LayerState& state) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t N = shape.keys, D = in.head_dim(), B = in.batch(), Hkv = in.kv_heads();
    const int64_t k = config_.Size("heavy_size", N);
    if (N <= k) return Mask::Full(shape);
    const int64_t sub = config_.Int("pq_sub_dim");
    if (D % sub != 0)
      return Status::Error("pq_sub_dim " + std::to_string(sub) +
                           " does not divide the head dimension " + std::to_string(D));
    const int64_t S = D / sub;

    Tensor& centroids = state.tensors[slot_ + ".centroids"];
    std::vector<uint16_t>& codes = state.labels[slot_ + ".codes"];
    const int64_t cached =
        centroids.rank() == 5 ? static_cast<int64_t>(codes.size()) / (B * Hkv * S) : 0;
    if (cached > 0 && (centroids.dim(0) != B || centroids.dim(1) != Hkv || centroids.dim(2) != S))
      return Status::Error("the layer's cached codebook " + ShapeToString(centroids.shape()) +
                           " does not fit this call");
    if (cached > N)
      return Status::Error("this call brings " + std::to_string(N) + " keys, fewer than the " +
                           std::to_string(cached) + " cached for layer " +
                           std::to_string(in.layer));
    if (cached == 0) Train(in, S, sub, centroids);
    const int64_t C = centroids.dim(3);
    if (cached < N) {
      std::vector<uint16_t> grown(static_cast<size_t>(B * Hkv * N * S));
      for (int64_t bk = 0; bk < B * Hkv; ++bk)
        std::copy_n(codes.data() + bk * cached * S, cached * S, grown.data() + bk * N * S);
      ParallelRows(B * Hkv * S, [&](int64_t task) {
        const int64_t bk = task / S, s = task % S, b = bk / Hkv, kvh = bk % Hkv;
        Codebook book(C, sub);
        book.Load(centroids.data() + task * C * sub);
        for (int64_t j = cached; j < N; ++j)
          grown[(bk * N + j) * S + s] = book.Nearest(in.key(b, kvh, j) + s * sub);
      });
      codes = std::move(grown);
    }

    // Approximate scores: a per-row table of <q_s, centroid> per sub-space,
    // summed over each key's codes; then as oracle_top_k.
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * k));
    ParallelRows(shape.rows(), [&](int64_t row) {
      thread_local std::vector<float> table, scores, prev_row, scratch;
      const int64_t b = shape.batch_of(row), i = shape.query_of(row);
      const int64_t h = (row / shape.queries) % shape.heads, bk = b * Hkv + h / in.group();
      const float* q = in.query(b, h, i);
      table.resize(static_cast<size_t>(S * C));
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = 0; c < C; ++c)
          table[s * C + c] = Dot(q + s * sub, centroids.data() + ((bk * S + s) * C + c) * sub, sub);
      scores.resize(static_cast<size_t>(N));
      const uint16_t* code = codes.data() + bk * N * S;
      const float* mrow = in.mask_row(b, i);
      for (int64_t j = 0; j < N; ++j) {
        float sc = 0;
        for (int64_t s = 0; s < S; ++s) sc += table[s * C + code[j * S + s]];
        scores[j] = mrow ? sc + mrow[j] : sc;
      }
      ExcludePrevious(prev, row, kLowest, scores.data(), prev_row);
      SelectTopK(scores.data(), N, k, idx.data() + row * k, scratch);
    });
    return prev.Merge(Mask::FromRowIndices(shape, idx, k, 1.0f));
  }

 private:
  // k-means per (batch, kv head, sub-space), learned on at most
  // train_keys_per_centroid * C of this call's keys (distinct, drawn from
  // (seed, layer)): k-means++ seeding, then Lloyd iterations until no key
  // changes its centroid or the cap. C = min(2^pq_bits, keys).
  void Train(const AttentionInputs& in, int64_t S, int64_t sub, Tensor& centroids) const {
    const int64_t N = in.num_keys(), B = in.batch(), Hkv = in.kv_heads();
    const int64_t C = std::min<int64_t>(int64_t{1} << config_.Int("pq_bits"), N);
    const int64_t M = std::min(N, C * config_.Int("train_keys_per_centroid"));
    const int64_t iterations = config_.Int("kmeans_iterations");
    centroids = Tensor({B, Hkv, S, C, sub});
    const RandomKey key{static_cast<uint64_t>(config_.Int("seed")), static_cast<uint32_t>(in.layer),
                        kPurposeKMeans};
    ParallelRows(B * Hkv * S, [&](int64_t task) {
      const int64_t bk = task / S, s = task % S, b = bk / Hkv, kvh = bk % Hkv;
      // The training keys' sub-vectors, contiguous.
      std::vector<int32_t> pick_idx(static_cast<size_t>(M));
      if (M < N)
        SampleDistinct(key, 2 * task, N, M, pick_idx.data());
      else
        std::iota(pick_idx.begin(), pick_idx.end(), 0);
      std::vector<float> xs(static_cast<size_t>(M * sub));
      for (int64_t j = 0; j < M; ++j)
        std::copy_n(in.key(b, kvh, pick_idx[j]) + s * sub, sub, &xs[j * sub]);
      auto x = [&](int64_t j) { return xs.data() + j * sub; };
      float* cent = centroids.data() + task * C * sub;

      // k-means++: the first centre uniformly, each next one with probability
      // proportional to the squared distance to the nearest centre so far.
      const RandomKey seeding{key.seed, key.stream, key.purpose + 1};
      uint64_t draw = static_cast<uint64_t>(task) << 32;
      std::vector<double> dist(static_cast<size_t>(M), std::numeric_limits<double>::infinity());
      int64_t pick =
          std::min<int64_t>(M - 1, static_cast<int64_t>(RandomUniform(seeding, draw++) * M));
      for (int64_t c = 0; c < C; ++c) {
        std::copy_n(x(pick), sub, cent + c * sub);
        double total = 0;
        for (int64_t j = 0; j < M; ++j) {
          double d2 = 0;
          for (int64_t d = 0; d < sub; ++d) {
            const double e = static_cast<double>(x(j)[d]) - cent[c * sub + d];
            d2 += e * e;
          }
          dist[j] = std::min(dist[j], d2);
          total += dist[j];
        }
        if (c + 1 == C) break;
        if (total == 0) {  // fewer distinct keys than centres: repeat one
          pick = 0;
          continue;
        }
        double target = RandomUniform(seeding, draw++) * total;
        pick = M - 1;
        for (int64_t j = 0; j < M; ++j) {
          target -= dist[j];
          if (target < 0 && dist[j] > 0) {
            pick = j;
            break;
          }
        }
      }
      // Lloyd.
      std::vector<uint16_t> assign(static_cast<size_t>(M), std::numeric_limits<uint16_t>::max());
      std::vector<double> sum(static_cast<size_t>(C * sub));
      std::vector<int64_t> count(static_cast<size_t>(C));
      Codebook book(C, sub);
      for (int64_t it = 0; it < iterations; ++it) {
        bool changed = false;
        book.Load(cent);
        for (int64_t j = 0; j < M; ++j) {
          const uint16_t a = book.Nearest(x(j));
          changed |= a != assign[j];
          assign[j] = a;
        }
        if (!changed) break;
        std::fill(sum.begin(), sum.end(), 0.0);
        std::fill(count.begin(), count.end(), 0);
        for (int64_t j = 0; j < M; ++j) {
          ++count[assign[j]];
          for (int64_t d = 0; d < sub; ++d) sum[assign[j] * sub + d] += x(j)[d];
        }
        for (int64_t c = 0; c < C; ++c)  // an empty cluster keeps its centre
          if (count[c] > 0)
            for (int64_t d = 0; d < sub; ++d)
              cent[c * sub + d] =
                  static_cast<float>(sum[c * sub + d] / static_cast<double>(count[c]));
      }
    });
  }

  MaskerConfig config_;
  std::string slot_;
};

}  // namespace

MaskerSchema PqTopKSchema() {
  MaskerSchema s;
  s.type = "pq_top_k";
  s.reference_name = "PQCacheConfig";
  s.help = "PQCache: top-k on scores approximated by product-quantised keys";
  s.fields = {
      SizeField("heavy_size", "keys to keep per row (float: fraction of the keys)"),
      IntField("pq_sub_dim", Range{0, 4096, true, false},
               "dimensions per sub-space (must divide the head dimension)"),
      IntField("pq_bits", Range{0, 12, true, false}, "bits per code: 2^pq_bits centroids"),
      IntField("kmeans_iterations", Range{0, 1000, true, false},
               "cap on Lloyd iterations (stops earlier when no key moves)", int64_t{10}),
      IntField("train_keys_per_centroid", Range{0, 1e9, true, false},
               "k-means learns on at most this many keys per centroid (a sample)", int64_t{32}),
      IntField("seed", Range{0, 1e18, false, false}, "k-means++ seed (with the layer)",
               int64_t{42})};
  s.create = Factory<PqTopKMasker>([](const MaskerConfig& c, const std::string& slot) {
    return Result<std::unique_ptr<PqTopKMasker>>(std::make_unique<PqTopKMasker>(c, slot));
  });
  return s;
}

}  // namespace masktune
