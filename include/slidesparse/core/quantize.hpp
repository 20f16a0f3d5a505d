/// \file quantize.hpp
/// \brief The numeric contract of W8A8 quantization (brief section 2), in one place.
///
///   scale     = max(absmax, kScaleFloor) / QMAX        QMAX = 127 (INT8), 448 (FP8 E4M3)
///   inv_scale = 1.0f / scale                           (from the *stored* scale, float32 RN)
///   INT8:  q = clamp(rint(x * inv_scale), -127, 127)   (half to even; NaN -> 0)
///   E4M3:  q = e4m3_rn_satfinite(x * inv_scale)        (NaN -> NaN)
///   dequantized value = q * scale
///
/// absmax ignores NaN (like fmaxf). All arithmetic is float32 with round-to-nearest and no
/// contraction, so the CUDA kernels reproduce it bit for bit. kScaleFloor keeps inv_scale
/// finite: with absmax = 0 the row quantizes to all zeros instead of 0 * inf = NaN.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "slidesparse/core/matrix.hpp"

namespace slidesparse {

inline constexpr float kScaleFloor = 1e-12f;

/// 127 for I8, 448 for F8_E4M3; throws Error(kUsage) for other dtypes.
float quant_max(DType qtype);

inline float symmetric_scale(float absmax, float qmax) noexcept {
  return std::fmax(absmax, kScaleFloor) / qmax;
}

inline std::int8_t quantize_i8(float x, float inv_scale) noexcept {
  float v = x * inv_scale;
  // Clamping to the integer bounds first gives the same result as rounding first. Comparisons
  // (not std::fmin/fmax, which are libm calls here) let the loop vectorize; NaN -> 0.
  v = v > 127.0f ? 127.0f : v;
  v = v < -127.0f ? -127.0f : v;
  v = v == v ? v : 0.0f;
  // Round half to even: adding 1.5 * 2^23 leaves no fraction bits, so the FPU rounds (default
  // rounding mode); exact for |v| < 2^22.
  float const r = (v + 12582912.0f) - 12582912.0f;
  return static_cast<std::int8_t>(r);
}

inline e4m3_t quantize_e4m3(float x, float inv_scale) noexcept {
  return float_to_e4m3_satfinite(x * inv_scale);
}

// NaN-ignoring max of |x| over a row (the fmaxf semantics of the contract), computed on the
// magnitude bits: for sign-magnitude floats they order like |x|, and signed-integer max
// reductions vectorize where a float max or std::fmax (a libm call here) would not.
template <typename Elem>
inline float row_absmax(std::byte const* __restrict src, std::int64_t cols) {
  using Bits = typename Elem::Bits;
  if constexpr (sizeof(Bits) == 2) {
    constexpr std::int16_t kInf = Elem::kDType == DType::kBF16 ? 0x7F80 : 0x7C00;
    std::int16_t best = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      auto key = static_cast<std::int16_t>(load<Bits>(src + c * sizeof(Bits)) & 0x7FFFu);
      key = key > kInf ? std::int16_t{0} : key;  // NaN ignored
      best = std::max(best, key);
    }
    return Elem::to_float(static_cast<Bits>(best));
  } else {
    static_assert(sizeof(Bits) == 4);
    std::int32_t best = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      auto key = static_cast<std::int32_t>(load<Bits>(src + c * sizeof(Bits)) & 0x7FFFFFFFu);
      key = key > 0x7F800000 ? 0 : key;
      best = std::max(best, key);
    }
    return Elem::to_float(static_cast<Bits>(best));
  }
}

/// Per-output-channel symmetric quantization of a [N, K] BF16/F16/F32 weight into I8 or
/// F8_E4M3 `out` [N, K] and `scales` [N] (the compressed-tensors `weight_scale` [N, 1]).
/// -0 codes are written as +0 so a quantized zero is always the zero bit pattern.
void quantize_weight_per_channel(ConstMatrixView weight, MatrixView out, std::span<float> scales);

/// Dequantizes a per-channel quantized [N, K] I8/F8_E4M3 weight into F32 `out` [N, K].
void dequantize_weight_per_channel(ConstMatrixView quantized, std::span<float const> scales,
                                   MatrixView out);

}  // namespace slidesparse
