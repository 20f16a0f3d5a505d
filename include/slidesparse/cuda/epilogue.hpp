/// \file epilogue.hpp
/// \brief The output epilogue on the GPU, bit-exact with core/epilogue.hpp.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::cuda {

/// acc [M, ld_acc] row-major on the device (the first N columns are used; ld_acc >= N) ->
/// y [M, N] row-major BF16 or F16:
///   acc I32 / F32 (W8A8):  y = cast(((acc * scale_x[m]) * scale_w[n]) + bias[n])
///   acc BF16 / F16:        y = cast(float(acc) + bias[n]); scale_x and scale_w must be null.
/// bias may be null. y may alias acc when ld_acc == N (in place). Asynchronous, allocation-free
/// and graph-capturable. Throws Error on bad arguments or a failed launch.
void dequantize_output(void const* acc, DType acc_dtype, std::int64_t ld_acc, std::int64_t m,
                       std::int64_t n, float const* scale_x, float const* scale_w,
                       float const* bias, void* y, DType y_dtype, cudaStream_t stream);

/// Contiguous accumulator (ld_acc = n).
inline void dequantize_output(void const* acc, DType acc_dtype, std::int64_t m, std::int64_t n,
                              float const* scale_x, float const* scale_w, float const* bias,
                              void* y, DType y_dtype, cudaStream_t stream) {
  dequantize_output(acc, acc_dtype, n, m, n, scale_x, scale_w, bias, y, y_dtype, stream);
}

}  // namespace slidesparse::cuda
