#pragma once
// CUDA kernels for blockwise quantization (included by blockwise.hpp under LVT_CUDA). Same
// element math as the host reference (codebook.hpp), so results are bit-identical to it:
//
//   quantize_4bit     one warp per quant block: absmax by shuffle-max, 1/absmax, codes per pair
//   dequantize_4bit   16 outputs per thread from one 8-byte load, 16-byte stores; the absmax of
//                     double-quantized weights decoded on the fly (code * nested + offset)
//   absmax_mean       deterministic fp64 chunk sums, the same order as the host
//   quantize_dynamic  8-bit blockwise (the double quantization of absmax, block 256)
//   int8              symmetric absmax quantize / dequantize
//
// Launchers take a cudaStream_t and do not synchronize. Non-finite inputs are reported through
// a 64-bit slot in device memory (the lowest bad index, or all ones when none).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "lvt/error.hpp"
#include "lvt/quant/codebook.hpp"
#include "lvt/quant/numeric.hpp"

namespace lvt::quant {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("quant CUDA: ") + what + ": " + cudaGetErrorString(e));
}

namespace kernels {

constexpr int warps_per_cta = 8;

__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ inline void report_nonfinite(unsigned long long* bad, std::int64_t i) {
  if (bad) atomicMin(bad, (unsigned long long)i);
}

// The absmax of x[begin, end) - off, a warp's lanes striding over it (every lane gets the
// result); non-finite inputs are reported. off = 0 leaves every value as it is.
template <class T>
__device__ inline float warp_absmax(const T* __restrict__ x, std::int64_t begin, std::int64_t end,
                                    int lane, unsigned long long* bad, float off = 0.0f) {
  float m = 0.0f;
  for (std::int64_t i = begin + lane; i < end; i += 32) {
    const float v = to_float(x[i]);
    if (!isfinite(v)) report_nonfinite(bad, i);
    m = fmaxf(m, fabsf(off == 0.0f ? v : add_rn(v, -off)));
  }
  return warp_max(m);
}

template <Code4 C, class T>
__global__ void quantize_4bit(const T* __restrict__ x, std::int64_t n, int block,
                              std::uint8_t* __restrict__ packed, float* __restrict__ absmax,
                              unsigned long long* bad) {
  const int lane = threadIdx.x & 31;
  const std::int64_t nb = (n + block - 1) / block;
  for (std::int64_t b = std::int64_t(blockIdx.x) * warps_per_cta + (threadIdx.x >> 5); b < nb;
       b += std::int64_t(gridDim.x) * warps_per_cta) {
    const std::int64_t begin = b * block;
    const std::int64_t end = begin + block < n ? begin + block : n;
    const float m = warp_absmax(x, begin, end, lane, bad);
    if (lane == 0) absmax[b] = m;
    const float scale = inverse_absmax(m);
    for (std::int64_t i = begin + 2 * lane; i < end; i += 64) {
      const float v0 = to_float(x[i]);
      const float v1 = i + 1 < end ? to_float(x[i + 1]) : 0.0f;
      packed[i >> 1] = std::uint8_t((quantize4<C>(v0 * scale) << 4) | quantize4<C>(v1 * scale));
    }
  }
}

// Absmax of block b: plain, or decoded from the double quantization as bnb does it in torch
// (code * nested_absmax, then + offset, each rounded in fp32).
struct AbsmaxSource {
  const float* absmax;        // plain (nullptr when nested)
  const std::uint8_t* codes;  // nested: one code per block
  const float* nested;        // nested: one fp32 per 256 blocks
  const float* code_map;      // nested: the 256-entry map (device memory)
  float offset;
  __device__ float operator()(std::int64_t b) const {
    if (absmax) return __ldg(absmax + b);
    return add_rn(mul_rn(__ldg(code_map + __ldg(codes + b)), __ldg(nested + (b >> 8))), offset);
  }
};

template <class TOut>
__device__ inline void store16(TOut* out, const float (&v)[16]);
template <>
__device__ inline void store16<float>(float* out, const float (&v)[16]) {
  float4* o = reinterpret_cast<float4*>(out);
  for (int k = 0; k < 4; ++k) o[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
}
template <class H>
__device__ inline void store16_16bit(H* out, const float (&v)[16]) {
  std::uint32_t w[8];
  for (int k = 0; k < 8; ++k)
    w[k] = std::uint32_t(from_float<H>(v[2 * k]).bits) |
           (std::uint32_t(from_float<H>(v[2 * k + 1]).bits) << 16);
  uint4* o = reinterpret_cast<uint4*>(out);
  o[0] = make_uint4(w[0], w[1], w[2], w[3]);
  o[1] = make_uint4(w[4], w[5], w[6], w[7]);
}
template <>
__device__ inline void store16<bf16>(bf16* out, const float (&v)[16]) { store16_16bit(out, v); }
template <>
__device__ inline void store16<fp16>(fp16* out, const float (&v)[16]) { store16_16bit(out, v); }

// Vector path: thread t decodes bytes [8t, 8t+8) into elements [16t, 16t+16) (one quant block,
// since blocks are >= 32 elements and multiples of 16). Requires n % 16 == 0 and 16-byte
// aligned outputs; the launcher falls back to the scalar kernel otherwise.
template <Code4 C, class TOut>
__global__ void dequantize_4bit_vec(const std::uint8_t* __restrict__ packed, AbsmaxSource am,
                                    std::int64_t n16, int block_shift, TOut* __restrict__ out) {
  for (std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n16;
       t += std::int64_t(gridDim.x) * blockDim.x) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(packed) + t);
    const float a = am((t * 16) >> block_shift);
    float v[16];
    const std::uint32_t w[2] = {raw.x, raw.y};
    for (int k = 0; k < 8; ++k) {
      const std::uint8_t byte = std::uint8_t(w[k >> 2] >> (8 * (k & 3)));  // little endian
      v[2 * k] = dequantize4<C>(std::uint8_t(byte >> 4)) * a;
      v[2 * k + 1] = dequantize4<C>(std::uint8_t(byte & 0x0f)) * a;
    }
    store16(out + t * 16, v);
  }
}

template <Code4 C, class TOut>
__global__ void dequantize_4bit_scalar(const std::uint8_t* __restrict__ packed, AbsmaxSource am,
                                       std::int64_t n, int block_shift, TOut* __restrict__ out) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::uint8_t byte = packed[i >> 1];
    const std::uint8_t q = (i & 1) ? std::uint8_t(byte & 0x0f) : std::uint8_t(byte >> 4);
    out[i] = from_float<TOut>(dequantize4<C>(q) * am(i >> block_shift));
  }
}

// Deterministic mean, the same sums in the same order as absmax_mean() on the host. (A template,
// as every kernel in a header: one definition however many .cu files include it.)
template <class F = float>
__global__ void absmax_mean(const F* __restrict__ absmax, std::int64_t n, F* mean) {
  __shared__ double chunk[256];
  double total = 0.0;
  const std::int64_t chunks = (n + 255) / 256;
  for (std::int64_t c0 = 0; c0 < chunks; c0 += 256) {
    const std::int64_t c = c0 + threadIdx.x;
    double s = 0.0;
    if (c < chunks) {
      const std::int64_t end = (c + 1) * 256 < n ? (c + 1) * 256 : n;
      for (std::int64_t i = c * 256; i < end; ++i) s = __dadd_rn(s, double(absmax[i]));
    }
    chunk[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0)
      for (int k = 0; k < 256 && c0 + k < chunks; ++k) total = __dadd_rn(total, chunk[k]);
    __syncthreads();
  }
  if (threadIdx.x == 0) *mean = n ? float(__ddiv_rn(total, double(n))) : 0.0f;
}

// 8-bit blockwise with the dynamic map; `offset` (device pointer or null) is subtracted first.
template <class T>
__global__ void quantize_dynamic(const T* __restrict__ x, std::int64_t n, int block,
                                 const float* __restrict__ offset, const float* __restrict__ map,
                                 std::uint8_t* __restrict__ codes, float* __restrict__ absmax,
                                 unsigned long long* bad) {
  __shared__ float smem_code[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) smem_code[i] = map[i];
  __syncthreads();
  const float off = offset ? *offset : 0.0f;
  const int lane = threadIdx.x & 31;
  const std::int64_t nb = (n + block - 1) / block;
  for (std::int64_t b = std::int64_t(blockIdx.x) * warps_per_cta + (threadIdx.x >> 5); b < nb;
       b += std::int64_t(gridDim.x) * warps_per_cta) {
    const std::int64_t begin = b * block;
    const std::int64_t end = begin + block < n ? begin + block : n;
    const float m = warp_absmax(x, begin, end, lane, bad, off);
    if (lane == 0) absmax[b] = m;
    const float scale = inverse_absmax(m);
    for (std::int64_t i = begin + lane; i < end; i += 32)
      codes[i] = ::lvt::quant::quantize_dynamic(smem_code, add_rn(to_float(x[i]), -off) * scale);
  }
}

template <class T>
__global__ void quantize_int8(const T* __restrict__ x, std::int64_t n, int block,
                              std::int8_t* __restrict__ q, float* __restrict__ absmax,
                              unsigned long long* bad) {
  const int lane = threadIdx.x & 31;
  const std::int64_t nb = (n + block - 1) / block;
  for (std::int64_t b = std::int64_t(blockIdx.x) * warps_per_cta + (threadIdx.x >> 5); b < nb;
       b += std::int64_t(gridDim.x) * warps_per_cta) {
    const std::int64_t begin = b * block;
    const std::int64_t end = begin + block < n ? begin + block : n;
    const float m = warp_absmax(x, begin, end, lane, bad);
    if (lane == 0) absmax[b] = m;
    const float scale = __fdiv_rn(127.0f, m);
    for (std::int64_t i = begin + lane; i < end; i += 32)
      q[i] = m == 0.0f ? std::int8_t(0) : std::int8_t(__float2int_rn(__fmul_rn(to_float(x[i]), scale)));
  }
}

template <class TOut>
__global__ void dequantize_int8(const std::int8_t* __restrict__ q, const float* __restrict__ absmax,
                                std::int64_t n, int block_shift, TOut* __restrict__ out) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<TOut>(
        __fmul_rn(__fmul_rn(float(q[i]), __ldg(absmax + (i >> block_shift))), 7.874015718698502e-3f));
}

}  // namespace kernels

inline int log2_block(int block) {
  int s = 0;
  while ((1 << s) < block) ++s;
  return s;
}
inline unsigned grid_for(std::int64_t work, int per_cta) {
  const std::int64_t g = (work + per_cta - 1) / per_cta;
  return unsigned(g < 1 ? 1 : g > 65535 * 16 ? 65535 * 16 : g);
}

// The dynamic map in device memory (one copy per process, made on first use).
inline const float* device_dynamic_map() {
  static float* map = [] {
    float* p = nullptr;
    cuda_check(cudaMalloc(&p, sizeof(dynamic_map)), "cudaMalloc(dynamic map)");
    cuda_check(cudaMemcpy(p, dynamic_map, sizeof(dynamic_map), cudaMemcpyHostToDevice),
               "copy dynamic map");
    return p;
  }();
  return map;
}

// ---- launchers -----------------------------------------------------------------------------
// `bad` may be null; when given it must hold all ones (reset_nonfinite) before the launch.
template <class T>
void launch_quantize_4bit(Code4 c, const T* x, std::int64_t n, int block,
                                 std::uint8_t* packed, float* absmax, unsigned long long* bad,
                                 cudaStream_t stream) {
  const unsigned grid = grid_for(blocks_of(n, block), kernels::warps_per_cta);
  if (c == Code4::nf4)
    kernels::quantize_4bit<Code4::nf4><<<grid, 32 * kernels::warps_per_cta, 0, stream>>>(
        x, n, block, packed, absmax, bad);
  else
    kernels::quantize_4bit<Code4::fp4><<<grid, 32 * kernels::warps_per_cta, 0, stream>>>(
        x, n, block, packed, absmax, bad);
  cuda_check(cudaGetLastError(), "quantize_4bit launch");
}

inline void launch_absmax_mean(const float* absmax, std::int64_t nblocks, float* mean,
                               cudaStream_t stream) {
  kernels::absmax_mean<float><<<1, 256, 0, stream>>>(absmax, nblocks, mean);
  cuda_check(cudaGetLastError(), "absmax_mean launch");
}

// Double quantization of a device absmax vector, with the offset already in device memory.
inline void launch_double_quantize(const float* absmax, std::int64_t nblocks, const float* offset,
                                   std::uint8_t* codes, float* nested_absmax, cudaStream_t stream) {
  const unsigned grid = grid_for(blocks_of(nblocks, nested_block), kernels::warps_per_cta);
  kernels::quantize_dynamic<float><<<grid, 32 * kernels::warps_per_cta, 0, stream>>>(
      absmax, nblocks, nested_block, offset, device_dynamic_map(), codes, nested_absmax, nullptr);
  cuda_check(cudaGetLastError(), "double_quantize launch");
}

template <class T>
void launch_quantize_dynamic(const T* x, std::int64_t n, int block, std::uint8_t* codes,
                                    float* absmax, unsigned long long* bad, cudaStream_t stream) {
  const unsigned grid = grid_for(blocks_of(n, block), kernels::warps_per_cta);
  kernels::quantize_dynamic<T><<<grid, 32 * kernels::warps_per_cta, 0, stream>>>(
      x, n, block, nullptr, device_dynamic_map(), codes, absmax, bad);
  cuda_check(cudaGetLastError(), "quantize_dynamic launch");
}

// Dequantize to TOut. Plain absmax: pass absmax, codes = nested = nullptr. Double-quantized:
// absmax = nullptr, codes / nested / offset from the checkpoint and `code_map` its 256-entry
// nested_quant_map in device memory (nullptr: lvt's dynamic map).
template <class TOut>
void launch_dequantize_4bit(Code4 c, const std::uint8_t* packed, const float* absmax,
                                   const std::uint8_t* codes, const float* nested, float offset,
                                   std::int64_t n, int block, TOut* out, cudaStream_t stream,
                                   const float* code_map = nullptr) {
  // The dynamic map is needed (and made, once) only for double-quantized absmax without a map.
  kernels::AbsmaxSource am{absmax, codes, nested,
                           code_map ? code_map : codes ? device_dynamic_map() : nullptr, offset};
  const int shift = log2_block(block);
  const bool vec = n % 16 == 0 && (reinterpret_cast<std::uintptr_t>(out) % 16) == 0 &&
                   (reinterpret_cast<std::uintptr_t>(packed) % 8) == 0;
  constexpr int threads = 256;
  if (vec) {
    const unsigned grid = grid_for(n / 16, threads);
    if (c == Code4::nf4)
      kernels::dequantize_4bit_vec<Code4::nf4><<<grid, threads, 0, stream>>>(packed, am, n / 16, shift, out);
    else
      kernels::dequantize_4bit_vec<Code4::fp4><<<grid, threads, 0, stream>>>(packed, am, n / 16, shift, out);
  } else {
    const unsigned grid = grid_for(n, threads);
    if (c == Code4::nf4)
      kernels::dequantize_4bit_scalar<Code4::nf4><<<grid, threads, 0, stream>>>(packed, am, n, shift, out);
    else
      kernels::dequantize_4bit_scalar<Code4::fp4><<<grid, threads, 0, stream>>>(packed, am, n, shift, out);
  }
  cuda_check(cudaGetLastError(), "dequantize_4bit launch");
}

template <class T>
void launch_quantize_int8(const T* x, std::int64_t n, int block, std::int8_t* q,
                                 float* absmax, unsigned long long* bad, cudaStream_t stream) {
  const unsigned grid = grid_for(blocks_of(n, block), kernels::warps_per_cta);
  kernels::quantize_int8<T><<<grid, 32 * kernels::warps_per_cta, 0, stream>>>(x, n, block, q, absmax, bad);
  cuda_check(cudaGetLastError(), "quantize_int8 launch");
}
template <class TOut>
void launch_dequantize_int8(const std::int8_t* q, const float* absmax, std::int64_t n,
                                   int block, TOut* out, cudaStream_t stream) {
  kernels::dequantize_int8<TOut><<<grid_for(n, 256), 256, 0, stream>>>(q, absmax, n, log2_block(block), out);
  cuda_check(cudaGetLastError(), "dequantize_int8 launch");
}

inline void reset_nonfinite(unsigned long long* bad, cudaStream_t stream) {
  const unsigned long long none = ~0ull;
  cuda_check(cudaMemcpyAsync(bad, &none, sizeof(none), cudaMemcpyHostToDevice, stream),
             "reset nonfinite flag");
  cuda_check(cudaStreamSynchronize(stream), "reset nonfinite flag");
}
// Synchronizes `stream`; throws naming the tensor when a non-finite input was seen.
inline void check_nonfinite(const unsigned long long* bad, std::int64_t n, std::string_view tensor,
                            cudaStream_t stream) {
  unsigned long long first = 0;
  cuda_check(cudaMemcpyAsync(&first, bad, sizeof(first), cudaMemcpyDeviceToHost, stream),
             "read nonfinite flag");
  cuda_check(cudaStreamSynchronize(stream), "read nonfinite flag");
  if (first != ~0ull)
    throw Error("quantize '" + std::string(tensor) + "': element " + std::to_string(first) +
                " of " + std::to_string(n) + " is NaN or Inf; weights must be finite to quantize");
}

}  // namespace lvt::quant
