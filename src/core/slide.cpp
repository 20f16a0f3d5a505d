#include "slidesparse/core/slide.hpp"

#include <array>
#include <cstring>

#include "slidesparse/core/parallel.hpp"

namespace slidesparse {
namespace {

void check_views(ConstMatrixView in, std::int64_t in_cols, MatrixView out, std::int64_t out_cols,
                 char const* op) {
  if (in.cols != in_cols || out.rows != in.rows || out.cols != out_cols || out.dtype != in.dtype) {
    fail(ErrorKind::kInternal,
         "{} of tensor '{}': expected input [{}, {}] and output [{}, {}] {}, got input [{}, {}] {} "
         "and output [{}, {}] {}",
         op, in.name, in.rows, in_cols, in.rows, out_cols, dtype_name(in.dtype), in.rows, in.cols,
         dtype_name(in.dtype), out.rows, out.cols, dtype_name(out.dtype));
  }
}

template <typename Elem>
void slide_rows(ConstMatrixView w, SparsityPattern pattern, LiftedShape const& shape,
                MatrixView out, std::int64_t row_begin, std::int64_t row_end) {
  using Bits = typename Elem::Bits;
  int const block = pattern.block();
  int const lifted_block = pattern.lifted_block();
  std::array<int, 2 * SparsityPattern::kMaxN> nonzero_pos{};
  for (std::int64_t r = row_begin; r < row_end; ++r) {
    std::byte const* const src_row = w.row(r);
    std::byte* const dst_row = out.row(r);
    std::memset(dst_row, 0, static_cast<std::size_t>(out.cols) * sizeof(Bits));
    for (std::int64_t g = 0; g < shape.blocks; ++g) {
      std::int64_t const start = g * block;
      int const len = static_cast<int>(std::min<std::int64_t>(block, shape.k - start));
      std::byte const* const src = src_row + static_cast<std::size_t>(start) * sizeof(Bits);
      std::byte* const dst = dst_row + static_cast<std::size_t>(g * lifted_block) * sizeof(Bits);
      int count = 0;
      for (int i = 0; i < len; ++i) {
        if (!Elem::is_zero(load<Bits>(src + i * sizeof(Bits)))) nonzero_pos[count++] = i;
      }
      // Greedy windows: window w covers block positions 2w .. 2w+3 and writes lifted positions
      // 4w .. 4w+3 (lane j = position - 2w).
      int next = 0;
      for (int win = 0; win < pattern.windows() && next < count; ++win) {
        for (int taken = 0; taken < 2 && next < count && nonzero_pos[next] <= 2 * win + 3;
             ++taken, ++next) {
          int const p = nonzero_pos[next];
          if (p < 2 * win) break;  // left behind by earlier windows: cannot be placed any more
          std::memcpy(dst + (4 * win + (p - 2 * win)) * sizeof(Bits), src + p * sizeof(Bits),
                      sizeof(Bits));
        }
      }
      if (next < count) {
        if (count <= pattern.max_nonzeros()) {
          fail(ErrorKind::kInternal, "slide of tensor '{}': row {}, block {} has {} nonzeros but "
               "greedy placement failed (a bug)", w.name, w.row_offset + r, g, count);
        }
        fail(ErrorKind::kInvalidInput,
             "tensor '{}': row {}, block {} (columns {}..{}) has {} nonzeros; pattern {} allows "
             "at most {} per block of {}. Prune it first (slidesparse convert --pattern {})",
             w.name, w.row_offset + r, g, start, start + len - 1, count, pattern.to_string(),
             pattern.max_nonzeros(), block, pattern.to_string());
      }
    }
  }
}

template <typename Elem>
void unslide_rows(ConstMatrixView lifted, SparsityPattern pattern, LiftedShape const& shape,
                  MatrixView out, std::int64_t row_begin, std::int64_t row_end) {
  using Bits = typename Elem::Bits;
  for (std::int64_t r = row_begin; r < row_end; ++r) {
    std::byte const* const src_row = lifted.row(r);
    std::byte* const dst_row = out.row(r);
    std::memset(dst_row, 0, static_cast<std::size_t>(out.cols) * sizeof(Bits));
    for (std::int64_t group = 0; group < shape.k_lifted; group += 4) {
      int in_group = 0;
      for (std::int64_t c = group; c < group + 4; ++c) {
        Bits const bits = load<Bits>(src_row + static_cast<std::size_t>(c) * sizeof(Bits));
        if (Elem::is_zero(bits)) continue;
        if (++in_group > 2) {
          fail(ErrorKind::kInvalidInput, "slid tensor '{}': row {}, lifted columns {}..{} hold "
               "more than 2 nonzeros (not 2:4)", lifted.name, lifted.row_offset + r, group, group + 3);
        }
        std::int64_t const source = lifted_source_column(pattern, shape, c);
        if (source < 0) {
          fail(ErrorKind::kInvalidInput, "slid tensor '{}': row {}, lifted column {} is nonzero "
               "but lies in padding (K = {}, K'_raw = {}, K' = {})", lifted.name, lifted.row_offset + r, c, shape.k,
               shape.k_raw, shape.k_lifted);
        }
        std::byte* const dst = dst_row + static_cast<std::size_t>(source) * sizeof(Bits);
        if (!Elem::is_zero(load<Bits>(dst))) {
          fail(ErrorKind::kInvalidInput, "slid tensor '{}': row {}, source column {} appears "
               "twice (second time at lifted column {})", lifted.name, lifted.row_offset + r, source, c);
        }
        store<Bits>(dst, bits);
      }
    }
  }
}

}  // namespace

void slide(ConstMatrixView weight, SparsityPattern pattern, LiftedShape const& shape,
           MatrixView out) {
  check_views(weight, shape.k, out, shape.k_lifted, "slide");
  dispatch_weight_dtype(weight.dtype, weight.name, [&](auto elem) {
    parallel_for(weight.rows, shape.k_lifted * static_cast<std::int64_t>(dtype_size(weight.dtype)),
                 [&](std::int64_t begin, std::int64_t end) {
                   slide_rows<decltype(elem)>(weight, pattern, shape, out, begin, end);
                 });
  });
}

void unslide(ConstMatrixView lifted, SparsityPattern pattern, LiftedShape const& shape,
             MatrixView out) {
  check_views(lifted, shape.k_lifted, out, shape.k, "unslide");
  dispatch_weight_dtype(lifted.dtype, lifted.name, [&](auto elem) {
    parallel_for(lifted.rows, shape.k_lifted * static_cast<std::int64_t>(dtype_size(lifted.dtype)),
                 [&](std::int64_t begin, std::int64_t end) {
                   unslide_rows<decltype(elem)>(lifted, pattern, shape, out, begin, end);
                 });
  });
}

}  // namespace slidesparse
