/// \file device_info.hpp
/// \brief What CUDA sees on this machine: driver, runtime, cuSPARSELt, GPUs. Never throws: on a
/// machine without a driver or GPU it says why in `problem`.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace slidesparse::cuda {

struct GpuInfo {
  int index = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  int multiprocessors = 0;
  std::size_t memory_bytes = 0;
  int memory_clock_khz = 0;
  int memory_bus_bits = 0;
};

struct CudaEnvironment {
  int runtime_version = 0;      ///< e.g. 13000 for CUDA 13.0
  int driver_version = 0;       ///< CUDA version the driver supports, 0 without a driver
  int cusparselt_version = 0;   ///< major*10000 + minor*100 + patch of the loaded library
  std::vector<GpuInfo> gpus;
  std::string problem;          ///< empty when at least one GPU is usable
};

CudaEnvironment query_cuda_environment();

}  // namespace slidesparse::cuda
