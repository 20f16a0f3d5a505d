/// \file pattern_check.hpp
/// \brief Which (2N-2):2N patterns a weight satisfies, and where it breaks one.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse {

struct PatternViolation {
  std::int64_t row = 0;
  std::int64_t block = 0;  ///< block index along K: columns [block*2N, block*2N + 2N)
  int nonzeros = 0;
};

struct PatternCheck {
  std::int64_t violating_blocks = 0;
  std::vector<PatternViolation> first;  ///< the first violations in (row, block) order
  bool ok() const noexcept { return violating_blocks == 0; }
};

/// Blocks along K with more than 2N-2 nonzeros (-0.0 counts as zero; a partial last block is
/// padded with zeros). Reports up to `max_reported` violations in row-major order.
PatternCheck check_pattern(ConstMatrixView weight, SparsityPattern pattern,
                           std::size_t max_reported = 10);

/// Zeros and per-pattern violation counts of a weight, for every N in 2..16 in one pass.
struct SparsityProfile {
  std::int64_t elements = 0;
  std::int64_t zeros = 0;
  /// violating_blocks[N] for N = 2..16 (entries 0 and 1 unused).
  std::array<std::int64_t, SparsityPattern::kMaxN + 1> violating_blocks{};

  double zero_fraction() const noexcept {
    return elements ? static_cast<double>(zeros) / static_cast<double>(elements) : 0.0;
  }
  bool satisfies(SparsityPattern pattern) const noexcept {
    return violating_blocks[static_cast<std::size_t>(pattern.half_block())] == 0;
  }
  /// The sparsest satisfied pattern (smallest N), if any.
  std::optional<SparsityPattern> sparsest() const;
};

SparsityProfile profile_sparsity(ConstMatrixView weight);

}  // namespace slidesparse
