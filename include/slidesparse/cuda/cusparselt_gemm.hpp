/// \file cusparselt_gemm.hpp
/// \brief The 2:4 sparse GEMM through cuSPARSELt, for a slid weight W' that is fixed at load.
///
/// Operands and layout (the one statement of it; every caller uses these names):
///   A = W'  [N, K'] row-major, 2:4 along K'  -> cuSPARSELt structured, column-major [K', N],
///           ld = K', opA = T (so op(A) is N x K')
///   B = X'  [M, K'] row-major                -> dense, column-major [K', M], ld = K', opB = N
///   D = Y   [M, N] row-major                 -> dense, column-major [N, M], ld = N
///   D = alpha * op(A) * B (beta = 0); GEMM dims m = N, n = M, k = K'.
/// cuSPARSELt needs N, K' and M multiples of 32 for 8-bit types (16 for 16-bit); the caller pads
/// (the Linear layer rounds M up to its bucket and owns padded buffers).
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

class CusparseltGemm {
 public:
  /// weight: device pointer to W' [n, k_lifted] row-major of `input_dtype` (I8, F8_E4M3, BF16 or
  /// F16), every group of 4 along K' holding at most 2 nonzeros. It is compressed once here (the
  /// compressed bytes are library-, GPU- and layout-specific, so never stored on disk); the
  /// caller's buffer is not kept. output_dtype: I32 or BF16/F16 for I8; BF16/F16/F32 for FP8;
  /// the input dtype for BF16/F16. Throws Error for unsupported combinations or shapes.
  /// tuning: where MatmulSearch results are looked up and recorded (may be null: search every
  /// new M); it must outlive this object; the caller saves it.
  CusparseltGemm(void const* weight, DType input_dtype, DType output_dtype, std::int64_t n,
                 std::int64_t k_lifted, cudaStream_t stream, io::TuningCache* tuning = nullptr);
  ~CusparseltGemm();
  CusparseltGemm(CusparseltGemm const&) = delete;
  CusparseltGemm& operator=(CusparseltGemm const&) = delete;

  /// y [m, n] = x' [m, K'] * W'^T * alpha. The first call for a new m builds a plan with the
  /// tuning cache's configuration for this exact problem, or runs cusparseLtMatmulSearch
  /// (algorithm and split-K) on the given buffers and records it — not a hot-path call;
  /// later calls with that m do no allocation and no host synchronization. At most kMaxPlans
  /// plans are kept (least recently used is dropped).
  void run(void const* x_lifted, void* y, std::int64_t m, float alpha, cudaStream_t stream);

  std::int64_t n() const noexcept { return n_; }
  std::int64_t k_lifted() const noexcept { return k_lifted_; }
  /// Device bytes held: compressed weight + plan workspaces.
  std::size_t device_bytes() const noexcept;
  /// The compressed weight's allocation (with its guard tail).
  std::size_t compressed_bytes() const noexcept;
  /// Whether a plan for this M (the plan M for cuBLASLt) is cached, i.e. run() for it is hot.
  bool has_plan(std::int64_t m) const noexcept;
  /// Whether the plan for m exists and took its configuration from the tuning cache.
  bool tuned_from_cache(std::int64_t m) const noexcept;
  /// "cusparselt-<cusparseLtGetVersion>" of the loaded library (e.g. cusparselt-800).
  std::string const& library_version() const noexcept { return library_version_; }
  static constexpr std::size_t kMaxPlans = 16;

 private:
  struct Plan;
  struct Context;
  Plan& plan_for(std::int64_t m, void const* x_lifted, void* y, cudaStream_t stream);
  Plan const* find_plan(std::int64_t m) const noexcept;

  DType input_dtype_;
  DType output_dtype_;
  std::int64_t n_;
  std::int64_t k_lifted_;
  io::TuningCache* tuning_;
  std::string library_version_;
  std::unique_ptr<Context> context_;
  std::list<std::unique_ptr<Plan>> plans_;  ///< most recently used first
};

}  // namespace slidesparse::cuda
