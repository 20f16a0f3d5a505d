#include "slidesparse/cuda/cublaslt_gemm.hpp"

#include <cublasLt.h>

#include <algorithm>
#include <vector>

#include "cuda_data_type.hpp"
#include "cuda_event.hpp"
#include "gemm_tuning.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::cuda {
namespace {

[[noreturn]] void throw_cublas_error(cublasStatus_t status, char const* call, char const* file, int line) {
  fail(ErrorKind::kInternal, "cuBLASLt call {} failed at {}:{}: {} ({})", call, file, line,
       cublasLtGetStatusString(status), cublasLtGetStatusName(status));
}

#define SLIDESPARSE_CUBLAS_CHECK(call)                                        \
  do {                                                                        \
    cublasStatus_t const slidesparse_status_ = (call);                        \
    if (slidesparse_status_ != CUBLAS_STATUS_SUCCESS) {                       \
      throw_cublas_error(slidesparse_status_, #call, __FILE__, __LINE__);     \
    }                                                                         \
  } while (0)

cudaDataType cuda_type(DType dtype) { return detail::cuda_data_type(dtype, "cuBLASLt"); }

bool supported(DType in, DType out) {
  switch (in) {
    case DType::kI8: return out == DType::kI32;
    case DType::kF8E4M3: return out == DType::kBF16 || out == DType::kF16 || out == DType::kF32;
    case DType::kBF16: return out == DType::kBF16;
    case DType::kF16: return out == DType::kF16;
    default: return false;
  }
}

constexpr int kHeuristics = 8;

std::string problem_text(DType in, DType out, std::int64_t m, std::int64_t n, std::int64_t k) {
  return fmt::format("{} -> {} with M = {}, N = {}, K = {}", dtype_name(in), dtype_name(out), m, n, k);
}

// The top `count` heuristic algorithms for D = op(A) B within `workspace` bytes; Error when
// cuBLASLt offers none. Returns how many were found.
int top_heuristics(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                   cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t d, std::size_t workspace, int count,
                   cublasLtMatmulHeuristicResult_t* results, std::string_view problem) {
  cublasLtMatmulPreference_t preference = nullptr;
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  int found = 0;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, d, d, preference, count, results, &found);
  }
  cublasLtMatmulPreferenceDestroy(preference);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) {
    fail(ErrorKind::kUsage, "cuBLASLt offers no algorithm for {}: {}", problem, cublasLtGetStatusString(status));
  }
  return found;
}

// Whether `algo` runs the problem the descriptors describe now, within `workspace` bytes.
bool algo_applies(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                  cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t d, cublasLtMatmulAlgo_t const& algo,
                  std::size_t workspace) {
  cublasLtMatmulHeuristicResult_t check{};
  return cublasLtMatmulAlgoCheck(handle, desc, a, b, d, d, &algo, &check) == CUBLAS_STATUS_SUCCESS &&
         check.workspaceSize <= workspace;
}

}  // namespace

struct CublasltGemm::Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  ~Context() {
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }
};

struct CublasltGemm::Plan {
  std::int64_t m = 0;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};          ///< tuned at m
  std::int64_t current_m = 0;            ///< the M the layouts b and d describe now
  cublasLtMatmulAlgo_t current_algo{};   ///< algo, or the top heuristic where algo does not apply to current_m
  bool tuned_from_cache = false;
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

CublasltGemm::CublasltGemm(void const* weight, DType input_dtype, DType output_dtype, std::int64_t n,
                           std::int64_t k, io::TuningCache* tuning, bool outer_vector_scales)
    : weight_(weight), input_dtype_(input_dtype), output_dtype_(output_dtype), n_(n), k_(k), tuning_(tuning),
      outer_vector_scales_(outer_vector_scales),
      library_version_(fmt::format("cublaslt-{}", cublasLtGetVersion())), context_(std::make_unique<Context>()) {
  if (!supported(input_dtype, output_dtype)) {
    fail(ErrorKind::kUsage, "cuBLASLt GEMM: {} inputs with {} output are not supported",
         dtype_name(input_dtype), dtype_name(output_dtype));
  }
  if (outer_vector_scales && (input_dtype != DType::kF8E4M3 || (output_dtype != DType::kBF16 && output_dtype != DType::kF16))) {
    fail(ErrorKind::kUsage, "cuBLASLt GEMM: outer-vector scales need FP8 inputs and a BF16/F16 output");
  }
  if (n <= 0 || k <= 0 || k % 16 != 0 || n % 8 != 0) {
    fail(ErrorKind::kUsage, "cuBLASLt GEMM: N = {} must be a positive multiple of 8 and K = {} of 16", n, k);
  }
  SLIDESPARSE_CUBLAS_CHECK(cublasLtCreate(&context_->handle));
  SLIDESPARSE_CUDA_CHECK(cudaMalloc(&context_->workspace, kWorkspaceBytes));
}

CublasltGemm::~CublasltGemm() {
  plans_.clear();
  context_.reset();
}

std::size_t CublasltGemm::device_bytes() const noexcept { return kWorkspaceBytes; }

CublasltGemm::Plan const* CublasltGemm::find_plan(std::int64_t m) const noexcept {
  for (auto const& p : plans_) {
    if (p->m == m) return p.get();
  }
  return nullptr;
}

bool CublasltGemm::has_plan(std::int64_t m) const noexcept { return find_plan(m) != nullptr; }

bool CublasltGemm::tuned_from_cache(std::int64_t plan_m) const noexcept {
  Plan const* p = find_plan(plan_m);
  return p && p->tuned_from_cache;
}

CublasltGemm::Plan& CublasltGemm::plan_for(std::int64_t m, void const* x, void* y, cudaStream_t stream) {
  for (auto it = plans_.begin(); it != plans_.end(); ++it) {
    if ((*it)->m == m) {
      plans_.splice(plans_.begin(), plans_, it);
      return *plans_.front();
    }
  }
  auto plan = std::make_unique<Plan>();
  Plan& p = *plan;
  p.m = m;
  bool const integer = input_dtype_ == DType::kI8;
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, integer ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F,
                                                    integer ? CUDA_R_32I : CUDA_R_32F));
  cublasOperation_t const trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a));
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b));
  if (outer_vector_scales_) {
    // GEMM rows are the output channels (A = W), columns the tokens (B = X'): scale A per row
    // with scale_w, B per column with scale_x.
    cublasLtMatmulMatrixScale_t const mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_w_, sizeof scale_w_));
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_x_, sizeof scale_x_));
  }
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, cuda_type(input_dtype_), static_cast<std::uint64_t>(k_),
                                                      static_cast<std::uint64_t>(n_), k_));
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, cuda_type(input_dtype_), static_cast<std::uint64_t>(k_),
                                                      static_cast<std::uint64_t>(m), k_));
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, cuda_type(output_dtype_), static_cast<std::uint64_t>(n_),
                                                      static_cast<std::uint64_t>(m), n_));
  p.current_m = m;
  std::string const key = tuning_ ? detail::gemm_tuning_key(outer_vector_scales_ ? "cublaslt-outer-vec" : "cublaslt", library_version_, input_dtype_,
                                                            output_dtype_, n_, k_, m) : "";
  if (!key.empty()) {
    if (auto const entry = tuning_->find(key); entry && entry->contains("algo") && (*entry)["algo"].is_array() &&
                                               (*entry)["algo"].size() == std::size(p.algo.data)) {
      for (std::size_t i = 0; i < std::size(p.algo.data); ++i) p.algo.data[i] = (*entry)["algo"][i].get<std::uint64_t>();
      // The stored algorithm must still be valid here (same library, same problem) and fit
      // the workspace; otherwise tune again.
      p.tuned_from_cache = algo_applies(context_->handle, p.desc, p.a, p.b, p.d, p.algo, kWorkspaceBytes);
    }
  }
  if (!p.tuned_from_cache) tune(p, x, y, stream, key);
  p.current_algo = p.algo;
  plans_.push_front(std::move(plan));
  if (plans_.size() > kMaxPlans) plans_.pop_back();  // plans hold no device memory
  return *plans_.front();
}

void CublasltGemm::tune(Plan& p, void const* x, void* y, cudaStream_t stream, std::string const& key) {
  bool const integer = input_dtype_ == DType::kI8;
  cublasLtMatmulHeuristicResult_t results[kHeuristics] = {};
  int const found = top_heuristics(context_->handle, p.desc, p.a, p.b, p.d, kWorkspaceBytes, kHeuristics, results,
                                   problem_text(input_dtype_, output_dtype_, p.m, n_, k_));
  // Time each candidate on the caller's buffers (3 warm-up + 5 timed runs, median) and keep the
  // fastest: the top heuristic is often not the best for skinny or odd shapes.
  detail::Event const start_event, stop_event;
  cudaEvent_t const start = start_event.get(), stop = stop_event.get();
  float best_ms = 0;
  int best = -1;
  std::int32_t const alpha_i = 1, beta_i = 0;
  float const alpha_f = 1.0f, beta_f = 0.0f;
  void const* alpha = integer ? static_cast<void const*>(&alpha_i) : &alpha_f;
  void const* beta = integer ? static_cast<void const*>(&beta_i) : &beta_f;
  for (int i = 0; i < found; ++i) {
    auto launch = [&] {
      return cublasLtMatmul(context_->handle, p.desc, alpha, weight_, p.a, x, p.b, beta, y, p.d, y, p.d,
                            &results[i].algo, context_->workspace, kWorkspaceBytes, stream);
    };
    bool ok = true;
    for (int w = 0; w < 3 && ok; ++w) ok = launch() == CUBLAS_STATUS_SUCCESS;
    if (!ok) continue;
    std::vector<float> times;
    for (int r = 0; r < 5; ++r) {
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start, stream));
      SLIDESPARSE_CUBLAS_CHECK(launch());
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop, stream));
      SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms);
    }
    std::nth_element(times.begin(), times.begin() + 2, times.end());
    if (best < 0 || times[2] < best_ms) {
      best_ms = times[2];
      best = i;
    }
  }
  if (best < 0) fail(ErrorKind::kInternal, "cuBLASLt: none of {} candidate algorithms ran", found);
  p.algo = results[best].algo;
  if (!key.empty()) {
    nlohmann::json algo = nlohmann::json::array();
    for (std::uint64_t const word : p.algo.data) algo.push_back(word);
    tuning_->put(key, {{"algo", algo}, {"ms", best_ms}, {"candidates", found}, {"tuned", detail::tuning_date()}});
  }
}

void CublasltGemm::run(void const* x, void* y, std::int64_t m, float alpha, cudaStream_t stream,
                       std::int64_t plan_m, float const* scale_w, float const* scale_x) {
  if (plan_m == 0) plan_m = m;
  if (outer_vector_scales_ && (!scale_w || !scale_x || alpha != 1.0f)) {
    fail(ErrorKind::kUsage, "cuBLASLt GEMM with outer-vector scales needs both scale vectors and alpha = 1");
  }
  scale_w_ = scale_w;
  scale_x_ = scale_x;
  if (m <= 0 || m > plan_m) fail(ErrorKind::kUsage, "cuBLASLt GEMM: M = {} must be positive and at most the plan's M = {}", m, plan_m);
  Plan& p = plan_for(plan_m, x, y, stream);
  if (outer_vector_scales_) {  // host-side attribute updates: allowed on the hot path
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_w_, sizeof scale_w_));
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_x_, sizeof scale_x_));
  }
  if (p.current_m != m) {
    // Host-side only: the layouts of X and Y take the new column count, and the algorithm
    // tuned at plan_m is kept if cuBLASLt confirms it applies to m.
    auto const cols = static_cast<std::uint64_t>(m);
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p.b, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols));
    SLIDESPARSE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p.d, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols));
    p.current_m = m;
    if (algo_applies(context_->handle, p.desc, p.a, p.b, p.d, p.algo, kWorkspaceBytes)) {
      p.current_algo = p.algo;
    } else {
      cublasLtMatmulHeuristicResult_t result{};
      top_heuristics(context_->handle, p.desc, p.a, p.b, p.d, kWorkspaceBytes, 1, &result,
                     problem_text(input_dtype_, output_dtype_, m, n_, k_));
      p.current_algo = result.algo;
    }
  }
  bool const integer = input_dtype_ == DType::kI8;
  auto const alpha_i = static_cast<std::int32_t>(alpha);
  std::int32_t const beta_i = 0;
  float const beta_f = 0.0f;
  if (integer && static_cast<float>(alpha_i) != alpha) {
    fail(ErrorKind::kUsage, "cuBLASLt INT8 GEMM: alpha must be an integer (got {})", alpha);
  }
  SLIDESPARSE_CUBLAS_CHECK(cublasLtMatmul(
      context_->handle, p.desc, integer ? static_cast<void const*>(&alpha_i) : &alpha, weight_, p.a, x, p.b,
      integer ? static_cast<void const*>(&beta_i) : &beta_f, y, p.d, y, p.d, &p.current_algo, context_->workspace,
      kWorkspaceBytes, stream));
}

}  // namespace slidesparse::cuda
