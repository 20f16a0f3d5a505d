#include "slidesparse/cuda/dispatch_linear.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gemm_tuning.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/l2_flush.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::cuda {
namespace {

}  // namespace

DispatchLinear::DispatchLinear(DispatchConfig const& config, LinearWeights const& weights, cudaStream_t stream,
                               io::TuningCache* tuning, std::string name, std::shared_ptr<LinearScratch> scratch)
    : config_(config), name_(std::move(name)), n_(weights.weight.rows), k_(weights.weight.cols), tuning_(tuning) {
  if (!config.layer.pattern) fail(ErrorKind::kUsage, "{}: a dispatching layer needs a sparsity pattern", name_);
  if (!scratch) scratch = std::make_shared<LinearScratch>();
  auto add = [&](std::string candidate, std::optional<SparsityPattern> pattern, GemmBackend backend) {
    LinearConfig c = config.layer;
    c.pattern = pattern;
    c.backend = backend;
    candidates_.push_back({std::move(candidate), std::make_unique<Linear>(c, weights, stream, tuning, name_, scratch)});
  };
  // CUTLASS candidates only where CUTLASS can run the layer (dtype, N, GPU): the others remain.
  LinearConfig dense_layer = config.layer;
  dense_layer.pattern = std::nullopt;
  std::string const sparse_cutlass_why = Linear::cutlass_unsupported(config.layer, n_, k_);
  bool const dense_cutlass = Linear::cutlass_unsupported(dense_layer, n_, k_).empty();
  if (config.cutlass && sparse_cutlass_why.empty()) add("cutlass", config.layer.pattern, GemmBackend::kCutlass);
  if (config.cusparselt) add("cusparselt", config.layer.pattern, GemmBackend::kLibrary);
  if (candidates_.empty()) {
    fail(ErrorKind::kUsage, "{}: no sparse candidate can run this layer (CUTLASS: {}; cuSPARSELt disabled)", name_,
         config.cutlass ? sparse_cutlass_why : "disabled");
  }
  if (config.dense_fallback && config.dense_both_backends) {
    if (dense_cutlass) add("dense-cutlass", std::nullopt, GemmBackend::kCutlass);
    add("dense-cublaslt", std::nullopt, GemmBackend::kLibrary);
  } else if (config.dense_fallback) {
    add("dense", std::nullopt, GemmBackend::kAuto);
  }
}

DispatchLinear::~DispatchLinear() = default;

DispatchLinear::Candidate const* DispatchLinear::find(std::string const& name) const noexcept {
  for (auto const& c : candidates_) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::vector<std::string> DispatchLinear::candidates() const {
  std::vector<std::string> out;
  for (auto const& c : candidates_) out.push_back(c.name);
  return out;
}

DispatchLinear::Choice const* DispatchLinear::find_choice(std::int64_t m) const noexcept {
  if (m <= 0) return nullptr;
  auto const it = choices_.find(Linear::m_bucket(m));
  return it == choices_.end() ? nullptr : &it->second;
}

bool DispatchLinear::is_prepared(std::int64_t m) const noexcept {
  Choice const* c = find_choice(m);
  return c && c->layer->is_prepared(m);
}

std::string DispatchLinear::choice(std::int64_t m) const {
  Choice const* c = find_choice(m);
  return c ? c->name : std::string();
}

bool DispatchLinear::chosen_from_cache(std::int64_t m) const noexcept {
  Choice const* c = find_choice(m);
  return c && c->from_cache;
}

LinearMemory DispatchLinear::memory() const noexcept {
  LinearMemory total;
  for (auto const& c : candidates_) {
    LinearMemory const m = c.layer->memory();
    total.weight += m.weight;
    total.vectors += m.vectors;
    total.gemm += m.gemm;
    total.scratch = std::max(total.scratch, m.scratch);  // one shared scratch
  }
  return total;
}

LinearMemory DispatchLinear::memory_of(std::string const& candidate) const {
  Candidate const* c = find(candidate);
  if (!c) fail(ErrorKind::kUsage, "{}: no candidate '{}'", name_, candidate);
  return c->layer->memory();
}

void DispatchLinear::prepare(std::int64_t m, cudaStream_t stream) {
  std::int64_t const bucket = Linear::m_bucket(m);
  if (auto const it = choices_.find(bucket); it != choices_.end()) {
    it->second.layer->prepare(m, stream);
    return;
  }
  Linear const& first = *candidates_.front().layer;
  std::string names;
  for (auto const& c : candidates_) names += (names.empty() ? "" : "+") + c.name;
  std::string const key =
      tuning_ ? detail::gemm_tuning_key("dispatch:" + names + ":" + config_.layer.pattern->to_string(),
                                        first.backend_version(), config_.layer.compute_dtype,
                                        config_.layer.activation_dtype, n_, k_, bucket)
              : "";
  if (tuning_) {
    if (auto const entry = tuning_->find(key); entry && entry->contains("choice")) {
      if (Candidate const* c = find((*entry)["choice"].get<std::string>())) {
        c->layer->prepare(m, stream);
        choices_[bucket] = {c->layer.get(), c->name, true};
        return;
      }
    }
  }
  // Time every candidate's whole forward over the bucket's rows.
  std::size_t const act = dtype_size(config_.layer.activation_dtype);
  DeviceBuffer x(static_cast<std::size_t>(bucket * k_) * act), y(static_cast<std::size_t>(bucket * n_) * act);
  fill_device_random(config_.layer.activation_dtype, x.get(), static_cast<std::size_t>(bucket * k_) * 2, 0x5EED, stream);
  L2Flusher flusher;
  cudaEvent_t start = nullptr, stop = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&start));
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&stop));
  // Candidates timed round-robin (clock and temperature drift then hit all of them alike),
  // 9 rounds after a warm-up round; the median decides.
  constexpr int kRounds = 9;
  for (auto const& c : candidates_) {
    c.layer->prepare(bucket, stream);
    c.layer->forward(x.get(), y.get(), bucket, stream);  // warm-up
  }
  std::vector<std::vector<float>> ms(candidates_.size());
  for (int round = 0; round < kRounds; ++round) {
    for (std::size_t i = 0; i < candidates_.size(); ++i) {
      flusher.flush(stream);
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start, stream));
      candidates_[i].layer->forward(x.get(), y.get(), bucket, stream);
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop, stream));
      SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
      float t = 0;
      SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
      ms[i].push_back(t);
    }
  }
  nlohmann::json times = nlohmann::json::object();
  Candidate const* best = nullptr;
  float best_ms = std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    std::sort(ms[i].begin(), ms[i].end());
    float const median = ms[i][kRounds / 2];
    times[candidates_[i].name] = median;
    if (median < best_ms) {  // strict: ties keep the earlier (preferred) candidate
      best_ms = median;
      best = &candidates_[i];
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  choices_[bucket] = {best->layer.get(), best->name, false};
  if (tuning_) tuning_->put(key, {{"choice", best->name}, {"ms", times}, {"tuned", detail::tuning_date()}});
}

void DispatchLinear::forward(void const* x, void* y, std::int64_t m, cudaStream_t stream, std::int64_t ldx) {
  if (m <= 0) fail(ErrorKind::kUsage, "{}: forward with M = {} (must be at least 1)", name_, m);
  Choice const* c = find_choice(m);
  if (!c) {
    prepare(m, stream);
    c = find_choice(m);
  }
  c->layer->forward(x, y, m, stream, ldx);
}

}  // namespace slidesparse::cuda
