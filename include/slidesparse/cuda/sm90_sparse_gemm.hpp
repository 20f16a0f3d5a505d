/// \file sm90_sparse_gemm.hpp
/// \brief SlideSparse's own Hopper 2:4 GEMM with the W8A8 epilogue fused — the layout contract of
/// cutlass_gemm.hpp, on the hand-written kernel of src/cuda/sm90/sparse_gemm_kernel.cuh:
///   y [M, N] = bf16( ((acc * scale_x[m]) * scale_w[n]) + bias[n] ),  acc = x' [M, K'] . W'^T
/// W' [N, K'] is the slid weight (2:4 along K'), tiled once on the host at construction
/// (src/cuda/sm90/sparse_tiles.hpp); x' [M, K'] is what quant+lift writes (row stride K').
/// The kernel runs one of several compiled mainloop schedules (kSchedules in
/// src/cuda/sm90/sparse_layout.hpp); run() takes the schedule, choose_schedule() times them.
///
/// Linear runs it as GemmBackend::kSm90Sparse (the schedule timed per M bucket). Status
/// (2026-12-06): exact on H100 and H200 (GPU tests, memcheck clean); on the H100 within 0-8 % of
/// CUTLASS's 2:4 kernel on Qwen2.5-7B's layers at M = 4096 and 16384, faster at a few
/// (docs/PERFORMANCE.md), so DispatchLinear offers it only when asked (sm90 = true): by default
/// the extra compressed copy is not worth those few points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"
#include "slidesparse/cuda/device_buffer.hpp"

namespace slidesparse::cuda {

class Sm90SparseGemm {
 public:
  /// Empty when the kernel can run here for these operands, else why not (operand not I8 or
  /// F8_E4M3, output not BF16, N not a positive multiple of 8, K' not one of 16, no sm_90 GPU).
  static std::string unsupported(DType input_dtype, DType output_dtype, std::int64_t n, std::int64_t k_lifted);
  /// Number of compiled schedules and a schedule's description ("stages 6, group 3, stagger").
  static int schedule_count() noexcept;
  static std::string schedule_name(int schedule);

  /// host_weight: W' [n, k_lifted] row-major codes of `input_dtype` on the host (read during
  /// construction only). A group of four along K' with more than two nonzeros is an Error naming
  /// `name`, the row and the columns. Uploads the tiles to the current device (run() must use it)
  /// and synchronizes `stream`.
  Sm90SparseGemm(void const* host_weight, DType input_dtype, std::int64_t n, std::int64_t k_lifted,
                 cudaStream_t stream, std::string_view name = "weight");

  /// y [m, n] (BF16, row-major) from x' [m, K'] (device, 16-byte aligned). scale_x [m],
  /// scale_w [n], bias [n] or null. Asynchronous; no allocation, no synchronization (capturable
  /// in a CUDA graph).
  void run(void const* x_lifted, void* y, std::int64_t m, float const* scale_x, float const* scale_w,
           float const* bias, cudaStream_t stream, int schedule) const;
  /// Times every schedule on these buffers (a warm-up and 5 runs each, median) and returns the
  /// fastest; `median_ms` (may be null) receives every schedule's median. Synchronizes `stream`;
  /// not a hot-path call.
  int choose_schedule(void const* x_lifted, void* y, std::int64_t m, float const* scale_x, float const* scale_w,
                      float const* bias, cudaStream_t stream, std::vector<float>* median_ms = nullptr) const;
  /// Names the compiled kernel set ("slidesparse-sm90:" and every schedule's stages.group.stagger):
  /// a tuning-cache entry recorded for another set of schedules does not apply.
  static std::string const& version();

  std::int64_t n() const noexcept { return n_; }
  std::int64_t k_lifted() const noexcept { return k_lifted_; }
  std::size_t device_bytes() const noexcept { return values_.size() + metadata_.size(); }

 private:
  DType input_dtype_;
  std::int64_t n_;
  std::int64_t k_lifted_;
  DeviceBuffer values_;    ///< compressed weight images, [n_tile][k_tile] x 16 KB
  DeviceBuffer metadata_;  ///< metadata in fragment order, [n_tile][k_tile] x 4 KB
  int multiprocessors_ = 0;  ///< of the GPU the tiles live on (queried once, not per run)
};

}  // namespace slidesparse::cuda
