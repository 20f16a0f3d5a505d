#include "slidesparse/core/prune.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <cmath>

#include "slidesparse/core/parallel.hpp"

namespace slidesparse {
namespace {

void check_importance(std::span<float const> importance, std::int64_t k, std::string_view name) {
  if (importance.empty()) return;
  if (static_cast<std::int64_t>(importance.size()) != k) {
    fail(ErrorKind::kInvalidInput,
         "importance vector for tensor '{}' has {} entries; the weight has K = {} input channels",
         name, importance.size(), k);
  }
  for (std::size_t j = 0; j < importance.size(); ++j) {
    if (!std::isfinite(importance[j]) || importance[j] < 0.0f) {
      fail(ErrorKind::kInvalidInput,
           "importance vector for tensor '{}': entry {} is {}; entries must be finite and >= 0",
           name, j, importance[j]);
    }
  }
}

// Sort key of a nonzero at block position i: score bits above, (31 - i) below, so the minimum
// key is the lowest score and, among equal scores, the highest index (the lower index is kept).
// Scores are non-negative, so their float bits order like their values.
inline std::uint64_t prune_key(std::uint32_t score_bits, int i) noexcept {
  return (std::uint64_t{score_bits} << 5) | static_cast<std::uint64_t>(31 - i);
}
constexpr std::uint64_t kNotACandidate = ~std::uint64_t{0};

// Prunes one block of `len` elements at `base` (block starts at column `start` of row `row`).
// kLen > 0 fixes the length at compile time so the loops unroll; kLen == 0 uses `len`.
template <typename Elem, int kLen>
void prune_block(std::byte* base, int len, int keep, std::int64_t start, std::int64_t row,
                 std::span<float const> importance, MatrixView const& w, PruneStats& stats) {
  using Bits = typename Elem::Bits;
  if constexpr (kLen > 0) len = kLen;
  std::array<std::uint64_t, 2 * SparsityPattern::kMaxN> key;
  int nonzeros = 0;
  for (int i = 0; i < len; ++i) {
    Bits const bits = load<Bits>(base + i * sizeof(Bits));
    if (Elem::is_zero(bits)) {
      if (bits != 0) {
        store<Bits>(base + i * sizeof(Bits), Bits{0});
        ++stats.negative_zeros;
      }
      key[i] = kNotACandidate;
      continue;
    }
    if (Elem::is_nan(bits)) {
      fail(ErrorKind::kInvalidInput, "tensor '{}': row {}, column {} is NaN; cannot prune",
           w.name, w.row_offset + row, start + i);
    }
    std::uint32_t score_bits = Elem::magnitude_key(bits);
    if (!importance.empty()) {
      float const s = importance[static_cast<std::size_t>(start + i)];
      // s == 0 scores 0 even for an infinite weight (inf * 0 would be NaN).
      float const score = s == 0.0f ? 0.0f : std::fabs(Elem::to_float(bits)) * s;
      score_bits = std::bit_cast<std::uint32_t>(score);
    }
    key[i] = prune_key(score_bits, i);
    ++nonzeros;
  }
  if (nonzeros <= keep) return;
  ++stats.blocks_pruned;
  for (int excess = nonzeros - keep; excess > 0; --excess) {
    int victim = 0;
    for (int i = 1; i < len; ++i) victim = key[i] < key[victim] ? i : victim;
    store<Bits>(base + victim * sizeof(Bits), Bits{0});
    key[victim] = kNotACandidate;
    ++stats.zeroed;
  }
}

template <typename Elem, int kBlock>
PruneStats prune_rows(MatrixView w, SparsityPattern pattern, std::span<float const> importance,
                      std::int64_t row_begin, std::int64_t row_end) {
  using Bits = typename Elem::Bits;
  PruneStats stats;
  int const block = pattern.block();
  int const keep = pattern.max_nonzeros();
  std::int64_t const full_end = w.cols / block * block;
  for (std::int64_t r = row_begin; r < row_end; ++r) {
    std::byte* const row = w.row(r);
    for (std::int64_t start = 0; start < full_end; start += block) {
      prune_block<Elem, kBlock>(row + static_cast<std::size_t>(start) * sizeof(Bits), block, keep,
                                start, r, importance, w, stats);
    }
    if (full_end < w.cols) {  // partial last block: its missing columns count as zeros
      prune_block<Elem, 0>(row + static_cast<std::size_t>(full_end) * sizeof(Bits),
                           static_cast<int>(w.cols - full_end), keep, full_end, r, importance, w, stats);
    }
  }
  return stats;
}

// Compile-time block lengths for the common patterns (2:4 .. 14:16); the rest run generic.
template <typename Elem>
PruneStats prune_rows_dispatch(MatrixView w, SparsityPattern pattern, std::span<float const> importance,
                               std::int64_t row_begin, std::int64_t row_end) {
  switch (pattern.block()) {
    case 4: return prune_rows<Elem, 4>(w, pattern, importance, row_begin, row_end);
    case 6: return prune_rows<Elem, 6>(w, pattern, importance, row_begin, row_end);
    case 8: return prune_rows<Elem, 8>(w, pattern, importance, row_begin, row_end);
    case 10: return prune_rows<Elem, 10>(w, pattern, importance, row_begin, row_end);
    case 12: return prune_rows<Elem, 12>(w, pattern, importance, row_begin, row_end);
    case 14: return prune_rows<Elem, 14>(w, pattern, importance, row_begin, row_end);
    case 16: return prune_rows<Elem, 16>(w, pattern, importance, row_begin, row_end);
    default: return prune_rows<Elem, 0>(w, pattern, importance, row_begin, row_end);
  }
}

}  // namespace

PruneStats prune_in_place(MatrixView weight, SparsityPattern pattern,
                          std::span<float const> importance) {
  check_importance(importance, weight.cols, weight.name);
  return dispatch_weight_dtype(weight.dtype, weight.name, [&](auto elem) {
    using Elem = decltype(elem);
    std::atomic<std::int64_t> zeroed{0}, blocks{0}, negative_zeros{0};
    parallel_for(weight.rows, weight.cols * static_cast<std::int64_t>(dtype_size(weight.dtype)),
                 [&](std::int64_t begin, std::int64_t end) {
                   PruneStats const s = prune_rows_dispatch<Elem>(weight, pattern, importance, begin, end);
                   zeroed += s.zeroed;
                   blocks += s.blocks_pruned;
                   negative_zeros += s.negative_zeros;
                 });
    return PruneStats{zeroed.load(), blocks.load(), negative_zeros.load()};
  });
}

}  // namespace slidesparse
