/// \file l2_flush_launch.hpp
/// \brief Plain launcher of the L2 flush kernel.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace slidesparse::cuda::detail {

cudaError_t launch_l2_flush(void const* buffer, std::size_t bytes, unsigned* sink, int sms, cudaStream_t stream);

}  // namespace slidesparse::cuda::detail
