/// \file lift.hpp
/// \brief Activation lifting (the CPU reference of the GPU quant+lift kernel).
///
/// For a slid layout, x'[g*(4N-4) + 4w + j] = x[g*2N + 2w + j] (0 where the source column is
/// >= K and in the alignment tail), so that X * W^T == X' * W'^T exactly. The dense layout is
/// the identity with the same zero tail up to K' = round_up(K, alignment).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse {

class ActivationLayout {
 public:
  /// Lifted layout of a (2N-2):2N weight with K input channels.
  static ActivationLayout slid(SparsityPattern pattern, std::int64_t k,
                               std::int64_t alignment = kDefaultKAlignment);
  /// Identity layout of a dense weight: K' = round_up(K, alignment).
  static ActivationLayout dense(std::int64_t k, std::int64_t alignment = kDefaultKAlignment);

  std::int64_t k() const noexcept { return shape_.k; }
  std::int64_t k_lifted() const noexcept { return shape_.k_lifted; }
  LiftedShape const& shape() const noexcept { return shape_; }
  std::optional<SparsityPattern> pattern() const noexcept { return pattern_; }
  /// Source column of every lifted column (-1 for a padding zero); size K'.
  std::span<std::int64_t const> gather() const noexcept { return gather_; }

 private:
  ActivationLayout(std::optional<SparsityPattern> pattern, LiftedShape shape);
  std::optional<SparsityPattern> pattern_;
  LiftedShape shape_;
  std::vector<std::int64_t> gather_;
};

/// x [M, K] -> x' [M, K'] of the same dtype (any dtype: this is pure data movement).
void lift(ConstMatrixView x, ActivationLayout const& layout, MatrixView out);

/// Fused per-token quantization and lift: x [M, K] BF16/F16/F32 -> x' [M, K'] I8 or F8_E4M3
/// and scales [M] F32, with the numeric contract of quantize.hpp. The per-token absmax runs over
/// the original K columns (duplicated columns cannot change it).
void quantize_lift(ConstMatrixView x, ActivationLayout const& layout, MatrixView out,
                   std::span<float> scales);

}  // namespace slidesparse
