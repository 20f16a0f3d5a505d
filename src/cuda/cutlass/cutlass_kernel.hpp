/// \file cutlass_kernel.hpp
/// \brief Plain-C++ face of the CUTLASS sm90a kernels (internal to the CUDA layer): one object per
/// compiled configuration, so host code never includes CUTLASS and each configuration compiles
/// in its own translation unit (src/cuda/cutlass/kernels.txt lists them; CMake generates the TUs).
///
/// The problem every kernel solves (names as in cusparselt_gemm.hpp):
///   y [M, N] (row-major BF16) = ((acc * scale_x[m]) * scale_w[n]) + bias[n],
///   acc [N, M] = W' [N, K'] . x' [M, K']^T (INT32 for I8, F32 for F8_E4M3),
/// computed as CUTLASS's D = A . B with GEMM dims (m, n, k) = (N, M, K'): A = W' (K'-major,
/// 2:4-compressed for the sparse kernels), B = x' (K'-major), D column-major [N, M] with
/// ld = N, i.e. exactly y. The scales and bias are applied in the epilogue, in that order, each
/// product and sum rounded on its own (the TUs compile with --fmad=false), then rounded once to
/// BF16 — the arithmetic of core/epilogue.hpp, so INT8 results are bit-identical to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::cuda::detail {

enum class CutlassSchedule : int {
  kCooperative,  ///< two consumer warp groups share one 128-row tile
  kPingpong,     ///< two consumer warp groups alternate between tiles (epilogue overlaps MMA)
  kStreamK,      ///< cooperative + stream-K tile scheduler (splits K across CTAs when tiles are few)
};

/// One compiled configuration (a line of kernels.txt).
struct CutlassKernelSpec {
  std::string name;
  bool sparse = false;  ///< 2:4 weight (compressed, with metadata) or dense weight
  DType dtype = DType::kF8E4M3;  ///< operand type: I8 or F8_E4M3 (output: BF16)
  int tile_m = 0, tile_n = 0, tile_k = 0;  ///< CTA tile in GEMM dims (m = N channels, n = M tokens)
  int cluster_m = 1, cluster_n = 1;
  CutlassSchedule schedule = CutlassSchedule::kCooperative;
  bool fast_accum = false;  ///< FP8: accumulate in the tensor core only (no periodic promotion)
};

/// Run-time choices that need no new kernel: the tile rasterization order, its swizzle width and
/// (stream-K only) the number of K splits (1 = let the scheduler decide).
struct CutlassRunOptions {
  enum class Raster : int { kHeuristic, kAlongM, kAlongN };
  Raster raster = Raster::kHeuristic;
  int swizzle = 1;
  int splits = 1;
  bool operator==(CutlassRunOptions const&) const = default;
};

struct CutlassProblem {
  std::int64_t n = 0;  ///< output channels (GEMM m)
  std::int64_t m = 0;  ///< tokens (GEMM n)
  std::int64_t k = 0;  ///< K' (lifted)
  void const* weight = nullptr;  ///< sparse: compressed values; dense: W' [n, k] row-major
  void const* metadata = nullptr;  ///< sparse: the compressor's metadata; dense: unused
  void const* x = nullptr;       ///< x' [m, k] row-major
  float const* scale_x = nullptr;  ///< [m]
  float const* scale_w = nullptr;  ///< [n]
  float const* bias = nullptr;     ///< [n] or null (no bias)
  void* y = nullptr;               ///< [m, n] row-major BF16
};

class CutlassKernel {
 public:
  virtual ~CutlassKernel() = default;
  virtual CutlassKernelSpec const& spec() const noexcept = 0;
  /// Empty when the kernel can run the problem with these options, else why not.
  virtual std::string check(CutlassProblem const& problem, CutlassRunOptions const& options) const = 0;
  virtual std::size_t workspace_bytes(CutlassProblem const& problem, CutlassRunOptions const& options) const = 0;
  /// Asynchronous on `stream`; `workspace` holds workspace_bytes() (may be null when 0).
  virtual cudaError_t run(CutlassProblem const& problem, CutlassRunOptions const& options, void* workspace,
                          cudaStream_t stream) const = 0;
};

/// Every compiled configuration (empty where the CUTLASS kernels were not built).
std::span<std::unique_ptr<CutlassKernel> const> cutlass_kernels();

/// Bytes of the sparse kernels' compressed weight for W' [n, k] of `dtype` (I8 / F8_E4M3): the
/// kept values and the metadata, each padded as the kernels' layouts require.
struct CutlassSparseSizes {
  std::size_t values = 0;
  std::size_t metadata = 0;
};
CutlassSparseSizes cutlass_sparse_sizes_launch(DType dtype, std::int64_t n, std::int64_t k);

/// Compresses the 2:4 weight W' [n, k] (device, row-major; every aligned group of 4 along k holds
/// at most 2 nonzeros) into `values` and `metadata` (device, sized by cutlass_sparse_sizes_launch),
/// the layout every sparse kernel of `dtype` reads. Asynchronous on `stream`; returns why it
/// failed, or an empty string. (The CutlassGemm backend wraps both with checks and errors.)
std::string cutlass_compress_launch(DType dtype, void const* weight, std::int64_t n, std::int64_t k, void* values,
                                    void* metadata, cudaStream_t stream);

/// Whether the CUTLASS kernels were compiled into this build.
bool cutlass_available() noexcept;
/// "4.2.0" (the headers the kernels were compiled with), "none" without them.
std::string cutlass_version();

}  // namespace slidesparse::cuda::detail
