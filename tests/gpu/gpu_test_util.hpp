/// \file gpu_test_util.hpp
/// \brief Device buffers and the skip-without-GPU fixture for the GPU suites.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include <gtest/gtest.h>

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

}  // namespace slidesparse::test
