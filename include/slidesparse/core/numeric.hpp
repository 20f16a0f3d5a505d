/// \file numeric.hpp
/// \brief Bit-exact scalar conversions between float32 and BF16, FP16 and FP8 E4M3, written out
/// in integer arithmetic so the CPU reference does not depend on the host's FP16/FP8 support.
///
/// Rounding is round-to-nearest-even everywhere, matching the GPU conversion instructions
/// (cvt.rn.bf16.f32, cvt.rn.f16.f32, cvt.rn.satfinite.e4m3x2.f32). These functions are the
/// ground truth the CUDA kernels are compared against bit for bit.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace slidesparse {

/// Storage types: just the bits. Arithmetic happens in float32 after conversion.
struct bf16_t {
  std::uint16_t bits;
};
struct fp16_t {
  std::uint16_t bits;
};
struct e4m3_t {
  std::uint8_t bits;
};

/// Largest finite E4M3 value (0x7E / 0xFE). E4M3 ("FN") has no infinities; 0x7F/0xFF are NaN.
inline constexpr float kE4M3Max = 448.0f;

// ------------------------------------------------------------------------------------------------
// BF16: the top 16 bits of a float32.
// ------------------------------------------------------------------------------------------------
inline float bf16_to_float(bf16_t x) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(x.bits) << 16);
}

inline bf16_t float_to_bf16(float f) noexcept {
  std::uint32_t const u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return bf16_t{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};  // NaN stays (quiet) NaN
  }
  std::uint32_t const rounding_bias = 0x7FFFu + ((u >> 16) & 1u);  // ties to even
  return bf16_t{static_cast<std::uint16_t>((u + rounding_bias) >> 16)};
}

// ------------------------------------------------------------------------------------------------
// FP16 (IEEE binary16): 1 sign, 5 exponent (bias 15), 10 mantissa bits.
// ------------------------------------------------------------------------------------------------
inline float fp16_to_float(fp16_t x) noexcept {
  std::uint32_t const sign = static_cast<std::uint32_t>(x.bits & 0x8000u) << 16;
  std::uint32_t const exponent = (x.bits >> 10) & 0x1Fu;
  std::uint32_t const mantissa = x.bits & 0x3FFu;
  if (exponent == 0x1F) {  // inf / NaN
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  }
  if (exponent == 0) {  // zero / subnormal: mantissa * 2^-24, exact in float32
    float const magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline fp16_t float_to_fp16(float f) noexcept {
  std::uint32_t const u = std::bit_cast<std::uint32_t>(f);
  std::uint16_t const sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  std::uint32_t const abs_bits = u & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return fp16_t{static_cast<std::uint16_t>(sign | 0x7E00u)};  // NaN
  float const a = std::bit_cast<float>(abs_bits);
  if (a < 0x1p-14f) {
    // Subnormal range: the result is round(a * 2^24) units of 2^-24. The scaling is exact and
    // std::nearbyint rounds half to even in the default rounding mode. A result of 1024 units
    // is the smallest normal, whose encoding is exactly 0x0400: no special case needed.
    auto const units = static_cast<std::uint16_t>(std::nearbyint(a * 0x1p24f));
    return fp16_t{static_cast<std::uint16_t>(sign | units)};
  }
  // Normal range: round the float32 mantissa to 10 bits (ties to even); a carry into the
  // exponent is the correct result. Overflow past 65504 (after rounding) becomes infinity.
  std::uint32_t const rounded = abs_bits + 0xFFFu + ((abs_bits >> 13) & 1u);
  std::uint32_t const exponent = (rounded >> 23);
  if (exponent >= 127u + 16u) return fp16_t{static_cast<std::uint16_t>(sign | 0x7C00u)};
  std::uint32_t const half_bits = ((exponent - 112u) << 10) | ((rounded >> 13) & 0x3FFu);
  return fp16_t{static_cast<std::uint16_t>(sign | half_bits)};
}

// ------------------------------------------------------------------------------------------------
// FP8 E4M3 (OCP "E4M3FN"): 1 sign, 4 exponent (bias 7), 3 mantissa; max 448; no infinity.
// ------------------------------------------------------------------------------------------------
inline float e4m3_to_float(e4m3_t x) noexcept {
  std::uint32_t const sign = static_cast<std::uint32_t>(x.bits & 0x80u) << 24;
  std::uint32_t const exponent = (x.bits >> 3) & 0xFu;
  std::uint32_t const mantissa = x.bits & 0x7u;
  if (exponent == 0xF && mantissa == 0x7) return std::bit_cast<float>(sign | 0x7FC00000u);  // NaN
  if (exponent == 0) {  // zero / subnormal: mantissa * 2^-9
    float const magnitude = static_cast<float>(mantissa) * 0x1p-9f;
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

/// Branch-free select on 32-bit values (vectorizes where a ?: on floats would not).
inline std::uint32_t select_u32(bool condition, std::uint32_t if_true, std::uint32_t if_false) noexcept {
  std::uint32_t const mask = 0u - static_cast<std::uint32_t>(condition);
  return (if_true & mask) | (if_false & ~mask);
}

/// float32 -> E4M3, round to nearest even, saturating to +-448 (the "satfinite" behaviour of
/// the hardware conversion: +-inf and every finite value beyond the range become +-448).
/// NaN becomes the positive NaN 0x7F whatever its sign, as the hardware conversion does.
/// Branch-free, so loops over it vectorize.
inline e4m3_t float_to_e4m3_satfinite(float f) noexcept {
  std::uint32_t const u = std::bit_cast<std::uint32_t>(f);
  std::uint32_t const sign = (u >> 24) & 0x80u;
  std::uint32_t const abs_bits = u & 0x7FFFFFFFu;
  // Normal range [2^-6, 448): round the float32 mantissa to 3 bits (ties to even); a carry into
  // the exponent is the correct result. The E4M3 code is then (exponent - 120) << 3 | mantissa,
  // which is the rounded float32 bits shifted down by 20 minus (120 << 3).
  std::uint32_t const rounded = abs_bits + 0x7FFFFu + ((abs_bits >> 20) & 1u);
  std::uint32_t const normal_code = (rounded >> 20) - (120u << 3);
  // Subnormal range [0, 2^-6): the code is round(|f| * 2^9). Adding 2^14 (whose ulp is 2^-9)
  // makes the FPU round |f| to a multiple of 2^-9, ties to even, in the default rounding mode;
  // the low mantissa bits of the sum are the code. 8 units is the smallest normal, encoded 0x08.
  std::uint32_t const subnormal_code =
      std::bit_cast<std::uint32_t>(std::bit_cast<float>(abs_bits) + 16384.0f) - 0x46800000u;
  constexpr std::uint32_t kMinNormalBits = 0x3C800000u;  // 2^-6
  constexpr std::uint32_t kMaxBits = 0x43E00000u;        // 448
  constexpr std::uint32_t kInfBits = 0x7F800000u;
  std::uint32_t code = select_u32(abs_bits < kMinNormalBits, subnormal_code, normal_code);
  code = select_u32(abs_bits >= kMaxBits, 0x7Eu, code);  // satfinite (also +-inf)
  code = select_u32(abs_bits > kInfBits, 0x7Fu, sign | code);  // NaN drops the sign
  return e4m3_t{static_cast<std::uint8_t>(code)};
}

// ------------------------------------------------------------------------------------------------
// Unaligned element access. Checkpoint data is not guaranteed to be aligned for its dtype (a
// foreign safetensors header length need not be a multiple of 8), so all element loads and
// stores go through memcpy, which compiles to a plain move.
// ------------------------------------------------------------------------------------------------
template <typename T>
inline T load(void const* p) noexcept {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}
template <typename T>
inline void store(void* p, T value) noexcept {
  std::memcpy(p, &value, sizeof(T));
}

}  // namespace slidesparse
