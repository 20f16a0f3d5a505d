/// \file cublaslt_gemm.hpp
/// \brief The dense baseline GEMM through cuBLASLt, in the same layout as CusparseltGemm.
///
///   A = W  [N, K'] row-major -> column-major [K', N], ld = K', opA = T
///   B = X' [M, K'] row-major -> column-major [K', M], ld = K', opB = N
///   D = Y  [M, N]  row-major -> column-major [N, M],  ld = N
/// (K' here is the dense layout's K rounded up to the alignment.) Descriptors are built once
/// per plan M (the caller's M bucket); the algorithm is chosen by timing the top heuristics on
/// the first call for that plan M, or taken from the tuning cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::cuda {

class CublasltGemm {
 public:
  /// weight: device pointer to W [n, k] row-major of `input_dtype` (I8, F8_E4M3, BF16, F16); it
  /// is referenced, not copied, and must outlive this object. output_dtype: I32 for I8 (cuBLASLt
  /// 13 refuses INT8 -> BF16); BF16/F16/F32 for FP8; the input dtype for BF16/F16.
  /// tuning: where chosen algorithms are looked up and recorded (may be null); it must outlive
  /// this object; the caller saves it.
  /// outer_vector_scales (FP8 -> BF16/F16 only): the GEMM applies per-output-channel and
  /// per-token FP32 scales to the FP32 accumulator before rounding (cuBLASLt's OUTER_VEC_32F
  /// scale mode): y = cast(acc * scale_w[n] * scale_x[m]) in one kernel, the strongest dense
  /// W8A8 layer cuBLASLt offers. Throws Error(kUsage) if this cuBLASLt cannot do it.
  CublasltGemm(void const* weight, DType input_dtype, DType output_dtype, std::int64_t n, std::int64_t k,
               io::TuningCache* tuning = nullptr, bool outer_vector_scales = false);
  ~CublasltGemm();
  CublasltGemm(CublasltGemm const&) = delete;
  CublasltGemm& operator=(CublasltGemm const&) = delete;

  /// y [m, n] = alpha * x [m, k] * W^T, with the plan (descriptors + algorithm) of `plan_m`
  /// (0: plan_m = m; otherwise m <= plan_m, the M bucket that m falls in). The first call for a
  /// new plan_m builds descriptors and takes the algorithm from the tuning cache or times the
  /// top heuristics on the given buffers (not a hot-path call). Later calls do no allocation
  /// and no synchronization; a different m within the plan only updates the host-side layouts
  /// (and checks the algorithm still applies, else takes the top heuristic for that m).
  /// At most kMaxPlans plans are kept.
  /// With outer_vector_scales, scale_w [n] and scale_x [m] are device pointers (alpha must be 1).
  void run(void const* x, void* y, std::int64_t m, float alpha, cudaStream_t stream, std::int64_t plan_m = 0,
           float const* scale_w = nullptr, float const* scale_x = nullptr);
  bool outer_vector_scales() const noexcept { return outer_vector_scales_; }

  std::size_t device_bytes() const noexcept;  ///< the workspace (the weight is the caller's)
  /// Whether a plan for this plan M is cached, i.e. run() with it is hot.
  bool has_plan(std::int64_t m) const noexcept;
  bool tuned_from_cache(std::int64_t plan_m) const noexcept;
  /// "cublaslt-<cublasLtGetVersion>" (e.g. cublaslt-130100).
  std::string const& library_version() const noexcept { return library_version_; }
  static constexpr std::size_t kMaxPlans = 16;
  static constexpr std::size_t kWorkspaceBytes = 32u << 20;

 private:
  struct Plan;
  struct Context;
  Plan& plan_for(std::int64_t m, void const* x, void* y, cudaStream_t stream);
  Plan const* find_plan(std::int64_t m) const noexcept;
  /// Times the top heuristics on the given buffers, keeps the fastest in plan.algo and records it
  /// under `key` (if not empty).
  void tune(Plan& plan, void const* x, void* y, cudaStream_t stream, std::string const& key);

  void const* weight_;
  DType input_dtype_;
  DType output_dtype_;
  std::int64_t n_;
  std::int64_t k_;
  io::TuningCache* tuning_;
  bool outer_vector_scales_;
  float const* scale_w_ = nullptr;  ///< the pointers of the current run (tuning runs use them too)
  float const* scale_x_ = nullptr;
  std::string library_version_;
  std::unique_ptr<Context> context_;
  std::list<std::unique_ptr<Plan>> plans_;  ///< most recently used first
};

}  // namespace slidesparse::cuda
