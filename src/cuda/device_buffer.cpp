#include "slidesparse/cuda/device_buffer.hpp"

#include <algorithm>
#include <vector>

#include "slidesparse/core/random.hpp"

namespace slidesparse::cuda {

void fill_device_random(DType dtype, void* dst, std::size_t bytes, std::uint64_t seed, cudaStream_t stream) {
  std::size_t const elem = dtype_size(dtype);
  std::size_t const chunk = std::min<std::size_t>(bytes, std::size_t{1} << 20) / elem * elem;
  if (chunk == 0) return;
  std::vector<std::byte> host(chunk);
  fill_random(dtype, host.data(), static_cast<std::int64_t>(chunk / elem), seed);
  for (std::size_t off = 0; off < bytes; off += chunk) {
    SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(static_cast<std::byte*>(dst) + off, host.data(), std::min(chunk, bytes - off),
                                           cudaMemcpyHostToDevice, stream));
  }
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace slidesparse::cuda
