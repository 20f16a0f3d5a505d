/// \file dtype.hpp
/// \brief Element types of checkpoints and transforms; names follow the safetensors spelling.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace slidesparse {

/// Every dtype the safetensors format defines. Transforms accept the weight types
/// (kBF16, kF16, kF32, kF8E4M3, kI8); the others pass through checkpoints unchanged.
enum class DType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

/// Size of one element in bytes.
std::size_t dtype_size(DType dtype) noexcept;

/// The safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType dtype) noexcept;

/// Inverse of dtype_name; nullopt for an unknown spelling.
std::optional<DType> parse_dtype(std::string_view name) noexcept;

/// True for the dtypes prune/slide/quantize operate on: BF16, F16, F32, F8_E4M3, I8.
bool is_weight_dtype(DType dtype) noexcept;

}  // namespace slidesparse
