// File: engine/model/quant.cpp
//
// Block layouts (ggml's, 32 elements a block; see gguf.cpp):
//   Q8_0: f16 d, 32 int8 q;           x[i] = d * q[i]
//   Q4_0: f16 d, 16 bytes of nibbles; x[i] = d * (q[i] - 8)
//   Q4_1: f16 d, f16 m, 16 bytes;     x[i] = d * q[i] + m
// byte j holding element j in its low nibble and element j + 16 in its high.
//
// A dot product with a block factors the scale out:
//   Q4_1: sum_i (d q_i + m) x_i = d sum_i q_i x_i + m sum_i x_i
//   Q4_0: sum_i d (q_i - 8) x_i = d (sum_i q_i x_i - 8 sum_i x_i)
// so the per-block sums of x are computed once per product and the inner loop
// converts the small integers straight to float and multiplies them with x.
#include "engine/model/quant.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <vector>

#include "engine/safetensors.h"  // HalfToFloat, BFloat16ToFloat

// OpenBLAS's own thread pool would spin against OpenMP's on the same cores;
// BLAS runs single-threaded inside our OpenMP regions instead.
extern "C" void openblas_set_num_threads(int);

namespace masktune::model {
namespace {

constexpr int64_t kQBlock = 32;

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

float BHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return BFloat16ToFloat(h);
}

// Per-block sums of x (cols / 32 of them), for Q4_0 and Q4_1.
void BlockSums(const float* x, int64_t cols, float* sums) {
  for (int64_t b = 0; b < cols / kQBlock; ++b) {
    float s = 0;
    for (int64_t i = 0; i < kQBlock; ++i) s += x[b * kQBlock + i];
    sums[b] = s;
  }
}

// ---- scalar kernels: one row . x -------------------------------------------

float DotScalar(GgufTensorType type, const uint8_t* row, const float* x, const float* xsum,
                int64_t cols) {
  const int64_t blocks = cols / kQBlock;
  float acc = 0;
  switch (type) {
    case GgufTensorType::kF32: {
      const auto* w = reinterpret_cast<const float*>(row);  // GGUF data is 32-byte aligned
      for (int64_t i = 0; i < cols; ++i) acc += w[i] * x[i];
      return acc;
    }
    case GgufTensorType::kF16:
      for (int64_t i = 0; i < cols; ++i) acc += Half(row + 2 * i) * x[i];
      return acc;
    case GgufTensorType::kBF16:
      for (int64_t i = 0; i < cols; ++i) acc += BHalf(row + 2 * i) * x[i];
      return acc;
    case GgufTensorType::kQ8_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = row + b * 34;
        const float* xb = x + b * kQBlock;
        float s = 0;
        for (int i = 0; i < kQBlock; ++i)
          s += static_cast<float>(static_cast<int8_t>(p[2 + i])) * xb[i];
        acc += Half(p) * s;
      }
      return acc;
    case GgufTensorType::kQ4_0:
    case GgufTensorType::kQ4_1: {
      const bool q41 = type == GgufTensorType::kQ4_1;
      const int64_t stride = q41 ? 20 : 18;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = row + b * stride;
        const uint8_t* q = p + (q41 ? 4 : 2);
        const float* xb = x + b * kQBlock;
        float s = 0;
        for (int i = 0; i < kQBlock / 2; ++i)
          s += static_cast<float>(q[i] & 0x0F) * xb[i] +
               static_cast<float>(q[i] >> 4) * xb[i + kQBlock / 2];
        acc += q41 ? Half(p) * s + Half(p + 2) * xsum[b] : Half(p) * (s - 8.0f * xsum[b]);
      }
      return acc;
    }
  }
  return acc;
}

// ---- AVX2 + FMA + F16C kernels ---------------------------------------------

#define MT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

// A stored half to float with F16C (HalfToFloat is an out-of-line call).
MT_AVX2 inline float HalfF16c(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

MT_AVX2 inline float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// 8 unsigned bytes of `b` (low half) to floats.
MT_AVX2 inline __m256 BytesToFloats(__m128i b) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}

// sum_i q_i x_i over one 4-bit block: q in 16 bytes (low nibbles elements
// 0..15, high nibbles 16..31), x 32 floats.
MT_AVX2 inline __m256 NibbleDot(const uint8_t* q, const float* x) {
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  __m256 s = _mm256_mul_ps(BytesToFloats(lo), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(BytesToFloats(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(BytesToFloats(hi), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(BytesToFloats(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

MT_AVX2 float DotAvx2(GgufTensorType type, const uint8_t* row, const float* x, const float* xsum,
                      int64_t cols) {
  const int64_t blocks = cols / kQBlock;
  __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
  float tail = 0;
  switch (type) {
    case GgufTensorType::kF32: {
      const auto* w = reinterpret_cast<const float*>(row);
      int64_t i = 0;
      for (; i + 16 <= cols; i += 16) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), acc);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), acc2);
      }
      for (; i < cols; ++i) tail += w[i] * x[i];
      break;
    }
    case GgufTensorType::kF16: {
      int64_t i = 0;
      for (; i + 8 <= cols; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i));
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(x + i), acc);
      }
      for (; i < cols; ++i) tail += HalfF16c(row + 2 * i) * x[i];
      break;
    }
    case GgufTensorType::kBF16: {
      int64_t i = 0;
      for (; i + 8 <= cols; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i));
        const __m256 w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + i), acc);
      }
      for (; i < cols; ++i) tail += BHalf(row + 2 * i) * x[i];
      break;
    }
    case GgufTensorType::kQ8_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = row + b * 34;
        const float* xb = x + b * kQBlock;
        __m256 s = _mm256_setzero_ps();
        for (int k = 0; k < 4; ++k) {
          const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + 8 * k));
          s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                              _mm256_loadu_ps(xb + 8 * k), s);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HalfF16c(p)), s, acc);
      }
      break;
    case GgufTensorType::kQ4_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = row + b * 18;
        const float d = HalfF16c(p);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), NibbleDot(p + 2, x + b * kQBlock), acc);
        tail -= 8.0f * d * xsum[b];
      }
      break;
    case GgufTensorType::kQ4_1:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = row + b * 20;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HalfF16c(p)), NibbleDot(p + 4, x + b * kQBlock), acc);
        tail += HalfF16c(p + 2) * xsum[b];
      }
      break;
  }
  return HorizontalSum(_mm256_add_ps(acc, acc2)) + tail;
}

// The 4- and 8-bit block types with 16 lanes: a block is two vectors.
// sum_i q_i x_i over one 4-bit block with 16 lanes (see NibbleDot).
MT_AVX512 inline __m512 NibbleDot512(const uint8_t* q, const float* x) {
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  const __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), _mm512_loadu_ps(x));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), _mm512_loadu_ps(x + 16), s);
}

MT_AVX512 inline __m512 Int8Dot512(const uint8_t* q, const float* x) {
  const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
  const __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), _mm512_loadu_ps(x));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), _mm512_loadu_ps(x + 16), s);
}

// The block types with 16 lanes: a block is two vectors. Two blocks per
// step into two accumulators, so consecutive blocks do not wait on one
// accumulator's FMA latency.
MT_AVX512 float DotAvx512(GgufTensorType type, const uint8_t* row, const float* x,
                          const float* xsum, int64_t cols) {
  const int64_t blocks = cols / kQBlock;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  float tail0 = 0, tail1 = 0;
  int64_t b = 0;
  switch (type) {
    case GgufTensorType::kQ8_0:
      for (; b + 2 <= blocks; b += 2) {
        const uint8_t* p = row + b * 34;
        acc0 =
            _mm512_fmadd_ps(_mm512_set1_ps(HalfF16c(p)), Int8Dot512(p + 2, x + b * kQBlock), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(HalfF16c(p + 34)),
                               Int8Dot512(p + 36, x + (b + 1) * kQBlock), acc1);
      }
      for (; b < blocks; ++b) {
        const uint8_t* p = row + b * 34;
        acc0 =
            _mm512_fmadd_ps(_mm512_set1_ps(HalfF16c(p)), Int8Dot512(p + 2, x + b * kQBlock), acc0);
      }
      break;
    case GgufTensorType::kQ4_0:
      for (; b < blocks; ++b) {
        const uint8_t* p = row + b * 18;
        const float d = HalfF16c(p);
        __m512& acc = b % 2 ? acc1 : acc0;
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), NibbleDot512(p + 2, x + b * kQBlock), acc);
        (b % 2 ? tail1 : tail0) -= 8.0f * d * xsum[b];
      }
      break;
    case GgufTensorType::kQ4_1:
      for (; b + 2 <= blocks; b += 2) {
        const uint8_t* p = row + b * 20;
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(HalfF16c(p)), NibbleDot512(p + 4, x + b * kQBlock),
                               acc0);
        tail0 += HalfF16c(p + 2) * xsum[b];
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(HalfF16c(p + 20)),
                               NibbleDot512(p + 24, x + (b + 1) * kQBlock), acc1);
        tail1 += HalfF16c(p + 22) * xsum[b + 1];
      }
      for (; b < blocks; ++b) {
        const uint8_t* p = row + b * 20;
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(HalfF16c(p)), NibbleDot512(p + 4, x + b * kQBlock),
                               acc0);
        tail0 += HalfF16c(p + 2) * xsum[b];
      }
      break;
    default:  // the float types: AVX2 is as fast (memory-bound)
      return DotAvx2(type, row, x, xsum, cols);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + (tail0 + tail1);
}

bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
  return have;
}

bool HaveAvx512() {
  static const bool have = HaveAvx2() && __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return have;
}

// What `kernel` runs on this CPU (kBest: the widest there is).
Kernel Resolve(Kernel kernel) {
  if (kernel == Kernel::kBest) kernel = Kernel::kAvx512;
  if (kernel == Kernel::kAvx512 && !HaveAvx512()) kernel = Kernel::kAvx2;
  if (kernel == Kernel::kAvx2 && !HaveAvx2()) kernel = Kernel::kScalar;
  return kernel;
}

}  // namespace

int64_t BlockElements(GgufTensorType type) {
  switch (type) {
    case GgufTensorType::kQ8_0:
    case GgufTensorType::kQ4_0:
    case GgufTensorType::kQ4_1:
      return kQBlock;
    default:
      return 1;
  }
}

size_t BlockBytes(GgufTensorType type) {
  switch (type) {
    case GgufTensorType::kF32:
      return 4;
    case GgufTensorType::kF16:
    case GgufTensorType::kBF16:
      return 2;
    case GgufTensorType::kQ8_0:
      return 34;
    case GgufTensorType::kQ4_0:
      return 18;
    case GgufTensorType::kQ4_1:
      return 20;
  }
  return 0;
}

size_t RowBytes(GgufTensorType type, int64_t cols) {
  return static_cast<size_t>(cols / BlockElements(type)) * BlockBytes(type);
}

void DequantizeRow(GgufTensorType type, const uint8_t* src, int64_t count, float* dst) {
  const int64_t blocks = count / kQBlock;
  switch (type) {
    case GgufTensorType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
      return;
    case GgufTensorType::kF16:
      for (int64_t i = 0; i < count; ++i) dst[i] = Half(src + 2 * i);
      return;
    case GgufTensorType::kBF16:
      for (int64_t i = 0; i < count; ++i) dst[i] = BHalf(src + 2 * i);
      return;
    case GgufTensorType::kQ8_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = src + b * 34;
        const float d = Half(p);
        float* o = dst + b * kQBlock;
        for (int i = 0; i < kQBlock; ++i)
          o[i] = d * static_cast<float>(static_cast<int8_t>(p[2 + i]));
      }
      return;
    case GgufTensorType::kQ4_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = src + b * 18;
        const float d = Half(p);
        const uint8_t* q = p + 2;
        float* o = dst + b * kQBlock;
        for (int i = 0; i < kQBlock / 2; ++i) {
          o[i] = d * static_cast<float>((q[i] & 0x0F) - 8);
          o[i + kQBlock / 2] = d * static_cast<float>((q[i] >> 4) - 8);
        }
      }
      return;
    case GgufTensorType::kQ4_1:
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* p = src + b * 20;
        const float d = Half(p), m = Half(p + 2);
        const uint8_t* q = p + 4;
        float* o = dst + b * kQBlock;
        for (int i = 0; i < kQBlock / 2; ++i) {
          o[i] = d * static_cast<float>(q[i] & 0x0F) + m;
          o[i + kQBlock / 2] = d * static_cast<float>(q[i] >> 4) + m;
        }
      }
      return;
  }
}

void DequantizeRows(const QuantMatrix& w, int64_t r0, int64_t r1, float* dst) {
  for (int64_t r = r0; r < r1; ++r)
    DequantizeRow(w.type, w.row(r), w.cols, dst + (r - r0) * w.cols);
}

void MatVecRows(const QuantMatrix& w, const float* x, float* y, int64_t r0, int64_t r1,
                Kernel kernel) {
  // Per thread and kept: a decoded token calls this thousands of times.
  thread_local std::vector<float> xsum;
  if (w.type == GgufTensorType::kQ4_0 || w.type == GgufTensorType::kQ4_1) {
    xsum.resize(static_cast<size_t>(w.cols / kQBlock));
    BlockSums(x, w.cols, xsum.data());
  }
  switch (Resolve(kernel)) {
    case Kernel::kAvx512:
      for (int64_t r = r0; r < r1; ++r) y[r] = DotAvx512(w.type, w.row(r), x, xsum.data(), w.cols);
      return;
    case Kernel::kAvx2:
      for (int64_t r = r0; r < r1; ++r) y[r] = DotAvx2(w.type, w.row(r), x, xsum.data(), w.cols);
      return;
    default:
      for (int64_t r = r0; r < r1; ++r) y[r] = DotScalar(w.type, w.row(r), x, xsum.data(), w.cols);
  }
}

const char* KernelName(Kernel kernel) {
  switch (Resolve(kernel)) {
    case Kernel::kAvx512:
      return "avx512";
    case Kernel::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

void MatMul(const float* x, int64_t n, std::span<const Product> all) {
  constexpr int64_t kTileRows = 64;
  constexpr size_t kMaxProducts = 8;  // per OpenMP loop
  if (all.size() > kMaxProducts) {
    for (size_t i = 0; i < all.size(); i += kMaxProducts)
      MatMul(x, n, all.subspan(i, std::min(kMaxProducts, all.size() - i)));
    return;
  }
  static std::once_flag blas_threads;
  std::call_once(blas_threads, [] { openblas_set_num_threads(1); });
  const std::span<const Product> products = all;
  const int64_t threads = omp_get_max_threads();
  std::array<int64_t, kMaxProducts + 1> first{};  // products[i] owns slices first[i] ..
  size_t count = 0;
  for (const Product& p : products) {
    const int64_t per_thread =
        std::max<int64_t>(1, (p.w->rows + kTileRows * threads - 1) / (kTileRows * threads));
    first[count + 1] = first[count] + std::min<int64_t>(p.w->rows, threads * per_thread);
    ++count;
  }
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < first[count]; ++s) {
    size_t i = 0;
    while (s >= first[i + 1]) ++i;
    const QuantMatrix& w = *products[i].w;
    float* y = products[i].y;
    const int64_t out = w.rows, in = w.cols, slices = first[i + 1] - first[i], k = s - first[i];
    const int64_t lo = out * k / slices, hi = out * (k + 1) / slices, rows = hi - lo;
    if (n == 1) {
      MatVecRows(w, x, y, lo, hi);
      continue;
    }
    const float* tile = reinterpret_cast<const float*>(w.row(lo));
    if (w.type != GgufTensorType::kF32) {
      thread_local std::vector<float> buffer;
      buffer.resize(static_cast<size_t>(rows * in));
      DequantizeRows(w, lo, hi, buffer.data());
      tile = buffer.data();
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                static_cast<int>(rows), static_cast<int>(in), 1.0f, x, static_cast<int>(in), tile,
                static_cast<int>(in), 0.0f, y + lo, static_cast<int>(out));
  }
}

}  // namespace masktune::model
