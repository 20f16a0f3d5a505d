#include "slidesparse/cuda/linear.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "slidesparse/core/pattern_check.hpp"
#include "slidesparse/core/slide.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/cublaslt_gemm.hpp"
#include "slidesparse/cuda/cusparselt_gemm.hpp"
#include "slidesparse/cuda/cutlass_gemm.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/epilogue.hpp"
#include "slidesparse/cuda/quant_lift.hpp"
#include "slidesparse/cuda/sm90_sparse_gemm.hpp"
#include "slidesparse/io/tuning_cache.hpp"
#include "gemm_tuning.hpp"

namespace slidesparse::cuda {
namespace {

std::int64_t round_up(std::int64_t v, std::int64_t to) { return (v + to - 1) / to * to; }

void upload(DeviceBuffer& dst, void const* src, std::size_t bytes, cudaStream_t stream) {
  dst.allocate(bytes);
  if (bytes) {
    SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src, bytes, cudaMemcpyHostToDevice, stream));
  }
}

// The activation (and weight) layout of a layer. 2:4 needs no lifting (one window per block of
// 4: the slid layout is the identity), and the identity layout takes quant_lift's faster copy
// path.
ActivationLayout layer_layout(LinearConfig const& config, std::int64_t k) {
  return config.pattern && config.pattern->half_block() != 2
             ? ActivationLayout::slid(*config.pattern, k, config.k_alignment)
             : ActivationLayout::dense(k, config.k_alignment);
}

// The backend a layer runs on (kAuto resolved); an Error when config.backend demands one that
// cannot run it.
GemmBackend resolve_backend(LinearConfig const& config, std::int64_t n, std::int64_t k, std::string const& name) {
  switch (config.backend) {
    case GemmBackend::kLibrary: return GemmBackend::kLibrary;
    case GemmBackend::kSm90Sparse:
      if (std::string const why = Linear::sm90_sparse_unsupported(config, n, k); !why.empty()) {
        fail(ErrorKind::kUsage, "{}: sm90 sparse backend: {}", name, why);
      }
      return GemmBackend::kSm90Sparse;
    case GemmBackend::kCutlass:
    case GemmBackend::kAuto: break;
  }
  std::string const why = Linear::cutlass_unsupported(config, n, k);
  if (why.empty()) return GemmBackend::kCutlass;
  if (config.backend == GemmBackend::kCutlass) fail(ErrorKind::kUsage, "{}: CUTLASS backend: {}", name, why);
  return GemmBackend::kLibrary;
}

}  // namespace

struct Linear::Device {
  DeviceBuffer weight;        ///< dense W [N_pad, K'] (the sparse path frees its copy after compression)
  DeviceBuffer weight_scale;  ///< [N] F32 (W8A8)
  DeviceBuffer bias;          ///< [N] F32
};

LinearScratch::~LinearScratch() {
  if (x_) cudaFree(x_);
  if (scales_) cudaFree(scales_);
  if (acc_) cudaFree(acc_);
}

void LinearScratch::reserve(std::size_t x_bytes, std::size_t scale_bytes, std::size_t acc_bytes, cudaStream_t stream) {
  if (x_bytes <= x_bytes_ && scale_bytes <= scale_bytes_ && acc_bytes <= acc_bytes_) return;
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // queued work may still use the old buffers
  auto grow = [](void*& ptr, std::size_t& have, std::size_t want) {
    if (want <= have) return false;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    have = 0;
    SLIDESPARSE_CUDA_CHECK(cudaMalloc(&ptr, want));
    have = want;
    return true;
  };
  // Rows beyond M of x' are read by the padded sparse GEMM: start them finite (zero). Later
  // they hold earlier calls' data (possibly another layer's); their outputs are discarded.
  if (grow(x_, x_bytes_, x_bytes)) SLIDESPARSE_CUDA_CHECK(cudaMemsetAsync(x_, 0, x_bytes_, stream));
  void* scales = scales_;
  grow(scales, scale_bytes_, scale_bytes);
  scales_ = static_cast<float*>(scales);
  grow(acc_, acc_bytes_, acc_bytes);
}

std::string Linear::cutlass_unsupported(LinearConfig const& config, std::int64_t n, std::int64_t k) {
  DType const c = config.compute_dtype;
  if (c != DType::kI8 && c != DType::kF8E4M3) return fmt::format("{} layers have no CUTLASS kernels (W8A8 only)", dtype_name(c));
  return CutlassGemm::unsupported(c, config.activation_dtype, n, layer_layout(config, k).k_lifted());
}

std::string Linear::sm90_sparse_unsupported(LinearConfig const& config, std::int64_t n, std::int64_t k) {
  if (!config.pattern) return "it runs sparse layers only (this layer is dense)";
  return Sm90SparseGemm::unsupported(config.compute_dtype, config.activation_dtype, n, layer_layout(config, k).k_lifted());
}

std::int64_t Linear::m_bucket(std::int64_t m) {
  if (m <= 0) fail(ErrorKind::kUsage, "Linear: M = {} must be positive", m);
  if (m <= 256) return round_up(m, 32);
  // 8 steps per power of two: step = 2^(floor(log2(m - 1)) - 3), so 257..288 -> 288, 4097 -> 4608.
  auto const octave = static_cast<std::int64_t>(std::bit_floor(static_cast<std::uint64_t>(m - 1)));
  return round_up(m, octave / 8);
}

Linear::Linear(LinearConfig const& config, LinearWeights const& weights, cudaStream_t stream,
               io::TuningCache* tuning, std::string name, std::shared_ptr<LinearScratch> scratch)
    : config_(config),
      name_(std::move(name)),
      layout_(layer_layout(config, weights.weight.cols)),
      n_(weights.weight.rows),
      backend_(resolve_backend(config, weights.weight.rows, weights.weight.cols, name_)),
      // CUTLASS and the sm90 kernel write y themselves (N % 8 == 0 is required): no padded rows.
      n_padded_(backend_ != GemmBackend::kLibrary ? weights.weight.rows
                                                  : round_up(weights.weight.rows, config.pattern ? 32 : 8)),
      device_(std::make_shared<Device>()),
      scratch_(scratch ? std::move(scratch) : std::make_shared<LinearScratch>()) {
  DType const c = config.compute_dtype;
  bool const w8a8 = c == DType::kI8 || c == DType::kF8E4M3;
  if (config.activation_dtype != DType::kBF16 && config.activation_dtype != DType::kF16) {
    fail(ErrorKind::kUsage, "{}: activations must be BF16 or F16, got {}", name_, dtype_name(config.activation_dtype));
  }
  if (!w8a8 && c != config.activation_dtype) {
    fail(ErrorKind::kUsage, "{}: compute dtype {} must be I8, F8_E4M3 or the activation dtype {}", name_,
         dtype_name(c), dtype_name(config.activation_dtype));
  }
  if (weights.weight.dtype != c) {
    fail(ErrorKind::kUsage, "{}: weight is {}, the layer computes in {} (quantize the weight first)", name_,
         dtype_name(weights.weight.dtype), dtype_name(c));
  }
  if (n_ <= 0 || weights.weight.cols <= 0) fail(ErrorKind::kUsage, "{}: empty weight [{}, {}]", name_, n_, weights.weight.cols);
  if (w8a8 != !weights.weight_scale.empty() ||
      (w8a8 && static_cast<std::int64_t>(weights.weight_scale.size()) != n_)) {
    fail(ErrorKind::kUsage, "{}: {} weight scales for a {} layer with N = {} (W8A8 needs N, 16-bit none)", name_,
         weights.weight_scale.size(), dtype_name(c), n_);
  }
  if (!weights.bias.empty() && static_cast<std::int64_t>(weights.bias.size()) != n_) {
    fail(ErrorKind::kUsage, "{}: bias has {} entries, N = {}", name_, weights.bias.size(), n_);
  }
  acc_dtype_ = c == DType::kI8 ? DType::kI32 : (c == DType::kF8E4M3 ? DType::kF32 : c);

  // The GEMM's weight on the host: W' [N_pad, K'] (slid, or K padded for dense), zero rows
  // beyond N. Slide validates the pattern and names the first overfull block.
  std::size_t const elem = dtype_size(c);
  std::int64_t const kl = layout_.k_lifted();
  std::vector<std::byte> host(static_cast<std::size_t>(n_padded_ * kl) * elem, std::byte{0});
  MatrixView lifted{c, n_, kl, host.data(), weights.weight.name.empty() ? std::string_view(name_) : weights.weight.name};
  if (config.pattern) {
    LiftedShape const shape = lifted_shape(*config.pattern, weights.weight.cols, config.k_alignment);
    if (shape.k_lifted != kl) {
      fail(ErrorKind::kInternal, "{}: weight K' = {} but activation K' = {}", name_, shape.k_lifted, kl);
    }
    slide(weights.weight, *config.pattern, shape, lifted);
  } else {
    for (std::int64_t r = 0; r < n_; ++r) {
      std::memcpy(lifted.row(r), weights.weight.row(r), static_cast<std::size_t>(weights.weight.cols) * elem);
    }
  }
  Device& d = *device_;
  if (w8a8) upload(d.weight_scale, weights.weight_scale.data(), weights.weight_scale.size_bytes(), stream);
  if (!weights.bias.empty()) upload(d.bias, weights.bias.data(), weights.bias.size_bytes(), stream);
  if (backend_ == GemmBackend::kSm90Sparse) {
    // Tiled on the host from W' itself (no dense device copy); synchronizes the stream.
    sm90_ = std::make_unique<Sm90SparseGemm>(host.data(), c, n_, kl, stream,
                                             weights.weight.name.empty() ? std::string_view(name_) : weights.weight.name);
    tuning_ = tuning;
    return;
  }
  upload(d.weight, host.data(), host.size(), stream);
  if (backend_ == GemmBackend::kCutlass) {
    cutlass_ = std::make_unique<CutlassGemm>(d.weight.get(), c, config.pattern.has_value(), n_, kl, stream, tuning,
                                             config.fast_accumulation);
    if (config.pattern) {
      d.weight.reset();  // compressed inside the backend (which synchronized the stream)
    } else {
      SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` goes out of scope
    }
  } else if (config.pattern) {
    sparse_ = std::make_unique<CusparseltGemm>(d.weight.get(), c, acc_dtype_, n_padded_, kl, stream, tuning);
    d.weight.reset();  // compressed inside the backend (which synchronized the stream)
  } else {
    fused_dense_ = c == DType::kF8E4M3 && config.fuse_dense_scales && weights.bias.empty() && n_padded_ == n_;
    dense_ = std::make_unique<CublasltGemm>(d.weight.get(), c, fused_dense_ ? config.activation_dtype : acc_dtype_,
                                            n_padded_, kl, tuning, fused_dense_);
    tuning_ = tuning;
    SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` goes out of scope
  }
}

Linear::Linear(LinearConfig const& config, Linear const& weight_owner, io::TuningCache* tuning, std::string name,
               std::shared_ptr<LinearScratch> scratch)
    : config_(config),
      name_(std::move(name)),
      layout_(weight_owner.layout_),
      n_(weight_owner.n_),
      backend_(resolve_backend(config, weight_owner.n_, weight_owner.layout_.k(), name_)),
      n_padded_(backend_ != GemmBackend::kLibrary ? n_ : round_up(n_, 8)),
      acc_dtype_(weight_owner.acc_dtype_),
      shares_weight_(true),
      device_(weight_owner.device_),
      scratch_(scratch ? std::move(scratch) : std::make_shared<LinearScratch>()) {
  LinearConfig const& o = weight_owner.config_;
  if (config.pattern || o.pattern || weight_owner.shares_weight_ || !device_->weight.get()) {
    fail(ErrorKind::kUsage, "{}: only a dense layer can share the weight of a dense layer that owns it ('{}')", name_,
         weight_owner.name_);
  }
  if (config.compute_dtype != o.compute_dtype || config.activation_dtype != o.activation_dtype ||
      config.k_alignment != o.k_alignment) {
    fail(ErrorKind::kUsage, "{}: shares the weight of '{}' but computes {} x {} with K alignment {} (the owner: {} x {}, {})",
         name_, weight_owner.name_, dtype_name(config.compute_dtype), dtype_name(config.activation_dtype),
         config.k_alignment, dtype_name(o.compute_dtype), dtype_name(o.activation_dtype), o.k_alignment);
  }
  if (n_padded_ != weight_owner.n_padded_) {
    fail(ErrorKind::kUsage, "{}: its backend pads N = {} to {} rows, the weight of '{}' has {}", name_, n_, n_padded_,
         weight_owner.name_, weight_owner.n_padded_);
  }
  Device const& d = *device_;
  DType const c = config.compute_dtype;
  std::int64_t const kl = layout_.k_lifted();
  if (backend_ == GemmBackend::kCutlass) {
    cutlass_ = std::make_unique<CutlassGemm>(d.weight.get(), c, false, n_, kl, nullptr, tuning, config.fast_accumulation);
  } else {
    fused_dense_ = c == DType::kF8E4M3 && config.fuse_dense_scales && !d.bias.get() && n_padded_ == n_;
    dense_ = std::make_unique<CublasltGemm>(d.weight.get(), c, fused_dense_ ? config.activation_dtype : acc_dtype_,
                                            n_padded_, kl, tuning, fused_dense_);
    tuning_ = tuning;
  }
}

Linear::~Linear() = default;

std::string const& Linear::backend_version() const noexcept {
  if (sm90_) return sm90_->version();
  return cutlass_ ? cutlass_->library_version() : sparse_ ? sparse_->library_version() : dense_->library_version();
}

std::string Linear::gemm_description(std::int64_t m) const {
  if (!is_prepared(m)) return {};
  if (sm90_) {
    int const schedule = sm90_plans_.at(m_bucket(m)).schedule;
    return fmt::format("sm90-sparse schedule {} ({})", schedule, Sm90SparseGemm::schedule_name(schedule));
  }
  if (cutlass_) return cutlass_->plan_description(m_bucket(m));
  return sparse_ ? sparse_->library_version() : dense_->library_version() + (fused_dense_ ? " (scales fused)" : "");
}

LinearMemory Linear::memory() const noexcept {
  Device const& d = *device_;
  LinearMemory mem;
  if (sm90_) {
    mem.weight = sm90_->device_bytes();
  } else if (cutlass_) {
    mem.weight = cutlass_->sparse() ? cutlass_->compressed_bytes() : d.weight.size();
    mem.gemm = cutlass_->device_bytes() - cutlass_->compressed_bytes();
  } else if (sparse_) {
    // The backend's bytes are the compressed weight plus plan workspaces; report them apart.
    std::size_t const backend = sparse_->device_bytes();
    std::size_t const compressed = sparse_->compressed_bytes();
    mem.weight = compressed;
    mem.gemm = backend - compressed;
  } else {
    mem.weight = d.weight.size();
    mem.gemm = dense_->device_bytes();
  }
  mem.vectors = d.weight_scale.size() + d.bias.size();
  if (shares_weight_) mem.weight = mem.vectors = 0;  // counted by the owner
  mem.scratch = scratch_->bytes();
  return mem;
}

namespace {

struct ScratchNeed {
  std::size_t x, scales, acc;
};

// x' [M_b, K'], scale_x [M_b] (W8A8) and the accumulator [M_b, N_pad] — none for the backends
// whose one kernel writes y (CUTLASS, sm90).
ScratchNeed scratch_need(Linear const& layer, std::int64_t bucket) {
  DType const acc = layer.accumulator_dtype();
  bool const w8a8 = acc == DType::kI32 || acc == DType::kF32;
  std::int64_t const acc_columns = layer.backend() == GemmBackend::kLibrary ? layer.n_padded() : 0;
  return {static_cast<std::size_t>(bucket * layer.k_lifted()) * dtype_size(layer.config().compute_dtype),
          w8a8 ? static_cast<std::size_t>(bucket) * sizeof(float) : 0,
          static_cast<std::size_t>(bucket * acc_columns) * dtype_size(acc)};
}

}  // namespace

bool Linear::scratch_fits(std::int64_t bucket) const noexcept {
  ScratchNeed const need = scratch_need(*this, bucket);
  return need.x <= scratch_->x_bytes() && need.scales <= scratch_->scale_bytes() && need.acc <= scratch_->acc_bytes();
}

void Linear::reserve_scratch(std::int64_t bucket, cudaStream_t stream) {
  ScratchNeed const need = scratch_need(*this, bucket);
  scratch_->reserve(need.x, need.scales, need.acc, stream);
}

bool Linear::tuned_from_cache(std::int64_t m) const noexcept {
  if (m <= 0) return false;
  std::int64_t const bucket = m_bucket(m);
  if (sm90_) {
    auto const it = sm90_plans_.find(bucket);
    return it != sm90_plans_.end() && it->second.from_cache;
  }
  if (cutlass_) return cutlass_->tuned_from_cache(bucket);
  return sparse_ ? sparse_->tuned_from_cache(bucket) : dense_->tuned_from_cache(bucket);
}

bool Linear::is_prepared(std::int64_t m) const noexcept {
  if (m <= 0) return false;
  std::int64_t const bucket = m_bucket(m);
  if (!scratch_fits(bucket)) return false;
  if (sm90_) return sm90_plans_.contains(bucket);
  if (cutlass_) return cutlass_->has_plan(bucket);
  return sparse_ ? sparse_->has_plan(bucket) : dense_->has_plan(bucket);
}

void Linear::prepare(std::int64_t m, cudaStream_t stream) {
  std::int64_t const bucket = m_bucket(m);
  reserve_scratch(bucket, stream);
  // Building the plan runs the GEMM once (tuning): on the scratch buffers, whose contents are
  // overwritten by the next forward anyway.
  if (sm90_) {
    if (!sm90_plans_.contains(bucket)) sm90_plans_[bucket] = choose_sm90_schedule(bucket, stream);
  } else if (cutlass_) {
    if (!cutlass_->has_plan(bucket)) {
      DeviceBuffer y;  // the tuning runs' output (CUTLASS layers need no accumulator scratch)
      y.allocate(static_cast<std::size_t>(bucket * n_) * 2);
      cutlass_->run(scratch_->x(), y.get(), bucket, scratch_->scales(), device_->weight_scale.as<float>(),
                    device_->bias.as<float>(), stream, bucket);
      SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // before `y` is freed
    }
  } else if (sparse_) {
    if (!sparse_->has_plan(bucket)) sparse_->run(scratch_->x(), scratch_->acc(), bucket, 1.0f, stream);
  } else if (!dense_->has_plan(bucket)) {
    if (fused_dense_) {
      try {
        dense_->run(scratch_->x(), scratch_->acc(), bucket, 1.0f, stream, bucket, device_->weight_scale.as<float>(),
                    scratch_->scales());
        return;
      } catch (Error const&) {
        // This cuBLASLt has no outer-vector-scaled kernel for the problem: separate epilogue.
        dense_ = std::make_unique<CublasltGemm>(device_->weight.get(), config_.compute_dtype, acc_dtype_, n_padded_,
                                                layout_.k_lifted(), tuning_);
        fused_dense_ = false;  // only once the unfused GEMM exists (its constructor may throw)
      }
    }
    dense_->run(scratch_->x(), scratch_->acc(), bucket, 1.0f, stream, bucket);
  }
}

Linear::Sm90Plan Linear::choose_sm90_schedule(std::int64_t bucket, cudaStream_t stream) const {
  std::string const key = tuning_ ? detail::gemm_tuning_key("sm90-sparse", sm90_->version(), config_.compute_dtype,
                                                            config_.activation_dtype, n_, layout_.k_lifted(), bucket)
                                  : "";
  if (tuning_) {
    if (auto const entry = tuning_->find(key); entry && entry->contains("schedule")) {
      int const schedule = (*entry)["schedule"].get<int>();
      if (schedule >= 0 && schedule < Sm90SparseGemm::schedule_count()) return {schedule, true};
    }
  }
  // Timed on the scratch x' (whatever it holds: finite codes) into a temporary y.
  DeviceBuffer y(static_cast<std::size_t>(bucket * n_) * dtype_size(config_.activation_dtype));
  std::vector<float> ms;
  int const schedule = sm90_->choose_schedule(scratch_->x(), y.get(), bucket, scratch_->scales(),
                                              device_->weight_scale.as<float>(), device_->bias.as<float>(), stream, &ms);
  if (tuning_) {
    tuning_->put(key, {{"schedule", schedule},
                       {"name", Sm90SparseGemm::schedule_name(schedule)},
                       {"ms", ms},
                       {"tuned", detail::tuning_date()}});
  }
  return {schedule, false};
}

void Linear::forward(void const* x, void* y, std::int64_t m, cudaStream_t stream, std::int64_t ldx) {
  run(nullptr, x, y, m, stream, ldx);
}

void Linear::forward_stage(LinearStage stage, void const* x, void* y, std::int64_t m, cudaStream_t stream,
                           std::int64_t ldx) {
  if (!is_prepared(m)) fail(ErrorKind::kUsage, "{}: forward_stage needs prepare({}) first", name_, m);
  run(&stage, x, y, m, stream, ldx);
}

void Linear::run(LinearStage const* only, void const* x, void* y, std::int64_t m, cudaStream_t stream,
                 std::int64_t ldx) {
  if (m <= 0) fail(ErrorKind::kUsage, "{}: forward with M = {} (must be at least 1)", name_, m);
  if (!x || !y) fail(ErrorKind::kUsage, "{}: forward with a null input or output", name_);
  if (ldx == 0) ldx = layout_.k();
  if (ldx < layout_.k()) fail(ErrorKind::kUsage, "{}: input row stride {} is less than K = {}", name_, ldx, layout_.k());
  if (!only && !is_prepared(m)) prepare(m, stream);  // forward_stage checked it already
  Device& d = *device_;
  LinearScratch& scratch = *scratch_;
  std::int64_t const bucket = m_bucket(m);
  bool const w8a8 = acc_dtype_ == DType::kI32 || acc_dtype_ == DType::kF32;
  DType const act = config_.activation_dtype;
  auto const wanted = [only](LinearStage s) { return !only || *only == s; };

  std::int64_t const gemm_rows = sparse_ ? bucket : m;  // cuSPARSELt runs the padded bucket
  // A 16-bit identity lift of a contiguous x is a copy: the GEMM reads x itself (as a user's
  // dense path would), where it reads exactly M rows.
  bool const identity = !config_.pattern || config_.pattern->half_block() == 2;
  bool const read_x = !w8a8 && identity && layout_.k_lifted() == layout_.k() && ldx == layout_.k() && gemm_rows == m;
  void const* gemm_in = read_x ? x : scratch.x();
  if (!read_x && wanted(LinearStage::kQuantLift)) {
    quant_lift(x, act, m, ldx, layout_, scratch.x(), config_.compute_dtype, w8a8 ? scratch.scales() : nullptr, stream);
  }

  if (sm90_) {  // quant+lift -> GEMM with scales and bias -> y (exactly M rows)
    if (wanted(LinearStage::kGemm)) {
      sm90_->run(gemm_in, y, m, scratch.scales(), d.weight_scale.as<float>(), d.bias.as<float>(), stream,
                 sm90_plans_.at(bucket).schedule);
    }
    return;
  }
  if (cutlass_) {  // quant+lift -> GEMM with scales and bias -> y
    if (wanted(LinearStage::kGemm)) {
      cutlass_->run(gemm_in, y, m, scratch.scales(), d.weight_scale.as<float>(), d.bias.as<float>(), stream, bucket);
    }
    return;
  }
  // 16-bit layers whose GEMM output already has y's shape write y directly; the bias (if any)
  // is then added in place.
  bool const direct = !w8a8 && n_padded_ == n_ && gemm_rows == m;
  void* gemm_out = direct ? y : scratch.acc();
  if (fused_dense_) {  // quant+lift -> GEMM with both scales -> y
    if (wanted(LinearStage::kGemm)) {
      dense_->run(gemm_in, y, m, 1.0f, stream, bucket, d.weight_scale.as<float>(), scratch.scales());
    }
    return;
  }
  if (wanted(LinearStage::kGemm)) {
    if (sparse_) {
      sparse_->run(gemm_in, gemm_out, bucket, 1.0f, stream);
    } else {
      dense_->run(gemm_in, gemm_out, m, 1.0f, stream, bucket);
    }
  }
  if (direct && !d.bias.get()) return;
  if (wanted(LinearStage::kEpilogue)) {
    dequantize_output(gemm_out, acc_dtype_, direct ? n_ : n_padded_, m, n_, w8a8 ? scratch.scales() : nullptr,
                      w8a8 ? d.weight_scale.as<float>() : nullptr, d.bias.as<float>(), y, act, stream);
  }
}

}  // namespace slidesparse::cuda
