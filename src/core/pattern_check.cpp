#include "slidesparse/core/pattern_check.hpp"

#include <bit>
#include <algorithm>
#include <mutex>

#include "slidesparse/core/parallel.hpp"

namespace slidesparse {
namespace {

// Nonzero mask of one row: bit c of word c/64 is set when column c is nonzero.
template <typename Elem>
void row_nonzero_mask(std::byte const* row, std::int64_t cols, std::vector<std::uint64_t>& mask) {
  using Bits = typename Elem::Bits;
  mask.assign(static_cast<std::size_t>((cols + 63) / 64), 0);
  for (std::int64_t c = 0; c < cols; ++c) {
    if (!Elem::is_zero(load<Bits>(row + c * sizeof(Bits)))) {
      mask[static_cast<std::size_t>(c / 64)] |= std::uint64_t{1} << (c % 64);
    }
  }
}

// Number of set bits in columns [begin, begin+len) of the mask, len <= 32.
int count_bits(std::vector<std::uint64_t> const& mask, std::int64_t begin, int len) {
  std::size_t const word = static_cast<std::size_t>(begin / 64);
  int const offset = static_cast<int>(begin % 64);
  // Assemble up to 64 bits starting at `begin` from two neighbouring words.
  std::uint64_t bits = mask[word] >> offset;
  if (offset != 0 && word + 1 < mask.size()) bits |= mask[word + 1] << (64 - offset);
  std::uint64_t const keep = len >= 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << len) - 1);
  return std::popcount(bits & keep);
}

}  // namespace

PatternCheck check_pattern(ConstMatrixView weight, SparsityPattern pattern,
                           std::size_t max_reported) {
  PatternCheck result;
  std::mutex merge;
  std::vector<PatternViolation> all_first;
  dispatch_weight_dtype(weight.dtype, weight.name, [&](auto elem) {
    using Elem = decltype(elem);
    parallel_for(weight.rows, weight.cols * static_cast<std::int64_t>(dtype_size(weight.dtype)),
                 [&](std::int64_t begin, std::int64_t end) {
      std::vector<std::uint64_t> mask;
      std::int64_t violating = 0;
      std::vector<PatternViolation> first;
      for (std::int64_t r = begin; r < end; ++r) {
        row_nonzero_mask<Elem>(weight.row(r), weight.cols, mask);
        for (std::int64_t start = 0, g = 0; start < weight.cols; start += pattern.block(), ++g) {
          int const len = static_cast<int>(std::min<std::int64_t>(pattern.block(), weight.cols - start));
          int const nz = count_bits(mask, start, len);
          if (nz > pattern.max_nonzeros()) {
            ++violating;
            if (first.size() < max_reported) first.push_back({weight.row_offset + r, g, nz});
          }
        }
      }
      std::lock_guard lock(merge);
      result.violating_blocks += violating;
      all_first.insert(all_first.end(), first.begin(), first.end());
    });
  });
  // Chunks finish in any order; report the globally first violations.
  std::sort(all_first.begin(), all_first.end(), [](auto const& a, auto const& b) {
    return a.row != b.row ? a.row < b.row : a.block < b.block;
  });
  if (all_first.size() > max_reported) all_first.resize(max_reported);
  result.first = std::move(all_first);
  return result;
}

std::optional<SparsityPattern> SparsityProfile::sparsest() const {
  for (int n = SparsityPattern::kMinN; n <= SparsityPattern::kMaxN; ++n) {
    if (violating_blocks[static_cast<std::size_t>(n)] == 0) return SparsityPattern::from_half_block(n);
  }
  return std::nullopt;
}

SparsityProfile profile_sparsity(ConstMatrixView weight) {
  SparsityProfile profile;
  profile.elements = weight.rows * weight.cols;
  std::mutex merge;
  dispatch_weight_dtype(weight.dtype, weight.name, [&](auto elem) {
    using Elem = decltype(elem);
    parallel_for(weight.rows, weight.cols * static_cast<std::int64_t>(dtype_size(weight.dtype)),
                 [&](std::int64_t begin, std::int64_t end) {
      SparsityProfile local;
      std::vector<std::uint64_t> mask;
      for (std::int64_t r = begin; r < end; ++r) {
        row_nonzero_mask<Elem>(weight.row(r), weight.cols, mask);
        std::int64_t nonzeros = 0;
        for (auto word : mask) nonzeros += std::popcount(word);
        local.zeros += weight.cols - nonzeros;
        for (int n = SparsityPattern::kMinN; n <= SparsityPattern::kMaxN; ++n) {
          int const block = 2 * n;
          for (std::int64_t start = 0; start < weight.cols; start += block) {
            int const len = static_cast<int>(std::min<std::int64_t>(block, weight.cols - start));
            if (count_bits(mask, start, len) > block - 2) ++local.violating_blocks[static_cast<std::size_t>(n)];
          }
        }
      }
      std::lock_guard lock(merge);
      profile.zeros += local.zeros;
      for (std::size_t n = 0; n < profile.violating_blocks.size(); ++n) {
        profile.violating_blocks[n] += local.violating_blocks[n];
      }
    });
  });
  return profile;
}

}  // namespace slidesparse
