/// \file gpu_test_util.hpp
/// \brief Device buffers, the skip-without-GPU fixture and the operand generators of the GPU suites.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/device_info.hpp"

namespace slidesparse::test {

/// The CUDA layer's owned allocation plus synchronous whole-buffer copies for tests.
class DeviceBuffer : public cuda::DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : cuda::DeviceBuffer(bytes) {}
  void upload(void const* host) { SLIDESPARSE_CUDA_CHECK(cudaMemcpy(get(), host, size(), cudaMemcpyHostToDevice)); }
  void fill(unsigned char value) { SLIDESPARSE_CUDA_CHECK(cudaMemset(get(), value, size())); }
  std::vector<std::byte> download() const {
    std::vector<std::byte> host(size());
    SLIDESPARSE_CUDA_CHECK(cudaMemcpy(host.data(), get(), size(), cudaMemcpyDeviceToHost));
    return host;
  }
};

/// Base fixture: skips the test, saying why, on a machine without a usable GPU.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static cuda::CudaEnvironment const env = cuda::query_cuda_environment();
    if (!env.problem.empty()) GTEST_SKIP() << "no GPU on this machine: " << env.problem;
  }
};

// Weights obeying 2:4 along K with every kind of group: two nonzeros at random positions,
// one, none (so the compressor's choice of padding positions is exercised).
inline void fill_sparse_weight(Rng& rng, OwnedMatrix& w, int max_abs) {
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g + 4 <= w.cols; g += 4) {
      int const kept = rng.uniform_int(0, 5) == 0 ? rng.uniform_int(0, 1) : 2;
      int const first = rng.uniform_int(0, 3);
      int const second = (first + rng.uniform_int(1, 3)) % 4;
      for (int j = 0; j < 4; ++j) set_float(w, r, g + j, 0.0f);
      for (int j = 0; j < kept; ++j) {
        int v = 0;
        while (v == 0) v = rng.uniform_int(-max_abs, max_abs);
        set_float(w, r, g + (j == 0 ? first : second), static_cast<float>(v));
      }
    }
  }
}

// Every element a random integer in [-max_abs, max_abs] (exact in every operand type used).
inline void fill_small_integers(Rng& rng, OwnedMatrix& a, int max_abs) {
  for (std::int64_t r = 0; r < a.rows; ++r) {
    for (std::int64_t c = 0; c < a.cols; ++c) set_float(a, r, c, static_cast<float>(rng.uniform_int(-max_abs, max_abs)));
  }
}

}  // namespace slidesparse::test
