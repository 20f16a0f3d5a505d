/// \file device_buffer.hpp
/// \brief An owned device allocation (cudaMalloc / cudaFree) for host code of the CUDA layer,
/// the benchmarks and the tests: movable, not copyable; a failed allocation throws Error naming
/// the size.
#pragma once

#include <cstddef>
#include <utility>

#include <cuda_runtime.h>

#include "slidesparse/core/dtype.hpp"
#include "slidesparse/cuda/check.hpp"

namespace slidesparse::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// 0 bytes: no allocation (get() is null).
  explicit DeviceBuffer(std::size_t bytes) { allocate(bytes); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer const&) = delete;
  DeviceBuffer& operator=(DeviceBuffer const&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }

  /// Frees what is held, then allocates `bytes` (uninitialized).
  void allocate(std::size_t bytes) {
    reset();
    if (bytes == 0) return;
    cudaError_t const status = cudaMalloc(&ptr_, bytes);
    if (status != cudaSuccess) {
      ptr_ = nullptr;
      fail(ErrorKind::kInternal, "cudaMalloc of {} bytes failed: {}", bytes, cudaGetErrorString(status));
    }
    bytes_ = bytes;
  }
  void reset() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* get() const noexcept { return ptr_; }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(ptr_); }
  std::size_t size() const noexcept { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

/// Fills `bytes` of device memory with fill_random's values of `dtype` (core/random.hpp): a
/// 1 MiB block generated once and repeated (host generation of gigabytes would dominate a
/// benchmark; GEMM speed depends on zeros, which draw less power, not on repetition). Waits for
/// the copies on `stream` before returning (the host block is freed).
void fill_device_random(DType dtype, void* dst, std::size_t bytes, std::uint64_t seed, cudaStream_t stream);

}  // namespace slidesparse::cuda
