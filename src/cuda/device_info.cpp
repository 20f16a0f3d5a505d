#include "slidesparse/cuda/device_info.hpp"

#include <cuda_runtime.h>
#include <cusparseLt.h>

#include <fmt/format.h>

#include "sm90a_requirements.hpp"

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

namespace detail {

std::string sm90a_w8a8_unsupported(std::string_view kernels, DType input, DType output, std::int64_t n,
                                   std::int64_t k) {
  if (input != DType::kI8 && input != DType::kF8E4M3) {
    return fmt::format("{} take I8 or F8_E4M3 operands, not {}", kernels, dtype_name(input));
  }
  if (output != DType::kBF16) return fmt::format("{} write BF16, not {}", kernels, dtype_name(output));
  if (n <= 0 || n % 8 != 0) return fmt::format("N = {} is not a positive multiple of 8 (16-byte BF16 output rows)", n);
  if (k <= 0 || k % 16 != 0) return fmt::format("K' = {} is not a positive multiple of 16 (TMA row stride)", k);
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a machine without a driver or GPU
    return "no usable CUDA device";
  }
  if (major != 9 || minor != 0) {
    return fmt::format("{} are built for sm_90a (Hopper); this GPU is sm_{}{}", kernels, major, minor);
  }
  return {};
}

}  // namespace detail
}  // namespace slidesparse::cuda
