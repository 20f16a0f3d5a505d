/// \file cublaslt_gemm.hpp
/// \brief The dense baseline GEMM through cuBLASLt, in the same layout as CusparseltGemm.
///
///   A = W  [N, K'] row-major -> column-major [K', N], ld = K', opA = T
///   B = X' [M, K'] row-major -> column-major [K', M], ld = K', opB = N
///   D = Y  [M, N]  row-major -> column-major [N, M],  ld = N
/// (K' here is the dense layout's K rounded up to the alignment.) Descriptors are built once
/// per M; the algorithm is chosen by timing the top heuristics on the first call for that M.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::cuda {

class CublasltGemm {
 public:
  /// weight: device pointer to W [n, k] row-major of `input_dtype` (I8, F8_E4M3, BF16, F16); it
  /// is referenced, not copied, and must outlive this object. output_dtype: I32 for I8 (cuBLASLt
  /// 13 refuses INT8 -> BF16); BF16/F16/F32 for FP8; the input dtype for BF16/F16.
  CublasltGemm(void const* weight, DType input_dtype, DType output_dtype, std::int64_t n, std::int64_t k);
  ~CublasltGemm();
  CublasltGemm(CublasltGemm const&) = delete;
  CublasltGemm& operator=(CublasltGemm const&) = delete;

  /// y [m, n] = alpha * x [m, k] * W^T. The first call for a new m builds descriptors and times
  /// the top heuristic algorithms on the given buffers (not a hot-path call); later calls do no
  /// allocation and no synchronization. At most kMaxPlans plans are kept.
  void run(void const* x, void* y, std::int64_t m, float alpha, cudaStream_t stream);

  std::size_t device_bytes() const noexcept;  ///< the workspace (the weight is the caller's)
  static constexpr std::size_t kMaxPlans = 16;
  static constexpr std::size_t kWorkspaceBytes = 32u << 20;

 private:
  struct Plan;
  struct Context;
  Plan& plan_for(std::int64_t m, void const* x, void* y, cudaStream_t stream);

  void const* weight_;
  DType input_dtype_;
  DType output_dtype_;
  std::int64_t n_;
  std::int64_t k_;
  std::unique_ptr<Context> context_;
  std::list<std::unique_ptr<Plan>> plans_;  ///< most recently used first
};

}  // namespace slidesparse::cuda
