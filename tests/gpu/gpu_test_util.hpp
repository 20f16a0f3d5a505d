/// \file gpu_test_util.hpp
/// \brief Device buffers and the skip-without-GPU fixture for the GPU suites.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include <gtest/gtest.h>

#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_info.hpp"

namespace slidesparse::test {

/// Owning device allocation.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes_) SLIDESPARSE_CUDA_CHECK(cudaMalloc(&ptr_, bytes_));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer const&) = delete;
  DeviceBuffer& operator=(DeviceBuffer const&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  std::size_t size() const { return bytes_; }
  void upload(void const* host) { SLIDESPARSE_CUDA_CHECK(cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice)); }
  void fill(unsigned char value) { SLIDESPARSE_CUDA_CHECK(cudaMemset(ptr_, value, bytes_)); }
  std::vector<std::byte> download() const {
    std::vector<std::byte> host(bytes_);
    SLIDESPARSE_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes_, cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
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
