/// \file slide.hpp
/// \brief Sliding-window decomposition of a (2N-2):2N weight into a 2:4 weight W' [N_out, K'],
/// and its inverse. Layout: see pattern.hpp.
#pragma once

#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse {

/// Writes W' = slide(W). `out` must be [W.rows, shape.k_lifted] of W's dtype with
/// shape == lifted_shape(pattern, W.cols, alignment). Every element of `out` is written.
///
/// Window choice is greedy: windows left to right, each taking up to 2 not-yet-placed nonzeros
/// of its 4 columns in lane order. This places every nonzero of any block with <= 2N-2 nonzeros
/// (earliest-deadline-first on interval constraints; the only binding constraint is the count),
/// so a failure means the block breaks the pattern: Error(kInvalidInput) names the tensor, row,
/// block and its columns. No value is ever dropped. -0.0 is treated as (and written as) +0.0.
void slide(ConstMatrixView weight, SparsityPattern pattern, LiftedShape const& shape,
           MatrixView out);

/// Inverse of slide: W [rows, shape.k] from W' [rows, shape.k_lifted]. Validates W' as it goes:
/// every group of 4 lifted columns is 2:4, no nonzero sits in padding (source column >= K or the
/// alignment tail), and no source column receives two nonzeros; violations throw
/// Error(kInvalidInput) naming tensor, row and lifted column.
void unslide(ConstMatrixView lifted, SparsityPattern pattern, LiftedShape const& shape,
             MatrixView out);

}  // namespace slidesparse
