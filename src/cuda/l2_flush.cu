// Reads the flush buffer with 16-byte loads; the result is written only if it equals a value it
// cannot have by construction (the buffer is zero), so the loads cannot be optimized away.
#include <cstdint>

#include "l2_flush_launch.hpp"

namespace slidesparse::cuda::detail {
namespace {

__global__ void l2_flush_kernel(uint4 const* __restrict__ data, std::size_t count, unsigned* sink) {
  unsigned acc = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    uint4 const v = data[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0xDEADBEEFu) *sink = acc;
}

}  // namespace

cudaError_t launch_l2_flush(void const* buffer, std::size_t bytes, unsigned* sink, int sms, cudaStream_t stream) {
  l2_flush_kernel<<<sms * 4, 512, 0, stream>>>(static_cast<uint4 const*>(buffer), bytes / 16, sink);
  return cudaGetLastError();
}

}  // namespace slidesparse::cuda::detail
