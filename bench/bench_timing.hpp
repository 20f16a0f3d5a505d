/// \file bench_timing.hpp
/// \brief The one timing loop of the GPU benchmarks: CUDA events around batches of calls,
/// buffer sets rotated between calls (cold L2), warm-up first, median/min/max per call.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "slidesparse/cuda/check.hpp"

namespace slidesparse::bench {

struct Timing {
  double median_us, min_us, max_us;
};

/// call(set) issues one call on buffer set `set` (0 .. sets-1). `warmup` untimed calls, then
/// `samples` samples of `batch` back-to-back calls; each sample's time is divided by `batch`.
template <typename F>
Timing time_calls(int sets, int warmup, int samples, int batch, F&& call) {
  cudaEvent_t start, stop;
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&start));
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&stop));
  int next = 0;
  for (int i = 0; i < warmup; ++i) call(next++ % sets);
  std::vector<double> us;
  for (int i = 0; i < samples; ++i) {
    SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start));
    for (int j = 0; j < batch; ++j) call(next++ % sets);
    SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop));
    SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    us.push_back(1000.0 * ms / batch);
  }
  SLIDESPARSE_CUDA_CHECK(cudaEventDestroy(start));
  SLIDESPARSE_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us.front(), us.back()};
}

}  // namespace slidesparse::bench
