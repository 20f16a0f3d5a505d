#include "slidesparse/cuda/epilogue.hpp"

#include "epilogue_launch.hpp"
#include "slidesparse/cuda/check.hpp"

namespace slidesparse::cuda {

void dequantize_output(void const* acc, DType acc_dtype, std::int64_t m, std::int64_t n,
                       float const* scale_x, float const* scale_w, float const* bias, void* y,
                       DType y_dtype, cudaStream_t stream) {
  if (acc_dtype != DType::kI32 && acc_dtype != DType::kF32) {
    fail(ErrorKind::kUsage, "dequantize_output: accumulator must be I32 or F32, got {}", dtype_name(acc_dtype));
  }
  if (y_dtype != DType::kBF16 && y_dtype != DType::kF16) {
    fail(ErrorKind::kUsage, "dequantize_output: output must be BF16 or F16, got {}", dtype_name(y_dtype));
  }
  if (m < 0 || n < 0 || ((m > 0 && n > 0) && (!acc || !scale_x || !scale_w || !y))) {
    fail(ErrorKind::kUsage, "dequantize_output: invalid shape [{}, {}] or null buffer", m, n);
  }
  detail::DequantArgs args;
  args.acc = acc;
  args.acc_is_int32 = acc_dtype == DType::kI32;
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
