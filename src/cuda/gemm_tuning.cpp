#include "gemm_tuning.hpp"

#include <cctype>
#include <chrono>
#include <fstream>
#include <sstream>
#include <map>
#include <mutex>

#include <cuda_runtime.h>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include "slidesparse/cuda/check.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::cuda::detail {
namespace {

// The kernel driver's version ("580.159.04") from /proc/driver/nvidia/version; cudaDriverGetVersion
// only gives the CUDA API level the driver supports (13000).
std::string kernel_driver_version() {
  std::ifstream in("/proc/driver/nvidia/version");
  std::string line;
  if (!std::getline(in, line)) return "unknown";
  std::istringstream words(line);
  std::string word;
  while (words >> word) {
    if (!word.empty() && std::isdigit(static_cast<unsigned char>(word[0])) && word.find('.') != std::string::npos) return word;
  }
  return "unknown";
}

// The device part of the key, computed once per device (cudaGetDeviceProperties costs ms).
std::string const& device_identity() {
  static std::mutex mutex;
  static std::map<int, std::string> identities;
  int device = 0;
  SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard lock(mutex);
  auto it = identities.find(device);
  if (it == identities.end()) {
    cudaDeviceProp prop{};
    SLIDESPARSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    int driver = 0, runtime = 0;
    SLIDESPARSE_CUDA_CHECK(cudaDriverGetVersion(&driver));
    SLIDESPARSE_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    it = identities.emplace(device, io::tuning_key({{"gpu", prop.name},
                                                    {"sm", fmt::format("{}{}", prop.major, prop.minor)},
                                                    {"sms", std::to_string(prop.multiProcessorCount)},
                                                    {"driver", kernel_driver_version()},
                                                    {"driver_api", std::to_string(driver)},
                                                    {"cuda", std::to_string(runtime)}}))
             .first;
  }
  return it->second;
}

}  // namespace

std::string gemm_tuning_key(std::string_view backend, std::string_view library_version, DType input,
                            DType output, std::int64_t n, std::int64_t k, std::int64_t m) {
  return device_identity() + ";" +
         io::tuning_key({{"backend", std::string(backend)}, {"lib", std::string(library_version)},
                         {"in", std::string(dtype_name(input))}, {"out", std::string(dtype_name(output))},
                         {"n", std::to_string(n)}, {"k", std::to_string(k)}, {"m", std::to_string(m)}});
}

std::string tuning_date() {
  return fmt::format("{:%Y-%m-%d}", fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

}  // namespace slidesparse::cuda::detail
