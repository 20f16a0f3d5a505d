#include "slidesparse/cuda/quant_lift.hpp"

#include <atomic>

#include "quant_lift_launch.hpp"
#include "slidesparse/cuda/check.hpp"

namespace slidesparse::cuda {
namespace {

// Multiprocessors of the current device, read once per device (a host query: no stream work,
// so launches stay graph-capturable). Atomic slots: launches may come from several threads.
int multiprocessors() {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices] = {};
  int device = 0;
  SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 0 && device < kCachedDevices) {
    if (int const known = cached[device].load(std::memory_order_relaxed)) return known;
  }
  int count = 0;
  SLIDESPARSE_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < kCachedDevices) cached[device].store(count, std::memory_order_relaxed);
  return count;
}

// Warps per row: enough rows x warps to give every SM ~32 warps, while each warp keeps at
// least ~512 columns of work; and enough that the CTA's 8 / W staged rows fit a shared-memory
// budget that leaves ~3 CTAs per SM (~64 KB each).
int warps_per_row(std::int64_t m, std::int64_t k) {
  constexpr std::int64_t kCtaRowBudget = 64 * 1024;
  std::int64_t const target = static_cast<std::int64_t>(multiprocessors()) * 32;
  std::int64_t const row_bytes = (2 * k + 15) / 16 * 16;
  int w = 1;
  while (w < 8 && m * w < target && k / (2 * w) >= 512) w *= 2;
  while (w < 8 && (8 / w) * row_bytes > kCtaRowBudget) w *= 2;
  return w;
}

}  // namespace

void quant_lift(void const* x, DType x_dtype, std::int64_t m, std::int64_t ldx,
                ActivationLayout const& layout, void* out, DType out_dtype, float* scales,
                cudaStream_t stream) {
  detail::QuantLiftArgs args;
  if (x_dtype != DType::kBF16 && x_dtype != DType::kF16) {
    fail(ErrorKind::kUsage, "quant_lift: input must be BF16 or F16, got {}", dtype_name(x_dtype));
  }
  args.input = x_dtype == DType::kBF16 ? detail::InputType::kBF16 : detail::InputType::kF16;
  if (out_dtype == DType::kI8) {
    args.output = detail::OutputType::kI8;
  } else if (out_dtype == DType::kF8E4M3) {
    args.output = detail::OutputType::kF8E4M3;
  } else if (out_dtype == x_dtype) {
    args.output = detail::OutputType::kSame;
  } else {
    fail(ErrorKind::kUsage, "quant_lift: output must be I8, F8_E4M3 or the input dtype {}, got {}",
         dtype_name(x_dtype), dtype_name(out_dtype));
  }
  if (layout.k_lifted() % 16 != 0) {
    fail(ErrorKind::kUsage, "quant_lift: K' = {} must be a multiple of 16 (use a K alignment "
         "that is a multiple of 16)", layout.k_lifted());
  }
  if (2 * layout.k() > static_cast<std::int64_t>(detail::kMaxRowSharedBytes)) {
    fail(ErrorKind::kUsage, "quant_lift: K = {} exceeds the {} columns a row staged in shared "
         "memory can hold", layout.k(), detail::kMaxRowSharedBytes / 2);
  }
  if (m < 0 || ldx < layout.k()) {
    fail(ErrorKind::kUsage, "quant_lift: M = {} and row stride {} (K = {}) are invalid", m, ldx, layout.k());
  }
  if (args.output != detail::OutputType::kSame && scales == nullptr && m > 0) {
    fail(ErrorKind::kUsage, "quant_lift: quantized output needs a scales buffer");
  }
  args.x = x;
  args.m = m;
  args.k = layout.k();
  args.ldx = ldx;
  args.n = layout.pattern() ? layout.pattern()->half_block() : 0;
  args.k_raw = layout.pattern() ? layout.shape().k_raw : layout.k();
  args.k_lifted = layout.k_lifted();
  args.out = out;
  args.scales = scales;
  args.warps_per_row = warps_per_row(m, layout.k());
  SLIDESPARSE_CUDA_CHECK(detail::launch_quant_lift(args, stream));
}

}  // namespace slidesparse::cuda
