/// \file epilogue_launch.hpp
/// \brief Plain-data interface of the output epilogue kernel (see core/epilogue.hpp).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace slidesparse::cuda::detail {

enum class AccKind : int { kI32, kF32, kBF16, kF16 };

struct DequantArgs {
  void const* acc = nullptr;   ///< [m, ld_acc] row-major (the first n columns are used)
  AccKind acc_kind = AccKind::kI32;
  std::int64_t ld_acc = 0;
  std::int64_t m = 0;
  std::int64_t n = 0;
  float const* scale_x = nullptr;  ///< [m]; null for 16-bit accumulators (no quantization)
  float const* scale_w = nullptr;  ///< [n]; null for 16-bit accumulators
  float const* bias = nullptr;     ///< [n] or null
  void* y = nullptr;               ///< [m, n] row-major BF16 or F16 (may alias acc when ld_acc == n)
  bool y_is_bf16 = true;
};

cudaError_t launch_dequant(DequantArgs const& args, cudaStream_t stream);

}  // namespace slidesparse::cuda::detail
