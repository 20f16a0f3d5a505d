#include "slidesparse/cuda/sm90_sparse_gemm.hpp"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/cuda/check.hpp"
#include "cuda_event.hpp"
#include "sm90/sparse_gemm_launch.hpp"
#include "sm90/sparse_layout.hpp"
#include "sm90/sparse_tiles.hpp"
#include "sm90a_requirements.hpp"

namespace slidesparse::cuda {

std::string Sm90SparseGemm::unsupported(DType input, DType output, std::int64_t n, std::int64_t k) {
  return detail::sm90a_w8a8_unsupported("the sm90 sparse kernels", input, output, n, k);
}

int Sm90SparseGemm::schedule_count() noexcept { return sm90::kScheduleCount; }

std::string Sm90SparseGemm::schedule_name(int schedule) {
  if (schedule < 0 || schedule >= sm90::kScheduleCount) fail(ErrorKind::kUsage, "sm90 sparse GEMM: no schedule {}", schedule);
  sm90::Schedule const s = sm90::kSchedules[schedule];
  return fmt::format("stages {}, group {}{}", s.stages, s.group, s.stagger ? ", stagger" : "");
}

Sm90SparseGemm::Sm90SparseGemm(void const* host_weight, DType input_dtype, std::int64_t n, std::int64_t k_lifted,
                               cudaStream_t stream, std::string_view name)
    : input_dtype_(input_dtype), n_(n), k_lifted_(k_lifted) {
  if (std::string const why = unsupported(input_dtype, DType::kBF16, n, k_lifted); !why.empty()) {
    fail(ErrorKind::kUsage, "sm90 sparse GEMM [{} x {}] {}: {}", n, k_lifted, dtype_name(input_dtype), why);
  }
  sm90::SparseTiles const tiles =
      sm90::tile_sparse_weight(static_cast<std::uint8_t const*>(host_weight), n, k_lifted,
                               input_dtype == DType::kI8 ? sm90::WeightCodes::kI8 : sm90::WeightCodes::kE4M3, name);
  std::size_t const metadata_bytes = tiles.metadata.size() * sizeof(std::uint32_t);
  values_.allocate(tiles.values.size());
  metadata_.allocate(metadata_bytes);
  SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(values_.get(), tiles.values.data(), tiles.values.size(),
                                         cudaMemcpyHostToDevice, stream));
  SLIDESPARSE_CUDA_CHECK(
      cudaMemcpyAsync(metadata_.get(), tiles.metadata.data(), metadata_bytes, cudaMemcpyHostToDevice, stream));
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // `tiles` goes out of scope
  int device = 0;
  SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
  SLIDESPARSE_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device));
}

void Sm90SparseGemm::run(void const* x_lifted, void* y, std::int64_t m, float const* scale_x, float const* scale_w,
                         float const* bias, cudaStream_t stream, int schedule) const {
  sm90::SparseGemmArgs args;
  args.int8 = input_dtype_ == DType::kI8;
  args.values = values_.get();
  args.metadata = metadata_.get();
  args.n = n_;
  args.k_lifted = k_lifted_;
  args.m = m;
  args.x = x_lifted;
  args.scale_x = scale_x;
  args.scale_w = scale_w;
  args.bias = bias;
  args.y = y;
  args.multiprocessors = multiprocessors_;
  cudaError_t const err = sm90::launch_sparse_gemm(args, schedule, stream);
  if (err != cudaSuccess) {
    fail(ErrorKind::kInternal, "sm90 sparse GEMM [{} x {}] {}, M = {}, schedule {}: {}", n_, k_lifted_,
         dtype_name(input_dtype_), m, schedule, cudaGetErrorString(err));
  }
}

std::string const& Sm90SparseGemm::version() {
  static std::string const name = [] {
    std::string out = "slidesparse-sm90:";
    for (int i = 0; i < sm90::kScheduleCount; ++i) {
      sm90::Schedule const s = sm90::kSchedules[i];
      out += fmt::format("{}{}.{}.{}", i ? "," : "", s.stages, s.group, s.stagger ? 1 : 0);
    }
    return out;
  }();
  return name;
}

int Sm90SparseGemm::choose_schedule(void const* x_lifted, void* y, std::int64_t m, float const* scale_x,
                                    float const* scale_w, float const* bias, cudaStream_t stream,
                                    std::vector<float>* median_ms) const {
  detail::Event const start_event, stop_event;
  cudaEvent_t const start = start_event.get(), stop = stop_event.get();
  int best = 0;
  float best_ms = 0.f;
  if (median_ms) median_ms->clear();
  for (int s = 0; s < schedule_count(); ++s) {
    std::vector<float> times;
    for (int i = 0; i <= 5; ++i) {  // i = 0: warm-up
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start, stream));
      run(x_lifted, y, m, scale_x, scale_w, bias, stream, s);
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop, stream));
      SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.f;
      SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (i > 0) times.push_back(ms);
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    float const median = times[times.size() / 2];
    if (median_ms) median_ms->push_back(median);
    if (s == 0 || median < best_ms) best = s, best_ms = median;
  }
  return best;
}

}  // namespace slidesparse::cuda
