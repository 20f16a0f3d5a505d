/// \file sparse_gemm_launch.hpp
/// \brief Plain-data interface between the hand-written sm90 sparse GEMM kernels
/// (sparse_gemm.cu, compiled by nvcc) and their host wrapper (sm90_sparse_gemm.cpp). Free of fmt
/// and of the core headers so nvcc never parses them.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace slidesparse::cuda::sm90 {

struct SparseGemmArgs {
  bool int8 = false;              ///< INT8 operands (INT32 accumulators), else FP8 E4M3 (F32)
  void const* values = nullptr;   ///< SparseTiles::values on the device
  void const* metadata = nullptr; ///< SparseTiles::metadata on the device
  std::int64_t n = 0;             ///< weight rows (output channels)
  std::int64_t k_lifted = 0;      ///< K' (row stride of x, a multiple of 16)
  std::int64_t m = 0;             ///< tokens
  void const* x = nullptr;        ///< x' [m, K'] row-major (16-byte aligned)
  float const* scale_x = nullptr; ///< [m]
  float const* scale_w = nullptr; ///< [n]
  float const* bias = nullptr;    ///< [n] or null
  void* y = nullptr;              ///< [m, n] BF16 row-major
  int multiprocessors = 0;        ///< SMs of the GPU it runs on: the persistent grid's size
};

/// Launches schedule `schedule` (an index into kSchedules) on `stream`: encodes the TMA
/// descriptor of x (host work, no synchronization), then the kernel. cudaErrorInvalidValue for a
/// schedule index, shape or pointer the kernel cannot take; the launch's error otherwise.
cudaError_t launch_sparse_gemm(SparseGemmArgs const& args, int schedule, cudaStream_t stream);

}  // namespace slidesparse::cuda::sm90
