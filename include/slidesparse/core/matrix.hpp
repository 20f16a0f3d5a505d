/// \file matrix.hpp
/// \brief Row-major matrix views over raw bytes, and per-dtype element traits.
///
/// Transforms work on [rows, cols] row-major matrices whose element type is only known at run
/// time (it comes from a checkpoint). dispatch_weight_dtype() turns the run-time DType into a
/// compile-time element trait so the inner loops are typed; an unsupported dtype fails loudly.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "slidesparse/core/dtype.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"

namespace slidesparse {

/// Read-only [rows, cols] row-major view. `name` and `row_offset` are for error messages only:
/// a view of rows [b, e) of a tensor carries row_offset = b so errors name the tensor's row.
struct ConstMatrixView {
  DType dtype = DType::kF32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::byte const* data = nullptr;
  std::string_view name;
  std::int64_t row_offset = 0;

  std::byte const* row(std::int64_t r) const noexcept {
    return data + static_cast<std::size_t>(r) * static_cast<std::size_t>(cols) * dtype_size(dtype);
  }
  std::size_t nbytes() const noexcept {
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * dtype_size(dtype);
  }
};

/// Writable [rows, cols] row-major view (see ConstMatrixView for name and row_offset).
struct MatrixView {
  DType dtype = DType::kF32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::byte* data = nullptr;
  std::string_view name;
  std::int64_t row_offset = 0;

  std::byte* row(std::int64_t r) const noexcept {
    return data + static_cast<std::size_t>(r) * static_cast<std::size_t>(cols) * dtype_size(dtype);
  }
  std::size_t nbytes() const noexcept {
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * dtype_size(dtype);
  }
  operator ConstMatrixView() const noexcept { return {dtype, rows, cols, data, name, row_offset}; }
};

// ------------------------------------------------------------------------------------------------
// Element traits. `Bits` is the storage; zero tests look at the bits so that -0.0 counts as zero
// (the brief's rule: canonicalize -0.0 to +0.0 before choosing windows or compressing).
// ------------------------------------------------------------------------------------------------
//
// magnitude_key(b) is an unsigned integer ordered like |value| (sign-magnitude floats compare
// like their magnitude bits), so pruning compares integers; is_nan flags values with no order.
struct ElemBF16 {
  static constexpr DType kDType = DType::kBF16;
  using Bits = std::uint16_t;
  static float to_float(Bits b) noexcept { return bf16_to_float(bf16_t{b}); }
  static bool is_zero(Bits b) noexcept { return (b & 0x7FFFu) == 0; }
  static std::uint32_t magnitude_key(Bits b) noexcept { return b & 0x7FFFu; }
  static bool is_nan(Bits b) noexcept { return (b & 0x7FFFu) > 0x7F80u; }
};
struct ElemF16 {
  static constexpr DType kDType = DType::kF16;
  using Bits = std::uint16_t;
  static float to_float(Bits b) noexcept { return fp16_to_float(fp16_t{b}); }
  static bool is_zero(Bits b) noexcept { return (b & 0x7FFFu) == 0; }
  static std::uint32_t magnitude_key(Bits b) noexcept { return b & 0x7FFFu; }
  static bool is_nan(Bits b) noexcept { return (b & 0x7FFFu) > 0x7C00u; }
};
struct ElemF32 {
  static constexpr DType kDType = DType::kF32;
  using Bits = std::uint32_t;
  static float to_float(Bits b) noexcept { return std::bit_cast<float>(b); }
  static bool is_zero(Bits b) noexcept { return (b & 0x7FFFFFFFu) == 0; }
  static std::uint32_t magnitude_key(Bits b) noexcept { return b & 0x7FFFFFFFu; }
  static bool is_nan(Bits b) noexcept { return (b & 0x7FFFFFFFu) > 0x7F800000u; }
};
struct ElemF8E4M3 {
  static constexpr DType kDType = DType::kF8E4M3;
  using Bits = std::uint8_t;
  static float to_float(Bits b) noexcept { return e4m3_to_float(e4m3_t{b}); }
  static bool is_zero(Bits b) noexcept { return (b & 0x7Fu) == 0; }
  static std::uint32_t magnitude_key(Bits b) noexcept { return b & 0x7Fu; }
  static bool is_nan(Bits b) noexcept { return (b & 0x7Fu) == 0x7Fu; }
};
struct ElemI8 {
  static constexpr DType kDType = DType::kI8;
  using Bits = std::uint8_t;
  static float to_float(Bits b) noexcept { return static_cast<float>(static_cast<std::int8_t>(b)); }
  static bool is_zero(Bits b) noexcept { return b == 0; }
  static std::uint32_t magnitude_key(Bits b) noexcept {
    int const v = static_cast<std::int8_t>(b);
    return static_cast<std::uint32_t>(v < 0 ? -v : v);
  }
  static bool is_nan(Bits) noexcept { return false; }
};

/// Calls f(ElemXxx{}) for the weight dtypes; throws Error(kInvalidInput) naming `what` for any
/// other dtype (no silent fall-through).
template <typename F>
decltype(auto) dispatch_weight_dtype(DType dtype, std::string_view what, F&& f) {
  switch (dtype) {
    case DType::kBF16: return f(ElemBF16{});
    case DType::kF16: return f(ElemF16{});
    case DType::kF32: return f(ElemF32{});
    case DType::kF8E4M3: return f(ElemF8E4M3{});
    case DType::kI8: return f(ElemI8{});
    default:
      fail(ErrorKind::kInvalidInput,
           "tensor '{}' has dtype {}; this operation supports BF16, F16, F32, F8_E4M3 and I8",
           what, dtype_name(dtype));
  }
}

/// out[i] = value of element i of `src` (`out.size()` elements of a weight dtype: BF16, F16,
/// F32, F8_E4M3, I8). Throws Error(kInvalidInput) naming `what` for any other dtype.
inline void to_float(DType dtype, std::byte const* src, std::span<float> out, std::string_view what) {
  dispatch_weight_dtype(dtype, what, [&](auto elem) {
    using Elem = decltype(elem);
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i] = Elem::to_float(load<typename Elem::Bits>(src + i * sizeof(typename Elem::Bits)));
    }
  });
}

/// Calls f(ElemXxx{}) for the 16/32-bit float dtypes (activations, unquantized weights).
template <typename F>
decltype(auto) dispatch_float_dtype(DType dtype, std::string_view what, F&& f) {
  switch (dtype) {
    case DType::kBF16: return f(ElemBF16{});
    case DType::kF16: return f(ElemF16{});
    case DType::kF32: return f(ElemF32{});
    default:
      fail(ErrorKind::kInvalidInput, "tensor '{}' has dtype {}; expected BF16, F16 or F32", what,
           dtype_name(dtype));
  }
}

}  // namespace slidesparse
