/// \file epilogue.hpp
/// \brief The dequantization epilogue of a W8A8 linear layer (CPU reference of the GPU kernel).
///
///   y[m][n] = out_cast( ((float(acc[m][n]) * scale_x[m]) * scale_w[n]) + bias[n] )
///
/// evaluated left to right in float32 with one rounding per operation (no fused multiply-add),
/// then rounded to BF16/F16 (nearest even). acc is the GEMM's INT32 or FP32 accumulator in
/// row-major [M, N] (= column-major [N, M], the layout the GEMM backends write).
#pragma once

#include <cstdint>
#include <span>

#include "slidesparse/core/matrix.hpp"

namespace slidesparse {

/// acc: I32 or F32 [M, N] with scale_x [M] and scale_w [N]; or BF16/F16 [M, N] (the output of
/// a 16-bit GEMM) with both scale spans empty, giving y = cast(float(acc) + bias[n]).
/// bias [N] or empty; y: BF16 or F16 [M, N].
void dequantize_output(ConstMatrixView acc, std::span<float const> scale_x,
                       std::span<float const> scale_w, std::span<float const> bias, MatrixView y);

}  // namespace slidesparse
