// File: engine/model/quant.h
//
// Weight matrices kept in their GGUF storage form (F32, F16, BF16, Q8_0,
// Q4_0, Q4_1: ggml's block layouts, see gguf.cpp) and the products the model
// runtime computes on them without ever dequantising a whole matrix:
//   - MatVecRows: y[r] = W[r, :] . x for a range of rows, on the blocks, with
//     float activations (so results equal dequantise-then-dot up to the order
//     of float additions). Decoding a token is a chain of these; it reads the
//     weights' 4.5 to 16 bits per element instead of float32's 32.
//   - DequantizeRows: a tile of rows to float32, for prefill, which multiplies
//     the tile with many tokens at once (BLAS) while it sits in cache.
// Kernels: AVX-512 (F, BW, VL) for the block types and AVX2+FMA+F16C when
// the CPU has them (checked once at run time), else portable scalar code. A
// narrower kernel can be asked for (tests, bench_quant); one the CPU lacks
// falls back to the next narrower.
// Thread-safety: the functions are pure; a QuantMatrix is an immutable view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "engine/model/gguf.h"

namespace masktune::model {

// A row-major matrix [rows, cols] whose rows are `row_bytes` of `type`'s
// blocks (cols a multiple of the block size), viewing memory that `owner`
// keeps alive (a GGUF file's mapping).
struct QuantMatrix {
  GgufTensorType type = GgufTensorType::kF32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  const uint8_t* data = nullptr;
  std::shared_ptr<const void> owner;
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  size_t bytes() const { return static_cast<size_t>(rows) * row_bytes; }
};

enum class Kernel { kBest, kAvx512, kAvx2, kScalar };

// Elements per block and bytes per block of `type` (1 and the element size for
// the float types).
int64_t BlockElements(GgufTensorType type);
size_t BlockBytes(GgufTensorType type);
// Bytes of one row of `cols` elements (cols a multiple of BlockElements).
size_t RowBytes(GgufTensorType type, int64_t cols);

// Dequantises `count` elements (a multiple of the block size) starting at a
// block boundary `src` into dst[0 .. count).
void DequantizeRow(GgufTensorType type, const uint8_t* src, int64_t count, float* dst);
// Rows [r0, r1) of `w` into dst [(r1 - r0), cols].
void DequantizeRows(const QuantMatrix& w, int64_t r0, int64_t r1, float* dst);

// y[r] = dot(W[r, :], x) for r in [r0, r1) (y indexed by r, not r - r0).
// x has w.cols floats.
void MatVecRows(const QuantMatrix& w, const float* x, float* y, int64_t r0, int64_t r1,
                Kernel kernel = Kernel::kBest);

// One product y[n, w.rows] = x[n, w.cols] W^T.
struct Product {
  const QuantMatrix* w;
  float* y;
};

// Products that share the input x [n, cols] (the q, k, v or the gate, up
// projections), split into slices of each W's rows (about 64 rows, at least
// one per thread) that one OpenMP loop shares out, so they cost one fork and
// join. One token: a slice's rows are dotted with x on the blocks
// (MatVecRows). More: the slice is dequantised into a per-thread buffer
// (kept between calls, so no page faults per call) and multiplied with all n
// tokens by a single-threaded BLAS call. Any number of products (in loops of
// at most 8). The CPU backend's MatMul (engine/backend.h).
void MatMul(const float* x, int64_t n, std::span<const Product> products);

// "avx512", "avx2" or "scalar": what `kernel` runs on this CPU.
const char* KernelName(Kernel kernel = Kernel::kBest);

}  // namespace masktune::model
