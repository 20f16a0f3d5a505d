/// \file prune.hpp
/// \brief Pruning a [N_out, K] weight to a (2N-2):2N pattern along K.
#pragma once

#include <cstdint>
#include <span>

#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse {

struct PruneStats {
  std::int64_t zeroed = 0;         ///< nonzeros set to zero by pruning
  std::int64_t blocks_pruned = 0;  ///< blocks that had more than 2N-2 nonzeros
  std::int64_t negative_zeros = 0; ///< -0.0 values rewritten as +0.0
};

/// Prunes `weight` in place so every block of 2N along K (the last block may be partial; its
/// missing columns count as zeros) keeps at most 2N-2 nonzeros.
///
/// Score of w[i][j]: |w[i][j]| (magnitude pruning) or |w[i][j]| * importance[j] when an
/// importance vector of length K is given (the Wanda criterion, importance = per-input-channel
/// activation norm). Existing zeros count as zeros: a block that already satisfies the pattern
/// is left alone. Among nonzeros, the lowest scores are zeroed; on equal scores the lower column
/// index is kept (deterministic). Every -0.0 is rewritten as +0.0.
///
/// Throws Error(kInvalidInput) for a NaN weight (naming tensor, row, column) and for an
/// importance vector of the wrong length or with a negative or non-finite entry.
/// Works for BF16, F16, F32, F8_E4M3 and I8 (quantized weights are pruned on their codes: a
/// per-row scale does not change the order within a row).
PruneStats prune_in_place(MatrixView weight, SparsityPattern pattern,
                          std::span<float const> importance = {});

}  // namespace slidesparse
