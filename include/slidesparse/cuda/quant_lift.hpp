/// \file quant_lift.hpp
/// \brief Fused per-token quantization + activation lifting on the GPU (the CUDA twin of
/// core/lift.hpp's quantize_lift and lift, bit-exact with them).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "slidesparse/core/lift.hpp"

namespace slidesparse::cuda {

/// x [M, K] BF16/F16 on the device (row stride ldx elements) -> out [M, K'] on the device:
///   out_dtype I8 / F8_E4M3: per-token symmetric quantization, scales [M] F32 written too;
///   out_dtype == x_dtype: the lifted row without quantization (scales unused, may be null).
/// The layout gives K and K' (slid for a pattern, or dense = identity); K' must be a multiple
/// of 16 (any alignment that is a multiple of 16, the default 32 included). Asynchronous on
/// `stream`; no allocation, no synchronization (graph-capturable). Throws Error on bad
/// arguments or a failed launch.
void quant_lift(void const* x, DType x_dtype, std::int64_t m, std::int64_t ldx,
                ActivationLayout const& layout, void* out, DType out_dtype, float* scales,
                cudaStream_t stream);

}  // namespace slidesparse::cuda
