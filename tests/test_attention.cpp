#include <doctest/doctest.h>

#include <cmath>

#include "engine/attention.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

using testing::Case;
using testing::MaxAbsDiff;
using testing::NaiveAttention;

TEST_CASE("dense attention matches the naive formula") {
  struct Dims {
    int64_t b, h, hkv, q, n, d;
    bool causal;
  };
  // Grouped-query heads, several queries, key counts that are not a multiple
  // of the tile, and long rows split into chunks across threads.
  for (Dims s : {Dims{1, 4, 4, 1, 100, 16, false}, Dims{2, 8, 2, 1, 777, 64, false},
                 Dims{1, 4, 2, 5, 300, 32, true}, Dims{1, 2, 1, 1, 5000, 8, false},
                 Dims{1, 6, 3, 40, 200, 8, true}}) {
    CAPTURE(s.n);
    Case c(s.b, s.h, s.hkv, s.q, s.n, s.d, 11, s.causal);
    const Tensor out = DenseAttention(c.in);
    CHECK(out.shape() == Shape{s.b, s.h, s.q, s.d});
    CHECK(MaxAbsDiff(out, NaiveAttention(c.in, nullptr)) < 2e-5f);
  }
}

TEST_CASE("masked attention weights kept keys by 1/p") {
  Case c(1, 4, 2, 3, 90, 16, 5, true);
  const MaskShape shape = c.in.mask_shape();
  std::vector<float> p(static_cast<size_t>(shape.rows() * shape.keys), 0.0f);
  for (size_t i = 0; i < p.size(); ++i)
    if (i % 3 != 1) p[i] = (i % 5 == 0) ? 0.25f : 1.0f;
  const Mask dense = Mask::Dense(shape, p);
  const Tensor naive = NaiveAttention(c.in, &dense);
  CHECK(MaxAbsDiff(MaskedAttention(c.in, dense, AttentionPath::kGather), naive) < 2e-5f);
  CHECK(MaxAbsDiff(MaskedAttention(c.in, dense, AttentionPath::kStream), naive) < 2e-5f);
  // The same mask in sparse form gives the same output.
  std::vector<int64_t> ptr{0};
  std::vector<int32_t> cols;
  std::vector<float> vals;
  for (int64_t r = 0; r < shape.rows(); ++r) {
    for (int64_t j = 0; j < shape.keys; ++j)
      if (float x = p[r * shape.keys + j]; x > 0) {
        cols.push_back(static_cast<int32_t>(j));
        vals.push_back(x);
      }
    ptr.push_back(static_cast<int64_t>(cols.size()));
  }
  const Mask sparse = Mask::Sparse(shape, ptr, cols, vals);
  for (AttentionPath path : {AttentionPath::kGather, AttentionPath::kStream})
    CHECK(MaxAbsDiff(MaskedAttention(c.in, sparse, path), MaskedAttention(c.in, dense, path)) <
          1e-6f);
}

TEST_CASE("both masked paths agree on long rows split across threads") {
  Case c(1, 8, 2, 1, 5000, 64, 21);
  const MaskShape shape = c.in.mask_shape();
  // Every third key kept with probability 0.5, plus a dense band at the end.
  std::vector<int64_t> ptr{0};
  std::vector<int32_t> cols;
  std::vector<float> vals;
  for (int64_t r = 0; r < shape.rows(); ++r) {
    for (int64_t j = r; j < shape.keys; j += 3) {
      cols.push_back(static_cast<int32_t>(j));
      vals.push_back(j >= 4900 ? 1.0f : 0.5f);
    }
    ptr.push_back(static_cast<int64_t>(cols.size()));
  }
  const Mask m = Mask::Sparse(shape, ptr, cols, vals);
  const Tensor naive = NaiveAttention(c.in, &m);
  CHECK(MaxAbsDiff(MaskedAttention(c.in, m, AttentionPath::kStream), naive) < 2e-5f);
  CHECK(MaxAbsDiff(MaskedAttention(c.in, m, AttentionPath::kGather), naive) < 2e-5f);
}

TEST_CASE("sparse masks stream only the union of a group's kept keys") {
  // Grouped heads (3 per kv head) whose rows keep disjoint, overlapping and no
  // keys; one query and several (causal); long rows split into key chunks.
  struct Dims {
    int64_t h, hkv, q, n;
    bool causal;
  };
  for (Dims s : {Dims{9, 3, 1, 700, false}, Dims{6, 2, 4, 300, true}, Dims{3, 1, 1, 5000, false}}) {
    CAPTURE(s.n);
    Case c(1, s.h, s.hkv, s.q, s.n, 16, 31, s.causal);
    const MaskShape shape = c.in.mask_shape();
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(shape.rows()));
    std::vector<std::vector<float>> probs(rows.size());
    for (int64_t r = 0; r < shape.rows(); ++r) {
      if (r % 7 == 5) continue;  // a row that keeps nothing
      for (int64_t j = r % 3; j < shape.keys; j += 5 + r % 4) {
        rows[r].push_back(static_cast<int32_t>(j));
        probs[r].push_back(j % 2 ? 1.0f : 0.25f + 0.5f * static_cast<float>(r % 2));
      }
    }
    const Mask m = Mask::FromRows(shape, rows, probs);
    // Keys and values no row keeps are NaN: a path that reads them (streaming
    // every key with weight 0) turns the output into NaN.
    std::vector<char> kept(static_cast<size_t>(shape.keys * s.hkv), 0);
    const int64_t g = s.h / s.hkv;
    for (int64_t r = 0; r < shape.rows(); ++r)
      for (int32_t j : rows[r]) kept[((r / s.q) / g) * shape.keys + j] = 1;
    const Tensor naive = NaiveAttention(c.in, &m);
    for (int64_t h = 0; h < s.hkv; ++h)
      for (int64_t j = 0; j < shape.keys; ++j)
        if (!kept[h * shape.keys + j])
          for (int64_t d = 0; d < 16; ++d) {
            c.k.data()[(h * shape.keys + j) * 16 + d] = std::nanf("");
            c.v.data()[(h * shape.keys + j) * 16 + d] = std::nanf("");
          }
    for (AttentionPath path : {AttentionPath::kAuto, AttentionPath::kStream}) {
      const Tensor out = MaskedAttention(c.in, m, path);
      for (float x : out.vec()) REQUIRE(!std::isnan(x));
      CHECK(MaxAbsDiff(out, naive) < 2e-5f);
    }
  }
}

TEST_CASE("empty and full masks mean dense attention") {
  Case c(1, 2, 1, 1, 64, 8, 3);
  const Tensor dense = DenseAttention(c.in);
  CHECK(MaxAbsDiff(MaskedAttention(c.in, Mask::Empty(c.in.mask_shape())), dense) == 0.0f);
  CHECK(MaxAbsDiff(MaskedAttention(c.in, Mask::Full(c.in.mask_shape())), dense) == 0.0f);
  CHECK(RelativeL2Error(dense, dense) == 0.0);
}

TEST_CASE("a row with no usable key outputs zeros; far-below scores stay finite") {
  Case c(1, 1, 1, 1, 8, 4, 9);
  // Key 0 alone, with a score 200 below the row maximum: exp underflows in
  // the reference's formula, but the kept-key maximum keeps the output exact.
  for (int d = 0; d < 4; ++d) {
    c.q.data()[d] = 10.0f;
    c.k.data()[d] = -10.0f;  // score -400 * scaling vs +... for other keys
  }
  for (int64_t j = 1; j < 8; ++j)
    for (int d = 0; d < 4; ++d) c.k.data()[j * 4 + d] = 10.0f;
  const MaskShape shape = c.in.mask_shape();
  const Mask only0 = Mask::FromRowIndices(shape, {0}, 1, 1.0f);
  const Tensor out = MaskedAttention(c.in, only0);
  for (int d = 0; d < 4; ++d) CHECK(out.data()[d] == doctest::Approx(c.v.data()[d]));
  for (AttentionPath path : {AttentionPath::kGather, AttentionPath::kStream}) {
    const Tensor exact = MaskedAttention(c.in, only0, path);
    for (int d = 0; d < 4; ++d) CHECK(exact.data()[d] == doctest::Approx(c.v.data()[d]));
    const Mask none = Mask::Dense(shape, std::vector<float>(8, 0.0f));
    const Tensor zero = MaskedAttention(c.in, none, path);
    for (int d = 0; d < 4; ++d) CHECK(zero.data()[d] == 0.0f);
  }
}

TEST_CASE("keys in a larger buffer (a KV cache): only used_keys rows are read") {
  Case c(1, 4, 2, 3, 300, 16, 21, true);
  // The same keys and values at the start of a buffer of 512 rows per kv head, the rest NaN.
  Tensor kbuf({1, 2, 512, 16}, std::nanf("")), vbuf(kbuf.shape(), std::nanf(""));
  for (int64_t h = 0; h < 2; ++h) {
    std::copy_n(c.k.data() + h * 300 * 16, 300 * 16, kbuf.data() + h * 512 * 16);
    std::copy_n(c.v.data() + h * 300 * 16, 300 * 16, vbuf.data() + h * 512 * 16);
  }
  AttentionInputs in = c.in;
  in.keys = &kbuf;
  in.values = &vbuf;
  in.used_keys = 300;
  REQUIRE(CheckAttentionInputs(in).ok());
  CHECK(in.num_keys() == 300);
  CHECK(in.key(0, 1, 7)[3] == c.in.key(0, 1, 7)[3]);
  CHECK(MaxAbsDiff(DenseAttention(in), DenseAttention(c.in)) == 0.0f);
  std::vector<std::vector<int32_t>> rows(12, std::vector<int32_t>{0, 5, 150});
  const Mask m = Mask::FromRows(in.mask_shape(), rows, 0.5f);
  for (auto path : {AttentionPath::kStream, AttentionPath::kGather})
    CHECK(MaxAbsDiff(MaskedAttention(in, m, path), MaskedAttention(c.in, m, path)) == 0.0f);
  in.used_keys = 513;
  CHECK(CheckAttentionInputs(in).message().find("used_keys 513 exceeds the key buffer") == 0);
}

TEST_CASE("relative L2 error") {
  Tensor a({4}, std::vector<float>{3, 0, 0, 4});
  Tensor b({4}, std::vector<float>{3, 0, 0, 0});
  CHECK(RelativeL2Error(b, a) == doctest::Approx(0.8));
}

TEST_CASE("input shape checks name the tensors") {
  Case c(1, 4, 2, 2, 16, 8, 1, true);
  AttentionInputs in = c.in;
  CHECK(CheckAttentionInputs(in).ok());
  Tensor k3({1, 3, 16, 8});
  in.keys = &k3;
  in.values = &k3;
  CHECK(CheckAttentionInputs(in).message() ==
        "heads of q must be a multiple of kv_heads of k: q (1, 4, 2, 8), k (1, 3, 16, 8), v (1, 3, "
        "16, 8)");
  Tensor kd({1, 2, 16, 4});
  in.keys = &kd;
  in.values = &kd;
  CHECK(CheckAttentionInputs(in).message().rfind("q and k disagree on head_dim", 0) == 0);
  in = c.in;
  Tensor v2({1, 2, 15, 8});
  in.values = &v2;
  CHECK(CheckAttentionInputs(in).message().rfind("k and v must have the same shape", 0) == 0);
  in = c.in;
  Tensor m({1, 1, 2, 15});
  in.attention_mask = &m;
  CHECK(CheckAttentionInputs(in).message() ==
        "attention_mask: expected shape (1, 1, 2, 16), found (1, 1, 2, 15)");
  Tensor q3({1, 4, 8});
  in = c.in;
  in.queries = &q3;
  CHECK(CheckAttentionInputs(in).message() ==
        "tensor 'q': expected rank 4, found rank 3 with shape (1, 4, 8)");
}

}  // namespace
}  // namespace masktune
