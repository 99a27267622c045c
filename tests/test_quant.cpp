// File: tests/test_quant.cpp
//
// The products on quantised weights (engine/model/quant.h) against the
// dequantise-then-dot result in double precision, for every block type, both
// kernels (the CPU's best and the scalar one), odd row counts, column counts
// of one block, several blocks and (float types) lengths that leave a tail
// after the vector width; and on the real model's matrices.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/quant.h"
#include "engine/safetensors.h"

namespace masktune::model {
namespace {

// A random half-precision scale of magnitude about 2^-8 .. 2^0, either sign.
uint16_t RandomHalfScale(std::mt19937& rng) {
  const uint16_t exponent = static_cast<uint16_t>(7 + rng() % 8);  // 2^(e - 15)
  return static_cast<uint16_t>(((rng() & 1u) << 15) | (exponent << 10) | (rng() & 0x3FF));
}

// `rows` random rows of `type` with `cols` elements each.
std::vector<uint8_t> RandomRows(GgufTensorType type, int64_t rows, int64_t cols,
                                std::mt19937& rng) {
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<uint8_t> data(static_cast<size_t>(rows) * row_bytes);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = data.data() + r * row_bytes;
    switch (type) {
      case GgufTensorType::kF32:
        for (int64_t i = 0; i < cols; ++i) {
          const float v = uniform(rng);
          std::memcpy(row + 4 * i, &v, 4);
        }
        break;
      case GgufTensorType::kF16:
        for (int64_t i = 0; i < cols; ++i) {
          const uint16_t h = RandomHalfScale(rng);
          std::memcpy(row + 2 * i, &h, 2);
        }
        break;
      case GgufTensorType::kBF16:  // the top half of a random float
        for (int64_t i = 0; i < cols; ++i) {
          const float v = uniform(rng);
          uint32_t bits;
          std::memcpy(&bits, &v, 4);
          const uint16_t h = static_cast<uint16_t>(bits >> 16);
          std::memcpy(row + 2 * i, &h, 2);
        }
        break;
      default: {  // block types: a half scale (and a half minimum for Q4_1), then random quants
        const size_t block = BlockBytes(type), header = type == GgufTensorType::kQ4_1 ? 4 : 2;
        for (int64_t b = 0; b < cols / 32; ++b) {
          uint8_t* p = row + b * block;
          for (size_t h = 0; h < header; h += 2) {
            const uint16_t s = RandomHalfScale(rng);
            std::memcpy(p + h, &s, 2);
          }
          for (size_t i = header; i < block; ++i) p[i] = static_cast<uint8_t>(rng());
        }
      }
    }
  }
  return data;
}

const char* Name(GgufTensorType t) {
  switch (t) {
    case GgufTensorType::kF32:
      return "F32";
    case GgufTensorType::kF16:
      return "F16";
    case GgufTensorType::kBF16:
      return "BF16";
    case GgufTensorType::kQ8_0:
      return "Q8_0";
    case GgufTensorType::kQ4_0:
      return "Q4_0";
    case GgufTensorType::kQ4_1:
      return "Q4_1";
  }
  return "?";
}

TEST_CASE("quant: block sizes are ggml's") {
  CHECK(RowBytes(GgufTensorType::kQ4_1, 576) == 18 * 20);
  CHECK(RowBytes(GgufTensorType::kQ4_0, 64) == 2 * 18);
  CHECK(RowBytes(GgufTensorType::kQ8_0, 32) == 34);
  CHECK(RowBytes(GgufTensorType::kF16, 7) == 14);
  CHECK(RowBytes(GgufTensorType::kBF16, 7) == 14);
  CHECK(RowBytes(GgufTensorType::kF32, 7) == 28);
}

TEST_CASE("quant: a hand-computed Q4_1 and Q4_0 block") {
  // d = 0.5 (0x3800), m = -1 (0xBC00); byte j = 0x21: element j is 1, element j+16 is 2.
  uint8_t q41[20] = {0x00, 0x38, 0x00, 0xBC};
  uint8_t q40[18] = {0x00, 0x38};
  for (int j = 0; j < 16; ++j) q41[4 + j] = q40[2 + j] = 0x21;
  q41[4] = q40[2] = 0xF0;  // element 0: 0, element 16: 15
  std::vector<float> x(32, 1.0f), y(1);
  QuantMatrix w{GgufTensorType::kQ4_1, 1, 32, 20, q41, nullptr};
  // sum (0.5 q - 1): q = 0, 1 x15, 15, 2 x15 -> 0.5 * (15 + 15 + 30) - 32 = -2
  for (Kernel k : {Kernel::kAvx512, Kernel::kAvx2, Kernel::kScalar}) {
    MatVecRows(w, x.data(), y.data(), 0, 1, k);
    CHECK(y[0] == -2.0f);
  }
  w = QuantMatrix{GgufTensorType::kQ4_0, 1, 32, 18, q40, nullptr};
  // sum 0.5 (q - 8) = 0.5 * (60 - 256) = -98
  for (Kernel k : {Kernel::kAvx512, Kernel::kAvx2, Kernel::kScalar}) {
    MatVecRows(w, x.data(), y.data(), 0, 1, k);
    CHECK(y[0] == -98.0f);
  }
  float row[32];
  DequantizeRow(GgufTensorType::kQ4_1, q41, 32, row);
  CHECK(row[0] == -1.0f);
  CHECK(row[16] == 6.5f);
  CHECK(row[1] == -0.5f);
  CHECK(row[17] == 0.0f);
}

TEST_CASE("quant: every type and kernel equals dequantise-then-dot") {
  std::mt19937 rng(7);
  MESSAGE("best kernel on this CPU: " << std::string(KernelName()));
  for (GgufTensorType type :
       {GgufTensorType::kF32, GgufTensorType::kF16, GgufTensorType::kBF16, GgufTensorType::kQ8_0,
        GgufTensorType::kQ4_0, GgufTensorType::kQ4_1}) {
    const bool blocked = BlockElements(type) == 32;
    const std::vector<int64_t> widths = blocked ? std::vector<int64_t>{32, 96, 160, 576}
                                                : std::vector<int64_t>{1, 7, 8, 13, 16, 37, 576};
    for (int64_t cols : widths) {
      const int64_t rows = 5;
      const std::vector<uint8_t> data = RandomRows(type, rows, cols, rng);
      QuantMatrix w{type, rows, cols, RowBytes(type, cols), data.data(), nullptr};
      std::vector<float> x(static_cast<size_t>(cols)), dense(static_cast<size_t>(rows * cols));
      std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
      for (float& v : x) v = uniform(rng);
      DequantizeRows(w, 0, rows, dense.data());
      for (Kernel k : {Kernel::kAvx512, Kernel::kAvx2, Kernel::kScalar}) {
        // Rows 1..3 only: rows 0 and 4 of y stay untouched.
        std::vector<float> y(static_cast<size_t>(rows), 12345.0f);
        MatVecRows(w, x.data(), y.data(), 1, 4, k);
        CHECK(y[0] == 12345.0f);
        CHECK(y[4] == 12345.0f);
        for (int64_t r = 1; r < 4; ++r) {
          double want = 0, scale = 0;
          for (int64_t i = 0; i < cols; ++i) {
            want += static_cast<double>(dense[r * cols + i]) * x[i];
            scale += std::fabs(static_cast<double>(dense[r * cols + i]) * x[i]);
          }
          INFO(Name(type) << " cols " << cols << " row " << r << " " << std::string(KernelName(k)));
          CHECK(std::fabs(y[r] - want) <= 1e-5 * scale + 1e-30);
        }
      }
    }
  }
}

// MatMul shares out any number of products (the old runtime's silently
// dropped a fourth), one token (on the blocks) or many (tiles through BLAS),
// and each y equals its own MatVecRows.
TEST_CASE("quant: MatMul runs every product, one token or many") {
  std::mt19937 rng(11);
  const int64_t cols = 96;
  std::vector<std::vector<uint8_t>> data;
  std::vector<QuantMatrix> ws;
  for (int i = 0; i < 11; ++i) {  // more than one OpenMP loop's 8
    const GgufTensorType type = i % 2 ? GgufTensorType::kQ4_1 : GgufTensorType::kQ8_0;
    const int64_t rows = 3 + 17 * i;
    data.push_back(RandomRows(type, rows, cols, rng));
    ws.push_back(QuantMatrix{type, rows, cols, RowBytes(type, cols), data.back().data(), nullptr});
  }
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (int64_t n : {1, 5}) {
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (float& v : x) v = uniform(rng);
    std::vector<std::vector<float>> ys;
    std::vector<Product> products;
    for (const QuantMatrix& w : ws) ys.emplace_back(static_cast<size_t>(n * w.rows), 12345.0f);
    for (size_t i = 0; i < ws.size(); ++i) products.push_back({&ws[i], ys[i].data()});
    MatMul(x.data(), n, products);
    for (size_t i = 0; i < ws.size(); ++i)
      for (int64_t t = 0; t < n; ++t) {
        std::vector<float> want(static_cast<size_t>(ws[i].rows));
        MatVecRows(ws[i], &x[t * cols], want.data(), 0, ws[i].rows);
        for (int64_t r = 0; r < ws[i].rows; ++r) {
          INFO("product " << i << " token " << t << " row " << r);
          CHECK(std::fabs(ys[i][t * ws[i].rows + r] - want[r]) <= 1e-4f * (1 + std::fabs(want[r])));
        }
      }
  }
}

TEST_CASE("quant: the model's matrices in their stored form") {
  const std::string path = MASKTUNE_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) {
    MESSAGE("skipped: " << path << " is absent (scripts/fetch_model.sh fetches it)");
    return;
  }
  auto f = GgufFile::Open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  for (const char* name : {"blk.0.attn_q.weight", "blk.29.ffn_down.weight", "token_embd.weight"}) {
    INFO(name);
    auto m = f->ReadMatrix(name);
    REQUIRE_MESSAGE(m.ok(), m.status().message());
    const Tensor t = f->ReadTensor(name).value();
    CHECK(t.shape() == Shape{m->rows, m->cols});
    std::vector<float> x(static_cast<size_t>(m->cols));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1 * static_cast<double>(i));
    const int64_t rows = std::min<int64_t>(m->rows, 600);
    std::vector<float> y(static_cast<size_t>(m->rows));
    MatVecRows(*m, x.data(), y.data(), 0, rows);
    for (int64_t r = 0; r < rows; ++r) {
      double want = 0, scale = 0;
      for (int64_t i = 0; i < m->cols; ++i) {
        want += static_cast<double>(t.data()[r * m->cols + i]) * x[i];
        scale += std::fabs(static_cast<double>(t.data()[r * m->cols + i]) * x[i]);
      }
      REQUIRE(std::fabs(y[r] - want) <= 1e-5 * scale);
    }
  }
  CHECK(f->ReadMatrix("blk.0.attn_q.weight")->type == GgufTensorType::kQ4_1);
  CHECK(f->ReadMatrix("token_embd.weight")->type == GgufTensorType::kQ8_0);
  CHECK(f->ReadMatrix("output_norm.weight").status().message() ==
        path + ": tensor 'output_norm.weight': expected a matrix, found 1 dimensions");
  CHECK(f->ReadMatrix("nope").status().message() == path + ": missing tensor 'nope'");
}

}  // namespace
}  // namespace masktune::model
