#include "slidesparse/cuda/cusparselt_gemm.hpp"

#include <cusparseLt.h>

#include <array>

#include "cuda_data_type.hpp"
#include "gemm_tuning.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::cuda {
namespace {

[[noreturn]] void throw_cusparselt_error(cusparseStatus_t status, char const* call, char const* file, int line) {
  fail(ErrorKind::kInternal, "cuSPARSELt call {} failed at {}:{}: {} ({})", call, file, line,
       cusparseLtGetErrorString(status), cusparseLtGetErrorName(status));
}

#define SLIDESPARSE_CUSPARSELT_CHECK(call)                                           \
  do {                                                                               \
    cusparseStatus_t const slidesparse_status_ = (call);                             \
    if (slidesparse_status_ != CUSPARSE_STATUS_SUCCESS) {                            \
      throw_cusparselt_error(slidesparse_status_, #call, __FILE__, __LINE__);        \
    }                                                                                \
  } while (0)

cudaDataType cuda_type(DType dtype) { return detail::cuda_data_type(dtype, "cuSPARSELt"); }

// Input -> output combinations cuSPARSELt supports on sm90 (brief section 3).
bool supported(DType in, DType out) {
  switch (in) {
    case DType::kI8: return out == DType::kI32 || out == DType::kBF16 || out == DType::kF16 || out == DType::kI8;
    case DType::kF8E4M3: return out == DType::kBF16 || out == DType::kF16 || out == DType::kF32;
    case DType::kBF16: return out == DType::kBF16;
    case DType::kF16: return out == DType::kF16;
    default: return false;
  }
}

// cuSPARSELt 0.8.0's matmul kernels read up to ~1 KB past the end of the compressed weight
// (compute-sanitizer on an H100, N = 64, K' = 3584: a 1024-byte read ending 512 bytes past the
// 192,000-byte allocation). The values there do not reach D (results are exact), but an
// out-of-bounds read can fault at a page edge, so the allocation carries a guard tail.
constexpr std::size_t kCompressedGuardBytes = std::size_t{1} << 20;

// Below this many output channels cuSPARSELt's Segment-K (split-K = -1, picked by the search)
// has been reported to hang on sm90; such layers keep the default configuration. FP16 layers
// do too: on an H100 with 0.8.0, MatmulSearch for FP16 2:4 (N = 4608, K' = 3584, M = 32) ran a
// candidate kernel that raised cudaErrorIllegalInstruction, which poisons the CUDA context.
constexpr std::int64_t kMinNForSearch = 400;

// What MatmulSearch chooses and the tuning cache stores: the kernel configuration and its
// split-K setting. Restored on a fresh AlgSelection before PlanInit, so the workspace size is
// recomputed for the exact problem (a split-K config needs workspace that grows with M).
constexpr std::array<std::pair<cusparseLtMatmulAlgAttribute_t, char const*>, 4> kTunedAttributes = {{
    {CUSPARSELT_MATMUL_ALG_CONFIG_ID, "config_id"},
    {CUSPARSELT_MATMUL_SPLIT_K, "split_k"},
    {CUSPARSELT_MATMUL_SPLIT_K_MODE, "split_k_mode"},
    {CUSPARSELT_MATMUL_SPLIT_K_BUFFERS, "split_k_buffers"},
}};

}  // namespace

struct CusparseltGemm::Context {
  cusparseLtHandle_t handle{};
  cusparseLtMatDescriptor_t weight_desc{};  ///< structured A, column-major [K', N]
  void* compressed = nullptr;
  std::size_t compressed_bytes = 0;
  bool handle_ready = false;
  bool weight_desc_ready = false;
  ~Context() {
    if (compressed) cudaFree(compressed);
    if (weight_desc_ready) cusparseLtMatDescriptorDestroy(&weight_desc);
    if (handle_ready) cusparseLtDestroy(&handle);
  }
};

struct CusparseltGemm::Plan {
  std::int64_t m = 0;
  cusparseLtHandle_t const* handle = nullptr;
  cusparseLtMatDescriptor_t x_desc{}, y_desc{};
  cusparseLtMatmulDescriptor_t matmul{};
  cusparseLtMatmulAlgSelection_t selection{};
  cusparseLtMatmulPlan_t plan{};
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  int ready = 0;  ///< how many of the objects above exist (destroyed in reverse order)
  bool tuned_from_cache = false;
  ~Plan() {
    if (workspace) cudaFree(workspace);
    if (ready >= 4) cusparseLtMatmulPlanDestroy(&plan);
    if (ready >= 3) cusparseLtMatmulAlgSelectionDestroy(&selection);
    if (ready >= 2) cusparseLtMatDescriptorDestroy(&y_desc);
    if (ready >= 1) cusparseLtMatDescriptorDestroy(&x_desc);
  }
};

CusparseltGemm::CusparseltGemm(void const* weight, DType input_dtype, DType output_dtype,
                               std::int64_t n, std::int64_t k_lifted, cudaStream_t stream,
                               io::TuningCache* tuning)
    : input_dtype_(input_dtype), output_dtype_(output_dtype), n_(n), k_lifted_(k_lifted),
      tuning_(tuning), context_(std::make_unique<Context>()) {
  if (!supported(input_dtype, output_dtype)) {
    fail(ErrorKind::kUsage, "cuSPARSELt GEMM: {} inputs with {} output are not supported",
         dtype_name(input_dtype), dtype_name(output_dtype));
  }
  std::int64_t const multiple = dtype_size(input_dtype) == 1 ? 32 : 16;
  if (n <= 0 || k_lifted <= 0 || n % multiple != 0 || k_lifted % multiple != 0) {
    fail(ErrorKind::kUsage, "cuSPARSELt GEMM: N = {} and K' = {} must be positive multiples of {} "
         "for {}", n, k_lifted, multiple, dtype_name(input_dtype));
  }
  Context& c = *context_;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtInit(&c.handle));
  c.handle_ready = true;
  int version = 0;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtGetVersion(&c.handle, &version));
  library_version_ = fmt::format("cusparselt-{}", version);
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtStructuredDescriptorInit(
      &c.handle, &c.weight_desc, k_lifted, n, k_lifted, 16, cuda_type(input_dtype),
      CUSPARSE_ORDER_COL, CUSPARSELT_SPARSITY_50_PERCENT));
  c.weight_desc_ready = true;
  std::size_t buffer_bytes = 0;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtSpMMACompressedSize2(&c.handle, &c.weight_desc,
                                                              &c.compressed_bytes, &buffer_bytes));
  SLIDESPARSE_CUDA_CHECK(cudaMalloc(&c.compressed, c.compressed_bytes + kCompressedGuardBytes));
  SLIDESPARSE_CUDA_CHECK(cudaMemsetAsync(c.compressed, 0, c.compressed_bytes + kCompressedGuardBytes, stream));
  void* buffer = nullptr;
  if (buffer_bytes) SLIDESPARSE_CUDA_CHECK(cudaMalloc(&buffer, buffer_bytes));
  cusparseStatus_t const status = cusparseLtSpMMACompress2(
      &c.handle, &c.weight_desc, 1, CUSPARSE_OPERATION_TRANSPOSE, weight, c.compressed, buffer, stream);
  cudaError_t const sync = cudaStreamSynchronize(stream);  // construction, not the hot path
  if (buffer) cudaFree(buffer);
  if (status != CUSPARSE_STATUS_SUCCESS) throw_cusparselt_error(status, "cusparseLtSpMMACompress2", __FILE__, __LINE__);
  SLIDESPARSE_CUDA_CHECK(sync);
}

CusparseltGemm::~CusparseltGemm() {
  plans_.clear();  // plans reference the handle: destroy them first
  context_.reset();
}

std::size_t CusparseltGemm::device_bytes() const noexcept {
  std::size_t bytes = context_->compressed_bytes + kCompressedGuardBytes;
  for (auto const& p : plans_) bytes += p->workspace_bytes;
  return bytes;
}

std::size_t CusparseltGemm::compressed_bytes() const noexcept {
  return context_->compressed_bytes + kCompressedGuardBytes;
}

CusparseltGemm::Plan const* CusparseltGemm::find_plan(std::int64_t m) const noexcept {
  for (auto const& p : plans_) {
    if (p->m == m) return p.get();
  }
  return nullptr;
}

bool CusparseltGemm::has_plan(std::int64_t m) const noexcept { return find_plan(m) != nullptr; }

bool CusparseltGemm::tuned_from_cache(std::int64_t m) const noexcept {
  Plan const* p = find_plan(m);
  return p && p->tuned_from_cache;
}

CusparseltGemm::Plan& CusparseltGemm::plan_for(std::int64_t m, void const* x_lifted, void* y,
                                               cudaStream_t stream) {
  for (auto it = plans_.begin(); it != plans_.end(); ++it) {
    if ((*it)->m == m) {
      plans_.splice(plans_.begin(), plans_, it);  // most recently used first
      return *plans_.front();
    }
  }
  Context& c = *context_;
  auto plan = std::make_unique<Plan>();
  Plan& p = *plan;
  p.m = m;
  p.handle = &c.handle;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(&c.handle, &p.x_desc, k_lifted_, m, k_lifted_, 16,
                                                             cuda_type(input_dtype_), CUSPARSE_ORDER_COL));
  p.ready = 1;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(&c.handle, &p.y_desc, n_, m, n_, 16,
                                                             cuda_type(output_dtype_), CUSPARSE_ORDER_COL));
  p.ready = 2;
  cusparseComputeType const compute = input_dtype_ == DType::kI8 ? CUSPARSE_COMPUTE_32I : CUSPARSE_COMPUTE_32F;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulDescriptorInit(
      &c.handle, &p.matmul, CUSPARSE_OPERATION_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE,
      &c.weight_desc, &p.x_desc, &p.y_desc, &p.y_desc, compute));
  // A default selection (ready = 3); `fresh` destroys the current one first.
  auto const init_selection = [&](bool fresh) {
    if (fresh) {
      cusparseLtMatmulAlgSelectionDestroy(&p.selection);
      p.ready = 2;
    }
    SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulAlgSelectionInit(&c.handle, &p.selection, &p.matmul,
                                                                  CUSPARSELT_MATMUL_ALG_DEFAULT));
    p.ready = 3;
  };
  init_selection(false);
  bool const searchable = n_ >= kMinNForSearch && input_dtype_ != DType::kF16;
  std::string const key = searchable && tuning_
      ? detail::gemm_tuning_key("cusparselt", library_version_, input_dtype_, output_dtype_, n_, k_lifted_, m) : "";
  bool restored = false;
  if (!key.empty()) {
    if (auto const entry = tuning_->find(key); entry && entry->is_object()) {
      restored = true;
      for (auto const& [attribute, name] : kTunedAttributes) {
        auto const value = entry->find(name);
        int v = 0;
        if (value == entry->end() || !value->is_number_integer()) { restored = false; break; }
        v = value->get<int>();
        if (cusparseLtMatmulAlgSetAttribute(&c.handle, &p.selection, attribute, &v, sizeof v) != CUSPARSE_STATUS_SUCCESS) {
          restored = false;  // not valid for this library: search again
          break;
        }
      }
      if (!restored) init_selection(true);  // start from a clean selection
    }
  }
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulPlanInit(&c.handle, &p.plan, &p.matmul, &p.selection));
  p.ready = 4;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(&c.handle, &p.plan, &p.workspace_bytes));
  if (p.workspace_bytes) SLIDESPARSE_CUDA_CHECK(cudaMalloc(&p.workspace, p.workspace_bytes));
  p.tuned_from_cache = restored;
  bool searched = false;
  if (searchable && !restored) {
    float const alpha = 1.0f, beta = 0.0f;
    cusparseStatus_t const status = cusparseLtMatmulSearch(&c.handle, &p.plan, &alpha, c.compressed, x_lifted,
                                                           &beta, y, y, p.workspace, &stream, 1);
    if (status == CUSPARSE_STATUS_SUCCESS) {
      searched = true;
    } else {
      // A search that fails without a device fault (e.g. an unsupported candidate reported as
      // an error) leaves the default configuration usable: rebuild the plan from a fresh
      // selection. A device fault is sticky and surfaces in the synchronize below.
      SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
      fmt::print(stderr, "slidesparse: warning: cuSPARSELt MatmulSearch failed ({}) for {} -> {}, N = {}, K' = {}, "
                 "M = {}; using the default configuration\n", cusparseLtGetErrorName(status), dtype_name(input_dtype_),
                 dtype_name(output_dtype_), n_, k_lifted_, m);
      cusparseLtMatmulPlanDestroy(&p.plan);
      p.ready = 3;
      init_selection(true);
      SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulPlanInit(&c.handle, &p.plan, &p.matmul, &p.selection));
      p.ready = 4;
    }
  }
  if (searchable && !restored) {
    // The chosen configuration (split-K in particular) may need a larger workspace.
    std::size_t needed = 0;
    SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(&c.handle, &p.plan, &needed));
    if (needed > p.workspace_bytes) {
      SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (p.workspace) cudaFree(p.workspace);
      p.workspace = nullptr;
      SLIDESPARSE_CUDA_CHECK(cudaMalloc(&p.workspace, needed));
      p.workspace_bytes = needed;
    }
    if (!key.empty() && searched) {
      nlohmann::json entry = {{"tuned", detail::tuning_date()}};
      for (auto const& [attribute, name] : kTunedAttributes) {
        int v = 0;
        SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmulAlgGetAttribute(&c.handle, &p.selection, attribute, &v, sizeof v));
        entry[name] = v;
      }
      tuning_->put(key, std::move(entry));
    }
  }
  plans_.push_front(std::move(plan));
  if (plans_.size() > kMaxPlans) {
    // The dropped plan's workspace may still be in use by queued work.
    SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
    plans_.pop_back();
  }
  return *plans_.front();
}

void CusparseltGemm::run(void const* x_lifted, void* y, std::int64_t m, float alpha, cudaStream_t stream) {
  std::int64_t const multiple = dtype_size(input_dtype_) == 1 ? 32 : 16;
  if (m <= 0 || m % multiple != 0) {
    fail(ErrorKind::kUsage, "cuSPARSELt GEMM: M = {} must be a positive multiple of {} (pad the "
         "activations to the M bucket)", m, multiple);
  }
  Plan& p = plan_for(m, x_lifted, y, stream);
  float const beta = 0.0f;
  SLIDESPARSE_CUSPARSELT_CHECK(cusparseLtMatmul(&context_->handle, &p.plan, &alpha, context_->compressed,
                                                x_lifted, &beta, y, y, p.workspace, &stream, 1));
}

}  // namespace slidesparse::cuda
