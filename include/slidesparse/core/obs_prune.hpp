/// \file obs_prune.hpp
/// \brief Second-order pruning to a (2N-2):2N pattern with error compensation: the SparseGPT
/// algorithm (Frantar & Alistarh, 2023) for the semi-structured case, on the CPU.
///
/// For a linear layer y = x W^T and calibration inputs X [T, K], pruning W [N_out, K] row by row
/// minimizes ||X (w - w')||^2 approximately: columns are visited left to right; at the start of
/// each pattern block of 2N columns the block's prune set is chosen by the optimal-brain-surgeon
/// saliency w_j^2 / [U]_jj^2, and every pruned (zeroed) weight's error is pushed onto the not yet
/// visited columns of its row through the upper Cholesky factor U of H^-1 (H^-1 = U^T U,
/// H = X^T X + damp I):
///     err = (w_j - q_j) / U_jj,   w_c -= err * U_jc   for c > j       (q_j = 0 if pruned, else w_j)
/// Rows are independent given U, so they run in parallel; the result is deterministic.
///
/// The pattern: every block of 2N along K keeps at most 2N-2 nonzeros — 2 weights per full block
/// are zeroed (the lowest saliencies; on equal saliencies the higher column index goes first), a
/// partial last block of r columns zeroes max(0, r - (2N-2)) (its missing columns count as
/// zeros). With H a multiple of the identity there is no compensation and the result equals
/// magnitude pruning (prune_in_place without importance) value for value.
///
/// Cost: O(K^3) for the factorizations of one Gram matrix (shared by every projection reading
/// the same input) and O(N_out K^2) per weight — a CPU path for small models (SmolLM2-135M:
/// about a minute on two cores), not for 7B-class ones.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse {

/// The upper Cholesky factor U of (H + damp I)^-1 for a Gram matrix H [K, K] (row-major,
/// symmetric), damp = `dampening` * mean(diag H). A channel that never fired (H_jj == 0) gets
/// H_jj = 1 first, so the factorization exists; its weights are then pruned like any other.
/// Throws Error(kInvalidInput) for a gram of the wrong size, a non-finite entry, or a matrix
/// that is not positive definite even after dampening (naming the column).
class ObsFactor {
 public:
  ObsFactor(std::span<double const> gram, std::int64_t k, double dampening = 0.01);
  std::int64_t k() const noexcept { return k_; }
  /// U[i][j], j >= i (row-major [K, K], the lower triangle is zero).
  double const* row(std::int64_t i) const noexcept { return u_.data() + i * k_; }

 private:
  std::int64_t k_;
  std::vector<double> u_;
};

/// Prunes `weight` (F32 [N_out, K], K == factor.k()) in place to the pattern as described in
/// the file comment. Every -0.0 becomes +0.0. Returns the number of weights zeroed by pruning
/// (nonzeros set to zero). Throws Error(kInvalidInput) for a non-F32 weight, a K mismatch
/// (naming both) or a NaN weight (naming row and column).
std::int64_t obs_prune_in_place(MatrixView weight, SparsityPattern pattern, ObsFactor const& factor);

}  // namespace slidesparse
