/// \file cutlass_gemm.hpp
/// \brief The W8A8 GEMM with its whole epilogue fused, on CUTLASS sm90a kernels: 2:4 sparse (the
/// slid weight W') or dense, I8 or F8_E4M3 in, BF16 out:
///   y [M, N] = bf16( ((acc * scale_x[m]) * scale_w[n]) + bias[n] ),  acc = x' [M, K'] . W'^T
/// written once, with no I32/F32 accumulator in memory (the layout is cusparselt_gemm.hpp's;
/// src/cuda/cutlass/cutlass_kernel.hpp has the kernel-side statement).
///
/// The configurations are compiled from src/cuda/cutlass/kernels.txt. For each plan M (the
/// caller's M bucket) the backend times every configuration that can run the problem, with each
/// rasterization order and swizzle width, keeps the fastest and records it in the tuning cache
/// (key: GPU, driver, CUDA, CUTLASS version and configuration list, dtypes, N, K', plan M), so
/// later processes skip the search. The run itself covers exactly the caller's M rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"
#include "slidesparse/cuda/device_buffer.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::cuda {

class CutlassGemm {
 public:
  /// Empty when this build and device can run the CUTLASS GEMM for these operands, else why not
  /// (no CUTLASS in the build, not an sm_90 GPU, dtype, N not a multiple of 8, K' of 16, output
  /// not BF16).
  static std::string unsupported(DType input_dtype, DType output_dtype, std::int64_t n, std::int64_t k_lifted);
  /// "cutlass-4.2.0": the CUTLASS headers the kernels were built with ("cutlass-none" without).
  static std::string version();

  /// weight: device W' [n, k_lifted] row-major. sparse: every aligned group of 4 along K' holds
  /// at most 2 nonzeros; compressed here (synchronizes `stream`), the caller's buffer is not
  /// kept. dense: referenced, must outlive this object. fast_accumulation (FP8): allow kernels
  /// that accumulate in the tensor core without periodic F32 promotion (faster; the tolerance
  /// of such layers is the one in tests/gpu/cutlass_gemm_test.cpp). Throws Error(kUsage) when
  /// unsupported() says why.
  CutlassGemm(void const* weight, DType input_dtype, bool sparse, std::int64_t n, std::int64_t k_lifted,
              cudaStream_t stream, io::TuningCache* tuning = nullptr, bool fast_accumulation = true);
  ~CutlassGemm();
  CutlassGemm(CutlassGemm const&) = delete;
  CutlassGemm& operator=(CutlassGemm const&) = delete;

  /// y [m, n] (BF16, row-major) from x' [m, K'] with the configuration chosen for plan_m (>= m;
  /// tuned on these buffers on first use: not a hot-path call). scale_x [m], scale_w [n],
  /// bias [n] or null. Later calls for the same plan_m do no allocation and no host
  /// synchronization. At most kMaxPlans plans are kept (least recently used is dropped).
  void run(void const* x_lifted, void* y, std::int64_t m, float const* scale_x, float const* scale_w,
           float const* bias, cudaStream_t stream, std::int64_t plan_m);

  bool has_plan(std::int64_t plan_m) const noexcept;
  bool tuned_from_cache(std::int64_t plan_m) const noexcept;
  /// The chosen configuration of a plan ("sp_f8_128x256x128_c1x1_coop_fast raster=N swizzle=2"),
  /// empty without a plan.
  std::string plan_description(std::int64_t plan_m) const;
  std::size_t device_bytes() const noexcept;      ///< compressed weight (sparse) + workspaces
  std::size_t compressed_bytes() const noexcept;  ///< sparse: values + metadata; dense: 0
  /// "cutlass-4.2.0+<fingerprint of the compiled configuration list>" (part of the tuning key).
  std::string const& library_version() const noexcept { return library_version_; }
  bool sparse() const noexcept { return sparse_; }
  static constexpr std::size_t kMaxPlans = 16;

 private:
  struct Plan;
  Plan const* find_plan(std::int64_t plan_m) const noexcept;
  Plan& plan_for(std::int64_t plan_m, void const* x_lifted, void* y, float const* scale_x, float const* scale_w,
                 float const* bias, cudaStream_t stream);

  DType input_dtype_;
  bool sparse_;
  bool fast_accumulation_;
  std::int64_t n_;
  std::int64_t k_lifted_;
  io::TuningCache* tuning_;
  std::string library_version_;
  void const* weight_ = nullptr;  ///< dense: the caller's W'; sparse: values_
  DeviceBuffer values_;           ///< sparse: compressed values
  DeviceBuffer metadata_;         ///< sparse: metadata
  std::list<std::unique_ptr<Plan>> plans_;  ///< most recently used first
};

}  // namespace slidesparse::cuda
