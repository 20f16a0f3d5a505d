#include "slidesparse/cuda/cutlass_gemm.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cuda_event.hpp"
#include "cutlass/cutlass_kernel.hpp"
#include "gemm_tuning.hpp"
#include "sm90a_requirements.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::cuda {
namespace {

using detail::CutlassKernel;
using detail::CutlassProblem;
using detail::CutlassRunOptions;
using Raster = CutlassRunOptions::Raster;

char raster_letter(Raster r) { return r == Raster::kAlongM ? 'M' : r == Raster::kAlongN ? 'N' : 'H'; }

std::string describe(CutlassKernel const& kernel, CutlassRunOptions const& o) {
  return fmt::format("{} raster={} swizzle={}", kernel.spec().name, raster_letter(o.raster), o.swizzle);
}

// The run-time options the tuner tries with every configuration: both rasterization orders
// (which operand's tiles neighbouring CTAs share in L2) and swizzle widths 1, 2, 4.
constexpr std::array<CutlassRunOptions, 6> kTunedOptions = {{
    {Raster::kAlongM, 1, 1}, {Raster::kAlongN, 1, 1},
    {Raster::kAlongM, 2, 1}, {Raster::kAlongN, 2, 1},
    {Raster::kAlongM, 4, 1}, {Raster::kAlongN, 4, 1},
}};

// A fingerprint of the compiled configuration list (FNV-1a of the names), part of the tuning
// key: a choice made among other configurations is searched again (a new one might win).
std::string kernel_set_fingerprint() {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (auto const& kernel : detail::cutlass_kernels()) {
    for (char const c : kernel->spec().name + ";") {
      h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
    }
  }
  return fmt::format("{:08x}", static_cast<std::uint32_t>(h ^ (h >> 32)));
}

}  // namespace

struct CutlassGemm::Plan {
  std::int64_t m = 0;
  CutlassKernel const* kernel = nullptr;
  CutlassRunOptions options;
  DeviceBuffer workspace;  ///< sized for every M in [min_covered_m, m]
  std::int64_t min_covered_m = 1;
  bool tuned_from_cache = false;
};

std::string CutlassGemm::version() { return "cutlass-" + detail::cutlass_version(); }

std::string CutlassGemm::unsupported(DType input, DType output, std::int64_t n, std::int64_t k) {
  if (!detail::cutlass_available()) return "this build has no CUTLASS kernels (no CUTLASS headers at configure time)";
  return detail::sm90a_w8a8_unsupported("CUTLASS kernels", input, output, n, k);
}

CutlassGemm::CutlassGemm(void const* weight, DType input_dtype, bool sparse, std::int64_t n, std::int64_t k_lifted,
                         cudaStream_t stream, io::TuningCache* tuning, bool fast_accumulation)
    : input_dtype_(input_dtype), sparse_(sparse), fast_accumulation_(fast_accumulation), n_(n), k_lifted_(k_lifted),
      tuning_(tuning), library_version_(version() + "+" + kernel_set_fingerprint()) {
  if (std::string const why = unsupported(input_dtype, DType::kBF16, n, k_lifted); !why.empty()) {
    fail(ErrorKind::kUsage, "CUTLASS GEMM [{} x {}] {}: {}", n, k_lifted, dtype_name(input_dtype), why);
  }
  if (!sparse) {
    weight_ = weight;
    return;
  }
  detail::CutlassSparseSizes const sizes = detail::cutlass_sparse_sizes_launch(input_dtype, n, k_lifted);
  values_.allocate(sizes.values);
  metadata_.allocate(sizes.metadata);
  weight_ = values_.get();
  std::string const why =
      detail::cutlass_compress_launch(input_dtype, weight, n, k_lifted, values_.get(), metadata_.get(), stream);
  cudaError_t const sync = cudaStreamSynchronize(stream);
  if (!why.empty() || sync != cudaSuccess) {
    fail(ErrorKind::kInternal, "CUTLASS 2:4 compression of W' [{} x {}] failed: {}", n, k_lifted,
         why.empty() ? cudaGetErrorString(sync) : why);
  }
}

CutlassGemm::~CutlassGemm() = default;

CutlassGemm::Plan const* CutlassGemm::find_plan(std::int64_t plan_m) const noexcept {
  for (auto const& p : plans_) {
    if (p->m == plan_m) return p.get();
  }
  return nullptr;
}

bool CutlassGemm::has_plan(std::int64_t plan_m) const noexcept { return find_plan(plan_m) != nullptr; }

bool CutlassGemm::tuned_from_cache(std::int64_t plan_m) const noexcept {
  Plan const* p = find_plan(plan_m);
  return p && p->tuned_from_cache;
}

std::string CutlassGemm::plan_description(std::int64_t plan_m) const {
  Plan const* p = find_plan(plan_m);
  return p ? describe(*p->kernel, p->options) : std::string();
}

std::size_t CutlassGemm::compressed_bytes() const noexcept { return values_.size() + metadata_.size(); }

std::size_t CutlassGemm::device_bytes() const noexcept {
  std::size_t total = compressed_bytes();
  for (auto const& p : plans_) total += p->workspace.size();
  return total;
}

CutlassGemm::Plan& CutlassGemm::plan_for(std::int64_t plan_m, void const* x_lifted, void* y, float const* scale_x,
                                         float const* scale_w, float const* bias, cudaStream_t stream) {
  for (auto it = plans_.begin(); it != plans_.end(); ++it) {
    if ((*it)->m == plan_m) {
      plans_.splice(plans_.begin(), plans_, it);
      return *plans_.front();
    }
  }
  CutlassProblem problem{n_, plan_m, k_lifted_, weight_, metadata_.get(), x_lifted, scale_x, scale_w, bias, y};
  auto candidates_of = [&] {
    std::vector<std::pair<CutlassKernel const*, CutlassRunOptions>> out;
    for (auto const& kernel : detail::cutlass_kernels()) {
      auto const& spec = kernel->spec();
      if (spec.sparse != sparse_ || spec.dtype != input_dtype_ || (spec.fast_accum && !fast_accumulation_)) continue;
      for (CutlassRunOptions const& o : kTunedOptions) {
        if (kernel->check(problem, o).empty()) out.emplace_back(kernel.get(), o);
      }
    }
    return out;
  };
  auto plan = std::make_unique<Plan>();
  plan->m = plan_m;
  std::string const key = tuning_ ? detail::gemm_tuning_key(sparse_ ? "cutlass-sparse" : "cutlass-dense", library_version_,
                                                            input_dtype_, DType::kBF16, n_, k_lifted_, plan_m) +
                                        (fast_accumulation_ ? "" : ";accum=exact")
                                  : "";
  if (tuning_) {
    if (auto const entry = tuning_->find(key); entry && entry->contains("kernel") && entry->contains("raster") &&
                                               entry->contains("swizzle")) {
      std::string const name = (*entry)["kernel"].get<std::string>();
      std::string const raster = (*entry)["raster"].get<std::string>();
      CutlassRunOptions o{raster == "M" ? Raster::kAlongM : raster == "N" ? Raster::kAlongN : Raster::kHeuristic,
                          (*entry)["swizzle"].get<int>(), 1};
      for (auto const& kernel : detail::cutlass_kernels()) {
        // A configuration no longer compiled (kernels.txt changed) is simply tuned again.
        if (kernel->spec().name == name && kernel->check(problem, o).empty()) {
          plan->kernel = kernel.get();
          plan->options = o;
          plan->tuned_from_cache = true;
        }
      }
    }
  }
  if (!plan->kernel) {
    auto const candidates = candidates_of();
    if (candidates.empty()) {
      fail(ErrorKind::kUsage, "CUTLASS GEMM: no compiled {} {} configuration can run N = {}, M = {}, K' = {}",
           sparse_ ? "sparse" : "dense", dtype_name(input_dtype_), n_, plan_m, k_lifted_);
    }
    std::size_t workspace_max = 0;
    for (auto const& [kernel, o] : candidates) workspace_max = std::max(workspace_max, kernel->workspace_bytes(problem, o));
    DeviceBuffer workspace(workspace_max);
    detail::Event const start_event, stop_event;
    cudaEvent_t const start = start_event.get(), stop = stop_event.get();
    float best_ms = std::numeric_limits<float>::infinity();
    // One warm-up call, then the median of three timed calls per candidate.
    for (auto const& [kernel, o] : candidates) {
      if (kernel->run(problem, o, workspace.get(), stream) != cudaSuccess) {
        cudaGetLastError();
        continue;
      }
      std::array<float, 3> ms{};
      bool ok = true;
      for (float& t : ms) {
        SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start, stream));
        ok = ok && kernel->run(problem, o, workspace.get(), stream) == cudaSuccess;
        SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop, stream));
        SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
        SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
      }
      if (!ok) continue;
      std::sort(ms.begin(), ms.end());
      if (ms[1] < best_ms) {
        best_ms = ms[1];
        plan->kernel = kernel;
        plan->options = o;
      }
    }
    SLIDESPARSE_CUDA_CHECK(cudaGetLastError());
    if (!plan->kernel) {
      fail(ErrorKind::kInternal, "CUTLASS GEMM: every configuration failed to launch for N = {}, M = {}, K' = {}", n_,
           plan_m, k_lifted_);
    }
    if (tuning_) {
      tuning_->put(key, {{"kernel", plan->kernel->spec().name},
                         {"raster", std::string(1, raster_letter(plan->options.raster))},
                         {"swizzle", plan->options.swizzle},
                         {"ms", best_ms},
                         {"candidates", candidates.size()},
                         {"tuned", detail::tuning_date()}});
    }
  }
  // The workspace serves every M the caller maps to this plan (its bucket: at least
  // plan_m - plan_m / 8 - 32 rows); stream-K's size depends on the tile count and decomposition.
  plan->min_covered_m = std::max<std::int64_t>(1, plan_m - plan_m / 8 - 32);
  std::size_t workspace_bytes = 0;
  for (std::int64_t m = plan->min_covered_m; m <= plan_m; ++m) {
    problem.m = m;
    workspace_bytes = std::max(workspace_bytes, plan->kernel->workspace_bytes(problem, plan->options));
  }
  plan->workspace.allocate(workspace_bytes);
  if (plans_.size() >= kMaxPlans) plans_.pop_back();
  plans_.push_front(std::move(plan));
  return *plans_.front();
}

void CutlassGemm::run(void const* x_lifted, void* y, std::int64_t m, float const* scale_x, float const* scale_w,
                      float const* bias, cudaStream_t stream, std::int64_t plan_m) {
  if (m <= 0 || plan_m < m) fail(ErrorKind::kUsage, "CUTLASS GEMM: M = {} with plan M = {}", m, plan_m);
  if (!x_lifted || !y || !scale_x || !scale_w) fail(ErrorKind::kUsage, "CUTLASS GEMM: null input, output or scale");
  Plan& plan = plan_for(plan_m, x_lifted, y, scale_x, scale_w, bias, stream);
  CutlassProblem const problem{n_, m, k_lifted_, weight_, metadata_.get(), x_lifted, scale_x, scale_w, bias, y};
  // The workspace was sized for every M of the plan's bucket; a smaller M is checked here.
  if (m < plan.min_covered_m && plan.kernel->workspace_bytes(problem, plan.options) > plan.workspace.size()) {
    fail(ErrorKind::kInternal, "CUTLASS GEMM: M = {} needs more workspace than plan M = {}", m, plan_m);
  }
  cudaError_t const status = plan.kernel->run(problem, plan.options, plan.workspace.get(), stream);
  if (status != cudaSuccess) {
    fail(ErrorKind::kInternal, "CUTLASS GEMM {} failed for N = {}, M = {}, K' = {}: {}", describe(*plan.kernel, plan.options),
         n_, m, k_lifted_, cudaGetErrorString(status));
  }
}

}  // namespace slidesparse::cuda
