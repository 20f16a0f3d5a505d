#include "slidesparse/core/dtype.hpp"

#include <array>
#include <utility>

namespace slidesparse {
namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeEntry, 15> kDTypes{{
    {DType::kBool, "BOOL", 1},
    {DType::kU8, "U8", 1},
    {DType::kI8, "I8", 1},
    {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI16, "I16", 2},
    {DType::kU16, "U16", 2},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kI32, "I32", 4},
    {DType::kU32, "U32", 4},
    {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
    {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},
}};

// The table is indexed by the enum value, so its order must mirror the enum declaration.
constexpr bool table_matches_enum() {
  for (std::size_t i = 0; i < kDTypes.size(); ++i) {
    if (static_cast<std::size_t>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(table_matches_enum(), "kDTypes order must follow the DType enum");

DTypeEntry const& entry(DType dtype) noexcept { return kDTypes[static_cast<std::size_t>(dtype)]; }

}  // namespace

std::size_t dtype_size(DType dtype) noexcept { return entry(dtype).size; }

std::string_view dtype_name(DType dtype) noexcept { return entry(dtype).name; }

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (auto const& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return std::nullopt;
}

bool is_weight_dtype(DType dtype) noexcept {
  switch (dtype) {
    case DType::kBF16:
    case DType::kF16:
    case DType::kF32:
    case DType::kF8E4M3:
    case DType::kI8:
      return true;
    default:
      return false;
  }
}

}  // namespace slidesparse
