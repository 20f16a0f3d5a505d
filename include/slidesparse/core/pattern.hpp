/// \file pattern.hpp
/// \brief The (2N-2):2N sparsity family and the lifted (slid) layout: the one source of truth
/// for block sizes, K' and the lifted-column <-> source-column map.
///
/// Notation (used everywhere in the project): a weight is [N_out, K] row-major (rows = output
/// channels, K = input channels); blocks of L = 2N consecutive elements along K hold at most
/// 2N-2 nonzeros. Sliding turns each block into N-1 windows of 4 (stride 2 inside the block),
/// written side by side:
///
///     lifted column  g*(4N-4) + 4w + j   <-   source column  g*2N + 2w + j
///     (block g, window w = 0..N-2, lane j = 0..3)
///
///     K'_raw = ceil(K / 2N) * 4(N-1)         K' = K'_raw rounded up to the K alignment
///
/// Lifted columns whose source column is >= K (the padded tail block) and the alignment tail
/// (K'_raw <= column < K') hold zeros.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace slidesparse {

/// Default K alignment of the lifted layout: cuSPARSELt needs the structured dimension to be a
/// multiple of 32 for 8-bit types (16 for 16-bit), so 32 serves every dtype.
inline constexpr std::int64_t kDefaultKAlignment = 32;

/// A member of the (2N-2):2N family, N = 2..16, written nonzeros:block ("6:8").
class SparsityPattern {
 public:
  static constexpr int kMinN = 2;
  static constexpr int kMaxN = 16;

  /// Parses "6:8". Anything outside the family throws Error(kUsage) with a message that names
  /// the family; a zeros:block spelling ("2:8") gets told which pattern it probably meant.
  static SparsityPattern parse(std::string_view text);

  /// The pattern with blocks of 2n; throws Error(kUsage) unless kMinN <= n <= kMaxN.
  static SparsityPattern from_half_block(int n);

  int half_block() const noexcept { return n_; }          ///< N
  int block() const noexcept { return 2 * n_; }           ///< L = 2N source columns per block
  int max_nonzeros() const noexcept { return 2 * n_ - 2; }  ///< 2N-2 nonzeros allowed per block
  int windows() const noexcept { return n_ - 1; }         ///< N-1 windows of 4 per block
  int lifted_block() const noexcept { return 4 * (n_ - 1); }  ///< 4(N-1) lifted columns per block
  /// Ideal sparse-tensor-core speedup over dense: N/(N-1) (2x for 2:4, 4/3 for 6:8).
  double ideal_speedup() const noexcept { return static_cast<double>(n_) / (n_ - 1); }
  /// Lifted columns per source column when K is a multiple of 2N: 2(N-1)/N.
  double expansion() const noexcept { return 2.0 * (n_ - 1) / n_; }

  std::string to_string() const;  ///< "6:8"

  friend bool operator==(SparsityPattern, SparsityPattern) = default;

 private:
  explicit SparsityPattern(int n) : n_(n) {}
  int n_;
};

/// K and the lifted widths of one weight or activation row.
struct LiftedShape {
  std::int64_t k = 0;          ///< source columns
  std::int64_t blocks = 0;     ///< ceil(K / 2N), the last block possibly partial
  std::int64_t k_raw = 0;      ///< blocks * 4(N-1)
  std::int64_t k_lifted = 0;   ///< K' = k_raw rounded up to alignment
  std::int64_t alignment = 0;  ///< the alignment K' was rounded to (recorded in every artifact)
};

/// The one function that computes K'. Throws Error(kUsage) for k < 1 or alignment < 1, and for
/// an alignment that is not a multiple of 4 (a lifted 2:4 group must never straddle it).
LiftedShape lifted_shape(SparsityPattern pattern, std::int64_t k,
                         std::int64_t alignment = kDefaultKAlignment);

/// Source column of lifted column c, or -1 where the lifted column holds a padding zero
/// (source column >= K, or c in the alignment tail).
std::int64_t lifted_source_column(SparsityPattern pattern, LiftedShape const& shape,
                                  std::int64_t lifted_column) noexcept;

}  // namespace slidesparse
