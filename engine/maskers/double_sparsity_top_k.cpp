// double_sparsity_top_k: top-k on scores from a few outlier channels per head,
// chosen offline (the Double Sparsity authors' channel files) (spec:
// "double_sparsity_top_k").
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"
#include "engine/registry.h"

namespace masktune {
namespace {

using json = nlohmann::json;

// The most a channel file may hold: the authors' files for a 70B model are a few MiB.
constexpr uintmax_t kMaxChannelFileBytes = uintmax_t{64} << 20;

// A value as an error shows it: one line, at most 100 characters.
std::string Shown(const json& v) {
  const std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 100 ? s.substr(0, 100) + "..." : s;
}

class DoubleSparsityTopKMasker : public Masker {
 public:
  DoubleSparsityTopKMasker(MaskerConfig c, json channels)
      : config_(std::move(c)), channels_(std::move(channels)) {}

  static Result<std::unique_ptr<DoubleSparsityTopKMasker>> Create(const MaskerConfig& c,
                                                                  const std::string&) {
    const std::string& path = c.Str("sorted_channel_file");
    const std::string where = "sorted_channel_file '" + path + "': ";
    // A regular file of bounded size: a folder, /dev/zero or a pipe is refused at once.
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) return Status::Error(where + "cannot open file");
    if (std::filesystem::is_directory(st))
      return Status::Error(where + "is a folder, not a JSON file");
    if (!std::filesystem::is_regular_file(st))
      return Status::Error(where + "not a regular file (a device, pipe or socket)");
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec || size > kMaxChannelFileBytes)
      return Status::Error(where + "larger than the " + std::to_string(kMaxChannelFileBytes >> 20) +
                           " MiB a channel file may be");
    std::ifstream f(path, std::ios::binary);
    if (!f) return Status::Error(where + "cannot open file");
    std::string text(static_cast<size_t>(size), '\0');
    f.read(text.data(), static_cast<std::streamsize>(size));
    text.resize(static_cast<size_t>(f.gcount()));
    // Nesting beyond 64 levels, numbers beyond double range and repeated keys,
    // with their place, before the parser sees them.
    if (Status s = CheckJsonText(text, ""); !s.ok()) return s.WithContext(where);
    json channels;
    try {
      channels = json::parse(text);
    } catch (const json::exception& e) {
      return Status::Error(where + "not valid JSON: " + e.what());
    }
    if (!channels.is_object()) return Status::Error(where + "expected a JSON object");
    return std::make_unique<DoubleSparsityTopKMasker>(c, std::move(channels));
  }

  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t n = shape.keys, D = in.head_dim(), H = in.heads(), g = in.group();
    const int64_t k = config_.Size("heavy_size", n);
    if (n - shape.queries <= k) return Mask::Full(shape);
    const int64_t c = D / config_.Int("group_factor");
    if (c == 0)
      return Status::Error("group_factor " + std::to_string(config_.Int("group_factor")) +
                           " leaves no channel of head_dim " + std::to_string(D));
    MT_ASSIGN_OR_RETURN(std::vector<int32_t> order, Channels(in.layer, H, D, c));
    const int bits = static_cast<int>(config_.Int("label_bits"));
    const float norm = static_cast<float>(std::sqrt(static_cast<double>(c)));

    const int64_t B = in.batch(), Q = shape.queries;
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * k));
    // One work item per (batch, kv head): each key row is read once and
    // reduced (and quantised) for the item's g heads, [g, keys, c], in a
    // buffer each thread keeps across calls.
    ParallelRows(B * in.kv_heads(), [&](int64_t bk) {
      thread_local std::vector<float> kc, qc, scores, prev_row, scratch;
      const int64_t b = bk / in.kv_heads(), kvh = bk % in.kv_heads();
      kc.resize(static_cast<size_t>(g * n * c));
      for (int64_t j = 0; j < n; ++j) {
        const float* key = in.key(b, kvh, j);
        for (int64_t hh = 0; hh < g; ++hh) {
          const int32_t* ch = order.data() + (kvh * g + hh) * c;
          float* dst = kc.data() + (hh * n + j) * c;
          for (int64_t t = 0; t < c; ++t) dst[t] = key[ch[t]];
          if (bits < 16) PseudoQuantize(dst, c, bits);
        }
      }
      qc.resize(static_cast<size_t>(c));
      scores.resize(static_cast<size_t>(n));
      for (int64_t hh = 0; hh < g; ++hh) {
        const int64_t h = kvh * g + hh;
        const int32_t* ch = order.data() + h * c;
        for (int64_t i = 0; i < Q; ++i) {
          const float* q = in.query(b, h, i);
          for (int64_t t = 0; t < c; ++t) qc[t] = q[ch[t]];
          if (bits < 16) PseudoQuantize(qc.data(), c, bits);
          const float* keys = kc.data() + hh * n * c;
          const float* m = in.mask_row(b, i);
          for (int64_t j = 0; j < n; ++j)
            scores[j] = Dot(qc.data(), keys + j * c, c) / norm + (m ? m[j] : 0.0f);
          const int64_t row = (b * H + h) * Q + i;
          ExcludePrevious(prev, row, kNegInf, scores.data(), prev_row);
          SelectTopK(scores.data(), n, k, idx.data() + row * k, scratch);
        }
      }
    });
    return prev.Merge(Mask::FromRowIndices(shape, idx, k, 1.0f));
  }

 private:
  // The first c channels of every head for `layer`, [heads, c], checked.
  Result<std::vector<int32_t>> Channels(int layer, int64_t heads, int64_t D, int64_t c) const {
    const std::string key =
        "model.layers." + std::to_string(layer) + ".self_attn." + config_.Str("channel_selection");
    const std::string where =
        "sorted_channel_file '" + config_.Str("sorted_channel_file") + "': key '" + key + "': ";
    auto it = channels_.find(key);
    if (it == channels_.end()) return Status::Error(where + "missing");
    if (!it->is_array() || static_cast<int64_t>(it->size()) != heads)
      return Status::Error(
          where + "expected a list of " + std::to_string(heads) +
          " per-head channel lists, found " +
          (it->is_array() ? std::to_string(it->size()) + " entries" : it->type_name()));
    std::vector<int32_t> out;
    for (int64_t h = 0; h < heads; ++h) {
      const json& list = (*it)[static_cast<size_t>(h)];
      if (!list.is_array() || static_cast<int64_t>(list.size()) < c)
        return Status::Error(where + "head " + std::to_string(h) +
                             ": expected a list of at least " + std::to_string(c) +
                             " channel indices");
      for (int64_t t = 0; t < c; ++t) {
        const json& v = list[static_cast<size_t>(t)];
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= D)
          return Status::Error(where + "head " + std::to_string(h) + ": channel " + Shown(v) +
                               " is not an index in [0, " + std::to_string(D) + ")");
        out.push_back(v.get<int32_t>());
      }
    }
    return out;
  }

  MaskerConfig config_;
  json channels_;
};

}  // namespace

MaskerSchema DoubleSparsityTopKSchema() {
  MaskerSchema s;
  s.type = "double_sparsity_top_k";
  s.reference_name = "DoubleSparsityTopKMaskerConfig";
  s.help = "Double Sparsity: top-k on scores from each head's outlier channels";
  FieldSpec file;
  file.name = "sorted_channel_file";
  file.type = FieldType::kPath;
  file.help = "JSON channel file in the Double Sparsity authors' format";
  FieldSpec selection;
  selection.name = "channel_selection";
  selection.type = FieldType::kString;
  selection.default_value = std::string("qk_proj");
  selection.help = "which projection's channels: the key suffix in the channel file";
  s.fields = {SizeField("heavy_size", "keys to keep per row (float: fraction of the keys)"), file,
              IntField("group_factor", Range{0, 1e300, true, false},
                       "keep head_dim / group_factor channels", int64_t{16}),
              IntField("label_bits", Range{0, 16, true, false},
                       "bits of the quantised labels (16 = unquantised)", int64_t{4}),
              selection};
  s.create = Factory<DoubleSparsityTopKMasker>(&DoubleSparsityTopKMasker::Create);
  return s;
}

}  // namespace masktune
