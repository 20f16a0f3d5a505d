/// \file gpu_model.hpp
/// \brief The Llama / Qwen2 decoder on the GPU: prefill and decode for a batch of sequences,
/// every projection a cuda::Linear (dense or SlideSparse, BF16 / FP8 / INT8), checked against
/// the CPU reference (cpu_model.hpp).
///
/// One forward step over T packed tokens (any mix of sequences, each appending its tokens to
/// its own KV-cache slot at consecutive positions):
///   residual = embed[token]                                   float32 [T, hidden]
///   per layer:
///     a   = RMSNorm(residual)                                 BF16 [T, hidden]
///     qkv = Linear_qkv(a)       (q | k | v fused, with bias)  BF16 [T, q_dim + 2 kv_dim]
///     q, K/V cache <- RoPE(q), RoPE(k), v at each token's (slot, position)
///     att = causal GQA attention over the cache              BF16 [T, q_dim]
///           (own kernel, or cuDNN's fused attention for prefill steps: GpuModelOptions::attention)
///     residual += Linear_o(att);  b = RMSNorm(residual)
///     gu  = Linear_gate_up(b)   (gate | up fused)             BF16 [T, 2 intermediate]
///     residual += Linear_down(silu(gate) * up)
///   logits = Linear_lm_head(RMSNorm(residual)) for every token, or only each sequence's last
///   (BF16 [rows, vocab]); greedy next token per sequence by argmax on the device.
/// Fusing q/k/v and gate/up concatenates weight rows, which changes neither the pattern (it runs
/// along K) nor the per-channel quantization (one scale per row). The lm_head and the
/// embeddings stay BF16 and dense.
///
/// Decode: decode_greedy() runs steps of one token per sequence for slots 0 .. B-1, each step's
/// input the previous step's argmax, entirely on the device (positions and lengths advance in
/// kernels), so a step is one CUDA graph launch. Steady state: after reserve() and the first
/// step at a batch size, no allocation, no host synchronization.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "slidesparse/core/pattern.hpp"
#include "slidesparse/cuda/cudnn_attention.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/linear.hpp"
#include "slidesparse/runtime/cpu_model.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::runtime {

class Projection;  // one projection of the GPU model (gpu_model.cpp)

/// Which attention implementation serves the forward (prefill) steps; decode steps always run
/// the own split-KV kernel (one query per sequence, captured in CUDA graphs).
enum class AttentionBackend {
  kAuto,   ///< cuDNN for steps whose longest sequence has >= kCudnnMinTokens new tokens, where it can run
  kOwn,    ///< the own mma.sync kernel (cuda::launch_attention)
  kCudnn,  ///< cuDNN for every forward step (an Error at reserve() where it cannot run, naming why)
};

struct GpuModelOptions {
  /// Projections: BF16 (no quantization), F8_E4M3 or I8 (W8A8: per-channel weight scales,
  /// per-token activation scales computed on the fly).
  DType compute_dtype = DType::kBF16;
  /// Projections in SlideSparse form; their weights must obey the pattern (prune first).
  std::optional<SparsityPattern> pattern;
  cuda::GemmBackend backend = cuda::GemmBackend::kAuto;
  bool fast_accumulation = true;
  /// SlideSparse projections also keep a dense copy of their pruned weight and run, per M bucket,
  /// whichever of the sparse backends and the dense one is fastest (cuda::DispatchLinear, timed
  /// on first use of a bucket, the choice kept in the tuning cache): never slower than dense at
  /// any batch, at the cost of the dense weights' memory (and, with backend kAuto, a second
  /// sparse copy: CUTLASS and cuSPARSELt) until release_unchosen() frees the copies no M
  /// bucket chose. A dense W8A8 model (backend kAuto) instead chooses
  /// per M bucket among its dense forms on one copy (dense CUTLASS, cuBLASLt with fused or
  /// separate scales; no extra weight memory): the dense baseline at its strongest, which
  /// `run --compare dense --dense-fallback` compares against. No effect on dense BF16.
  bool dense_fallback = false;
  AttentionBackend attention = AttentionBackend::kAuto;
  /// kAuto's threshold: below it the own kernel is as fast and needs no graph build.
  static constexpr std::int64_t kCudnnMinTokens = 64;
};

/// The tokens one forward step appends to the sequence in a slot.
struct SequenceStep {
  std::int64_t slot = 0;
  std::span<int const> tokens;
};

/// Where the time of profiled steps went (GPU time between CUDA events, summed).
struct TimeBreakdown {
  double linear_ms = 0;     ///< the projections and the lm_head (quantization, GEMM, epilogue)
  double attention_ms = 0;  ///< attention kernel
  double other_ms = 0;      ///< embedding, norms, RoPE + cache append, SwiGLU, argmax, bookkeeping
  std::map<std::string, double> by_operation;  ///< the same time by operation (qkv_proj, attention, ...)
  double total_ms() const noexcept { return linear_ms + attention_ms + other_ms; }
};

struct GpuModelMemory {
  std::size_t weights = 0;      ///< projections (compressed or dense), lm_head, embeddings, norms
  std::size_t kv_cache = 0;
  std::size_t activations = 0;  ///< per-step buffers, shared GEMM scratch, logits
  std::size_t total() const noexcept { return weights + kv_cache + activations; }
};

class GpuModel {
 public:
  /// Produces the float32 weights of one layer (called once per layer, in order, so a caller
  /// can generate or load them one at a time). Projections in dense form (not slid).
  using LayerSource = std::function<LayerWeights(std::int64_t layer)>;

  /// `embed` [vocab, hidden], `final_norm` [hidden], `lm_head` [vocab, hidden] (null when the
  /// embeddings are tied). `tuning` (may be null) must outlive the model.
  GpuModel(ModelConfig const& config, std::span<float const> embed, std::span<float const> final_norm,
           CpuLinear const* lm_head, LayerSource const& layers, GpuModelOptions const& options,
           io::TuningCache* tuning = nullptr);
  GpuModel(ModelWeights const& weights, GpuModelOptions const& options, io::TuningCache* tuning = nullptr);
  ~GpuModel();
  GpuModel(GpuModel const&) = delete;
  GpuModel& operator=(GpuModel const&) = delete;

  /// KV caches for `slots` sequences of up to `capacity` tokens each, and buffers for forward
  /// steps of up to `max_tokens` tokens. Empties every sequence. Sets up the cuDNN attention
  /// where options().attention asks for it (kCudnn: an Error naming why it cannot run).
  void reserve(std::int64_t slots, std::int64_t capacity, std::int64_t max_tokens);
  /// Empties the sequence in `slot`.
  void reset(std::int64_t slot);
  std::int64_t length(std::int64_t slot) const;

  /// Appends each step's tokens to its slot (a slot at most once per call) and computes the
  /// logits of every token (all_logits, in step order) or of each step's last token, on the
  /// device; without all_logits also each slot's greedy next token. Returns the logit rows.
  /// Errors (kUsage / kInvalidInput) name the slot and position of a bad token, a full
  /// sequence, a repeated slot, or a step larger than max_tokens.
  std::int64_t forward(std::span<SequenceStep const> steps, bool all_logits);
  /// `steps` greedy decode steps for slots 0 .. batch-1, each starting from the next token
  /// the previous forward or decode step chose for it. use_graph: each step is one CUDA graph
  /// launch (captured at the start of the call).
  void decode_greedy(std::int64_t batch, std::int64_t steps, bool use_graph = true);

  /// The logits [T, vocab] of every token of `tokens` run as a fresh sequence in slot 0 (which
  /// is emptied first): perplexity()'s WindowLogits. reserve() must allow T tokens.
  std::vector<float> sequence_logits(std::span<int const> tokens);
  /// GPU time of the last decode_greedy() call's steps (after its graph capture), in ms.
  double last_decode_ms() const;
  /// The last step's logits [rows, vocab] as float (synchronizes).
  std::vector<float> logits() const;
  /// The tokens in a slot's cache (prompt and generated inputs), then its pending next token
  /// is next_token(slot). Synchronize.
  std::vector<int> tokens(std::int64_t slot) const;
  int next_token(std::int64_t slot) const;

  /// Records CUDA events around every operation of the following steps and adds their times
  /// to the breakdown (synchronizes after each step; use for measurement only). A decode step
  /// under profiling runs without a graph.
  void set_profiling(bool on);
  TimeBreakdown const& breakdown() const noexcept { return breakdown_; }
  void clear_breakdown() noexcept { breakdown_ = {}; }

  void synchronize() const;
  cudaStream_t stream() const noexcept { return stream_; }
  ModelConfig const& config() const noexcept { return config_; }
  GpuModelOptions const& options() const noexcept { return options_; }
  GpuModelMemory memory() const;
  /// Memory policy of dense_fallback: every dispatching projection chooses its candidate for
  /// each M bucket up to max_m (timing them, or from the tuning cache: the first time a few
  /// seconds per distinct projection shape), then frees the weight copies of the candidates
  /// no bucket chose, e.g. the dense copy of a projection where sparse wins at every M, or the
  /// second sparse copy. Returns the device bytes freed (memory().weights falls by as much,
  /// less workspaces). Steps of more than max_m tokens choose among the kept candidates. A
  /// model without dispatching projections frees nothing. Synchronizes. tolerance > 0 also frees
  /// the candidates that win their buckets by less than that fraction (each bucket then runs
  /// within 1 + tolerance of its fastest; cuda::DispatchLinear::plan_release).
  std::size_t release_unchosen(std::int64_t max_m, double tolerance = 0.0);
  /// What the dispatching projections hold: "ROLE: candidate+candidate" (ROLE the projection's
  /// name without "layers.N.", e.g. "gate_up_proj", or "lm_head") -> how many projections hold
  /// exactly that set. Empty for a model without dispatching projections.
  std::map<std::string, int> dispatch_holdings() const;
  /// The GEMM each projection of layer 0 runs at M (after a step of that size).
  std::string describe_gemms(std::int64_t m) const;
  /// The attention of forward steps after reserve(): "cudnn-91400 (steps of >= 64 new tokens)",
  /// "cudnn-91400 (every forward step)" or "own kernel" with the reason cuDNN is not used.
  std::string describe_attention() const;

 private:
  struct Layer;

 public:
  struct Plan;  ///< internal: device pointers to one step's metadata (gpu_model.cpp)

 private:
  enum class Category { kLinear, kAttention, kOther };
  void build(std::span<float const> embed, std::span<float const> final_norm, CpuLinear const* lm_head,
             LayerSource const& layers);
  void run_step(Plan const& plan, int const* tokens, bool all_logits);
  template <typename F>
  void op(Category category, char const* name, F&& f);
  void ensure_logits(std::int64_t rows);
  void prepare_decode(std::int64_t batch);
  void upload_lengths();
  void collect_profile();

  ModelConfig config_;
  GpuModelOptions options_;
  io::TuningCache* tuning_;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<cuda::LinearScratch> scratch_;
  cuda::DeviceBuffer embed_, final_norm_;
  std::vector<Layer> layers_;
  std::unique_ptr<Projection> lm_head_;
  /// Every projection: the lm_head, then each layer's qkv, o, gate_up and down.
  std::vector<Projection*> projections() const;

  // capacity_: the tokens a slot may hold; cache_rows_: rows per slot in the KV cache and the
  // history (capacity_ rounded up to a multiple of 64, so cuDNN can page the cache).
  std::int64_t slots_ = 0, capacity_ = 0, cache_rows_ = 0, max_tokens_ = 0;
  std::unique_ptr<cuda::CudnnAttention> cudnn_attention_;
  std::string attention_note_;  // why the own kernel serves forward steps (kAuto)
  std::vector<std::int64_t> lengths_;
  std::vector<bool> has_next_;
  cuda::DeviceBuffer rope_table_, k_cache_, v_cache_, history_, seq_len_, next_token_;
  cuda::DeviceBuffer residual_, normed_, qkv_out_, q_, attn_, proj_, gate_up_, act_, last_rows_, logits_;
  std::int64_t logits_capacity_rows_ = 0, logits_rows_ = 0;
  cuda::DeviceBuffer step_plan_, decode_plan_, partial_o_, partial_ml_;
  std::unique_ptr<Plan> decode_view_;
  std::int64_t decode_batch_ = 0;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t graph_exec_ = nullptr;
  cudaEvent_t decode_start_ = nullptr, decode_end_ = nullptr;

  bool profiling_ = false;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> events_;
  std::vector<Category> event_categories_;
  std::vector<char const*> event_names_;
  TimeBreakdown breakdown_;
};

}  // namespace slidesparse::runtime
