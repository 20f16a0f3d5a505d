/// \file l2_flush.hpp
/// \brief Evicts the GPU's L2 cache between timed calls, so that benchmarks see weights and
/// activations cold, as a layer of a model does (the previous layers evicted them).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace slidesparse::cuda {

class L2Flusher {
 public:
  /// Reads a buffer of `bytes` (default: 4x the current device's L2) on every flush. Reading
  /// (not writing) leaves clean lines, so the timed call pays no write-back of our data.
  explicit L2Flusher(std::size_t bytes = 0);
  ~L2Flusher();
  L2Flusher(L2Flusher const&) = delete;
  L2Flusher& operator=(L2Flusher const&) = delete;
  void flush(cudaStream_t stream);
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  void* buffer_ = nullptr;
  unsigned* sink_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace slidesparse::cuda
