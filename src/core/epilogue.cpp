#include "slidesparse/core/epilogue.hpp"

#include "slidesparse/core/parallel.hpp"

namespace slidesparse {

void dequantize_output(ConstMatrixView acc, std::span<float const> scale_x,
                       std::span<float const> scale_w, std::span<float const> bias, MatrixView y) {
  bool const quantized = acc.dtype == DType::kI32 || acc.dtype == DType::kF32;
  bool const sixteen_bit = acc.dtype == DType::kBF16 || acc.dtype == DType::kF16;
  if ((!quantized && !sixteen_bit) || (y.dtype != DType::kBF16 && y.dtype != DType::kF16) || y.rows != acc.rows ||
      y.cols != acc.cols || (quantized && (static_cast<std::int64_t>(scale_x.size()) != acc.rows ||
                     static_cast<std::int64_t>(scale_w.size()) != acc.cols)) ||
      (sixteen_bit && (!scale_x.empty() || !scale_w.empty())) ||
      (!bias.empty() && static_cast<std::int64_t>(bias.size()) != acc.cols)) {
    fail(ErrorKind::kInternal, "dequantize_output: acc [{}, {}] {} -> y [{}, {}] {}, {} token "
         "scales, {} channel scales, {} bias entries do not fit together", acc.rows, acc.cols,
         dtype_name(acc.dtype), y.rows, y.cols, dtype_name(y.dtype), scale_x.size(),
         scale_w.size(), bias.size());
  }
  parallel_for(acc.rows, acc.cols * 4, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t m = begin; m < end; ++m) {
      for (std::int64_t n = 0; n < acc.cols; ++n) {
        std::byte const* a = acc.row(m) + n * static_cast<std::int64_t>(dtype_size(acc.dtype));
        float scaled = 0;
        switch (acc.dtype) {
          case DType::kI32: scaled = static_cast<float>(load<std::int32_t>(a)); break;
          case DType::kF32: scaled = load<float>(a); break;
          case DType::kBF16: scaled = bf16_to_float(bf16_t{load<std::uint16_t>(a)}); break;
          default: scaled = fp16_to_float(fp16_t{load<std::uint16_t>(a)}); break;
        }
        if (quantized) {
          // Separate statements: each product is rounded on its own (no contraction to FMA,
          // which the GPU kernel also forbids with __fmul_rn / __fadd_rn).
          scaled = scaled * scale_x[static_cast<std::size_t>(m)];
          scaled = scaled * scale_w[static_cast<std::size_t>(n)];
        }
        if (!bias.empty()) scaled = scaled + bias[static_cast<std::size_t>(n)];
        std::uint16_t const bits = y.dtype == DType::kBF16 ? float_to_bf16(scaled).bits : float_to_fp16(scaled).bits;
        store<std::uint16_t>(y.row(m) + n * 2, bits);
      }
    }
  });
}

}  // namespace slidesparse
