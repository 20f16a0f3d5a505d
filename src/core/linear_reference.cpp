#include "slidesparse/core/linear_reference.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

#include "slidesparse/core/epilogue.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/parallel.hpp"

namespace slidesparse {
namespace {

// Row r of a matrix of a weight dtype as doubles.
void row_as_double(ConstMatrixView const& m, std::int64_t r, std::vector<float>& scratch, double* out) {
  scratch.resize(static_cast<std::size_t>(m.cols));
  to_float(m.dtype, m.row(r), scratch, m.name);
  for (std::size_t c = 0; c < scratch.size(); ++c) out[c] = scratch[c];
}

}  // namespace

LinearReferenceResult linear_reference(ConstMatrixView x, ConstMatrixView weight,
                                       std::span<float const> scale_w,
                                       std::span<float const> bias, MatrixView y) {
  bool const w8a8 = weight.dtype == DType::kI8 || weight.dtype == DType::kF8E4M3;
  std::int64_t const m = x.rows, n = weight.rows, k = x.cols;
  if ((x.dtype != DType::kBF16 && x.dtype != DType::kF16) || weight.cols != k || y.rows != m ||
      y.cols != n || y.dtype != x.dtype || (!w8a8 && weight.dtype != x.dtype) ||
      (w8a8 && static_cast<std::int64_t>(scale_w.size()) != n) || (!w8a8 && !scale_w.empty()) ||
      (!bias.empty() && static_cast<std::int64_t>(bias.size()) != n)) {
    fail(ErrorKind::kUsage, "linear_reference: x [{}, {}] {}, weight [{}, {}] {}, {} weight scales, {} "
         "bias entries, y [{}, {}] {} do not fit together", m, k, dtype_name(x.dtype), weight.rows,
         weight.cols, dtype_name(weight.dtype), scale_w.size(), bias.size(), y.rows, y.cols, dtype_name(y.dtype));
  }
  LinearReferenceResult result;
  result.exact.resize(static_cast<std::size_t>(m * n));
  result.abs_products.resize(static_cast<std::size_t>(m * n));

  // Operands as the GEMM sees them: quantized codes for W8A8, the 16-bit values otherwise.
  std::vector<std::byte> codes;
  ConstMatrixView a = x;
  if (w8a8) {
    // Identity layout; its zero tail up to the alignment (4) is never read below.
    ActivationLayout const identity = ActivationLayout::dense(k, 4);
    codes.resize(static_cast<std::size_t>(m * identity.k_lifted()));
    MatrixView q{weight.dtype, m, identity.k_lifted(), codes.data(), "x_quantized"};
    result.scale_x.resize(static_cast<std::size_t>(m));
    quantize_lift(x, identity, q, result.scale_x);
    a = q;
  }
  std::vector<double> wd(static_cast<std::size_t>(n * k));
  std::vector<float> scratch;
  for (std::int64_t j = 0; j < n; ++j) row_as_double(weight, j, scratch, wd.data() + j * k);
  // acc in the GEMM's output type, then the epilogue exactly as the GPU runs it.
  DType const acc_dtype = weight.dtype == DType::kI8 ? DType::kI32 : (w8a8 ? DType::kF32 : x.dtype);
  std::vector<std::byte> acc_bytes(static_cast<std::size_t>(m * n) * dtype_size(acc_dtype));
  MatrixView acc{acc_dtype, m, n, acc_bytes.data(), "acc"};
  parallel_for(m, n * k, [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> row(static_cast<std::size_t>(a.cols));
    std::vector<float> row_scratch;
    for (std::int64_t i = begin; i < end; ++i) {
      row_as_double(a, i, row_scratch, row.data());
      double const sx = w8a8 ? result.scale_x[static_cast<std::size_t>(i)] : 1.0;
      for (std::int64_t j = 0; j < n; ++j) {
        double sum = 0, abs_sum = 0;
        double const* w = wd.data() + j * k;
        for (std::int64_t c = 0; c < k; ++c) {
          double const p = row[static_cast<std::size_t>(c)] * w[c];
          sum += p;
          abs_sum += std::fabs(p);
        }
        double const sw = w8a8 ? scale_w[static_cast<std::size_t>(j)] : 1.0;
        double const b = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(j)];
        auto const idx = static_cast<std::size_t>(i * n + j);
        result.exact[idx] = sum * sx * sw + b;
        result.abs_products[idx] = abs_sum * sx * sw;
        std::byte* out = acc.row(i) + j * static_cast<std::int64_t>(dtype_size(acc_dtype));
        switch (acc_dtype) {
          case DType::kI32:
            if (std::fabs(sum) > std::numeric_limits<std::int32_t>::max()) {
              fail(ErrorKind::kInternal, "linear_reference: INT32 accumulator overflow at [{}, {}]", i, j);
            }
            store<std::int32_t>(out, static_cast<std::int32_t>(sum));
            break;
          case DType::kF32: store<float>(out, static_cast<float>(sum)); break;
          case DType::kBF16: store<std::uint16_t>(out, float_to_bf16(static_cast<float>(sum)).bits); break;
          default: store<std::uint16_t>(out, float_to_fp16(static_cast<float>(sum)).bits); break;
        }
      }
    }
  });
  if (w8a8) {
    dequantize_output(acc, result.scale_x, scale_w, bias, y);
  } else {
    dequantize_output(acc, {}, {}, bias, y);
  }
  return result;
}

}  // namespace slidesparse
