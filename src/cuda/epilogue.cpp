#include "slidesparse/cuda/epilogue.hpp"

#include "epilogue_launch.hpp"
#include "slidesparse/cuda/check.hpp"

namespace slidesparse::cuda {

void dequantize_output(void const* acc, DType acc_dtype, std::int64_t ld_acc, std::int64_t m,
                       std::int64_t n, float const* scale_x, float const* scale_w,
                       float const* bias, void* y, DType y_dtype, cudaStream_t stream) {
  detail::DequantArgs args;
  bool quantized = true;
  switch (acc_dtype) {
    case DType::kI32: args.acc_kind = detail::AccKind::kI32; break;
    case DType::kF32: args.acc_kind = detail::AccKind::kF32; break;
    case DType::kBF16: args.acc_kind = detail::AccKind::kBF16, quantized = false; break;
    case DType::kF16: args.acc_kind = detail::AccKind::kF16, quantized = false; break;
    default:
      fail(ErrorKind::kUsage, "dequantize_output: accumulator must be I32, F32, BF16 or F16, got {}",
           dtype_name(acc_dtype));
  }
  if (y_dtype != DType::kBF16 && y_dtype != DType::kF16) {
    fail(ErrorKind::kUsage, "dequantize_output: output must be BF16 or F16, got {}", dtype_name(y_dtype));
  }
  if (m < 0 || n < 0 || ld_acc < n) {
    fail(ErrorKind::kUsage, "dequantize_output: invalid shape [{}, {}] with accumulator row stride {}", m, n, ld_acc);
  }
  bool const empty = m == 0 || n == 0;
  if (!empty && (!acc || !y || (quantized && (!scale_x || !scale_w)))) {
    fail(ErrorKind::kUsage, "dequantize_output: null accumulator, output or scale buffer");
  }
  if (!quantized && (scale_x || scale_w)) {
    fail(ErrorKind::kUsage, "dequantize_output: a {} accumulator takes no scales (16-bit layers are "
         "not quantized)", dtype_name(acc_dtype));
  }
  args.acc = acc;
  args.ld_acc = ld_acc;
  args.m = m;
  args.n = n;
  args.scale_x = scale_x;
  args.scale_w = scale_w;
  args.bias = bias;
  args.y = y;
  args.y_is_bf16 = y_dtype == DType::kBF16;
  SLIDESPARSE_CUDA_CHECK(detail::launch_dequant(args, stream));
}

}  // namespace slidesparse::cuda
