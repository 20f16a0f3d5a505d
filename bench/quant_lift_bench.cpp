// Benchmark of the fused quant+lift kernel: achieved bandwidth (bytes read + written) against
// a device-to-device copy of the same byte count, for the dense (identity) layout and the slid
// layouts, at the K of Qwen2.5-7B (3584 for qkv/gate_up, 18944 for down).
//
// Method: cold L2 (rotating input/output sets whose total exceeds 2x the L2), 5 warm-up
// launches, then 30 samples of 10 back-to-back launches timed with CUDA events (per-launch time
// = sample / 10, so event and launch latency do not dominate small M); median, min and max.
// "of copy" is the fraction of the device-to-device copy bandwidth of a 1 GiB buffer measured
// at start (bytes read + written), the ceiling of the target.
//
// Usage: bench_quant_lift [--json PATH]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_timing.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_info.hpp"
#include "slidesparse/cuda/quant_lift.hpp"

namespace {

using namespace slidesparse;

using bench::Timing;

// 5 warm-up launches, 30 samples of 10 back-to-back launches.
template <typename F>
Timing time_launches(int sets, F&& launch) {
  return bench::time_calls(sets, 5, 30, 10, launch);
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--json") json_path = argv[i + 1];
  }
  try {
    auto const env = cuda::query_cuda_environment();
    if (!env.problem.empty()) {
      fmt::print("no GPU: {}\n", env.problem);
      return 0;
    }
    int device = 0;
    SLIDESPARSE_CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    SLIDESPARSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::size_t const l2 = static_cast<std::size_t>(prop.l2CacheSize);
    fmt::print("quant+lift benchmark on {} ({} SMs, L2 {} MB)\n", prop.name, prop.multiProcessorCount, l2 >> 20);
    double copy_ceiling = 0;  // GB/s, bytes read + written, 1 GiB device-to-device copy
    {
      std::size_t const bytes = std::size_t{1} << 30;
      void *a = nullptr, *b = nullptr;
      SLIDESPARSE_CUDA_CHECK(cudaMalloc(&a, bytes));
      SLIDESPARSE_CUDA_CHECK(cudaMalloc(&b, bytes));
      Timing const t = time_launches(1, [&](int) {
        SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr));
      });
      copy_ceiling = 2.0 * static_cast<double>(bytes) / t.median_us / 1e3;
      cudaFree(a);
      cudaFree(b);
    }
    fmt::print("copy ceiling (1 GiB D2D, read + write): {:.0f} GB/s\n", copy_ceiling);
    nlohmann::json results = nlohmann::json::array();
    fmt::print("| K | M | layout | out | us (median) | min..max | GB/s | of copy ceiling | vs same-size copy | vs dense quant |\n");
    fmt::print("|---|---|---|---|---|---|---|---|---|---|\n");
    for (std::int64_t k : {3584, 18944}) {
      for (std::int64_t m : {1, 16, 256, 4096, 16384}) {
        std::size_t const in_bytes = static_cast<std::size_t>(m * k) * 2;
        // Random BF16 activations (sign random, magnitudes 2^-7 .. 2^8): never time on zeros.
        std::vector<std::uint16_t> host(static_cast<std::size_t>(m * k));
        std::uint64_t state = 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(m * 131 + k);
        for (auto& v : host) {
          state = state * 6364136223846793005ull + 1442695040888963407ull;
          auto const r = static_cast<std::uint32_t>(state >> 33);
          v = static_cast<std::uint16_t>(((r & 1u) << 15) | ((120u + (r >> 1) % 16u) << 7) | ((r >> 5) & 0x7Fu));
        }
        for (DType q : {DType::kF8E4M3, DType::kI8}) {
          double dense_us = 0;
          for (char const* pattern : {static_cast<char const*>(nullptr), "2:4", "4:6", "6:8", "14:16"}) {
            ActivationLayout const layout = pattern ? ActivationLayout::slid(SparsityPattern::parse(pattern), k)
                                                    : ActivationLayout::dense(k);
            std::size_t const out_bytes = static_cast<std::size_t>(m * layout.k_lifted());
            std::size_t const per_set = in_bytes + out_bytes + 4 * static_cast<std::size_t>(m);
            int const sets = static_cast<int>(std::min<std::size_t>(64, std::max<std::size_t>(1, 2 * l2 / per_set + 1)));
            std::vector<void*> xs(static_cast<std::size_t>(sets)), outs(xs.size());
            std::vector<float*> scales(xs.size());
            for (int s = 0; s < sets; ++s) {
              SLIDESPARSE_CUDA_CHECK(cudaMalloc(&xs[s], in_bytes));
              SLIDESPARSE_CUDA_CHECK(cudaMalloc(&outs[s], out_bytes));
              SLIDESPARSE_CUDA_CHECK(cudaMalloc(&scales[s], 4 * static_cast<std::size_t>(m)));
              SLIDESPARSE_CUDA_CHECK(cudaMemcpy(xs[s], host.data(), in_bytes, cudaMemcpyHostToDevice));
            }
            Timing const t = time_launches(sets, [&](int s) {
              cuda::quant_lift(xs[s], DType::kBF16, m, k, layout, outs[s], q, scales[s], nullptr);
            });
            // Reference: a device-to-device copy moving the same number of bytes (read + write).
            Timing const copy = time_launches(sets, [&](int s) {
              SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(outs[s], xs[s], std::min(in_bytes, out_bytes),
                                                     cudaMemcpyDeviceToDevice, nullptr));
            });
            double const moved = static_cast<double>(in_bytes + out_bytes + 4 * m);
            double const copy_moved = 2.0 * static_cast<double>(std::min(in_bytes, out_bytes));
            double const gbs = moved / t.median_us / 1e3;
            double const copy_gbs = copy_moved / copy.median_us / 1e3;
            if (!pattern) dense_us = t.median_us;
            std::string const name = pattern ? pattern : "dense";
            fmt::print("| {} | {} | {} | {} | {:.2f} | {:.2f}..{:.2f} | {:.0f} | {:.0f}% | {:.0f}% | {:.2f}x |\n", k, m,
                       name, dtype_name(q), t.median_us, t.min_us, t.max_us, gbs, 100 * gbs / copy_ceiling,
                       100 * gbs / copy_gbs, t.median_us / dense_us);
            results.push_back({{"k", k}, {"m", m}, {"layout", name}, {"out", dtype_name(q)},
                               {"median_us", t.median_us}, {"min_us", t.min_us}, {"max_us", t.max_us},
                               {"gb_per_s", gbs}, {"copy_gb_per_s", copy_gbs}, {"copy_ceiling_gb_per_s", copy_ceiling}, {"vs_dense", t.median_us / dense_us}});
            for (int s = 0; s < sets; ++s) {
              cudaFree(xs[s]);
              cudaFree(outs[s]);
              cudaFree(scales[s]);
            }
          }
        }
      }
    }
    if (!json_path.empty()) {
      nlohmann::json const doc = {{"gpu", prop.name}, {"sms", prop.multiProcessorCount},
                                  {"cuda_runtime", env.runtime_version}, {"driver", env.driver_version},
                                  {"results", results}};
      std::ofstream(json_path) << doc.dump(2) << "\n";
    }
  } catch (std::exception const& e) {
    fmt::print(stderr, "bench_quant_lift: {}\n", e.what());
    return 1;
  }
  return 0;
}
