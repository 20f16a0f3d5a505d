/// \file epilogue_launch.hpp
/// \brief Plain-data interface of the dequantization epilogue kernel (see core/epilogue.hpp).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace slidesparse::cuda::detail {

struct DequantArgs {
  void const* acc = nullptr;   ///< [m, n] row-major, INT32 or FP32
  bool acc_is_int32 = true;
  std::int64_t m = 0;
  std::int64_t n = 0;
  float const* scale_x = nullptr;  ///< [m]
  float const* scale_w = nullptr;  ///< [n]
  float const* bias = nullptr;     ///< [n] or null
  void* y = nullptr;               ///< [m, n] row-major BF16 or F16
  bool y_is_bf16 = true;
};

cudaError_t launch_dequant(DequantArgs const& args, cudaStream_t stream);

}  // namespace slidesparse::cuda::detail
