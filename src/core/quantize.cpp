#include "slidesparse/core/quantize.hpp"

#include <algorithm>

#include "slidesparse/core/parallel.hpp"

namespace slidesparse {

float quant_max(DType qtype) {
  switch (qtype) {
    case DType::kI8: return 127.0f;
    case DType::kF8E4M3: return kE4M3Max;
    default:
      fail(ErrorKind::kUsage, "quantized dtype must be I8 or F8_E4M3, got {}", dtype_name(qtype));
  }
}

namespace {

// One row: absmax, scale, codes. Written with local restrict pointers and the target dtype as a
// template parameter so the compiler keeps everything in registers and vectorizes both loops
// (byte-typed stores would otherwise alias every captured pointer).
template <typename Elem, DType kTarget>
float quantize_row(std::byte const* __restrict src, std::uint8_t* __restrict dst, std::int64_t cols,
                   float qmax) {
  using Bits = typename Elem::Bits;
  float const absmax = row_absmax<Elem>(src, cols);
  float const scale = symmetric_scale(absmax, qmax);
  float const inv_scale = 1.0f / scale;
  for (std::int64_t c = 0; c < cols; ++c) {
    float const x = Elem::to_float(load<Bits>(src + c * sizeof(Bits)));
    if constexpr (kTarget == DType::kI8) {
      dst[c] = static_cast<std::uint8_t>(quantize_i8(x, inv_scale));
    } else {
      std::uint32_t const code = quantize_e4m3(x, inv_scale).bits;
      dst[c] = static_cast<std::uint8_t>(select_u32((code & 0x7Fu) != 0, code, 0));  // -0 -> +0
    }
  }
  return scale;
}

}  // namespace

void quantize_weight_per_channel(ConstMatrixView weight, MatrixView out, std::span<float> scales) {
  float const qmax = quant_max(out.dtype);
  if (out.rows != weight.rows || out.cols != weight.cols ||
      static_cast<std::int64_t>(scales.size()) != weight.rows) {
    fail(ErrorKind::kInternal, "quantize of tensor '{}': shapes disagree", weight.name);
  }
  dispatch_float_dtype(weight.dtype, weight.name, [&](auto elem) {
    using Elem = decltype(elem);
    auto* const row_fn = out.dtype == DType::kI8 ? &quantize_row<Elem, DType::kI8>
                                                 : &quantize_row<Elem, DType::kF8E4M3>;
    parallel_for(weight.rows, weight.cols * static_cast<std::int64_t>(dtype_size(weight.dtype)),
                 [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) {
        scales[static_cast<std::size_t>(r)] =
            row_fn(weight.row(r), reinterpret_cast<std::uint8_t*>(out.row(r)), weight.cols, qmax);
      }
    });
  });
}

void dequantize_weight_per_channel(ConstMatrixView quantized, std::span<float const> scales,
                                   MatrixView out) {
  if (out.dtype != DType::kF32 || out.rows != quantized.rows || out.cols != quantized.cols ||
      static_cast<std::int64_t>(scales.size()) != quantized.rows) {
    fail(ErrorKind::kInternal, "dequantize of tensor '{}': shapes disagree", quantized.name);
  }
  quant_max(quantized.dtype);  // validates the dtype
  for (std::int64_t r = 0; r < quantized.rows; ++r) {
    float const scale = scales[static_cast<std::size_t>(r)];
    for (std::int64_t c = 0; c < quantized.cols; ++c) {
      std::uint8_t const code = load<std::uint8_t>(quantized.row(r) + c);
      float const q = quantized.dtype == DType::kI8
                          ? static_cast<float>(static_cast<std::int8_t>(code))
                          : e4m3_to_float(e4m3_t{code});
      store<float>(out.row(r) + c * sizeof(float), q * scale);
    }
  }
}

}  // namespace slidesparse
