#include "slidesparse/core/lift.hpp"

#include <cstring>

#include "slidesparse/core/parallel.hpp"
#include "slidesparse/core/quantize.hpp"

namespace slidesparse {

ActivationLayout::ActivationLayout(std::optional<SparsityPattern> pattern, LiftedShape shape)
    : pattern_(pattern), shape_(shape), gather_(static_cast<std::size_t>(shape.k_lifted)) {
  for (std::int64_t c = 0; c < shape_.k_lifted; ++c) {
    gather_[static_cast<std::size_t>(c)] =
        pattern_ ? lifted_source_column(*pattern_, shape_, c) : (c < shape_.k ? c : -1);
  }
}

ActivationLayout ActivationLayout::slid(SparsityPattern pattern, std::int64_t k,
                                        std::int64_t alignment) {
  return ActivationLayout(pattern, lifted_shape(pattern, k, alignment));
}

ActivationLayout ActivationLayout::dense(std::int64_t k, std::int64_t alignment) {
  // The 2:4 lifted layout is the identity (one window per block of 4); its K' is K rounded up
  // to 4 and then to the alignment, which equals round_up(K, alignment) since 4 | alignment.
  LiftedShape shape = lifted_shape(SparsityPattern::from_half_block(2), k, alignment);
  shape.blocks = 0;
  shape.k_raw = k;
  return ActivationLayout(std::nullopt, shape);
}

namespace {

void check_lift_views(ConstMatrixView x, ActivationLayout const& layout, MatrixView out) {
  if (x.cols != layout.k() || out.rows != x.rows || out.cols != layout.k_lifted()) {
    fail(ErrorKind::kInternal, "lift of '{}': expected [{}, {}] -> [{}, {}], got [{}, {}] -> [{}, {}]",
         x.name, x.rows, layout.k(), x.rows, layout.k_lifted(), x.rows, x.cols, out.rows,
         out.cols);
  }
}

}  // namespace

void lift(ConstMatrixView x, ActivationLayout const& layout, MatrixView out) {
  check_lift_views(x, layout, out);
  if (out.dtype != x.dtype) {
    fail(ErrorKind::kInternal, "lift of '{}': output dtype differs from input", x.name);
  }
  std::size_t const elem = dtype_size(x.dtype);
  auto const gather = layout.gather();
  parallel_for(x.rows, layout.k_lifted() * static_cast<std::int64_t>(elem),
               [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      std::byte const* const src = x.row(r);
      std::byte* const dst = out.row(r);
      for (std::size_t c = 0; c < gather.size(); ++c) {
        if (gather[c] < 0) {
          std::memset(dst + c * elem, 0, elem);
        } else {
          std::memcpy(dst + c * elem, src + static_cast<std::size_t>(gather[c]) * elem, elem);
        }
      }
    }
  });
}

void quantize_lift(ConstMatrixView x, ActivationLayout const& layout, MatrixView out,
                   std::span<float> scales) {
  check_lift_views(x, layout, out);
  float const qmax = quant_max(out.dtype);
  if (static_cast<std::int64_t>(scales.size()) != x.rows) {
    fail(ErrorKind::kInternal, "quantize_lift of '{}': {} scales for {} rows", x.name,
         scales.size(), x.rows);
  }
  auto const gather = layout.gather();
  dispatch_float_dtype(x.dtype, x.name, [&](auto elem) {
    using Elem = decltype(elem);
    using Bits = typename Elem::Bits;
    parallel_for(x.rows, layout.k_lifted(), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) {
        std::byte const* const src = x.row(r);
        std::byte* const dst = out.row(r);
        float const scale = symmetric_scale(row_absmax<Elem>(src, x.cols), qmax);
        float const inv_scale = 1.0f / scale;
        scales[static_cast<std::size_t>(r)] = scale;
        for (std::size_t c = 0; c < gather.size(); ++c) {
          std::uint8_t code = 0;
          if (gather[c] >= 0) {
            float const v = Elem::to_float(load<Bits>(src + static_cast<std::size_t>(gather[c]) * sizeof(Bits)));
            code = out.dtype == DType::kI8 ? static_cast<std::uint8_t>(quantize_i8(v, inv_scale))
                                           : quantize_e4m3(v, inv_scale).bits;
          }
          store<std::uint8_t>(dst + c, code);
        }
      }
    });
  });
}

}  // namespace slidesparse
