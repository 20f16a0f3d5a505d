// Dequantization epilogue: y = cast(((acc * scale_x[m]) * scale_w[n]) + bias[n]), one pass.
// Each thread handles 8 consecutive outputs of a row (two 16-byte loads of the accumulator,
// one 16-byte store of BF16/F16) where N is a multiple of 8, else one output. Every product
// and sum is rounded on its own (__fmul_rn/__fadd_rn), as in the CPU reference.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "epilogue_launch.hpp"

namespace slidesparse::cuda::detail {
namespace {

__device__ __forceinline__ float acc_value(void const* acc, bool is_int32, std::int64_t i) {
  return is_int32 ? __int2float_rn(static_cast<int const*>(acc)[i]) : static_cast<float const*>(acc)[i];
}

__device__ __forceinline__ std::uint16_t to_output(float v, bool bf16) {
  return bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
}

__device__ __forceinline__ float dequant_one(float a, float sx, float sw, float const* bias, std::int64_t n) {
  float v = __fmul_rn(__fmul_rn(a, sx), sw);
  if (bias) v = __fadd_rn(v, bias[n]);
  return v;
}

__global__ void dequant_vec8_kernel(DequantArgs const a) {
  std::int64_t const groups_per_row = a.n / 8;
  std::int64_t const i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.m * groups_per_row) return;
  std::int64_t const m = i / groups_per_row;
  std::int64_t const n0 = (i % groups_per_row) * 8;
  std::int64_t const base = m * a.n + n0;
  // 8 accumulators: 32 bytes, two 16-byte loads (the row start is 32-byte aligned: n % 8 == 0).
  uint4 const lo = reinterpret_cast<uint4 const*>(static_cast<std::uint32_t const*>(a.acc) + base)[0];
  uint4 const hi = reinterpret_cast<uint4 const*>(static_cast<std::uint32_t const*>(a.acc) + base)[1];
  std::uint32_t const raw[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
  float const sx = a.scale_x[m];
  std::uint32_t packed[4];
#pragma unroll
  for (int j = 0; j < 8; j += 2) {
    float v[2];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      float const acc = a.acc_is_int32 ? __int2float_rn(static_cast<int>(raw[j + t])) : __uint_as_float(raw[j + t]);
      v[t] = dequant_one(acc, sx, a.scale_w[n0 + j + t], a.bias, n0 + j + t);
    }
    packed[j / 2] = to_output(v[0], a.y_is_bf16) | (static_cast<std::uint32_t>(to_output(v[1], a.y_is_bf16)) << 16);
  }
  reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(a.y) + base)[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

__global__ void dequant_scalar_kernel(DequantArgs const a) {
  std::int64_t const i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.m * a.n) return;
  std::int64_t const m = i / a.n;
  std::int64_t const n = i % a.n;
  float const v = dequant_one(acc_value(a.acc, a.acc_is_int32, i), a.scale_x[m], a.scale_w[n], a.bias, n);
  static_cast<std::uint16_t*>(a.y)[i] = to_output(v, a.y_is_bf16);
}

}  // namespace

cudaError_t launch_dequant(DequantArgs const& a, cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  bool const vec = a.n % 8 == 0 && (reinterpret_cast<std::uintptr_t>(a.acc) & 31) == 0 &&
                   (reinterpret_cast<std::uintptr_t>(a.y) & 15) == 0;
  std::int64_t const work = vec ? a.m * (a.n / 8) : a.m * a.n;
  dim3 const grid(static_cast<unsigned>((work + kThreads - 1) / kThreads));
  if (vec) {
    dequant_vec8_kernel<<<grid, kThreads, 0, stream>>>(a);
  } else {
    dequant_scalar_kernel<<<grid, kThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace slidesparse::cuda::detail
