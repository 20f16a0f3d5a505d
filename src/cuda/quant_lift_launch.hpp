/// \file quant_lift_launch.hpp
/// \brief Plain-data interface between the quant+lift kernels (.cu, compiled by nvcc) and their
/// host wrapper (.cpp). Kept free of fmt and of the core headers so nvcc never parses them.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace slidesparse::cuda::detail {

enum class InputType : int { kBF16, kF16 };
enum class OutputType : int {
  kI8,      ///< per-token symmetric INT8 + scale
  kF8E4M3,  ///< per-token symmetric FP8 E4M3 + scale
  kSame,    ///< no quantization: the lifted row in the input's 16-bit type
};

struct QuantLiftArgs {
  void const* x = nullptr;  ///< [m, k] row-major, row stride ldx elements
  std::int64_t m = 0;
  std::int64_t k = 0;
  std::int64_t ldx = 0;
  int n = 0;                ///< half block N of the (2N-2):2N pattern; 0 = identity (dense) layout
  std::int64_t k_raw = 0;   ///< lifted columns that can hold data (blocks * 4(N-1), or K)
  std::int64_t k_lifted = 0;  ///< K' (row stride of out), a multiple of 16
  void* out = nullptr;      ///< [m, k_lifted]
  float* scales = nullptr;  ///< [m] (quantized outputs only)
  InputType input = InputType::kBF16;
  OutputType output = OutputType::kI8;
  int warps_per_row = 1;    ///< 1, 2, 4 or 8 warps share a row (more when M is small)
};

/// Shared memory a CTA may use for staged rows (rows per CTA * round_up(2K, 16) bytes); the
/// host picks warps_per_row so the CTA's rows fit. Below the H100/A100 per-block maximum
/// (227 / 163 KB) with room for the kernel's static shared memory.
inline constexpr std::size_t kMaxRowSharedBytes = 150 * 1024;

/// Launches the kernel; returns the launch status (no synchronization).
cudaError_t launch_quant_lift(QuantLiftArgs const& args, cudaStream_t stream);

}  // namespace slidesparse::cuda::detail
