// quest_top_k: Quest page selection by an upper bound of <q, k> over each
// page's element-wise key min and max (spec: "quest_top_k").
#include <algorithm>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

class QuestTopKMasker : public Masker {
 public:
  explicit QuestTopKMasker(MaskerConfig c) : config_(std::move(c)) {}
  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t n = shape.keys, D = in.head_dim(), g = in.group();
    const int64_t k = config_.Size("heavy_size", n);
    if (n <= std::max<int64_t>(1, k)) return Mask::Full(shape);
    const int64_t ps = config_.Int("page_size");
    const int bits = static_cast<int>(config_.Int("label_bits"));
    const int64_t pages = (n + ps - 1) / ps;
    const int64_t kp = std::min(pages, std::max<int64_t>(3, k / ps));

    // Page bounds per (batch, kv head, page): [B, Hkv, P, D] each. Heads that
    // share a kv head share its bounds (the reference repeats keys first).
    const int64_t B = in.batch(), Hkv = in.kv_heads();
    std::vector<float> kmin(static_cast<size_t>(B * Hkv * pages * D));
    std::vector<float> kmax(kmin.size());
    // One work item per (batch, kv head): its keys stream through once.
    ParallelRows(B * Hkv, [&](int64_t bk) {
      const int64_t b = bk / Hkv, kvh = bk % Hkv;
      for (int64_t p = 0; p < pages; ++p) {
        float* lo = kmin.data() + (bk * pages + p) * D;
        float* hi = kmax.data() + (bk * pages + p) * D;
        std::copy_n(in.key(b, kvh, p * ps), D, lo);
        std::copy_n(in.key(b, kvh, p * ps), D, hi);
        for (int64_t j = p * ps + 1; j < std::min(n, (p + 1) * ps); ++j) {
          const float* key = in.key(b, kvh, j);
          for (int64_t d = 0; d < D; ++d) {
            lo[d] = std::min(lo[d], key[d]);
            hi[d] = std::max(hi[d], key[d]);
          }
        }
        if (bits < 16) {
          PseudoQuantize(lo, D, bits);
          PseudoQuantize(hi, D, bits);
        }
      }
    });

    std::vector<std::vector<int32_t>> row_keys(static_cast<size_t>(shape.rows()));
    ParallelRows(shape.rows(), [&](int64_t row) {
      thread_local std::vector<float> score, scratch;
      thread_local std::vector<int32_t> chosen;
      const int64_t b = shape.batch_of(row), i = shape.query_of(row);
      const int64_t h = (row / shape.queries) % shape.heads;
      const float* q = in.query(b, h, i);
      const float* mrow = in.mask_row(b, i);
      score.resize(static_cast<size_t>(pages));
      for (int64_t p = 0; p < pages; ++p) {
        const int64_t base = ((b * Hkv + h / g) * pages + p) * D;
        float s = 0.0f;
        for (int64_t d = 0; d < D; ++d) s += std::max(q[d] * kmin[base + d], q[d] * kmax[base + d]);
        if (mrow) {
          bool any_allowed = false;
          for (int64_t j = p * ps; j < std::min(n, (p + 1) * ps) && !any_allowed; ++j)
            any_allowed = mrow[j] >= 0.0f;
          if (!any_allowed) s = kLowest;
        }
        score[p] = s;
      }
      chosen.resize(static_cast<size_t>(kp));
      SelectTopK(score.data(), pages, kp, chosen.data(), scratch);
      auto& out = row_keys[row];
      for (int32_t p : chosen)
        for (int64_t j = p * ps; j < std::min(n, (p + 1) * ps); ++j)
          out.push_back(static_cast<int32_t>(j));
    });
    Mask merged = prev.Merge(Mask::FromRows(shape, row_keys, 1.0f));
    // Quest does not exclude pages the previous mask covers; it does gate the
    // result by the attention mask.
    return in.attention_mask ? merged.KeepAllowed(*in.attention_mask) : merged;
  }

 private:
  MaskerConfig config_;
};

}  // namespace

MaskerSchema QuestTopKSchema() {
  MaskerSchema s;
  s.type = "quest_top_k";
  s.reference_name = "QuestTopKMaskerConfig";
  s.help = "Quest: the pages of page_size keys with the best <q, k> upper bound";
  s.fields = {SizeField("heavy_size", "keys to keep per row (float: fraction of the keys)"),
              IntField("page_size", Range{0, 1e300, true, false}, "keys per page"),
              IntField("label_bits", Range{0, 16, true, false},
                       "bits of the page min/max labels (16 = unquantised)", int64_t{16})};
  s.create = Factory<QuestTopKMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<QuestTopKMasker>>(std::make_unique<QuestTopKMasker>(c));
  });
  return s;
}

}  // namespace masktune
