#include "slidesparse/runtime/gpu_model.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"
#include "slidesparse/core/parallel.hpp"
#include "slidesparse/core/quantize.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/dispatch_linear.hpp"
#include "slidesparse/cuda/model_kernels.hpp"

namespace slidesparse::runtime {

// A projection of a layer: one cuda::Linear, or with GpuModelOptions::dense_fallback a
// DispatchLinear that holds the SlideSparse backends and a dense copy of the pruned weight (or,
// for a dense W8A8 model, only the dense forms) and runs, per M bucket, whichever is fastest
// (chosen by timing, kept in the tuning cache).
class Projection {
 public:
  explicit Projection(std::unique_ptr<cuda::Linear> single) : single_(std::move(single)) {}
  explicit Projection(std::unique_ptr<cuda::DispatchLinear> dispatch) : dispatch_(std::move(dispatch)) {}
  void prepare(std::int64_t m, cudaStream_t stream) {
    if (single_) single_->prepare(m, stream);
    else dispatch_->prepare(m, stream);
  }
  void forward(void const* x, void* y, std::int64_t m, cudaStream_t stream) {
    if (single_) single_->forward(x, y, m, stream);
    else dispatch_->forward(x, y, m, stream);
  }
  /// A dispatching projection chooses its candidate for every M bucket up to max_m, then frees
  /// the others' weight copies; the bytes freed (0 for a single Linear).
  std::size_t release_unchosen(std::int64_t max_m, double tolerance, cudaStream_t stream) {
    if (!dispatch_) return 0;
    dispatch_->prepare_up_to(max_m, stream);
    return dispatch_->release_unchosen(stream, tolerance);
  }
  cuda::LinearMemory memory() const noexcept { return single_ ? single_->memory() : dispatch_->memory(); }
  std::string const& name() const noexcept { return single_ ? single_->name() : dispatch_->name(); }
  /// The candidates a dispatching projection holds, joined by '+'; empty for a single Linear.
  std::string kept() const { return dispatch_ ? fmt::format("{}", fmt::join(dispatch_->candidates(), "+")) : ""; }
  /// The GEMM configuration for M (single), or which candidate the dispatch chose for M's bucket.
  std::string gemm_description(std::int64_t m) const {
    if (single_) return single_->gemm_description(m);
    std::string const chosen = dispatch_->description(m);
    return "dispatch -> " + (chosen.empty() ? std::string("(not prepared)") : chosen);
  }

 private:
  std::unique_ptr<cuda::Linear> single_;
  std::unique_ptr<cuda::DispatchLinear> dispatch_;
};

struct GpuModel::Layer {
  cuda::DeviceBuffer attn_norm, ffn_norm;  // F32 [hidden]
  std::unique_ptr<Projection> qkv, o, gate_up, down;
};

// Device pointers of one step's metadata (all int32, in one buffer; see forward()).
struct GpuModel::Plan {
  std::int64_t tokens = 0, segments = 0, tiles = 0;
  int const* token_ids = nullptr;  // [tokens] (null for decode: the next-token buffer)
  int const* token_slot = nullptr;
  int* token_pos = nullptr;
  int const* segment_slot = nullptr;
  int const* segment_token_start = nullptr;
  int const* segment_tokens = nullptr;
  int const* tile_segment = nullptr;
  int const* tile_row_start = nullptr;
  int const* last_token = nullptr;  // [segments] packed index of each segment's last token
  int splits = 1;                   // split-KV attention (decode)
  // cuDNN attention (forward steps): [segments] cache length after the step, [segments + 1]
  // query offsets (elements), [segments][pages per slot] page table; null for decode.
  int const* segment_kv = nullptr;
  int const* q_offsets = nullptr;
  int const* page_table = nullptr;
  std::int64_t max_segment_tokens = 0;
};

namespace {

std::size_t bytes_of(std::int64_t count, std::size_t elem) { return static_cast<std::size_t>(count) * elem; }

// Host-side plan arrays in the order of the device buffer: ids, slot, pos | segment slot,
// start, tokens, last | tile segment, row start | segment cache length, query offsets, page
// table (the last three only with a page table, i.e. where cuDNN attention may run).
constexpr std::size_t kPlanArrays = 12;
struct HostPlan {
  std::int64_t q_dim = 0;           // elements per token of q (query offsets)
  std::int64_t pages_per_slot = 0;  // cuDNN page table width; 0: no cuDNN arrays
  std::vector<int> ids, slot, pos, seg_slot, seg_start, seg_tokens, seg_last, tile_seg, tile_row, seg_kv, q_off, pages;
  int max_segment_tokens = 0;

  void add_segment(int s_slot, int start, int count, int first_pos, int group) {
    int const segment = static_cast<int>(seg_slot.size());
    seg_slot.push_back(s_slot);
    seg_start.push_back(start);
    seg_tokens.push_back(count);
    seg_last.push_back(start + count - 1);
    max_segment_tokens = std::max(max_segment_tokens, count);
    for (int t = 0; t < count; ++t) {
      slot.push_back(s_slot);
      pos.push_back(first_pos + t);
    }
    for (int r = 0; r < count * group; r += cuda::kAttentionTileRows) {
      tile_seg.push_back(segment);
      tile_row.push_back(r);
    }
    if (pages_per_slot > 0) {
      seg_kv.push_back(first_pos + count);
      q_off.push_back(static_cast<int>(start * q_dim));
      for (std::int64_t j = 0; j < pages_per_slot; ++j) pages.push_back(static_cast<int>(s_slot * pages_per_slot + j));
    }
  }
  // The device view of flatten()'s result uploaded to `base`.
  GpuModel::Plan on_device(int* base, std::array<std::size_t, kPlanArrays> const& off) const;
  // Concatenation and the offsets of each array (in ints). The query offsets end with the
  // total, T * q_dim.
  std::vector<int> flatten(std::array<std::size_t, kPlanArrays>& offsets) const {
    std::vector<int> all;
    std::size_t i = 0;
    for (auto const* v : {&ids, &slot, &pos, &seg_slot, &seg_start, &seg_tokens, &seg_last, &tile_seg, &tile_row, &seg_kv,
                          &q_off, &pages}) {
      offsets[i++] = all.size();
      all.insert(all.end(), v->begin(), v->end());
      if (v == &q_off && pages_per_slot > 0) all.push_back(static_cast<int>(static_cast<std::int64_t>(slot.size()) * q_dim));
    }
    return all;
  }
  // Ints the device buffer needs for a step of `tokens` tokens in at most `segments` segments.
  static std::int64_t capacity_ints(std::int64_t tokens, std::int64_t segments, std::int64_t tiles, std::int64_t pages) {
    return 3 * tokens + 4 * segments + 2 * tiles + 2 * segments + 1 + segments * pages;
  }
};

GpuModel::Plan HostPlan::on_device(int* base, std::array<std::size_t, kPlanArrays> const& off) const {
  GpuModel::Plan p;
  p.tokens = static_cast<std::int64_t>(slot.size());
  p.segments = static_cast<std::int64_t>(seg_slot.size());
  p.tiles = static_cast<std::int64_t>(tile_seg.size());
  p.token_ids = base + off[0];
  p.token_slot = base + off[1];
  p.token_pos = base + off[2];
  p.segment_slot = base + off[3];
  p.segment_token_start = base + off[4];
  p.segment_tokens = base + off[5];
  p.last_token = base + off[6];
  p.tile_segment = base + off[7];
  p.tile_row_start = base + off[8];
  if (pages_per_slot > 0) {
    p.segment_kv = base + off[9];
    p.q_offsets = base + off[10];
    p.page_table = base + off[11];
  }
  p.max_segment_tokens = max_segment_tokens;
  return p;
}

// Converts and concatenates the rows of `parts` (same K) into one projection: a cuda::Linear, or,
// with options.dense_fallback, a DispatchLinear: for a SlideSparse projection its sparse
// candidates follow options.backend (auto: CUTLASS and cuSPARSELt, each a weight copy; sm90: the
// hand-written kernel) plus the
// dense forms on one dense copy; for a dense W8A8 projection (backend auto) the dense forms
// alone (dense CUTLASS, cuBLASLt with fused / separate scales: one copy), so that a dense model
// built with the same option is the strongest dense baseline.
std::unique_ptr<Projection> make_projection(std::string const& name, std::initializer_list<CpuLinear const*> parts,
                                            GpuModelOptions const& options, bool dense_bf16, cudaStream_t stream,
                                            io::TuningCache* tuning, std::shared_ptr<cuda::LinearScratch> const& scratch) {
  std::int64_t const k = (*parts.begin())->k();
  std::int64_t n = 0;
  bool const has_bias = !(*parts.begin())->bias().empty();
  for (CpuLinear const* p : parts) {
    if (p->is_slid()) fail(ErrorKind::kUsage, "{}: the GPU model takes projections in dense form, not slid", name);
    if (p->k() != k || p->bias().empty() == has_bias) {
      fail(ErrorKind::kInvalidInput, "{}: fused parts differ in K or in having a bias", name);
    }
    n += p->n();
  }
  DType const dtype = dense_bf16 ? DType::kBF16 : options.compute_dtype;
  if (dtype != DType::kBF16 && dtype != DType::kF8E4M3 && dtype != DType::kI8) {
    fail(ErrorKind::kUsage, "GPU model: projections must be BF16, F8_E4M3 or I8, not {}", dtype_name(dtype));
  }
  cuda::LinearConfig config;
  config.compute_dtype = dtype;
  config.activation_dtype = DType::kBF16;
  config.pattern = dense_bf16 ? std::nullopt : options.pattern;
  config.backend = dense_bf16 ? cuda::GemmBackend::kLibrary : options.backend;
  // The sm90 kernel is 2:4 only: a dense projection of such a model (--compare dense) runs as
  // with kAuto (dense CUTLASS where it can, else cuBLASLt).
  if (config.backend == cuda::GemmBackend::kSm90Sparse && !config.pattern) config.backend = cuda::GemmBackend::kAuto;
  config.fast_accumulation = options.fast_accumulation;
  // Each part is converted straight into its rows of the fused weight (no float copy of the
  // whole): BF16 rounding, or per-channel quantization (one scale per row, so per part).
  std::vector<std::byte> codes(static_cast<std::size_t>(n * k) * dtype_size(dtype));
  std::vector<float> scales(dtype == DType::kBF16 ? 0 : static_cast<std::size_t>(n));
  std::vector<float> bias;
  std::int64_t row = 0;
  for (CpuLinear const* p : parts) {
    std::byte* dst = codes.data() + static_cast<std::size_t>(row * k) * dtype_size(dtype);
    if (dtype == DType::kBF16) {
      float const* src = p->weight().data();
      auto* out = reinterpret_cast<std::uint16_t*>(dst);
      parallel_for(p->n() * k, 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) out[i] = float_to_bf16(src[i]).bits;
      });
    } else {
      ConstMatrixView const src{DType::kF32, p->n(), k, reinterpret_cast<std::byte const*>(p->weight().data()), name};
      quantize_weight_per_channel(src, MatrixView{dtype, p->n(), k, dst, name},
                                  std::span<float>(scales).subspan(static_cast<std::size_t>(row), static_cast<std::size_t>(p->n())));
    }
    bias.insert(bias.end(), p->bias().begin(), p->bias().end());
    row += p->n();
  }
  cuda::LinearWeights const lw{ConstMatrixView{dtype, n, k, codes.data(), name}, scales, bias};
  bool const w8a8 = dtype == DType::kF8E4M3 || dtype == DType::kI8;
  bool const dense_choice = !config.pattern && w8a8 && config.backend == cuda::GemmBackend::kAuto;
  if (options.dense_fallback && (config.pattern || dense_choice)) {
    cuda::DispatchConfig dispatch;
    dispatch.layer = config;
    cuda::GemmBackend const b = options.backend;
    dispatch.cutlass = b == cuda::GemmBackend::kAuto || b == cuda::GemmBackend::kCutlass || !config.pattern;
    // Not in kAuto: one more compressed copy for a candidate that rarely beats CUTLASS's (DispatchConfig::sm90).
    dispatch.sm90 = b == cuda::GemmBackend::kSm90Sparse;
    dispatch.cusparselt = b == cuda::GemmBackend::kAuto || b == cuda::GemmBackend::kLibrary;
    dispatch.dense_fallback = true;
    return std::make_unique<Projection>(std::make_unique<cuda::DispatchLinear>(dispatch, lw, stream, tuning, name, scratch));
  }
  return std::make_unique<Projection>(std::make_unique<cuda::Linear>(config, lw, stream, tuning, name, scratch));
}

template <typename T>
cuda::DeviceBuffer upload(std::span<T const> host, cudaStream_t stream) {
  cuda::DeviceBuffer buffer(host.size_bytes());
  if (!host.empty()) {
    SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(buffer.get(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice, stream));
    SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host copy may be freed next
  }
  return buffer;
}

}  // namespace

GpuModel::GpuModel(ModelConfig const& config, std::span<float const> embed, std::span<float const> final_norm,
                   CpuLinear const* lm_head, LayerSource const& layers, GpuModelOptions const& options,
                   io::TuningCache* tuning)
    : config_(config), options_(options), tuning_(tuning) {
  build(embed, final_norm, lm_head, layers);
}

GpuModel::GpuModel(ModelWeights const& w, GpuModelOptions const& options, io::TuningCache* tuning)
    : config_(w.config), options_(options), tuning_(tuning) {
  w.validate();
  build(w.embed, w.final_norm, &w.lm_head, [&](std::int64_t l) { return w.layers[static_cast<std::size_t>(l)]; });
}

void GpuModel::build(std::span<float const> embed, std::span<float const> final_norm, CpuLinear const* lm_head,
                     LayerSource const& layers) {
  ModelConfig const& c = config_;
  c.validate();
  if (c.head_dim % 8 != 0 || c.head_dim > 128) {
    fail(ErrorKind::kUsage, "GPU model {}: head_dim {} is not supported (a multiple of 8, at most 128)", c.name,
         c.head_dim);
  }
  if (static_cast<std::int64_t>(embed.size()) != c.vocab * c.hidden ||
      static_cast<std::int64_t>(final_norm.size()) != c.hidden) {
    fail(ErrorKind::kInvalidInput, "GPU model {}: embed has {} values (needs {}), final_norm {} (needs {})", c.name,
         embed.size(), c.vocab * c.hidden, final_norm.size(), c.hidden);
  }
  SLIDESPARSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&decode_start_));
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&decode_end_));
  scratch_ = std::make_shared<cuda::LinearScratch>();
  {
    std::vector<std::uint16_t> bf(embed.size());
    parallel_for(static_cast<std::int64_t>(embed.size()), 1, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) bf[static_cast<std::size_t>(i)] = float_to_bf16(embed[static_cast<std::size_t>(i)]).bits;
    });
    embed_ = upload<std::uint16_t>(bf, stream_);
  }
  final_norm_ = upload(final_norm, stream_);
  CpuLinear tied;
  if (!lm_head) {
    tied = CpuLinear(std::vector<float>(embed.begin(), embed.end()), c.vocab, c.hidden);
    lm_head = &tied;
  }
  if (lm_head->n() != c.vocab || lm_head->k() != c.hidden) {
    fail(ErrorKind::kInvalidInput, "GPU model {}: lm_head is [{}, {}], needs [{}, {}]", c.name, lm_head->n(),
         lm_head->k(), c.vocab, c.hidden);
  }
  lm_head_ = make_projection("lm_head", {lm_head}, options_, true, stream_, tuning_, scratch_);
  tied = CpuLinear();
  layers_.resize(static_cast<std::size_t>(c.layers));
  for (std::int64_t l = 0; l < c.layers; ++l) {
    LayerWeights const L = layers(l);
    std::string const p = "layers." + std::to_string(l) + ".";
    if (static_cast<std::int64_t>(L.attn_norm.size()) != c.hidden || static_cast<std::int64_t>(L.ffn_norm.size()) != c.hidden) {
      fail(ErrorKind::kInvalidInput, "GPU model {}: {}norms have {} / {} values, need {}", c.name, p, L.attn_norm.size(),
           L.ffn_norm.size(), c.hidden);
    }
    auto check = [&](char const* what, CpuLinear const& lin, std::int64_t n, std::int64_t k) {
      if (lin.n() != n || lin.k() != k) {
        fail(ErrorKind::kInvalidInput, "GPU model {}: {}{} is [{}, {}], the config needs [{}, {}]", c.name, p, what,
             lin.n(), lin.k(), n, k);
      }
    };
    check("q_proj", L.q, c.q_dim(), c.hidden);
    check("k_proj", L.k, c.kv_dim(), c.hidden);
    check("v_proj", L.v, c.kv_dim(), c.hidden);
    check("o_proj", L.o, c.hidden, c.q_dim());
    check("gate_proj", L.gate, c.intermediate, c.hidden);
    check("up_proj", L.up, c.intermediate, c.hidden);
    check("down_proj", L.down, c.hidden, c.intermediate);
    Layer& dst = layers_[static_cast<std::size_t>(l)];
    dst.attn_norm = upload<float>(L.attn_norm, stream_);
    dst.ffn_norm = upload<float>(L.ffn_norm, stream_);
    try {
      dst.qkv = make_projection(p + "qkv_proj", {&L.q, &L.k, &L.v}, options_, false, stream_, tuning_, scratch_);
      dst.o = make_projection(p + "o_proj", {&L.o}, options_, false, stream_, tuning_, scratch_);
      dst.gate_up = make_projection(p + "gate_up_proj", {&L.gate, &L.up}, options_, false, stream_, tuning_, scratch_);
      dst.down = make_projection(p + "down_proj", {&L.down}, options_, false, stream_, tuning_, scratch_);
    } catch (Error const& e) {
      fail(e.kind(), "GPU model {}: {}", c.name, e.what());
    }
  }
  // RoPE table for the positions of the largest cache is built in reserve().
}

GpuModel::~GpuModel() {
  if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  if (graph_) cudaGraphDestroy(graph_);
  if (decode_start_) cudaEventDestroy(decode_start_);
  if (decode_end_) cudaEventDestroy(decode_end_);
  for (auto& [a, b] : events_) {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // Buffers and layers are freed by their destructors; the stream goes last.
  layers_.clear();
  lm_head_.reset();
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

void GpuModel::reserve(std::int64_t slots, std::int64_t capacity, std::int64_t max_tokens) {
  ModelConfig const& c = config_;
  if (slots <= 0 || capacity <= 0 || max_tokens <= 0) {
    fail(ErrorKind::kUsage, "GPU model: reserve needs positive slots, capacity and max_tokens (got {}, {}, {})", slots,
         capacity, max_tokens);
  }
  std::int64_t const cache_rows = (capacity + 63) / 64 * 64;
  if (capacity > std::int64_t{1} << 30 || slots * cache_rows > std::int64_t{1} << 31) {
    fail(ErrorKind::kUsage, "GPU model: {} slots of {} tokens exceed the 32-bit position indices", slots, capacity);
  }
  // The cuDNN query offsets (int32 elements) reach max_tokens * q_dim.
  if (max_tokens * c.q_dim() > std::int64_t{1} << 31) {
    fail(ErrorKind::kUsage, "GPU model: steps of {} tokens x {} query elements exceed the 32-bit query offsets",
         max_tokens, c.q_dim());
  }
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  if (graph_) cudaGraphDestroy(graph_);
  graph_exec_ = nullptr;
  graph_ = nullptr;
  decode_batch_ = 0;
  slots_ = slots;
  capacity_ = capacity;
  cache_rows_ = cache_rows;
  max_tokens_ = max_tokens;
  lengths_.assign(static_cast<std::size_t>(slots), 0);
  has_next_.assign(static_cast<std::size_t>(slots), false);

  // RoPE (cos, sin) per position and pair, from the same double-precision angles as the CPU.
  std::vector<double> const inv_freq = c.rope_inverse_frequencies();
  std::int64_t const half = c.head_dim / 2;
  std::vector<float2> table(static_cast<std::size_t>(capacity * half));
  for (std::int64_t p = 0; p < capacity; ++p) {
    for (std::int64_t i = 0; i < half; ++i) {
      double const angle = static_cast<double>(p) * inv_freq[static_cast<std::size_t>(i)];
      table[static_cast<std::size_t>(p * half + i)] = float2{static_cast<float>(std::cos(angle)), static_cast<float>(std::sin(angle))};
    }
  }
  rope_table_ = upload<float2>(table, stream_);

  std::size_t const cache_bytes = bytes_of(c.layers * slots * cache_rows * c.kv_dim(), 2);
  k_cache_.allocate(cache_bytes);
  v_cache_.allocate(cache_bytes);
  history_.allocate(bytes_of(slots * cache_rows, 4));
  seq_len_.allocate(bytes_of(slots, 4));
  next_token_.allocate(bytes_of(slots, 4));
  SLIDESPARSE_CUDA_CHECK(cudaMemsetAsync(next_token_.get(), 0, next_token_.size(), stream_));
  upload_lengths();

  std::int64_t const T = max_tokens, H = c.hidden;
  residual_.allocate(bytes_of(T * H, 4));
  normed_.allocate(bytes_of(T * H, 2));
  qkv_out_.allocate(bytes_of(T * (c.q_dim() + 2 * c.kv_dim()), 2));
  q_.allocate(bytes_of(T * c.q_dim(), 2));
  attn_.allocate(bytes_of(T * c.q_dim(), 2));
  proj_.allocate(bytes_of(T * H, 2));
  gate_up_.allocate(bytes_of(T * 2 * c.intermediate, 2));
  act_.allocate(bytes_of(T * c.intermediate, 2));
  last_rows_.allocate(bytes_of(std::min(T, slots) * H, 2));
  logits_.reset();
  logits_capacity_rows_ = 0;
  logits_rows_ = 0;
  // Forward steps' attention: cuDNN where asked for and possible (kAuto: else the own kernel,
  // saying why).
  cudnn_attention_.reset();
  attention_note_.clear();
  if (options_.attention != AttentionBackend::kOwn) {
    std::string const why = cuda::CudnnAttention::unsupported(static_cast<int>(c.heads), static_cast<int>(c.kv_heads),
                                                              static_cast<int>(c.head_dim), cache_rows);
    if (why.empty()) {
      cudnn_attention_ = std::make_unique<cuda::CudnnAttention>(
          static_cast<int>(c.heads), static_cast<int>(c.kv_heads), static_cast<int>(c.head_dim), slots, cache_rows,
          1.0f / std::sqrt(static_cast<float>(c.head_dim)));
    } else if (options_.attention == AttentionBackend::kCudnn) {
      fail(ErrorKind::kUsage, "GPU model: cuDNN attention cannot run: {}", why);
    } else {
      attention_note_ = why;
    }
  }
  // Plan: 3 ints per token, 4 per segment (segments <= min(T, slots)), 2 per tile, and the
  // cuDNN arrays (2 per segment + 1, and the page table).
  std::int64_t const segments = std::min(T, slots);
  std::int64_t const group = c.heads / c.kv_heads;
  std::int64_t const tiles = (T * group + cuda::kAttentionTileRows - 1) / cuda::kAttentionTileRows + segments;
  std::int64_t const pages = cudnn_attention_ ? cudnn_attention_->pages_per_slot() : 0;
  step_plan_.allocate(bytes_of(HostPlan::capacity_ints(T, segments, tiles, pages), 4));
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuModel::upload_lengths() {
  std::vector<int> host(lengths_.begin(), lengths_.end());
  SLIDESPARSE_CUDA_CHECK(
      cudaMemcpyAsync(seq_len_.get(), host.data(), host.size() * sizeof(int), cudaMemcpyHostToDevice, stream_));
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // host is a local
}

void GpuModel::reset(std::int64_t slot) {
  if (slot < 0 || slot >= slots_) fail(ErrorKind::kUsage, "GPU model: slot {} outside 0..{}", slot, slots_ - 1);
  lengths_[static_cast<std::size_t>(slot)] = 0;
  has_next_[static_cast<std::size_t>(slot)] = false;
  upload_lengths();
}

std::int64_t GpuModel::length(std::int64_t slot) const {
  if (slot < 0 || slot >= slots_) fail(ErrorKind::kUsage, "GPU model: slot {} outside 0..{}", slot, slots_ - 1);
  return lengths_[static_cast<std::size_t>(slot)];
}

template <typename F>
void GpuModel::op(Category category, char const* name, F&& f) {
  if (!profiling_) {
    f();
    return;
  }
  std::pair<cudaEvent_t, cudaEvent_t> ev{};
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&ev.first));
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&ev.second));
  events_.push_back(ev);
  event_categories_.push_back(category);
  event_names_.push_back(name);
  SLIDESPARSE_CUDA_CHECK(cudaEventRecord(ev.first, stream_));
  f();
  SLIDESPARSE_CUDA_CHECK(cudaEventRecord(ev.second, stream_));
}

void GpuModel::set_profiling(bool on) { profiling_ = on; }

void GpuModel::ensure_logits(std::int64_t rows) {
  if (rows <= logits_capacity_rows_) return;
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  logits_.allocate(bytes_of(rows * config_.vocab, 2));
  logits_capacity_rows_ = rows;
}

void GpuModel::run_step(Plan const& p, int const* tokens, bool all_logits) {
  ModelConfig const& c = config_;
  std::int64_t const T = p.tokens, H = c.hidden, I = c.intermediate;
  auto const eps = static_cast<float>(c.rms_eps);
  auto* residual = residual_.as<float>();
  op(Category::kOther, "embed", [&] {
    SLIDESPARSE_CUDA_CHECK(cuda::launch_embed(embed_.get(), tokens, p.token_slot, p.token_pos, T, H, residual,
                                              history_.as<int>(), cache_rows_, stream_));
  });
  std::int64_t const layer_cache = slots_ * cache_rows_ * c.kv_dim();  // elements per layer
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = layers_[l];
    op(Category::kOther, "rms_norm", [&] {
      SLIDESPARSE_CUDA_CHECK(cuda::launch_add_rms_norm(residual, l == 0 ? nullptr : proj_.get(), L.attn_norm.as<float>(), T, H,
                                                       eps, normed_.get(), stream_));
    });
    op(Category::kLinear, "qkv_proj", [&] { L.qkv->forward(normed_.get(), qkv_out_.get(), T, stream_); });
    void* k_cache = k_cache_.as<std::uint16_t>() + static_cast<std::int64_t>(l) * layer_cache;
    void* v_cache = v_cache_.as<std::uint16_t>() + static_cast<std::int64_t>(l) * layer_cache;
    op(Category::kOther, "rope_cache", [&] {
      cuda::RopeCacheArgs a;
      a.qkv = qkv_out_.get();
      a.token_slot = p.token_slot;
      a.token_pos = p.token_pos;
      a.tokens = T;
      a.heads = static_cast<int>(c.heads);
      a.kv_heads = static_cast<int>(c.kv_heads);
      a.head_dim = static_cast<int>(c.head_dim);
      a.rope_table = rope_table_.as<float2>();
      a.q_out = q_.get();
      a.k_cache = k_cache;
      a.v_cache = v_cache;
      a.capacity = cache_rows_;
      SLIDESPARSE_CUDA_CHECK(cuda::launch_rope_cache(a, stream_));
    });
    // Forward steps with long enough segments (every forward step with kCudnn) on cuDNN;
    // decode steps (no page table in their plan) on the own split-KV kernel.
    bool const on_cudnn = cudnn_attention_ && p.page_table &&
                          (options_.attention == AttentionBackend::kCudnn ||
                           p.max_segment_tokens >= GpuModelOptions::kCudnnMinTokens);
    op(Category::kAttention, "attention", [&] {
      if (on_cudnn) {
        cuda::CudnnAttentionArgs a;
        a.q = q_.get();
        a.out = attn_.get();
        a.k_cache = k_cache;
        a.v_cache = v_cache;
        a.segments = p.segments;
        a.max_segment_tokens = p.max_segment_tokens;
        a.seq_len_q = p.segment_tokens;
        a.seq_len_kv = p.segment_kv;
        a.q_offsets = p.q_offsets;
        a.page_table = p.page_table;
        try {
          cudnn_attention_->run(a, stream_);
          return;
        } catch (Error const& e) {  // kAuto: a graph cuDNN cannot build falls back for good
          if (options_.attention == AttentionBackend::kCudnn) throw;
          attention_note_ = e.what();
          cudnn_attention_.reset();
        }
      }
      cuda::AttentionArgs a;
      a.q = q_.get();
      a.k_cache = k_cache;
      a.v_cache = v_cache;
      a.capacity = cache_rows_;
      a.token_pos = p.token_pos;
      a.segment_slot = p.segment_slot;
      a.segment_token_start = p.segment_token_start;
      a.segment_tokens = p.segment_tokens;
      a.tile_segment = p.tile_segment;
      a.tile_row_start = p.tile_row_start;
      a.tiles = static_cast<int>(p.tiles);
      a.heads = static_cast<int>(c.heads);
      a.kv_heads = static_cast<int>(c.kv_heads);
      a.head_dim = static_cast<int>(c.head_dim);
      a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      a.out = attn_.get();
      a.splits = p.splits;
      a.tokens = T;
      a.partial_o = partial_o_.as<float>();
      a.partial_ml = partial_ml_.as<float2>();
      SLIDESPARSE_CUDA_CHECK(cuda::launch_attention(a, stream_));
    });
    op(Category::kLinear, "o_proj", [&] { L.o->forward(attn_.get(), proj_.get(), T, stream_); });
    op(Category::kOther, "rms_norm", [&] {
      SLIDESPARSE_CUDA_CHECK(cuda::launch_add_rms_norm(residual, proj_.get(), L.ffn_norm.as<float>(), T, H, eps,
                                                       normed_.get(), stream_));
    });
    op(Category::kLinear, "gate_up_proj", [&] { L.gate_up->forward(normed_.get(), gate_up_.get(), T, stream_); });
    op(Category::kOther, "swiglu", [&] { SLIDESPARSE_CUDA_CHECK(cuda::launch_swiglu(gate_up_.get(), T, I, act_.get(), stream_)); });
    op(Category::kLinear, "down_proj", [&] { L.down->forward(act_.get(), proj_.get(), T, stream_); });
  }
  std::int64_t const rows = all_logits ? T : p.segments;
  op(Category::kOther, "final_norm", [&] {
    SLIDESPARSE_CUDA_CHECK(cuda::launch_add_rms_norm(residual, proj_.get(), final_norm_.as<float>(), T, H, eps,
                                                     normed_.get(), stream_));
    if (!all_logits) {
      SLIDESPARSE_CUDA_CHECK(cuda::launch_gather_rows(normed_.get(), p.last_token, rows, H, last_rows_.get(), stream_));
    }
  });
  op(Category::kLinear, "lm_head", [&] {
    lm_head_->forward(all_logits ? normed_.get() : last_rows_.get(), logits_.get(), rows, stream_);
  });
  if (!all_logits) {
    op(Category::kOther, "argmax", [&] {
      SLIDESPARSE_CUDA_CHECK(cuda::launch_argmax(logits_.get(), rows, c.vocab, p.segment_slot, next_token_.as<int>(), stream_));
    });
  }
  logits_rows_ = rows;
}

std::int64_t GpuModel::forward(std::span<SequenceStep const> steps, bool all_logits) {
  ModelConfig const& c = config_;
  if (slots_ == 0) fail(ErrorKind::kUsage, "GPU model: call reserve() before forward()");
  HostPlan plan;
  plan.q_dim = c.q_dim();
  plan.pages_per_slot = cudnn_attention_ ? cudnn_attention_->pages_per_slot() : 0;
  std::vector<bool> seen(static_cast<std::size_t>(slots_), false);
  int const group = static_cast<int>(c.heads / c.kv_heads);
  for (SequenceStep const& step : steps) {
    if (step.slot < 0 || step.slot >= slots_) fail(ErrorKind::kUsage, "GPU model: slot {} outside 0..{}", step.slot, slots_ - 1);
    auto const s = static_cast<std::size_t>(step.slot);
    if (seen[s]) fail(ErrorKind::kUsage, "GPU model: slot {} appears twice in one forward step", step.slot);
    seen[s] = true;
    auto const count = static_cast<std::int64_t>(step.tokens.size());
    if (count == 0) continue;
    if (lengths_[s] + count > capacity_) {
      fail(ErrorKind::kUsage, "GPU model: slot {} holds {} tokens; {} more exceed its capacity {}", step.slot, lengths_[s],
           count, capacity_);
    }
    for (std::int64_t t = 0; t < count; ++t) {
      int const id = step.tokens[static_cast<std::size_t>(t)];
      if (id < 0 || id >= c.vocab) {
        fail(ErrorKind::kInvalidInput, "GPU model: token id {} at position {} of slot {} is outside the vocabulary of {}",
             id, lengths_[s] + t, step.slot, c.vocab);
      }
    }
    int const start = static_cast<int>(plan.ids.size());
    if (start + count > max_tokens_) {
      fail(ErrorKind::kUsage, "GPU model: a step of {}+ tokens exceeds max_tokens {} given to reserve()", start + count,
           max_tokens_);
    }
    plan.ids.insert(plan.ids.end(), step.tokens.begin(), step.tokens.end());
    plan.add_segment(static_cast<int>(step.slot), start, static_cast<int>(count), static_cast<int>(lengths_[s]), group);
  }
  auto const T = static_cast<std::int64_t>(plan.ids.size());
  if (T == 0) return 0;
  std::array<std::size_t, kPlanArrays> off{};
  std::vector<int> const flat = plan.flatten(off);
  SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(step_plan_.get(), flat.data(), flat.size() * sizeof(int), cudaMemcpyHostToDevice, stream_));
  Plan const p = plan.on_device(step_plan_.as<int>(), off);
  ensure_logits(all_logits ? T : p.segments);
  run_step(p, p.token_ids, all_logits);
  for (SequenceStep const& step : steps) {
    auto const s = static_cast<std::size_t>(step.slot);
    lengths_[s] += static_cast<std::int64_t>(step.tokens.size());
    if (!step.tokens.empty()) has_next_[s] = !all_logits;
  }
  upload_lengths();  // synchronizes: the host plan is a local
  if (profiling_) collect_profile();
  return logits_rows_;
}

std::vector<Projection*> GpuModel::projections() const {
  std::vector<Projection*> out = {lm_head_.get()};
  for (Layer const& L : layers_) out.insert(out.end(), {L.qkv.get(), L.o.get(), L.gate_up.get(), L.down.get()});
  return out;
}

std::size_t GpuModel::release_unchosen(std::int64_t max_m, double tolerance) {
  if (max_m <= 0) fail(ErrorKind::kUsage, "GPU model: release_unchosen needs a positive max M, not {}", max_m);
  std::size_t freed = 0;
  for (Projection* lin : projections()) freed += lin->release_unchosen(max_m, tolerance, stream_);
  return freed;
}

void GpuModel::prepare_decode(std::int64_t batch) {
  ensure_logits(batch);
  for (Projection* lin : projections()) lin->prepare(batch, stream_);
  if (decode_batch_ == batch) return;
  ModelConfig const& c = config_;
  HostPlan plan;
  int const group = static_cast<int>(c.heads / c.kv_heads);
  for (int s = 0; s < batch; ++s) plan.add_segment(s, s, 1, 0, group);  // positions set on the device
  std::array<std::size_t, kPlanArrays> off{};
  std::vector<int> const flat = plan.flatten(off);
  decode_plan_ = upload<int>(flat, stream_);
  decode_view_ = std::make_unique<Plan>(plan.on_device(decode_plan_.as<int>(), off));
  decode_view_->token_ids = nullptr;  // decode reads the next-token buffer
  // Split-KV: a decode step has only batch x ceil(G / 64) x kv_heads attention tiles; split the
  // keys so that about two waves of CTAs run (never more splits than key blocks at capacity).
  int device = 0, sms = 0;
  SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
  SLIDESPARSE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  std::int64_t const ctas = decode_view_->tiles * c.kv_heads;
  std::int64_t const key_blocks = (capacity_ + cuda::kAttentionTileRows - 1) / cuda::kAttentionTileRows;
  decode_view_->splits = static_cast<int>(std::clamp<std::int64_t>((2 * sms + ctas - 1) / ctas, 1, std::min<std::int64_t>(16, key_blocks)));
  if (decode_view_->splits > 1) {
    std::int64_t const rows = decode_view_->splits * batch * c.heads;
    partial_o_.allocate(bytes_of(rows * c.head_dim, sizeof(float)));
    partial_ml_.allocate(bytes_of(rows, sizeof(float2)));
  }
  decode_batch_ = batch;
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuModel::decode_greedy(std::int64_t batch, std::int64_t steps, bool use_graph) {
  if (batch <= 0 || batch > slots_) fail(ErrorKind::kUsage, "GPU model: decode batch {} outside 1..{}", batch, slots_);
  if (batch > max_tokens_) fail(ErrorKind::kUsage, "GPU model: decode batch {} exceeds max_tokens {}", batch, max_tokens_);
  for (std::int64_t s = 0; s < batch; ++s) {
    auto const i = static_cast<std::size_t>(s);
    if (!has_next_[i]) {
      fail(ErrorKind::kUsage, "GPU model: slot {} has no next token (run a forward step on it without all_logits first)", s);
    }
    if (lengths_[i] + steps > capacity_) {
      fail(ErrorKind::kUsage, "GPU model: slot {} holds {} tokens; {} decode steps exceed its capacity {}", s, lengths_[i],
           steps, capacity_);
    }
  }
  if (steps <= 0) return;
  prepare_decode(batch);
  Plan const& p = *decode_view_;
  auto step = [&] {
    op(Category::kOther, "decode_bookkeeping", [&] {
      SLIDESPARSE_CUDA_CHECK(cuda::launch_decode_positions(seq_len_.as<int>(), batch, p.token_pos, stream_));
    });
    run_step(p, next_token_.as<int>(), false);
    op(Category::kOther, "decode_bookkeeping", [&] { SLIDESPARSE_CUDA_CHECK(cuda::launch_advance_lengths(seq_len_.as<int>(), batch, stream_)); });
  };
  if (!use_graph || profiling_) {
    SLIDESPARSE_CUDA_CHECK(cudaEventRecord(decode_start_, stream_));
    for (std::int64_t i = 0; i < steps; ++i) {
      step();
      if (profiling_) collect_profile();
    }
  } else {
    // Captured anew for every call: between calls a larger prefill may have reallocated the
    // shared GEMM scratch or the logits, or a GEMM backend may have replaced a plan; within the
    // call nothing moves. Capturing ~10 operations per layer costs about a millisecond.
    {
      if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
      if (graph_) cudaGraphDestroy(graph_);
      graph_exec_ = nullptr;
      graph_ = nullptr;
      SLIDESPARSE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        step();
      } catch (...) {
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream_, &broken);
        if (broken) cudaGraphDestroy(broken);
        throw;
      }
      SLIDESPARSE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph_));
      SLIDESPARSE_CUDA_CHECK(cudaGraphInstantiate(&graph_exec_, graph_, 0));
    }
    SLIDESPARSE_CUDA_CHECK(cudaEventRecord(decode_start_, stream_));
    for (std::int64_t i = 0; i < steps; ++i) SLIDESPARSE_CUDA_CHECK(cudaGraphLaunch(graph_exec_, stream_));
  }
  SLIDESPARSE_CUDA_CHECK(cudaEventRecord(decode_end_, stream_));
  for (std::int64_t s = 0; s < batch; ++s) lengths_[static_cast<std::size_t>(s)] += steps;
}

void GpuModel::synchronize() const { SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void GpuModel::collect_profile() {
  synchronize();
  for (std::size_t i = 0; i < events_.size(); ++i) {
    float ms = 0;
    SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i].first, events_[i].second));
    breakdown_.by_operation[event_names_[i]] += ms;
    switch (event_categories_[i]) {
      case Category::kLinear: breakdown_.linear_ms += ms; break;
      case Category::kAttention: breakdown_.attention_ms += ms; break;
      case Category::kOther: breakdown_.other_ms += ms; break;
    }
    cudaEventDestroy(events_[i].first);
    cudaEventDestroy(events_[i].second);
  }
  events_.clear();
  event_categories_.clear();
  event_names_.clear();
}

std::vector<float> GpuModel::sequence_logits(std::span<int const> tokens) {
  reset(0);
  SequenceStep const step{0, tokens};
  forward(std::span(&step, 1), true);
  return logits();
}

double GpuModel::last_decode_ms() const {
  synchronize();
  float ms = 0;
  SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, decode_start_, decode_end_));
  return ms;
}

std::vector<float> GpuModel::logits() const {
  synchronize();
  std::vector<std::uint16_t> bf(static_cast<std::size_t>(logits_rows_ * config_.vocab));
  if (!bf.empty()) {
    SLIDESPARSE_CUDA_CHECK(cudaMemcpy(bf.data(), logits_.get(), bf.size() * 2, cudaMemcpyDeviceToHost));
  }
  std::vector<float> out(bf.size());
  for (std::size_t i = 0; i < bf.size(); ++i) out[i] = bf16_to_float(bf16_t{bf[i]});
  return out;
}

std::vector<int> GpuModel::tokens(std::int64_t slot) const {
  std::int64_t const n = length(slot);
  synchronize();
  std::vector<int> out(static_cast<std::size_t>(n));
  if (n > 0) {
    SLIDESPARSE_CUDA_CHECK(cudaMemcpy(out.data(), history_.as<int>() + slot * cache_rows_, out.size() * sizeof(int),
                                      cudaMemcpyDeviceToHost));
  }
  return out;
}

int GpuModel::next_token(std::int64_t slot) const {
  length(slot);  // range check
  if (!has_next_[static_cast<std::size_t>(slot)]) fail(ErrorKind::kUsage, "GPU model: slot {} has no next token", slot);
  synchronize();
  int v = 0;
  SLIDESPARSE_CUDA_CHECK(cudaMemcpy(&v, next_token_.as<int>() + slot, sizeof(int), cudaMemcpyDeviceToHost));
  return v;
}

GpuModelMemory GpuModel::memory() const {
  GpuModelMemory m;
  m.weights = embed_.size() + final_norm_.size();
  for (Layer const& L : layers_) m.weights += L.attn_norm.size() + L.ffn_norm.size();
  std::size_t gemm = 0;
  for (Projection const* lin : projections()) {
    m.weights += lin->memory().weight + lin->memory().vectors;
    gemm += lin->memory().gemm;
  }
  m.kv_cache = k_cache_.size() + v_cache_.size();
  m.activations = gemm + scratch_->bytes() + rope_table_.size() + history_.size() + residual_.size() + normed_.size() +
                  qkv_out_.size() + q_.size() + attn_.size() + proj_.size() + gate_up_.size() + act_.size() +
                  last_rows_.size() + logits_.size() + step_plan_.size() + decode_plan_.size() + partial_o_.size() +
                  partial_ml_.size() + (cudnn_attention_ ? cudnn_attention_->device_bytes() : 0);
  return m;
}

std::string GpuModel::describe_attention() const {
  if (cudnn_attention_) {
    return cuda::CudnnAttention::version() +
           (options_.attention == AttentionBackend::kCudnn
                ? std::string(" (every forward step)")
                : fmt::format(" (forward steps of >= {} new tokens)", GpuModelOptions::kCudnnMinTokens)) +
           ", own kernel for decode";
  }
  if (options_.attention == AttentionBackend::kOwn) return "own kernel";
  return attention_note_.empty() ? "own kernel" : "own kernel (no cuDNN: " + attention_note_ + ")";
}

std::map<std::string, int> GpuModel::dispatch_holdings() const {
  std::map<std::string, int> out;
  for (Projection const* lin : projections()) {
    std::string const kept = lin->kept();
    if (kept.empty()) continue;
    std::string name = lin->name();  // "layers.12.qkv_proj" -> "qkv_proj": one entry per role
    if (name.starts_with("layers.")) name = name.substr(name.find('.', 7) + 1);
    ++out[name + ": " + kept];
  }
  return out;
}

std::string GpuModel::describe_gemms(std::int64_t m) const {
  if (layers_.empty()) return {};
  Layer const& L = layers_.front();
  std::string out;
  for (Projection const* lin : {L.qkv.get(), L.o.get(), L.gate_up.get(), L.down.get()}) {
    if (!out.empty()) out += "; ";
    out += lin->name() + ": " + lin->gemm_description(m);
  }
  return out;
}

}  // namespace slidesparse::runtime
