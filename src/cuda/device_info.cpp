#include "slidesparse/cuda/device_info.hpp"

#include <cuda_runtime.h>
#include <cusparseLt.h>

#include <fmt/format.h>

namespace slidesparse::cuda {

CudaEnvironment query_cuda_environment() {
  CudaEnvironment env;
  cudaRuntimeGetVersion(&env.runtime_version);
  if (cudaDriverGetVersion(&env.driver_version) != cudaSuccess) env.driver_version = 0;

  int major = 0, minor = 0, patch = 0;
  if (cusparseLtGetProperty(MAJOR_VERSION, &major) == CUSPARSE_STATUS_SUCCESS &&
      cusparseLtGetProperty(MINOR_VERSION, &minor) == CUSPARSE_STATUS_SUCCESS &&
      cusparseLtGetProperty(PATCH_LEVEL, &patch) == CUSPARSE_STATUS_SUCCESS) {
    env.cusparselt_version = major * 10000 + minor * 100 + patch;
  }

  int count = 0;
  cudaError_t const status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    env.problem = fmt::format("no usable CUDA device: {} ({})", cudaGetErrorString(status),
                              cudaGetErrorName(status));
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return env;
  }
  if (count == 0) {
    env.problem = "no CUDA device found";
    return env;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    GpuInfo gpu;
    gpu.index = i;
    gpu.name = prop.name;
    gpu.sm_major = prop.major;
    gpu.sm_minor = prop.minor;
    gpu.multiprocessors = prop.multiProcessorCount;
    gpu.memory_bytes = prop.totalGlobalMem;
    cudaDeviceGetAttribute(&gpu.memory_clock_khz, cudaDevAttrMemoryClockRate, i);
    cudaDeviceGetAttribute(&gpu.memory_bus_bits, cudaDevAttrGlobalMemoryBusWidth, i);
    env.gpus.push_back(std::move(gpu));
  }
  if (env.gpus.empty()) env.problem = "CUDA devices reported, but none could be queried";
  return env;
}

}  // namespace slidesparse::cuda
