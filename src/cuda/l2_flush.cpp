#include "slidesparse/cuda/l2_flush.hpp"

#include "l2_flush_launch.hpp"
#include "slidesparse/cuda/check.hpp"

namespace slidesparse::cuda {

L2Flusher::L2Flusher(std::size_t bytes) {
  int device = 0, l2 = 0;
  SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
  SLIDESPARSE_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  bytes_ = bytes ? bytes : 4 * static_cast<std::size_t>(l2 > 0 ? l2 : (64 << 20));
  bytes_ = (bytes_ + 15) / 16 * 16;
  SLIDESPARSE_CUDA_CHECK(cudaMalloc(&buffer_, bytes_));
  SLIDESPARSE_CUDA_CHECK(cudaMalloc(&sink_, sizeof(unsigned)));
  SLIDESPARSE_CUDA_CHECK(cudaMemset(buffer_, 0, bytes_));
}

L2Flusher::~L2Flusher() {
  if (buffer_) cudaFree(buffer_);
  if (sink_) cudaFree(sink_);
}

void L2Flusher::flush(cudaStream_t stream) {
  int device = 0, sms = 0;
  SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
  SLIDESPARSE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  SLIDESPARSE_CUDA_CHECK(detail::launch_l2_flush(buffer_, bytes_, sink_, sms, stream));
}

}  // namespace slidesparse::cuda
