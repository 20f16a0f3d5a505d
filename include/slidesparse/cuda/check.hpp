/// \file check.hpp
/// \brief Checked CUDA calls for host code: a failure throws slidesparse::Error naming the call,
/// file and line and the CUDA error (library code never exits the process).
#pragma once

#include <cuda_runtime.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, char const* call, char const* file, int line) {
  fail(ErrorKind::kInternal, "CUDA call {} failed at {}:{}: {} ({})", call, file, line,
       cudaGetErrorString(status), cudaGetErrorName(status));
}

}  // namespace slidesparse::cuda

#define SLIDESPARSE_CUDA_CHECK(call)                                                      \
  do {                                                                                     \
    cudaError_t const slidesparse_status_ = (call);                                        \
    if (slidesparse_status_ != cudaSuccess) {                                              \
      ::slidesparse::cuda::throw_cuda_error(slidesparse_status_, #call, __FILE__, __LINE__); \
    }                                                                                      \
  } while (0)
