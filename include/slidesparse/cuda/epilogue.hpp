/// \file epilogue.hpp
/// \brief The dequantization epilogue on the GPU, bit-exact with core/epilogue.hpp.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::cuda {

/// acc [M, N] (I32 or F32, row-major, device) -> y [M, N] (BF16 or F16, device):
/// y = cast(((acc * scale_x[m]) * scale_w[n]) + bias[n]); bias may be null. Asynchronous,
/// allocation-free and graph-capturable. Throws Error on bad arguments or a failed launch.
void dequantize_output(void const* acc, DType acc_dtype, std::int64_t m, std::int64_t n,
                       float const* scale_x, float const* scale_w, float const* bias, void* y,
                       DType y_dtype, cudaStream_t stream);

}  // namespace slidesparse::cuda
