// File: engine/cuda/attention.cu
//
// The CUDA engine's attention (see cuda_attention.h for the contract).
//
// Kernels, for decode shapes (a few query rows per kv head, long key rows):
//   DenseChunkKernel<E, DT, R>: grid (batch * kv_heads * row_tiles, chunks).
//     A block takes up to R query rows of one kv head (the `group` heads x
//     `queries` rows of that kv head are contiguous in q) and one chunk of its
//     keys. Its 128 threads form groups of kTpk lanes; a group reads one key
//     row (and its value row) with 16-byte loads, kUnroll rows per step, and
//     scores it against all R rows (a sum across the group's lanes by
//     shuffles), so a block reads each key and value row of its chunk once.
//     Each group keeps an online-softmax state per row (max m, sum l, the
//     unnormalised output o in registers); the block merges its groups'
//     states in shared memory and writes one partial (m, l, o) per row.
//   MaskedChunkKernel<E, DT>: grid (rows, chunks). A block takes one query row
//     (batch, head, query) and one chunk of that row's kept entries in the
//     CSR mask, gathers those key and value rows by index, weighs them
//     exp(s - m) / p, and writes a partial like the dense kernel.
//   CombineKernel: one block per row merges the row's partials
//     (log-sum-exp) and writes out = o / l, or zeros where l = 0.
// E is the element type (F32, F16, BF16); DT the head_dim the lanes are laid
// out for (64, 128, 256): a smaller head_dim leaves the lanes past it idle.
// Scores that are -inf (attention mask) or belong to no key (tails) add
// nothing; the max is over usable keys only, as on the CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_attention.h"

namespace masktune::cuda {
namespace {

Status CudaError(const char* call, cudaError_t err) {
  return Status::Error(std::string("CUDA: ") + call + ": " + cudaGetErrorString(err));
}

// Returns a Status naming the call when a CUDA runtime call fails.
#define MT_CUDA(call)                                                       \
  do {                                                                      \
    const cudaError_t mt_cuda_err_ = (call);                                \
    if (mt_cuda_err_ != cudaSuccess) return CudaError(#call, mt_cuda_err_); \
  } while (0)

// ---------------------------------------------------------------------------
// Device 0, read once.

struct DeviceInfo {
  bool present = false;
  std::string name;
  int sms = 0;
  int l2_bytes = 0;
  double peak_bandwidth = 0.0;
};

const DeviceInfo& Info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
      (void)cudaGetLastError();  // clear the error; no device
      return d;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      return d;
    }
    d.present = true;
    d.name = prop.name;
    d.sms = prop.multiProcessorCount;
    d.l2_bytes = prop.l2CacheSize;
    auto has = [&](const char* s) { return d.name.find(s) != std::string::npos; };
    if (has("H200")) {
      d.peak_bandwidth = 4.8e12;
    } else if (has("H100")) {
      d.peak_bandwidth = has("PCIe") ? 2.0e12 : has("NVL") ? 3.9e12 : 3.35e12;
    } else {
      int clock_khz = 0, bus_bits = 0;
      if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
          cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess)
        d.peak_bandwidth = clock_khz * 1e3 * (bus_bits / 8.0) * 2.0;
      (void)cudaGetLastError();
    }
    return d;
  }();
  return info;
}

// ---------------------------------------------------------------------------
// Element types. Device buffers hold raw bits (uint32 for float32, uint16 for
// half and bfloat16); a 16-byte vector is 4 words, element k of it sits in
// word k * sizeof(Bits) / 4 (little endian: element 0 in the low half).

struct F32 {
  using Bits = uint32_t;
  static constexpr int kVec = 4;  // elements per 16-byte vector
  __device__ static float Decode(const uint32_t (&w)[4], int k) { return __uint_as_float(w[k]); }
  __device__ static void Insert(uint32_t (&w)[4], int k, Bits b) { w[k] = b; }
  __device__ static Bits Encode(float x) { return __float_as_uint(x); }
};

struct F16 {
  using Bits = uint16_t;
  static constexpr int kVec = 8;
  __device__ static float Decode(const uint32_t (&w)[4], int k) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(w[k >> 1] >> ((k & 1) * 16))));
  }
  __device__ static void Insert(uint32_t (&w)[4], int k, Bits b) {
    w[k >> 1] |= static_cast<uint32_t>(b) << ((k & 1) * 16);
  }
  __device__ static Bits Encode(float x) { return __half_as_ushort(__float2half_rn(x)); }
};

struct BF16 {
  using Bits = uint16_t;
  static constexpr int kVec = 8;
  __device__ static float Decode(const uint32_t (&w)[4],
                                 int k) {  // exact: bf16 is float's top half
    return __uint_as_float((k & 1) ? (w[k >> 1] & 0xffff0000u) : (w[k >> 1] << 16));
  }
  __device__ static void Insert(uint32_t (&w)[4], int k, Bits b) {
    w[k >> 1] |= static_cast<uint32_t>(b) << ((k & 1) * 16);
  }
  __device__ static Bits Encode(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
};

constexpr int kThreads = 128;  // threads per block of the chunk kernels
constexpr float kInf = std::numeric_limits<float>::infinity();

// How a block's lanes cover a row of DT elements: groups of kTpk lanes, one
// key row per group, each lane kNv 16-byte vectors. Lane `lane`'s vector v
// holds elements (v * kTpk + lane) * kVec .. + kVec, so each load instruction
// of a group reads one contiguous span of the row.
template <typename E, int DT>
struct Layout {
  static constexpr int kDim = DT;
  static constexpr int kVec = E::kVec;
  static constexpr int kTpk = DT / kVec < 32 ? DT / kVec : 32;  // lanes per key row
  static constexpr int kNv = DT / (kTpk * kVec);                // vectors per lane
  static constexpr int kEpt = kNv * kVec;                       // elements per lane
  static constexpr int kGroups = kThreads / kTpk;               // key rows per block step
  static constexpr int kUnroll = kNv == 1 ? 4 : 2;              // key rows per group per step
  static constexpr int kStep = kGroups * kUnroll;               // keys per block step
  static_assert(kTpk * kEpt == DT && 32 % kTpk == 0 && kVec % 4 == 0, "bad layout");
  __device__ static int Elem(int lane, int v) { return (v * kTpk + lane) * kVec; }
};

// Loads this lane's part of a row of d elements into w (zeros past d, or all
// zeros when !valid). vec_ok: d is a multiple of kVec, so every row starts on
// 16 bytes and a vector lies wholly before or after d; else element by element.
template <typename E, int DT>
__device__ __forceinline__ void LoadRow(const typename E::Bits* row, bool valid, int lane, int d,
                                        bool vec_ok, uint32_t (&w)[Layout<E, DT>::kNv][4]) {
  using L = Layout<E, DT>;
#pragma unroll
  for (int v = 0; v < L::kNv; ++v) {
    w[v][0] = w[v][1] = w[v][2] = w[v][3] = 0u;
    const int base = L::Elem(lane, v);
    if (!valid) continue;
    if (vec_ok) {
      if (base < d) {
        const uint4 t = __ldg(reinterpret_cast<const uint4*>(row + base));
        w[v][0] = t.x;
        w[v][1] = t.y;
        w[v][2] = t.z;
        w[v][3] = t.w;
      }
    } else {
#pragma unroll
      for (int k = 0; k < L::kVec; ++k)
        if (base + k < d) E::Insert(w[v], k, __ldg(row + base + k));
    }
  }
}

template <typename E, int DT>
__device__ __forceinline__ void DecodeRow(const uint32_t (&w)[Layout<E, DT>::kNv][4],
                                          float (&x)[Layout<E, DT>::kEpt]) {
  using L = Layout<E, DT>;
#pragma unroll
  for (int v = 0; v < L::kNv; ++v)
#pragma unroll
    for (int k = 0; k < L::kVec; ++k) x[v * L::kVec + k] = E::Decode(w[v], k);
}

// Sum over the kTpk lanes of a group (aligned lanes of one warp). Every lane
// of the warp must call it (full-mask shuffles): callers keep it out of
// branches that differ within a warp.
template <int kTpk>
__device__ __forceinline__ float GroupSum(float x) {
#pragma unroll
  for (int off = kTpk / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Online softmax: adds key score s (-inf: the key adds nothing) with value
// row vf, weight exp(s - m) / p (kWeighted) or exp(s - m), to state (m, l, o).
template <bool kWeighted, int N>
__device__ __forceinline__ void Accumulate(float s, float p, const float (&vf)[N], float& m,
                                           float& l, float (&o)[N]) {
  if (s > m) {  // new maximum: rescale what was summed so far (exp(-inf) = 0 at the start)
    const float a = expf(m - s);
    l *= a;
#pragma unroll
    for (int e = 0; e < N; ++e) o[e] *= a;
    m = s;
  }
  if (s > -kInf) {  // then m >= s > -inf: the exponent is <= 0 and finite
    float w = expf(s - m);
    if constexpr (kWeighted) w = w / p;
    l += w;
#pragma unroll
    for (int e = 0; e < N; ++e) o[e] = fmaf(w, vf[e], o[e]);
  }
}

// Merges the groups' states of a block's rows 0 .. nrows-1 and writes one
// partial per row: part_ml[(row0 + r) * chunks + chunk] = (m, l) and the d
// floats of o at part_o[((row0 + r) * chunks + chunk) * d]. A row without a
// usable key gets (-inf, 0) and zeros. Called by every thread of the block.
template <typename L, int R>
__device__ __forceinline__ void StorePartials(const float (&m)[R], const float (&l)[R],
                                              const float (&o)[R][L::kEpt], int nrows, int lane,
                                              int grp, int d, int64_t row0, int chunk, int chunks,
                                              float2* part_ml, float* part_o) {
  __shared__ float sm_m[L::kGroups][R], sm_l[L::kGroups][R], sm_f[L::kGroups][R];
  __shared__ __align__(16) float sm_o[L::kGroups][R][L::kDim];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= nrows) continue;  // block-uniform
    if (lane == 0) {
      sm_m[grp][r] = m[r];
      sm_l[grp][r] = l[r];
    }
#pragma unroll
    for (int v = 0; v < L::kNv; ++v)
#pragma unroll
      for (int c = 0; c < L::kVec; c += 4) {
        const int e = v * L::kVec + c;
        *reinterpret_cast<float4*>(&sm_o[grp][r][L::Elem(lane, v) + c]) =
            make_float4(o[r][e], o[r][e + 1], o[r][e + 2], o[r][e + 3]);
      }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < nrows) {
    const int r = threadIdx.x;
    float mx = -kInf;
    for (int g = 0; g < L::kGroups; ++g) mx = fmaxf(mx, sm_m[g][r]);
    float sum = 0.0f;
    for (int g = 0; g < L::kGroups; ++g) {
      const float f = mx == -kInf ? 0.0f : expf(sm_m[g][r] - mx);  // a group without keys: 0
      sm_f[g][r] = f;
      sum += sm_l[g][r] * f;
    }
    part_ml[(row0 + r) * chunks + chunk] = make_float2(mx, sum);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nrows * d; idx += kThreads) {
    const int r = idx / d, e = idx - r * d;
    float acc = 0.0f;
    for (int g = 0; g < L::kGroups; ++g) acc = fmaf(sm_o[g][r][e], sm_f[g][r], acc);
    part_o[((row0 + r) * chunks + chunk) * d + e] = acc;
  }
}

struct Params {
  const void* q;           // [batch, heads, queries, d] bits
  const void* k;           // [batch, kv_heads, cap, d] bits
  const void* v;           // same
  const float* amask;      // [batch, queries, keys] additive, or nullptr
  const int64_t* row_ptr;  // masked: CSR over rows (batch, head, query)
  const int32_t* cols;
  const float* probs;
  float2* part_ml;  // [rows, chunks] (m, l)
  float* part_o;    // [rows, chunks, d]
  int64_t cap;      // key rows per kv head in the k and v buffers
  int batch, heads, kv_heads, queries, group, keys, d;
  int rows_per_kv;  // group * queries: the query rows of one kv head
  int row_tiles;    // dense: blocks along one kv head's rows
  int chunk_len;    // dense: keys per chunk; masked: kept entries per chunk
  float scaling;
};

template <typename E, int DT, int R>
__global__ void __launch_bounds__(kThreads) DenseChunkKernel(const Params p) {
  using L = Layout<E, DT>;
  using Bits = typename E::Bits;
  const int lane = threadIdx.x % L::kTpk, grp = threadIdx.x / L::kTpk;
  const int tile = blockIdx.x % p.row_tiles;
  const int64_t bk = blockIdx.x / p.row_tiles;  // batch * kv_heads + kv head
  const int64_t b = bk / p.kv_heads;
  const int r0 = tile * R;
  const int nrows = min(R, p.rows_per_kv - r0);
  const int64_t row0 = bk * p.rows_per_kv + r0;  // global query row of local row 0
  const int chunk = blockIdx.y;
  const int j0 = chunk * p.chunk_len;  // < keys (the host sizes chunks so)
  const int j1 = min(p.keys, j0 + p.chunk_len);
  const int d = p.d;
  const bool vec_ok = d % L::kVec == 0;

  float q[R][L::kEpt];
  int64_t am_off[R];  // offset of each row's attention-mask row
#pragma unroll
  for (int r = 0; r < R; ++r) {
    uint32_t w[L::kNv][4];
    const int64_t qrow = row0 + (r < nrows ? r : 0);  // rows past nrows load nothing
    LoadRow<E, DT>(static_cast<const Bits*>(p.q) + qrow * d, r < nrows, lane, d, vec_ok, w);
    DecodeRow<E, DT>(w, q[r]);
    am_off[r] = (b * p.queries + (r0 + r) % p.queries) * p.keys;
  }
  float m[R], l[R], o[R][L::kEpt];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -kInf;
    l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < L::kEpt; ++e) o[r][e] = 0.0f;
  }

  const Bits* kb = static_cast<const Bits*>(p.k) + bk * p.cap * d;
  const Bits* vb = static_cast<const Bits*>(p.v) + bk * p.cap * d;
  // Same trip count for every thread of the block (the shuffles need whole warps).
  for (int jb = j0; jb < j1; jb += L::kStep) {
    uint32_t kw[L::kUnroll][L::kNv][4], vw[L::kUnroll][L::kNv][4];
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      const int j = jb + u * L::kGroups + grp;
      const int64_t off = static_cast<int64_t>(j < j1 ? j : j0) * d;  // tails load nothing
      LoadRow<E, DT>(kb + off, j < j1, lane, d, vec_ok, kw[u]);
      LoadRow<E, DT>(vb + off, j < j1, lane, d, vec_ok, vw[u]);
    }
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      const int j = jb + u * L::kGroups + grp;
      float kf[L::kEpt], vf[L::kEpt];
      DecodeRow<E, DT>(kw[u], kf);
      DecodeRow<E, DT>(vw[u], vf);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= nrows) continue;  // block-uniform
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < L::kEpt; ++e) dot = fmaf(q[r][e], kf[e], dot);
        dot = GroupSum<L::kTpk>(dot);
        float s = -kInf;
        if (j < j1) {
          s = dot * p.scaling;
          if (p.amask) s += __ldg(p.amask + am_off[r] + j);
        }
        Accumulate<false>(s, 1.0f, vf, m[r], l[r], o[r]);
      }
    }
  }
  StorePartials<L, R>(m, l, o, nrows, lane, grp, d, row0, chunk, gridDim.y, p.part_ml, p.part_o);
}

template <typename E, int DT>
__global__ void __launch_bounds__(kThreads) MaskedChunkKernel(const Params p) {
  using L = Layout<E, DT>;
  using Bits = typename E::Bits;
  const int lane = threadIdx.x % L::kTpk, grp = threadIdx.x / L::kTpk;
  const int64_t row = blockIdx.x;  // (batch * heads + head) * queries + query
  const int i = static_cast<int>(row % p.queries);
  const int64_t bh = row / p.queries;
  const int h = static_cast<int>(bh % p.heads);
  const int64_t b = bh / p.heads;
  const int64_t bk = b * p.kv_heads + h / p.group;
  const int chunk = blockIdx.y;
  const int64_t e_end = p.row_ptr[row + 1];
  const int64_t x0 = p.row_ptr[row] + static_cast<int64_t>(chunk) * p.chunk_len;
  const int64_t x1 = min(e_end, x0 + p.chunk_len);  // x0 >= x1: no entries in this chunk
  const int d = p.d;
  const bool vec_ok = d % L::kVec == 0;

  float q[1][L::kEpt];
  {
    uint32_t w[L::kNv][4];
    LoadRow<E, DT>(static_cast<const Bits*>(p.q) + row * d, true, lane, d, vec_ok, w);
    DecodeRow<E, DT>(w, q[0]);
  }
  const int64_t am_off = (b * p.queries + i) * p.keys;
  float m[1] = {-kInf}, l[1] = {0.0f}, o[1][L::kEpt];
#pragma unroll
  for (int e = 0; e < L::kEpt; ++e) o[0][e] = 0.0f;

  const Bits* kb = static_cast<const Bits*>(p.k) + bk * p.cap * d;
  const Bits* vb = static_cast<const Bits*>(p.v) + bk * p.cap * d;
  for (int64_t xb = x0; xb < x1; xb += L::kStep) {  // block-uniform trip count
    int col[L::kUnroll];
    float prob[L::kUnroll];
    bool valid[L::kUnroll];
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      const int64_t x = xb + u * L::kGroups + grp;
      valid[u] = x < x1;
      col[u] = valid[u] ? __ldg(p.cols + x) : 0;
      prob[u] = valid[u] ? __ldg(p.probs + x) : 1.0f;
    }
    uint32_t kw[L::kUnroll][L::kNv][4], vw[L::kUnroll][L::kNv][4];
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      LoadRow<E, DT>(kb + static_cast<int64_t>(col[u]) * d, valid[u], lane, d, vec_ok, kw[u]);
      LoadRow<E, DT>(vb + static_cast<int64_t>(col[u]) * d, valid[u], lane, d, vec_ok, vw[u]);
    }
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      float kf[L::kEpt], vf[L::kEpt];
      DecodeRow<E, DT>(kw[u], kf);
      DecodeRow<E, DT>(vw[u], vf);
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < L::kEpt; ++e) dot = fmaf(q[0][e], kf[e], dot);
      dot = GroupSum<L::kTpk>(dot);
      float s = -kInf;
      if (valid[u]) {
        s = dot * p.scaling;
        if (p.amask) s += __ldg(p.amask + am_off + col[u]);
      }
      Accumulate<true>(s, prob[u], vf, m[0], l[0], o[0]);
    }
  }
  StorePartials<L, 1>(m, l, o, 1, lane, grp, d, row, chunk, gridDim.y, p.part_ml, p.part_o);
}

// One block per row: merges the row's `chunks` partials and writes the output.
__global__ void CombineKernel(const float2* part_ml, const float* part_o, int chunks, int d,
                              float* out) {
  const int64_t row = blockIdx.x;
  const float2* ml = part_ml + row * chunks;
  float mx = -kInf;
  for (int c = 0; c < chunks; ++c) mx = fmaxf(mx, ml[c].x);
  float sum = 0.0f;
  if (mx > -kInf)
    for (int c = 0; c < chunks; ++c) sum += ml[c].y * expf(ml[c].x - mx);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // no usable key: zeros
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float acc = 0.0f;
    if (mx > -kInf)
      for (int c = 0; c < chunks; ++c)
        acc = fmaf(part_o[(row * chunks + c) * d + e], expf(ml[c].x - mx), acc);
    out[row * d + e] = acc * inv;
  }
}

template <typename E>
__global__ void FillKernel(typename E::Bits* dst, int64_t n, uint32_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^
                 static_cast<uint32_t>(i >> 32) * 0x9e3779b9u ^ seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    x *= 3266489917u;
    x ^= x >> 16;
    dst[i] = E::Encode(static_cast<float>(x >> 8) * (1.0f / 8388608.0f) - 1.0f);  // [-1, 1)
  }
}

// ---------------------------------------------------------------------------
// Host side.

using KernelFn = void (*)(Params);

template <typename E>
KernelFn DenseKernelFor(int dt, int r) {
  switch (dt) {
    case 64:
      return r == 4 ? DenseChunkKernel<E, 64, 4> : DenseChunkKernel<E, 64, 8>;
    case 128:
      return r == 4 ? DenseChunkKernel<E, 128, 4> : DenseChunkKernel<E, 128, 8>;
    default:
      return r == 4 ? DenseChunkKernel<E, 256, 4> : DenseChunkKernel<E, 256, 8>;
  }
}
KernelFn DenseKernelFor(DType t, int dt, int r) {
  switch (t) {
    case DType::kF32:
      return DenseKernelFor<F32>(dt, r);
    case DType::kF16:
      return DenseKernelFor<F16>(dt, r);
    default:
      return DenseKernelFor<BF16>(dt, r);
  }
}
template <typename E>
KernelFn MaskedKernelFor(int dt) {
  switch (dt) {
    case 64:
      return MaskedChunkKernel<E, 64>;
    case 128:
      return MaskedChunkKernel<E, 128>;
    default:
      return MaskedChunkKernel<E, 256>;
  }
}
KernelFn MaskedKernelFor(DType t, int dt) {
  switch (t) {
    case DType::kF32:
      return MaskedKernelFor<F32>(dt);
    case DType::kF16:
      return MaskedKernelFor<F16>(dt);
    default:
      return MaskedKernelFor<BF16>(dt);
  }
}

int LayoutDim(int64_t d) { return d <= 64 ? 64 : d <= 128 ? 128 : 256; }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Host copies of float32 in the device dtype (round to nearest even).
uint16_t HalfBits(float x) {
  const __half h = __float2half_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, sizeof b);
  return b;
}
uint16_t BFloat16Bits(float x) {
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, sizeof b);
  return b;
}

// cudaMalloc'ed memory, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Release(); }

  // Allocates `bytes` (nothing for 0), dropping what was held.
  Status Allocate(size_t bytes) {
    Release();
    if (bytes == 0) return Status::Ok();
    MT_CUDA(cudaMalloc(&ptr_, bytes));
    size_ = bytes;
    return Status::Ok();
  }
  // Allocates only when more than what is held is needed (contents are lost then).
  Status Reserve(size_t bytes) { return bytes <= size_ ? Status::Ok() : Allocate(bytes); }
  // Allocates and copies `bytes` from the host.
  Status Upload(const void* src, size_t bytes) {
    MT_RETURN_IF_ERROR(Allocate(bytes));
    if (bytes) MT_CUDA(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice));
    return Status::Ok();
  }
  void Release() {
    if (ptr_) (void)cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// Copies n floats to `dst` in `dtype`, converting through a bounded host buffer.
Status UploadConverted(const float* src, int64_t n, DType dtype, DeviceBuffer& dst) {
  const size_t bytes = static_cast<size_t>(n) * static_cast<size_t>(DTypeBytes(dtype));
  if (dtype == DType::kF32) return dst.Upload(src, bytes);
  MT_RETURN_IF_ERROR(dst.Allocate(bytes));
  constexpr int64_t kPiece = int64_t{1} << 24;
  std::vector<uint16_t> host(static_cast<size_t>(std::min(n, kPiece)));
  for (int64_t i0 = 0; i0 < n; i0 += kPiece) {
    const int64_t len = std::min(kPiece, n - i0);
    for (int64_t i = 0; i < len; ++i)
      host[i] = dtype == DType::kF16 ? HalfBits(src[i0 + i]) : BFloat16Bits(src[i0 + i]);
    MT_CUDA(cudaMemcpy(dst.as<uint16_t>() + i0, host.data(), static_cast<size_t>(len) * 2,
                       cudaMemcpyHostToDevice));
  }
  return Status::Ok();
}

Status FillRandom(DType dtype, DeviceBuffer& dst, int64_t n, uint32_t seed) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(CeilDiv(n, 256), 4096));
  const void* kernel = dtype == DType::kF32   ? reinterpret_cast<const void*>(FillKernel<F32>)
                       : dtype == DType::kF16 ? reinterpret_cast<const void*>(FillKernel<F16>)
                                              : reinterpret_cast<const void*>(FillKernel<BF16>);
  void* ptr = dst.as<void>();  // uint32_t* or uint16_t*: the same pointer value
  void* args[] = {&ptr, &n, &seed};
  MT_CUDA(
      cudaLaunchKernel(kernel, dim3(static_cast<unsigned>(blocks)), dim3(256), args, 0, nullptr));
  return Status::Ok();
}

// A launch configuration of a chunk kernel.
struct Plan {
  KernelFn kernel = nullptr;
  dim3 grid;
  int chunks = 1;
  int chunk_len = 1;
  int row_tiles = 1;
};

// Blocks of `kernel` that fit on the device at once.
Result<int64_t> Wave(KernelFn kernel) {
  int per_sm = 0;
  MT_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, reinterpret_cast<const void*>(kernel), kThreads, 0));
  return static_cast<int64_t>(std::max(per_sm, 1)) * std::max(Info().sms, 1);
}

// `work` items split into chunks of at least `min_chunk` so that `items`
// blocks per chunk index fill about one wave of the device.
void Split(int64_t work, int64_t items, int64_t wave, int64_t min_chunk, Plan& plan) {
  int64_t chunks = std::clamp<int64_t>(wave / std::max<int64_t>(items, 1), 1,
                                       std::max<int64_t>(1, CeilDiv(work, min_chunk)));
  chunks = std::min<int64_t>(chunks, 65535);
  const int64_t len = std::max<int64_t>(1, CeilDiv(work, chunks));
  plan.chunk_len = static_cast<int>(len);
  plan.chunks =
      static_cast<int>(std::max<int64_t>(1, CeilDiv(work, len)));  // every chunk non-empty
}

}  // namespace

// ---------------------------------------------------------------------------

bool Available() { return Info().present; }
std::string DeviceName() { return Info().name; }
double PeakBandwidthBytesPerSecond() { return Info().peak_bandwidth; }

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}
int DTypeBytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

struct DeviceAttention::Impl {
  AttentionDims dims;
  DType dtype = DType::kF32;
  int64_t cap = 0;  // key rows per kv head in the k and v buffers
  DeviceBuffer q, k, v, amask;
  bool has_amask = false;
  enum class MaskState { kNone, kDense, kCsr } mask_state = MaskState::kNone;
  DeviceBuffer row_ptr, cols, probs;
  int64_t kept = -1;
  DeviceBuffer part_ml, part_o, out, flush;
  Plan dense_plan, masked_plan;

  int64_t rows() const { return dims.batch * dims.heads * dims.queries; }

  Params BaseParams() const {
    Params p{};
    p.q = q.as<void>();
    p.k = k.as<void>();
    p.v = v.as<void>();
    p.amask = has_amask ? amask.as<float>() : nullptr;
    p.row_ptr = row_ptr.as<int64_t>();
    p.cols = cols.as<int32_t>();
    p.probs = probs.as<float>();
    p.part_ml = part_ml.as<float2>();
    p.part_o = part_o.as<float>();
    p.cap = cap;
    p.batch = static_cast<int>(dims.batch);
    p.heads = static_cast<int>(dims.heads);
    p.kv_heads = static_cast<int>(dims.kv_heads);
    p.queries = static_cast<int>(dims.queries);
    p.group = static_cast<int>(dims.heads / dims.kv_heads);
    p.keys = static_cast<int>(dims.keys);
    p.d = static_cast<int>(dims.head_dim);
    p.rows_per_kv = p.group * p.queries;
    p.scaling = dims.scaling;
    return p;
  }

  // Grows the partial buffers and the output for a plan.
  Status Reserve(const Plan& plan) {
    const size_t slots = static_cast<size_t>(rows()) * static_cast<size_t>(plan.chunks);
    MT_RETURN_IF_ERROR(part_ml.Reserve(slots * sizeof(float2)));
    MT_RETURN_IF_ERROR(part_o.Reserve(slots * static_cast<size_t>(dims.head_dim) * sizeof(float)));
    return out.Reserve(static_cast<size_t>(rows() * dims.head_dim) * sizeof(float));
  }

  Status PlanDense() {
    const int64_t rows_per_kv = dims.heads / dims.kv_heads * dims.queries;
    const int r = rows_per_kv <= 4 ? 4 : 8;
    Plan plan;
    plan.row_tiles = static_cast<int>(CeilDiv(rows_per_kv, r));
    plan.kernel = DenseKernelFor(dtype, LayoutDim(dims.head_dim), r);
    MT_ASSIGN_OR_RETURN(const int64_t wave, Wave(plan.kernel));
    const int64_t items = dims.batch * dims.kv_heads * plan.row_tiles;
    Split(dims.keys, items, wave, 256, plan);
    plan.grid = dim3(static_cast<unsigned>(items), static_cast<unsigned>(plan.chunks));
    MT_RETURN_IF_ERROR(Reserve(plan));
    dense_plan = plan;
    return Status::Ok();
  }

  Status PlanMasked(int64_t max_row_kept) {
    Plan plan;
    plan.kernel = MaskedKernelFor(dtype, LayoutDim(dims.head_dim));
    MT_ASSIGN_OR_RETURN(const int64_t wave, Wave(plan.kernel));
    Split(max_row_kept, rows(), wave, 128, plan);
    plan.grid = dim3(static_cast<unsigned>(rows()), static_cast<unsigned>(plan.chunks));
    MT_RETURN_IF_ERROR(Reserve(plan));
    masked_plan = plan;
    return Status::Ok();
  }

  Status Launch(bool masked) {
    if (masked && mask_state == MaskState::kNone)
      return Status::Error("DeviceAttention::RunMasked: no mask was set");
    const bool csr = masked && mask_state == MaskState::kCsr;
    const Plan& plan = csr ? masked_plan : dense_plan;
    Params p = BaseParams();
    p.row_tiles = plan.row_tiles;
    p.chunk_len = plan.chunk_len;
    void* args[] = {&p};
    MT_CUDA(cudaLaunchKernel(reinterpret_cast<const void*>(plan.kernel), plan.grid, dim3(kThreads),
                             args, 0, nullptr));
    const float2* ml = part_ml.as<float2>();
    const float* po = part_o.as<float>();
    int chunks = plan.chunks, d = static_cast<int>(dims.head_dim);
    float* o = out.as<float>();
    void* cargs[] = {&ml, &po, &chunks, &d, &o};
    MT_CUDA(cudaLaunchKernel(reinterpret_cast<const void*>(CombineKernel),
                             dim3(static_cast<unsigned>(rows())), dim3(128), cargs, 0, nullptr));
    return Status::Ok();
  }
};

namespace {

// Shapes the kernels take: int indices, head_dim up to 256, grid limits.
Status CheckDims(const AttentionDims& d, int64_t cap) {
  const std::string what = "CUDA attention: ";
  if (d.batch <= 0 || d.heads <= 0 || d.kv_heads <= 0 || d.queries <= 0 || d.keys <= 0 ||
      d.head_dim <= 0 || d.heads % d.kv_heads != 0)
    return Status::Error(what + "bad shape");
  if (d.head_dim > 256)
    return Status::Error(what + "head_dim " + std::to_string(d.head_dim) + " exceeds 256");
  if (cap >= (int64_t{1} << 30) || d.heads * d.queries >= (int64_t{1} << 30) ||
      d.batch * d.heads * d.queries >= (int64_t{1} << 31) - 1)
    return Status::Error(what + "too many keys or query rows");
  if (!std::isfinite(d.scaling)) return Status::Error(what + "scaling is not finite");
  return Status::Ok();
}

}  // namespace

DeviceAttention::DeviceAttention(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceAttention::DeviceAttention(DeviceAttention&&) noexcept = default;
DeviceAttention& DeviceAttention::operator=(DeviceAttention&&) noexcept = default;
DeviceAttention::~DeviceAttention() = default;

const AttentionDims& DeviceAttention::dims() const { return impl_->dims; }
DType DeviceAttention::dtype() const { return impl_->dtype; }
int64_t DeviceAttention::kept_entries() const { return impl_->kept; }

Result<DeviceAttention> DeviceAttention::Upload(const AttentionInputs& in, DType dtype) {
  if (!Available()) return Status::Error("CUDA attention: no CUDA device");
  MT_RETURN_IF_ERROR(CheckAttentionInputs(in));
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->dims = {in.batch(),    in.heads(),    in.kv_heads(), in.num_queries(),
                in.num_keys(), in.head_dim(), in.scaling};
  impl->cap = in.keys->dim(2);
  MT_RETURN_IF_ERROR(CheckDims(impl->dims, impl->cap));
  MT_RETURN_IF_ERROR(UploadConverted(in.queries->data(), in.queries->size(), dtype, impl->q));
  MT_RETURN_IF_ERROR(UploadConverted(in.keys->data(), in.keys->size(), dtype, impl->k));
  MT_RETURN_IF_ERROR(UploadConverted(in.values->data(), in.values->size(), dtype, impl->v));
  if (in.attention_mask) {
    impl->has_amask = true;
    MT_RETURN_IF_ERROR(impl->amask.Upload(
        in.attention_mask->data(), static_cast<size_t>(in.attention_mask->size()) * sizeof(float)));
  }
  MT_RETURN_IF_ERROR(impl->PlanDense());
  return DeviceAttention(std::move(impl));
}

Result<DeviceAttention> DeviceAttention::Random(const AttentionDims& dims, DType dtype,
                                                uint32_t seed) {
  if (!Available()) return Status::Error("CUDA attention: no CUDA device");
  MT_RETURN_IF_ERROR(CheckDims(dims, dims.keys));
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->dims = dims;
  impl->cap = dims.keys;
  const int64_t nq = dims.batch * dims.heads * dims.queries * dims.head_dim;
  const int64_t nk = dims.batch * dims.kv_heads * dims.keys * dims.head_dim;
  const size_t esize = static_cast<size_t>(DTypeBytes(dtype));
  MT_RETURN_IF_ERROR(impl->q.Allocate(static_cast<size_t>(nq) * esize));
  MT_RETURN_IF_ERROR(impl->k.Allocate(static_cast<size_t>(nk) * esize));
  MT_RETURN_IF_ERROR(impl->v.Allocate(static_cast<size_t>(nk) * esize));
  MT_RETURN_IF_ERROR(FillRandom(dtype, impl->q, nq, seed * 3 + 0));
  MT_RETURN_IF_ERROR(FillRandom(dtype, impl->k, nk, seed * 3 + 1));
  MT_RETURN_IF_ERROR(FillRandom(dtype, impl->v, nk, seed * 3 + 2));
  MT_CUDA(cudaDeviceSynchronize());
  MT_RETURN_IF_ERROR(impl->PlanDense());
  return DeviceAttention(std::move(impl));
}

Status DeviceAttention::SetMask(const Mask& mask) {
  Impl& im = *impl_;
  const MaskShape want{im.dims.batch, im.dims.heads, im.dims.queries, im.dims.keys};
  const MaskShape& got = mask.shape();
  if (!(got == want))
    return Status::Error("CUDA attention: mask shape (" + std::to_string(got.batch) + ", " +
                         std::to_string(got.heads) + ", " + std::to_string(got.queries) + ", " +
                         std::to_string(got.keys) + ") does not match the inputs (" +
                         std::to_string(want.batch) + ", " + std::to_string(want.heads) + ", " +
                         std::to_string(want.queries) + ", " + std::to_string(want.keys) + ")");
  im.mask_state = Impl::MaskState::kNone;
  im.kept = -1;
  if (mask.is_empty() || mask.is_full()) {
    im.mask_state = Impl::MaskState::kDense;
    return Status::Ok();
  }
  const int64_t rows = im.rows(), n = im.dims.keys;
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> cols;
  std::vector<float> probs;
  row_ptr.reserve(static_cast<size_t>(rows + 1));
  row_ptr.push_back(0);
  int64_t max_row = 0;
  bool bad = false;
  for (int64_t r = 0; r < rows; ++r) {
    mask.ForEachKept(r, [&](int64_t j, float p) {
      bad |= j < 0 || j >= n || !(p > 0.0f) || !std::isfinite(p);
      cols.push_back(static_cast<int32_t>(j));
      probs.push_back(p);
    });
    row_ptr.push_back(static_cast<int64_t>(cols.size()));
    max_row = std::max(max_row, row_ptr[r + 1] - row_ptr[r]);
  }
  if (bad) return Status::Error("CUDA attention: mask has a key out of range or a bad probability");
  MT_RETURN_IF_ERROR(im.row_ptr.Upload(row_ptr.data(), row_ptr.size() * sizeof(int64_t)));
  MT_RETURN_IF_ERROR(im.cols.Upload(cols.data(), cols.size() * sizeof(int32_t)));
  MT_RETURN_IF_ERROR(im.probs.Upload(probs.data(), probs.size() * sizeof(float)));
  MT_RETURN_IF_ERROR(im.PlanMasked(max_row));
  im.mask_state = Impl::MaskState::kCsr;
  im.kept = static_cast<int64_t>(cols.size());
  return Status::Ok();
}

Status DeviceAttention::RunDense() { return impl_->Launch(false); }
Status DeviceAttention::RunMasked() { return impl_->Launch(true); }

Result<Tensor> DeviceAttention::Output() const {
  const AttentionDims& d = impl_->dims;
  Tensor out({d.batch, d.heads, d.queries, d.head_dim});
  MT_CUDA(cudaMemcpy(out.data(), impl_->out.as<float>(),
                     static_cast<size_t>(out.size()) * sizeof(float), cudaMemcpyDeviceToHost));
  return out;
}

Result<std::vector<double>> DeviceAttention::Time(bool masked, int launches, bool flush_l2) {
  if (launches < 1) return Status::Error("DeviceAttention::Time: launches must be >= 1");
  Impl& im = *impl_;
  const size_t flush_bytes = 2 * static_cast<size_t>(std::max(Info().l2_bytes, 1 << 20));
  if (flush_l2) MT_RETURN_IF_ERROR(im.flush.Reserve(flush_bytes));
  // Events, destroyed on every path.
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start) (void)cudaEventDestroy(start);
      if (stop) (void)cudaEventDestroy(stop);
    }
  } ev;
  MT_CUDA(cudaEventCreate(&ev.start));
  MT_CUDA(cudaEventCreate(&ev.stop));
  MT_RETURN_IF_ERROR(im.Launch(masked));  // warm-up
  MT_CUDA(cudaDeviceSynchronize());
  std::vector<double> seconds;
  for (int n = 0; n < launches; ++n) {
    if (flush_l2) MT_CUDA(cudaMemsetAsync(im.flush.as<void>(), n & 0xff, flush_bytes, nullptr));
    MT_CUDA(cudaEventRecord(ev.start, nullptr));
    MT_RETURN_IF_ERROR(im.Launch(masked));
    MT_CUDA(cudaEventRecord(ev.stop, nullptr));
    MT_CUDA(cudaEventSynchronize(ev.stop));
    float ms = 0.0f;
    MT_CUDA(cudaEventElapsedTime(&ms, ev.start, ev.stop));
    seconds.push_back(ms * 1e-3);
  }
  return seconds;
}

Result<Tensor> DenseAttention(const AttentionInputs& in, DType dtype) {
  MT_ASSIGN_OR_RETURN(DeviceAttention dev, DeviceAttention::Upload(in, dtype));
  MT_RETURN_IF_ERROR(dev.RunDense());
  return dev.Output();
}

Result<Tensor> MaskedAttention(const AttentionInputs& in, const Mask& mask, DType dtype) {
  MT_ASSIGN_OR_RETURN(DeviceAttention dev, DeviceAttention::Upload(in, dtype));
  MT_RETURN_IF_ERROR(dev.SetMask(mask));
  MT_RETURN_IF_ERROR(dev.RunMasked());
  return dev.Output();
}

}  // namespace masktune::cuda
