/// \file linear.hpp
/// \brief The linear layer on the GPU: y = x W^T (+ bias), dense or SlideSparse, one interface.
///
/// Data flow of forward(x [M, K], y [M, N]), M_b = m_bucket(M):
///   1. quant_lift   x [M, K] BF16/F16 -> x' [M, K'] (I8 / F8_E4M3 + scale_x [M] for W8A8;
///                   the 16-bit values for BF16/F16 layers). SlideSparse: the slid layout of the
///                   pattern; dense: identity with a zero tail up to K' = round_up(K, 32).
///                   Skipped where it would be a plain copy (16-bit, identity layout, K' = K,
///                   contiguous x, and the GEMM reads exactly M rows): the GEMM reads x.
///   2. GEMM         CUTLASS backend (config.backend): one sm90a kernel, 2:4 on the compressed W'
///                   or dense, exactly M rows, with step 3 fused into it (y written once, N_pad = N).
///                   Hand-written sm90 backend: the same contract, 2:4 only, on SlideSparse's own
///                   kernel (sm90_sparse_gemm.hpp; its schedule timed per M_b).
///                   SlideSparse: cuSPARSELt 2:4 on the compressed W' [N_pad, K'], over the
///                   padded M_b rows (cuSPARSELt plans are per M_b); dense: cuBLASLt on
///                   W [N_pad, K'] over exactly M rows with the algorithm tuned for M_b.
///                   acc [M_b, N_pad]: I32 (INT8), F32 (FP8), or the 16-bit type.
///   3. epilogue     acc -> y [M, N]: ((acc * scale_x[m]) * scale_w[n]) + bias[n] for W8A8;
///                   + bias[n] for 16-bit (skipped when the GEMM could write y directly).
///                   Dense FP8 without bias: fused into the cuBLASLt GEMM (fuse_dense_scales).
/// N is padded to N_pad (a multiple of 32 for cuSPARSELt, 8 for cuBLASLt) with zero weight rows;
/// padded output columns are never written to y. Rows M..M_b of x' keep values of earlier
/// calls (finite codes; their outputs are discarded).
///
/// Hot path: once prepare(M) has run for M's bucket (forward calls it on a cold bucket),
/// forward() allocates nothing, creates no plan and never synchronizes with the host, so it can
/// be captured in a CUDA graph. Capture after preparing the largest M the graph will use:
/// growing the scratch buffers reallocates them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <cuda_runtime.h>

#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::cuda {

class CusparseltGemm;
class CublasltGemm;
class CutlassGemm;
class Sm90SparseGemm;

/// Which GEMM library a layer runs on.
enum class GemmBackend {
  /// cuSPARSELt (SlideSparse) / cuBLASLt (dense), with the separate epilogue where the library
  /// cannot apply the per-token scale.
  kLibrary,
  /// CUTLASS sm90a kernels with the whole epilogue fused (cutlass_gemm.hpp): W8A8 layers with
  /// BF16 activations and N % 8 == 0 on Hopper; an Error naming the reason elsewhere.
  kCutlass,
  /// kCutlass where it can run the layer, else kLibrary.
  kAuto,
  /// SlideSparse's hand-written sm90a 2:4 kernel with the whole epilogue fused
  /// (sm90_sparse_gemm.hpp): sparse W8A8 layers with BF16 activations and N % 8 == 0 on Hopper;
  /// an Error naming the reason elsewhere (and for dense layers).
  kSm90Sparse,
};

struct LinearConfig {
  /// I8 / F8_E4M3: W8A8 (per-token activation scale, per-channel weight scale);
  /// BF16 / F16: no quantization (must equal activation_dtype).
  DType compute_dtype = DType::kF8E4M3;
  DType activation_dtype = DType::kBF16;  ///< x and y: BF16 or F16
  /// A pattern: SlideSparse on cuSPARSELt (2:4 runs without lifting); nullopt: dense cuBLASLt.
  std::optional<SparsityPattern> pattern;
  std::int64_t k_alignment = kDefaultKAlignment;
  /// Dense FP8 layers without bias: let cuBLASLt apply both scales in its epilogue and write
  /// y directly (OUTER_VEC_32F scale mode), the strongest dense FP8 layer. Falls back to the
  /// separate epilogue where cuBLASLt refuses. Numerically acc * scale_w * scale_x in the
  /// library's order, so not bit-identical to the contract's ((acc * sx) * sw).
  bool fuse_dense_scales = true;
  GemmBackend backend = GemmBackend::kLibrary;
  /// FP8 on CUTLASS: let the tuner pick kernels that accumulate in the tensor core without
  /// periodic F32 promotion (as cuBLASLt's FAST_ACCUM); false keeps only promoting kernels.
  bool fast_accumulation = true;
};

/// Host weights, read during construction only.
struct LinearWeights {
  ConstMatrixView weight;               ///< [N, K] of compute_dtype; obeys the pattern if any
  std::span<float const> weight_scale;  ///< [N] for W8A8, empty for 16-bit layers
  std::span<float const> bias;          ///< [N] or empty
};

/// Scratch buffers of the forward pass (x', scale_x, accumulator), shareable by layers that never
/// run concurrently (the layers of one model on one stream): a model needs one set sized for its
/// widest layer and largest M, not one per layer. Grows on demand (reallocating, which
/// synchronizes the stream given to reserve); never shrinks.
class LinearScratch {
 public:
  LinearScratch() = default;
  ~LinearScratch();
  LinearScratch(LinearScratch const&) = delete;
  LinearScratch& operator=(LinearScratch const&) = delete;

  void reserve(std::size_t x_bytes, std::size_t scale_bytes, std::size_t acc_bytes, cudaStream_t stream);
  void* x() const noexcept { return x_; }
  float* scales() const noexcept { return scales_; }
  void* acc() const noexcept { return acc_; }
  std::size_t bytes() const noexcept { return x_bytes_ + scale_bytes_ + acc_bytes_; }
  std::size_t x_bytes() const noexcept { return x_bytes_; }
  std::size_t scale_bytes() const noexcept { return scale_bytes_; }
  std::size_t acc_bytes() const noexcept { return acc_bytes_; }

 private:
  void* x_ = nullptr;
  float* scales_ = nullptr;
  void* acc_ = nullptr;
  std::size_t x_bytes_ = 0, scale_bytes_ = 0, acc_bytes_ = 0;
};

/// The steps of forward(), for benchmarks that time them apart (each reads what the previous
/// step left in the scratch buffers).
enum class LinearStage { kQuantLift, kGemm, kEpilogue };

/// Device memory a layer holds, by purpose.
struct LinearMemory {
  std::size_t weight = 0;   ///< compressed W' (+ cuSPARSELt guard) or dense W
  std::size_t vectors = 0;  ///< weight scales and bias
  std::size_t gemm = 0;     ///< GEMM workspaces
  std::size_t scratch = 0;  ///< x', scale_x and accumulator (shared scratch: counted by every sharer)
  std::size_t total() const noexcept { return weight + vectors + gemm + scratch; }
};

class Linear {
 public:
  /// Validates the weight against the pattern (an overfull block is an Error naming tensor,
  /// row and block), slides it on the CPU, uploads, compresses (cuSPARSELt) and frees the
  /// uncompressed copy. `tuning` (may be null) must outlive the layer; the caller saves it.
  /// `scratch` may be shared with other layers (null: the layer owns one).
  Linear(LinearConfig const& config, LinearWeights const& weights, cudaStream_t stream,
         io::TuningCache* tuning = nullptr, std::string name = "linear",
         std::shared_ptr<LinearScratch> scratch = nullptr);
  /// A dense layer on another dense layer's device weight, scales and bias (no second copy):
  /// the same pruned weight run by a second backend, e.g. cuBLASLt beside dense CUTLASS, which
  /// win at different M. `config` may differ from the owner's only in backend and
  /// fuse_dense_scales, and the two backends must use the same padded weight [N_pad, K'] (an
  /// Error names what differs). The device buffers are co-owned (they live while either layer
  /// does); memory() of this layer reports no weight and no vectors (the owner counts them).
  Linear(LinearConfig const& config, Linear const& weight_owner, io::TuningCache* tuning = nullptr,
         std::string name = "linear", std::shared_ptr<LinearScratch> scratch = nullptr);
  ~Linear();
  Linear(Linear const&) = delete;
  Linear& operator=(Linear const&) = delete;

  /// Makes forward() for M hot: scratch sized for M's bucket, GEMM plan built (tuned or taken
  /// from the tuning cache). May allocate and synchronize.
  void prepare(std::int64_t m, cudaStream_t stream);
  bool is_prepared(std::int64_t m) const noexcept;
  /// Whether the GEMM plan of M's bucket took its configuration from the tuning cache.
  bool tuned_from_cache(std::int64_t m) const noexcept;

  /// y [M, N] (row-major, activation dtype) = layer(x [M, K] with row stride ldx elements,
  /// 0 = K). Asynchronous on `stream`.
  void forward(void const* x, void* y, std::int64_t m, cudaStream_t stream, std::int64_t ldx = 0);
  /// One step of forward() (benchmarks); the layer must be prepared for m.
  void forward_stage(LinearStage stage, void const* x, void* y, std::int64_t m, cudaStream_t stream,
                     std::int64_t ldx = 0);

  /// The M a GEMM plan is built for: multiples of 32 up to 256, then 8 steps per power of two
  /// (256, 288, 320, ..., 512, 576, ...), so padding wastes at most 12.5 % of the rows.
  static std::int64_t m_bucket(std::int64_t m);

  /// Empty when the CUTLASS backend can run a layer of this config with weight [n, k] on this
  /// build and device (W8A8, BF16 activations, N % 8 == 0, sm_90), else why not. Ignores
  /// config.backend.
  static std::string cutlass_unsupported(LinearConfig const& config, std::int64_t n, std::int64_t k);
  /// The same for the hand-written sm90 sparse backend (kSm90Sparse), which runs sparse layers only.
  static std::string sm90_sparse_unsupported(LinearConfig const& config, std::int64_t n, std::int64_t k);

  std::int64_t n() const noexcept { return n_; }
  std::int64_t k() const noexcept { return layout_.k(); }
  std::int64_t k_lifted() const noexcept { return layout_.k_lifted(); }
  std::int64_t n_padded() const noexcept { return n_padded_; }
  LinearConfig const& config() const noexcept { return config_; }
  ActivationLayout const& layout() const noexcept { return layout_; }
  DType accumulator_dtype() const noexcept { return acc_dtype_; }
  LinearMemory memory() const noexcept;
  std::string const& name() const noexcept { return name_; }
  /// Library and version of the GEMM backend, e.g. "cusparselt-800" or "cublaslt-130100".
  std::string const& backend_version() const noexcept;
  /// Whether the dequantization runs inside the dense GEMM (see fuse_dense_scales).
  bool dense_scales_fused() const noexcept { return fused_dense_; }
  /// Whether the layer runs on the CUTLASS backend (GEMM + fused epilogue in one kernel).
  bool uses_cutlass() const noexcept { return static_cast<bool>(cutlass_); }
  /// The backend the layer runs on (kCutlass, kSm90Sparse or kLibrary; never kAuto).
  GemmBackend backend() const noexcept { return backend_; }
  /// The GEMM configuration chosen for M's bucket (CUTLASS: kernel and options; libraries:
  /// the library name), empty before prepare(M).
  std::string gemm_description(std::int64_t m) const;

 private:
  struct Device;
  void reserve_scratch(std::int64_t bucket, cudaStream_t stream);
  struct Sm90Plan {
    int schedule;
    bool from_cache;
  };
  /// The fastest compiled schedule of the sm90 kernel at M_b rows (tuning cache, else timed).
  Sm90Plan choose_sm90_schedule(std::int64_t bucket, cudaStream_t stream) const;
  bool scratch_fits(std::int64_t bucket) const noexcept;
  void run(LinearStage const* only, void const* x, void* y, std::int64_t m, cudaStream_t stream, std::int64_t ldx);

  LinearConfig config_;
  std::string name_;
  ActivationLayout layout_;
  std::int64_t n_;
  /// kCutlass / kSm90Sparse: one kernel writes y (decided before n_padded_, which depends on it).
  GemmBackend backend_;
  std::int64_t n_padded_;
  DType acc_dtype_;
  bool fused_dense_ = false;
  bool shares_weight_ = false;  ///< device_ belongs to another layer (the sharing constructor)
  std::shared_ptr<Device> device_;
  std::shared_ptr<LinearScratch> scratch_;
  io::TuningCache* tuning_ = nullptr;
  std::unique_ptr<CusparseltGemm> sparse_;
  std::unique_ptr<CublasltGemm> dense_;
  std::unique_ptr<CutlassGemm> cutlass_;
  std::unique_ptr<Sm90SparseGemm> sm90_;
  std::map<std::int64_t, Sm90Plan> sm90_plans_;  ///< by M bucket: the fastest compiled schedule
};

}  // namespace slidesparse::cuda
