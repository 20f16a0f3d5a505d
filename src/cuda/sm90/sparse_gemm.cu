// Launchers of the hand-written sm90 sparse GEMM (sparse_gemm_kernel.cuh): every schedule of
// kSchedules for FP8 E4M3 and INT8 operands, BF16 output.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "sparse_gemm_kernel.cuh"
#include "sparse_gemm_launch.hpp"

namespace slidesparse::cuda::sm90 {

namespace {

template <Operand kIn, int kIndex>
cudaError_t launch(SparseGemmArgs const& a, CUtensorMap const& x_map, CUtensorMap const& y_map, int y_by_tma,
                   cudaStream_t stream) {
  constexpr Schedule kS = kSchedules[kIndex];
  auto* kernel = sparse_gemm<kIn, __nv_bfloat16, kS.stages, kS.group, kS.stagger>;
  constexpr int kSmem = kS.smem_bytes();
  static cudaError_t const attribute = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attribute != cudaSuccess) return attribute;
  int const n = static_cast<int>(a.n), m = static_cast<int>(a.m);
  int const k_tiles = static_cast<int>((a.k_lifted + kStageK - 1) / kStageK);
  dim3 const grid(persistent_grid(m, n, a.multiprocessors));  // clusters of kCluster, one CTA per SM
  kernel<<<grid, kThreads, kSmem, stream>>>(static_cast<uint8_t const*>(a.values),
                                             static_cast<uint8_t const*>(a.metadata), x_map, y_map, y_by_tma, k_tiles, n, m, a.scale_w,
                                             a.scale_x, a.bias, static_cast<__nv_bfloat16*>(a.y), nullptr);
  return cudaGetLastError();
}

template <Operand kIn, int... I>
cudaError_t launch_index(SparseGemmArgs const& a, CUtensorMap const& x_map, CUtensorMap const& y_map, int y_by_tma,
                         int schedule, cudaStream_t stream, std::integer_sequence<int, I...>) {
  cudaError_t err = cudaErrorInvalidValue;
  ((schedule == I ? (err = launch<kIn, I>(a, x_map, y_map, y_by_tma, stream), 0) : 0), ...);
  return err;
}

}  // namespace

cudaError_t launch_sparse_gemm(SparseGemmArgs const& a, int schedule, cudaStream_t stream) {
  if (schedule < 0 || schedule >= kScheduleCount || a.n <= 0 || a.m <= 0 || a.k_lifted <= 0 || a.multiprocessors <= 0 ||
      a.k_lifted % 16 != 0 || a.n > (1 << 30) || a.m > (1 << 30)) {
    return cudaErrorInvalidValue;
  }
  CUtensorMap x_map{};
  if (CUresult const r = encode_x_map(&x_map, a.x, a.m, a.k_lifted); r != CUDA_SUCCESS) {
    return r == CUDA_ERROR_NOT_SUPPORTED ? cudaErrorNotSupported : cudaErrorInvalidValue;
  }
  // Where y's TMA description cannot be made (y not 16-byte aligned, rows not whole 16-byte
  // multiples) the kernel stores element-wise.
  CUtensorMap y_map{};
  int const y_by_tma = encode_y_map(&y_map, a.y, a.m, a.n) == CUDA_SUCCESS;
  auto const all = std::make_integer_sequence<int, kScheduleCount>{};
  return a.int8 ? launch_index<Operand::kS8>(a, x_map, y_map, y_by_tma, schedule, stream, all)
                : launch_index<Operand::kE4M3>(a, x_map, y_map, y_by_tma, schedule, stream, all);
}

}  // namespace slidesparse::cuda::sm90
