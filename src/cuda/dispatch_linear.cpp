#include "slidesparse/cuda/dispatch_linear.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cuda_event.hpp"
#include "gemm_tuning.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/l2_flush.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::cuda {

DispatchLinear::DispatchLinear(DispatchConfig const& config, LinearWeights const& weights, cudaStream_t stream,
                               io::TuningCache* tuning, std::string name, std::shared_ptr<LinearScratch> scratch)
    : config_(config), name_(std::move(name)), n_(weights.weight.rows), k_(weights.weight.cols), tuning_(tuning) {
  bool const sparse = config.layer.pattern.has_value();
  if (!scratch) scratch = std::make_shared<LinearScratch>();
  auto add = [&](std::string candidate, std::optional<SparsityPattern> pattern, GemmBackend backend) {
    LinearConfig c = config.layer;
    c.pattern = pattern;
    c.backend = backend;
    candidates_.push_back(
        {std::move(candidate), std::make_unique<Linear>(c, weights, stream, tuning, name_, scratch), std::string()});
  };
  // CUTLASS candidates only where CUTLASS can run the layer (dtype, N, GPU): the others remain.
  LinearConfig dense_layer = config.layer;
  dense_layer.pattern = std::nullopt;
  std::string const sparse_cutlass_why = Linear::cutlass_unsupported(config.layer, n_, k_);
  bool const dense_cutlass = config.cutlass && Linear::cutlass_unsupported(dense_layer, n_, k_).empty();
  if (sparse && config.cutlass && sparse_cutlass_why.empty()) {
    add("cutlass", config.layer.pattern, GemmBackend::kCutlass);
  }
  std::string const sm90_why =
      sparse && config.sm90 ? Linear::sm90_sparse_unsupported(config.layer, n_, k_) : std::string("disabled");
  if (sm90_why.empty()) add("sm90", config.layer.pattern, GemmBackend::kSm90Sparse);
  if (sparse && config.cusparselt) add("cusparselt", config.layer.pattern, GemmBackend::kLibrary);
  if (sparse && candidates_.empty()) {
    fail(ErrorKind::kUsage, "{}: no sparse candidate can run this layer (CUTLASS: {}; sm90: {}; cuSPARSELt disabled)",
         name_, config.cutlass ? sparse_cutlass_why : "disabled", sm90_why);
  }
  if (config.dense_fallback || !sparse) {
    // No dense form is fastest at every M: on an H200 (Qwen2.5-7B FP8 layers) cuBLASLt with its
    // own scale epilogue beat cuBLASLt with the scales fused by up to 10 % at M = 1..16, and
    // CUTLASS won prefill. All of them run on the one dense copy the first owns.
    std::string const prefix = dense_cutlass ? "dense-cublaslt" : "dense";
    if (dense_cutlass) add("dense-cutlass", std::nullopt, GemmBackend::kCutlass);
    else add(prefix, std::nullopt, GemmBackend::kLibrary);
    Linear const& owner = *candidates_.back().layer;
    std::string const owner_name = candidates_.back().name;
    LinearConfig c = dense_layer;
    c.backend = GemmBackend::kLibrary;
    if (dense_cutlass) candidates_.push_back({prefix, std::make_unique<Linear>(c, owner, tuning, name_, scratch), owner_name});
    if (candidates_.back().layer->dense_scales_fused()) {
      c.fuse_dense_scales = false;
      candidates_.push_back(
          {prefix + "-unfused", std::make_unique<Linear>(c, owner, tuning, name_, scratch), owner_name});
    }
  }
  for (auto const& c : candidates_) all_names_ += (all_names_.empty() ? "" : "+") + c.name;
  key_version_ = candidates_.front().layer->backend_version();
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

std::int64_t DispatchLinear::m_bucket(std::int64_t m) {
  if (m <= 0) fail(ErrorKind::kUsage, "DispatchLinear: M = {} must be positive", m);
  return m <= 32 ? static_cast<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(m))) : Linear::m_bucket(m);
}

DispatchLinear::Choice const* DispatchLinear::find_choice(std::int64_t m) const noexcept {
  if (m <= 0) return nullptr;
  auto const it = choices_.find(m_bucket(m));
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

std::string DispatchLinear::description(std::int64_t m) const {
  Choice const* c = find_choice(m);
  return c ? c->name + ": " + c->layer->gemm_description(m) : std::string();
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

void DispatchLinear::force(std::int64_t m, std::string const& candidate, cudaStream_t stream) {
  Candidate const* c = find(candidate);
  if (!c && std::find(released_.begin(), released_.end(), candidate) != released_.end()) {
    fail(ErrorKind::kUsage, "{}: candidate '{}' was released by release_unchosen() (it keeps {})", name_, candidate,
         fmt::join(candidates(), ", "));
  }
  if (!c) fail(ErrorKind::kUsage, "{}: no candidate '{}' (it has {})", name_, candidate, fmt::join(candidates(), ", "));
  c->layer->prepare(m, stream);
  choices_[m_bucket(m)] = {c->layer.get(), c->name, false, {}};
}

void DispatchLinear::prepare(std::int64_t m, cudaStream_t stream) {
  std::int64_t const bucket = m_bucket(m);
  if (auto const it = choices_.find(bucket); it != choices_.end()) {
    it->second.layer->prepare(m, stream);
    return;
  }
  // Keyed on every candidate built, released ones included: a process that builds the same set
  // finds the choice whether or not it releases afterwards.
  std::string const key =
      tuning_ ? detail::gemm_tuning_key("dispatch:" + all_names_ + ":" +
                                            (config_.layer.pattern ? config_.layer.pattern->to_string() : "dense"),
                                        key_version_, config_.layer.compute_dtype,
                                        config_.layer.activation_dtype, n_, k_, bucket)
              : "";
  if (tuning_) {
    if (auto const entry = tuning_->find(key); entry && entry->contains("choice")) {
      if (Candidate const* c = find((*entry)["choice"].get<std::string>())) {
        c->layer->prepare(m, stream);
        std::map<std::string, double> ms;
        if (entry->contains("ms") && (*entry)["ms"].is_object()) {
          for (auto const& [candidate, t] : (*entry)["ms"].items()) {
            if (t.is_number()) ms[candidate] = t.get<double>();
          }
        }
        choices_[bucket] = {c->layer.get(), c->name, true, std::move(ms)};
        return;
      }
    }
  }
  if (candidates_.size() == 1) {  // nothing to choose (a dense layer with one dense form)
    candidates_.front().layer->prepare(m, stream);
    choices_[bucket] = {candidates_.front().layer.get(), candidates_.front().name, false, {}};
    return;
  }
  // Time every candidate's whole forward over the bucket's rows.
  std::size_t const act = dtype_size(config_.layer.activation_dtype);
  DeviceBuffer x(static_cast<std::size_t>(bucket * k_) * act), y(static_cast<std::size_t>(bucket * n_) * act);
  fill_device_random(config_.layer.activation_dtype, x.get(), static_cast<std::size_t>(bucket * k_) * 2, 0x5EED, stream);
  L2Flusher flusher;
  detail::Event const start_event, stop_event;
  cudaEvent_t const start = start_event.get(), stop = stop_event.get();
  // Candidates timed round-robin (clock and temperature drift then hit all of them alike; each
  // round starts one candidate later, so no candidate always follows the same one) after a
  // warm-up round; the median decides. At least 9 rounds; small layers (decode-sized M,
  // tens of µs with a spread of 15-25 % between calls on an H200) get more, up to 63, so that the
  // timed rounds take about 20 ms: a 2 % difference must not be decided by noise.
  for (auto const& c : candidates_) c.layer->prepare(bucket, stream);
  SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start, stream));
  for (auto const& c : candidates_) c.layer->forward(x.get(), y.get(), bucket, stream);  // warm-up
  SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop, stream));
  SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
  float warm_ms = 0;
  SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&warm_ms, start, stop));
  int const rounds = std::clamp(static_cast<int>(20.0f / std::max(warm_ms, 1e-3f)) | 1, 9, 63);
  std::vector<std::vector<float>> ms(candidates_.size());
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t j = 0; j < candidates_.size(); ++j) {
      std::size_t const i = (j + static_cast<std::size_t>(round)) % candidates_.size();  // rotated
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
  std::map<std::string, double> medians;
  Candidate const* best = nullptr;
  float best_ms = std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    std::sort(ms[i].begin(), ms[i].end());
    float const median = ms[i][static_cast<std::size_t>(rounds / 2)];
    medians[candidates_[i].name] = median;
    if (median < best_ms) {  // strict: ties keep the earlier (preferred) candidate
      best_ms = median;
      best = &candidates_[i];
    }
  }
  // After a release the choice is among the kept candidates only: not the full set's answer.
  if (tuning_ && released_.empty()) tuning_->put(key, {{"choice", best->name}, {"ms", medians}, {"tuned", detail::tuning_date()}});
  choices_[bucket] = {best->layer.get(), best->name, false, std::move(medians)};
}

std::vector<std::int64_t> DispatchLinear::buckets_up_to(std::int64_t max_m) {
  std::vector<std::int64_t> out;
  for (std::int64_t m = 1; m <= max_m;) {  // the bucket after b holds b + 1
    out.push_back(m_bucket(m));
    m = out.back() + 1;
  }
  if (out.empty()) fail(ErrorKind::kUsage, "DispatchLinear: max M = {} must be positive", max_m);
  return out;
}

void DispatchLinear::prepare_up_to(std::int64_t max_m, cudaStream_t stream) {
  for (std::int64_t const bucket : buckets_up_to(max_m)) prepare(bucket, stream);
}

std::set<std::string> DispatchLinear::held_by(std::map<std::int64_t, std::string> const& assignment,
                                              std::map<std::string, ReleaseHolding> const& holdings) {
  std::set<std::string> held;
  for (auto const& [bucket, c] : assignment) {
    held.insert(c);
    if (auto const it = holdings.find(c); it != holdings.end() && !it->second.owner.empty()) held.insert(it->second.owner);
  }
  return held;
}

std::map<std::int64_t, std::string> DispatchLinear::plan_release(std::map<std::int64_t, ReleaseBucket> const& buckets,
                                                                 std::map<std::string, ReleaseHolding> const& holdings,
                                                                 double tolerance) {
  if (!std::isfinite(tolerance) || tolerance < 0) {
    fail(ErrorKind::kUsage, "DispatchLinear: release tolerance {} must be a finite fraction >= 0", tolerance);
  }
  std::map<std::int64_t, std::string> assign;
  for (auto const& [bucket, b] : buckets) assign[bucket] = b.chosen;
  if (tolerance == 0) return assign;
  auto held_of = [&](std::map<std::int64_t, std::string> const& a) { return held_by(a, holdings); };
  auto bytes_of = [&](std::set<std::string> const& held) {
    std::size_t total = 0;
    for (auto const& c : held) {
      if (auto const it = holdings.find(c); it != holdings.end()) total += it->second.bytes;
    }
    return total;
  };
  for (;;) {
    std::set<std::string> const held = held_of(assign);
    std::size_t const held_bytes = bytes_of(held);
    std::size_t best_gain = 0;
    std::map<std::int64_t, std::string> best;
    for (std::string const& dropped : held) {
      std::map<std::int64_t, std::string> trial = assign;
      bool movable = true;
      for (auto& [bucket, c] : trial) {
        if (c != dropped) continue;
        std::map<std::string, double> const& ms = buckets.at(bucket).ms;
        double fastest = std::numeric_limits<double>::infinity();
        for (auto const& [candidate, t] : ms) fastest = std::min(fastest, t);
        // Bounded by the bucket's fastest, not by the time of the candidate it leaves: chains of
        // moves cannot add up past the tolerance.
        std::string to;
        double to_ms = std::numeric_limits<double>::infinity();
        for (auto const& [candidate, t] : ms) {
          if (candidate != dropped && held.contains(candidate) && holdings.contains(candidate) &&
              t <= fastest * (1 + tolerance) && t < to_ms) {
            to = candidate;
            to_ms = t;
          }
        }
        if (to.empty()) {  // none within the tolerance, or a forced bucket (no times): it stays
          movable = false;
          break;
        }
        c = to;
      }
      if (!movable) continue;
      std::size_t const after = bytes_of(held_of(trial));
      if (after < held_bytes && held_bytes - after > best_gain) {
        best_gain = held_bytes - after;
        best = std::move(trial);
      }
    }
    if (best_gain == 0) return assign;
    assign = std::move(best);
  }
}

std::size_t DispatchLinear::release_unchosen(cudaStream_t stream, double tolerance) {
  if (choices_.empty()) {
    fail(ErrorKind::kUsage, "{}: release_unchosen() before any M bucket was chosen would free every candidate", name_);
  }
  auto total = [](LinearMemory const& m) { return m.weight + m.vectors + m.gemm; };
  std::size_t const before = total(memory());
  std::map<std::int64_t, ReleaseBucket> buckets;
  for (auto const& [bucket, choice] : choices_) buckets[bucket] = {choice.name, choice.ms};
  std::map<std::string, ReleaseHolding> holdings;
  for (auto const& c : candidates_) holdings[c.name] = {total(c.layer->memory()), c.weight_owner};
  std::map<std::int64_t, std::string> const plan = plan_release(buckets, holdings, tolerance);  // tolerance 0: the choices
  for (auto const& [bucket, to] : plan) {
    Choice& choice = choices_.at(bucket);
    if (choice.name == to) continue;
    Candidate const* c = find(to);
    c->layer->prepare(bucket, stream);  // a choice from the cache prepared the winner alone
    choice.layer = c->layer.get();
    choice.name = c->name;
    choice.from_cache = false;
  }
  // The chosen candidates, and the dense copy's owner where a sharer of it is chosen.
  std::set<std::string> const keep = held_by(plan, holdings);
  // The kernels of earlier forward calls may still read the weights that go.
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::erase_if(candidates_, [&](Candidate const& c) {
    if (keep.contains(c.name)) return false;
    released_.push_back(c.name);
    return true;
  });
  return before - total(memory());
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
