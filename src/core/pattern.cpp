#include "slidesparse/core/pattern.hpp"

#include <charconv>

#include "slidesparse/core/error.hpp"

namespace slidesparse {
namespace {

constexpr std::string_view kFamily =
    "SlideSparse supports the (2N-2):2N family written nonzeros:block, N = 2..16: "
    "2:4, 4:6, 6:8, 8:10, 10:12, 12:14, 14:16, ..., 30:32";

bool parse_int(std::string_view text, int& value) {
  if (text.empty()) return false;
  auto const* end = text.data() + text.size();
  auto const result = std::from_chars(text.data(), end, value);
  return result.ec == std::errc() && result.ptr == end;
}

}  // namespace

SparsityPattern SparsityPattern::from_half_block(int n) {
  if (n < kMinN || n > kMaxN) {
    fail(ErrorKind::kUsage, "pattern with blocks of {} is out of range. {}", 2 * n, kFamily);
  }
  return SparsityPattern(n);
}

SparsityPattern SparsityPattern::parse(std::string_view text) {
  auto const colon = text.find(':');
  int nonzeros = 0;
  int block = 0;
  if (colon == std::string_view::npos || !parse_int(text.substr(0, colon), nonzeros) ||
      !parse_int(text.substr(colon + 1), block)) {
    fail(ErrorKind::kUsage, "pattern '{}' is not of the form nonzeros:block. {}", text, kFamily);
  }
  bool const block_in_range = block % 2 == 0 && block >= 2 * kMinN && block <= 2 * kMaxN;
  if (block_in_range && nonzeros == block - 2) return SparsityPattern(block / 2);
  // The reference repository writes zeros:block: "2:8" there is 6:8 here. Say so.
  if (block_in_range && nonzeros == 2) {
    fail(ErrorKind::kUsage,
         "pattern '{}' would mean 2 nonzeros in every block of {} ({}% zeros), which is not in the "
         "family. If you wrote zeros:block (2 zeros per block of {}), the pattern is {}:{}. {}",
         text, block, 100 * (block - 2) / block, block, block - 2, block, kFamily);
  }
  if (block_in_range && nonzeros > block - 2 && nonzeros < block) {
    fail(ErrorKind::kUsage, "pattern '{}' keeps more than {} of {} values, so it has no 2:4 "
         "decomposition. {}", text, block - 2, block, kFamily);
  }
  fail(ErrorKind::kUsage, "pattern '{}' is not supported. {}", text, kFamily);
}

std::string SparsityPattern::to_string() const { return fmt::format("{}:{}", 2 * n_ - 2, 2 * n_); }

LiftedShape lifted_shape(SparsityPattern pattern, std::int64_t k, std::int64_t alignment) {
  if (k < 1) fail(ErrorKind::kUsage, "K must be >= 1 (got {})", k);
  if (alignment < 4 || alignment % 4 != 0) {
    fail(ErrorKind::kUsage, "K alignment must be a positive multiple of 4 (got {})", alignment);
  }
  // Bound K so that every product below stays far from int64 overflow.
  constexpr std::int64_t kMaxK = std::int64_t{1} << 40;
  if (k > kMaxK) fail(ErrorKind::kUsage, "K = {} exceeds the supported maximum {}", k, kMaxK);
  if (alignment > kMaxK) fail(ErrorKind::kUsage, "K alignment {} is too large", alignment);
  LiftedShape shape;
  shape.k = k;
  shape.alignment = alignment;
  shape.blocks = (k + pattern.block() - 1) / pattern.block();
  shape.k_raw = shape.blocks * pattern.lifted_block();
  shape.k_lifted = (shape.k_raw + alignment - 1) / alignment * alignment;
  return shape;
}

std::int64_t lifted_source_column(SparsityPattern pattern, LiftedShape const& shape,
                                  std::int64_t lifted_column) noexcept {
  if (lifted_column < 0 || lifted_column >= shape.k_raw) return -1;
  std::int64_t const g = lifted_column / pattern.lifted_block();
  std::int64_t const r = lifted_column % pattern.lifted_block();  // = 4w + j
  std::int64_t const w = r / 4;
  std::int64_t const j = r % 4;
  std::int64_t const source = g * pattern.block() + 2 * w + j;
  return source < shape.k ? source : -1;
}

}  // namespace slidesparse
