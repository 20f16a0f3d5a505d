// Output epilogue, one pass over [M, N]:
//   I32/F32 accumulator (W8A8): y = cast(((acc * scale_x[m]) * scale_w[n]) + bias[n])
//   BF16/F16 GEMM output:       y = cast(float(acc) + bias[n])   (copy/cast when no bias)
// Each thread handles 8 consecutive outputs of a row (16-byte loads of the accumulator, one
// 16-byte store) where N, ld_acc and the pointers allow it, else one output. Every product and
// sum is rounded on its own (__fmul_rn/__fadd_rn), as in the CPU reference.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "epilogue_launch.hpp"

namespace slidesparse::cuda::detail {
namespace {

template <AccKind kAcc>
__device__ __forceinline__ float acc_to_float(std::uint32_t raw) {
  if constexpr (kAcc == AccKind::kI32) return __int2float_rn(static_cast<int>(raw));
  if constexpr (kAcc == AccKind::kF32) return __uint_as_float(raw);
  if constexpr (kAcc == AccKind::kBF16) return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(raw)));
  if constexpr (kAcc == AccKind::kF16) return __half2float(__ushort_as_half(static_cast<unsigned short>(raw)));
}

template <AccKind kAcc>
constexpr bool kQuantized = kAcc == AccKind::kI32 || kAcc == AccKind::kF32;

template <AccKind kAcc>
__device__ __forceinline__ std::uint32_t load_raw(void const* acc, std::int64_t i) {
  if constexpr (kQuantized<kAcc>) return static_cast<std::uint32_t const*>(acc)[i];
  else return static_cast<std::uint16_t const*>(acc)[i];
}

__device__ __forceinline__ std::uint16_t to_output(float v, bool bf16) {
  return bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
}

template <AccKind kAcc>
__device__ __forceinline__ float finish(float a, DequantArgs const& args, std::int64_t m, std::int64_t n) {
  float v = a;
  if constexpr (kQuantized<kAcc>) v = __fmul_rn(__fmul_rn(a, args.scale_x[m]), args.scale_w[n]);
  if (args.bias) v = __fadd_rn(v, args.bias[n]);
  return v;
}

template <AccKind kAcc>
__global__ void epilogue_vec8_kernel(DequantArgs const a) {
  std::int64_t const groups_per_row = a.n / 8;
  std::int64_t const i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.m * groups_per_row) return;
  std::int64_t const m = i / groups_per_row;
  std::int64_t const n0 = (i % groups_per_row) * 8;
  std::int64_t const src = m * a.ld_acc + n0;
  std::uint32_t raw[8];
  if constexpr (kQuantized<kAcc>) {
    // 8 x 4 bytes: two 16-byte loads (row starts are 32-byte aligned: ld_acc % 8 == 0).
    uint4 const lo = reinterpret_cast<uint4 const*>(static_cast<std::uint32_t const*>(a.acc) + src)[0];
    uint4 const hi = reinterpret_cast<uint4 const*>(static_cast<std::uint32_t const*>(a.acc) + src)[1];
    raw[0] = lo.x, raw[1] = lo.y, raw[2] = lo.z, raw[3] = lo.w, raw[4] = hi.x, raw[5] = hi.y, raw[6] = hi.z, raw[7] = hi.w;
  } else {
    uint4 const v = reinterpret_cast<uint4 const*>(static_cast<std::uint16_t const*>(a.acc) + src)[0];
    std::uint32_t const w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) raw[2 * j] = w[j] & 0xFFFFu, raw[2 * j + 1] = w[j] >> 16;
  }
  std::uint32_t packed[4];
#pragma unroll
  for (int j = 0; j < 8; j += 2) {
    float const v0 = finish<kAcc>(acc_to_float<kAcc>(raw[j]), a, m, n0 + j);
    float const v1 = finish<kAcc>(acc_to_float<kAcc>(raw[j + 1]), a, m, n0 + j + 1);
    packed[j / 2] = to_output(v0, a.y_is_bf16) | (static_cast<std::uint32_t>(to_output(v1, a.y_is_bf16)) << 16);
  }
  reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(a.y) + m * a.n + n0)[0] =
      make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

template <AccKind kAcc>
__global__ void epilogue_scalar_kernel(DequantArgs const a) {
  std::int64_t const i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.m * a.n) return;
  std::int64_t const m = i / a.n;
  std::int64_t const n = i % a.n;
  float const v = finish<kAcc>(acc_to_float<kAcc>(load_raw<kAcc>(a.acc, m * a.ld_acc + n)), a, m, n);
  static_cast<std::uint16_t*>(a.y)[i] = to_output(v, a.y_is_bf16);
}

template <AccKind kAcc>
cudaError_t launch(DequantArgs const& a, cudaStream_t stream) {
  constexpr int kThreads = 256;
  std::uintptr_t const row_align = kQuantized<kAcc> ? 32 : 16;
  bool const vec = a.n % 8 == 0 && a.ld_acc % 8 == 0 && (reinterpret_cast<std::uintptr_t>(a.acc) % row_align) == 0 &&
                   (reinterpret_cast<std::uintptr_t>(a.y) & 15) == 0;
  std::int64_t const work = vec ? a.m * (a.n / 8) : a.m * a.n;
  dim3 const grid(static_cast<unsigned>((work + kThreads - 1) / kThreads));
  if (vec) {
    epilogue_vec8_kernel<kAcc><<<grid, kThreads, 0, stream>>>(a);
  } else {
    epilogue_scalar_kernel<kAcc><<<grid, kThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_dequant(DequantArgs const& a, cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return cudaSuccess;
  switch (a.acc_kind) {
    case AccKind::kI32: return launch<AccKind::kI32>(a, stream);
    case AccKind::kF32: return launch<AccKind::kF32>(a, stream);
    case AccKind::kBF16: return launch<AccKind::kBF16>(a, stream);
    case AccKind::kF16: return launch<AccKind::kF16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace slidesparse::cuda::detail
