// GPU layer smoke test: the CUDA runtime, the driver and cuSPARSELt load and report sensible
// versions; on a machine without a GPU the GPU part skips, saying why.
#include "slidesparse/cuda/device_info.hpp"

#include <gtest/gtest.h>

namespace slidesparse::cuda {
namespace {

TEST(CudaEnvironment, LibrariesLoadAndReportVersions) {
  CudaEnvironment const env = query_cuda_environment();
  // Linked at build time: the runtime and cuSPARSELt report a version with or without a GPU.
  EXPECT_GE(env.runtime_version, 12000);
  EXPECT_GE(env.cusparselt_version, 800) << "cuSPARSELt 0.8 or newer expected";
}

TEST(CudaEnvironment, SeesAtLeastOneUsableGpu) {
  CudaEnvironment const env = query_cuda_environment();
  if (!env.problem.empty()) GTEST_SKIP() << "no GPU on this machine: " << env.problem;
  ASSERT_FALSE(env.gpus.empty());
  for (auto const& gpu : env.gpus) {
    EXPECT_FALSE(gpu.name.empty());
    EXPECT_GE(gpu.sm_major, 8) << gpu.name << ": sparse tensor cores need sm_80 or newer";
    EXPECT_GT(gpu.multiprocessors, 0);
    EXPECT_GT(gpu.memory_bytes, std::size_t{1} << 30);
  }
  EXPECT_GE(env.driver_version, env.runtime_version) << "driver older than the runtime";
}

}  // namespace
}  // namespace slidesparse::cuda
