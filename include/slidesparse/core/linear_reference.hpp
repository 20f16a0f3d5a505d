/// \file linear_reference.hpp
/// \brief The whole linear layer on the CPU — the reference the GPU Linear is checked against.
///
///   W8A8 (compute I8 / F8_E4M3): x [M, K] BF16/F16 -> per-token quantization (quantize.hpp's
///     contract, identity layout: lifting never changes a dot product) -> acc = q(x) * W^T,
///     summed exactly (int64 for INT8; double for FP8, where every product of two E4M3 codes is
///     exact and the sum of K of them fits a double's 53 bits) -> acc rounded once to the
///     GEMM's accumulator type (I32 exact, F32) -> dequantize_output (epilogue.hpp) -> y.
///   16-bit (compute == activation dtype): acc = x * W^T in double, rounded once to the
///     activation dtype (the 16-bit GEMM's output), then + bias in float -> y.
///
/// `exact` receives the unrounded result acc * scale_x * scale_w + bias in double (what an
/// infinitely precise layer would produce from the same quantized operands): tolerance tests
/// compare against it, exact tests compare `y`.
#pragma once

#include <span>
#include <vector>

#include "slidesparse/core/matrix.hpp"

namespace slidesparse {

struct LinearReferenceResult {
  std::vector<double> exact;          ///< [M, N] row-major
  std::vector<double> abs_products;   ///< [M, N]: sum_k |q(x)[m,k] * w[n,k]| * scale_x * scale_w
  std::vector<float> scale_x;         ///< [M] (W8A8 only)
};

/// weight [N, K] of the compute dtype (I8 / F8_E4M3 codes with per-channel scale_w [N], or
/// BF16 / F16 equal to x's dtype with scale_w empty); bias [N] or empty; y [M, N] of x's dtype.
LinearReferenceResult linear_reference(ConstMatrixView x, ConstMatrixView weight,
                                       std::span<float const> scale_w,
                                       std::span<float const> bias, MatrixView y);

}  // namespace slidesparse
