// Launchers of the hand-written sm90 sparse GEMM (sparse_gemm_kernel.cuh): every schedule of
// kSchedules for FP8 E4M3 and INT8 operands, BF16 output.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <utility>

#include "sparse_gemm_kernel.cuh"
#include "sparse_gemm_launch.hpp"

namespace slidesparse::cuda::sm90 {

namespace {

// cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 const encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

template <Operand kIn, int kIndex>
cudaError_t launch(SparseGemmArgs const& a, CUtensorMap const& x_map, cudaStream_t stream) {
  constexpr Schedule kS = kSchedules[kIndex];
  auto* kernel = sparse_gemm<kIn, __nv_bfloat16, kS.stages, kS.group, kS.stagger>;
  constexpr int kSmem = kS.smem_bytes();
  static cudaError_t const attribute = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attribute != cudaSuccess) return attribute;
  int const n = static_cast<int>(a.n), m = static_cast<int>(a.m);
  int const k_tiles = static_cast<int>((a.k_lifted + kStageK - 1) / kStageK);
  // Persistent: one CTA per SM (at most one per tile) walks the tiles.
  long long const tiles = static_cast<long long>((m + kTileM - 1) / kTileM) * ((n + kTileN - 1) / kTileN);
  dim3 const grid(static_cast<unsigned>(std::min<long long>(tiles, a.multiprocessors)));
  kernel<<<grid, kThreads, kSmem, stream>>>(static_cast<uint8_t const*>(a.values),
                                             static_cast<uint8_t const*>(a.metadata), x_map, k_tiles, n, m, a.scale_w,
                                             a.scale_x, a.bias, static_cast<__nv_bfloat16*>(a.y), nullptr);
  return cudaGetLastError();
}

template <Operand kIn, int... I>
cudaError_t launch_index(SparseGemmArgs const& a, CUtensorMap const& x_map, int schedule, cudaStream_t stream,
                         std::integer_sequence<int, I...>) {
  cudaError_t err = cudaErrorInvalidValue;
  ((schedule == I ? (err = launch<kIn, I>(a, x_map, stream), 0) : 0), ...);
  return err;
}

}  // namespace

cudaError_t launch_sparse_gemm(SparseGemmArgs const& a, int schedule, cudaStream_t stream) {
  if (schedule < 0 || schedule >= kScheduleCount || a.n <= 0 || a.m <= 0 || a.k_lifted <= 0 || a.multiprocessors <= 0 ||
      a.k_lifted % 16 != 0 || a.n > (1 << 30) || a.m > (1 << 30)) {
    return cudaErrorInvalidValue;
  }
  PFN_cuTensorMapEncodeTiled_v12000 const encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  // x' [m, K'] bytes: 128 x 128-byte boxes with the 128-byte swizzle the B descriptor expects;
  // rows past m and columns past K' read as zeros.
  CUtensorMap x_map{};
  cuuint64_t const dims[2] = {static_cast<cuuint64_t>(a.k_lifted), static_cast<cuuint64_t>(a.m)};
  cuuint64_t const strides[1] = {static_cast<cuuint64_t>(a.k_lifted)};
  cuuint32_t const box[2] = {kStageK, kTileM};
  cuuint32_t const element_strides[2] = {1, 1};
  if (encode(&x_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(a.x), dims, strides, box, element_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
    return cudaErrorInvalidValue;
  }
  auto const all = std::make_integer_sequence<int, kScheduleCount>{};
  return a.int8 ? launch_index<Operand::kS8>(a, x_map, schedule, stream, all)
                : launch_index<Operand::kE4M3>(a, x_map, schedule, stream, all);
}

}  // namespace slidesparse::cuda::sm90
