// GEMM-only comparison: SlideSparse (cuSPARSELt 2:4 on the slid weight, K' columns) against the
// dense cuBLASLt GEMM of the pruned weight (K columns), same input and output types, for the
// four linear layers of Qwen2.5-7B. Weights are random, pruned to the pattern and slid; the
// activations are random codes. Each backend picks its algorithm on the first call per M
// (cuSPARSELt MatmulSearch; cuBLASLt: fastest of the top-8 heuristics), then: 3 warm-up calls,
// 20 timed calls each between CUDA events, activation and output buffers rotated so the
// activations are cold in L2 (the weight of one layer, up to 136 MB dense FP8, mostly is too).
//
// Usage: bench_gemm [--dtype fp8|int8] [--json PATH]
#include <cuda_runtime.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_timing.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/random.hpp"
#include "slidesparse/core/slide.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/cublaslt_gemm.hpp"
#include "slidesparse/cuda/cusparselt_gemm.hpp"
#include "slidesparse/cuda/device_info.hpp"

namespace {

using namespace slidesparse;

struct Layer {
  char const* name;
  std::int64_t n, k;
};
constexpr Layer kQwen25_7B[] = {{"qkv", 4608, 3584}, {"o", 3584, 3584}, {"gate_up", 37888, 3584}, {"down", 3584, 18944}};

struct DeviceMemory {
  void* p = nullptr;
  explicit DeviceMemory(std::size_t bytes) { SLIDESPARSE_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceMemory() { cudaFree(p); }
};

// 3 warm-up calls, 20 timed single calls, median.
template <typename F>
double median_us(F&& call, int sets) {
  return bench::time_calls(sets, 3, 20, 1, call).median_us;
}

// Random weight codes [n, k] (core/random.hpp: no zeros, finite).
std::vector<std::byte> random_codes(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::vector<std::byte> v(static_cast<std::size_t>(rows * cols) * dtype_size(dtype));
  fill_random(dtype, v.data(), rows * cols, seed);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path, dtype_text = "fp8";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--json") json_path = argv[i + 1];
    if (std::string(argv[i]) == "--dtype") dtype_text = argv[i + 1];
  }
  try {
    auto const env = cuda::query_cuda_environment();
    if (!env.problem.empty()) {
      fmt::print("no GPU: {}\n", env.problem);
      return 0;
    }
    DType const in = dtype_text == "int8" ? DType::kI8 : DType::kF8E4M3;
    DType const out = in == DType::kI8 ? DType::kI32 : DType::kBF16;
    fmt::print("GEMM only, Qwen2.5-7B linear layers, {} -> {}; GPU {}; cuSPARSELt {}\n", dtype_name(in),
               dtype_name(out), env.gpus.front().name, env.cusparselt_version);
    std::uint64_t seed = 2026;
    std::vector<std::int64_t> const ms = {256, 1024, 4096, 16384};
    char const* const patterns[] = {"2:4", "4:6", "6:8", "14:16"};
    nlohmann::json results = nlohmann::json::array();
    // sums[pattern index + 1][m index]; index 0 = dense
    std::vector<std::vector<double>> sums(5, std::vector<double>(ms.size(), 0.0));
    fmt::print("| layer | N | K | M | dense us | 2:4 | 4:6 | 6:8 | 14:16 |\n|---|---|---|---|---|---|---|---|---|\n");
    for (Layer const& layer : kQwen25_7B) {
      std::vector<std::byte> w = random_codes(in, layer.n, layer.k, ++seed);
      // Dense baseline: the 6:8-pruned weight, i.e. what a user of the pruned model runs without
      // SlideSparse (zeros can lower a GEMM's power draw, so the baseline gets them too).
      std::vector<std::byte> dense_pruned = w;
      prune_in_place({in, layer.n, layer.k, dense_pruned.data(), layer.name}, SparsityPattern::parse("6:8"));
      DeviceMemory dense_w(dense_pruned.size());
      SLIDESPARSE_CUDA_CHECK(cudaMemcpy(dense_w.p, dense_pruned.data(), dense_pruned.size(), cudaMemcpyHostToDevice));
      std::vector<std::unique_ptr<cuda::CusparseltGemm>> sparse;
      std::vector<ActivationLayout> layouts;
      for (char const* p : patterns) {
        SparsityPattern const pattern = SparsityPattern::parse(p);
        std::vector<std::byte> pruned = w;
        prune_in_place({in, layer.n, layer.k, pruned.data(), layer.name}, pattern);
        layouts.push_back(ActivationLayout::slid(pattern, layer.k));
        std::vector<std::byte> slid(static_cast<std::size_t>(layer.n * layouts.back().k_lifted()));
        slide({in, layer.n, layer.k, pruned.data(), layer.name}, pattern, layouts.back().shape(),
              {in, layer.n, layouts.back().k_lifted(), slid.data(), layer.name});
        DeviceMemory dslid(slid.size());
        SLIDESPARSE_CUDA_CHECK(cudaMemcpy(dslid.p, slid.data(), slid.size(), cudaMemcpyHostToDevice));
        sparse.push_back(std::make_unique<cuda::CusparseltGemm>(dslid.p, in, out, layer.n, layouts.back().k_lifted(), nullptr));
      }
      cuda::CublasltGemm dense(dense_w.p, in, out, layer.n, layer.k);
      for (std::size_t mi = 0; mi < ms.size(); ++mi) {
        std::int64_t const m = ms[mi];
        std::int64_t k_max = layer.k;  // widest activation row any backend reads
        for (auto const& l : layouts) k_max = std::max(k_max, l.k_lifted());
        std::size_t const x_bytes = static_cast<std::size_t>(m * k_max);
        std::size_t const y_bytes = static_cast<std::size_t>(m * layer.n) * dtype_size(out);
        int const sets = static_cast<int>(std::clamp<std::size_t>((200u << 20) / (x_bytes + y_bytes) + 1, 2, 8));
        std::vector<std::unique_ptr<DeviceMemory>> xs, ys;
        std::vector<std::byte> x_host = random_codes(in, m, static_cast<std::int64_t>(x_bytes / static_cast<std::size_t>(m)), ++seed);
        for (int s = 0; s < sets; ++s) {
          xs.push_back(std::make_unique<DeviceMemory>(x_bytes));
          ys.push_back(std::make_unique<DeviceMemory>(y_bytes));
          SLIDESPARSE_CUDA_CHECK(cudaMemcpy(xs.back()->p, x_host.data(), x_bytes, cudaMemcpyHostToDevice));
        }
        double const dense_us = median_us([&](int s) { dense.run(xs[s]->p, ys[s]->p, m, 1.0f, nullptr); }, sets);
        sums[0][mi] += dense_us;
        std::string row = fmt::format("| {} | {} | {} | {} | {:.1f} |", layer.name, layer.n, layer.k, m, dense_us);
        nlohmann::json entry = {{"layer", layer.name}, {"n", layer.n}, {"k", layer.k}, {"m", m}, {"dense_us", dense_us}};
        for (std::size_t pi = 0; pi < sparse.size(); ++pi) {
          double const us = median_us([&](int s) { sparse[pi]->run(xs[s]->p, ys[s]->p, m, 1.0f, nullptr); }, sets);
          sums[pi + 1][mi] += us;
          row += fmt::format(" {:.1f} ({:.2f}x) |", us, dense_us / us);
          entry[patterns[pi]] = us;
        }
        fmt::print("{}\n", row);
        results.push_back(entry);
      }
    }
    fmt::print("\nSum of the four layers: speedup over dense (ideal: 2.00 / 1.50 / 1.33 / 1.14)\n");
    fmt::print("| M | dense us | 2:4 | 4:6 | 6:8 | 14:16 |\n|---|---|---|---|---|---|\n");
    for (std::size_t mi = 0; mi < ms.size(); ++mi) {
      fmt::print("| {} | {:.1f} | {:.2f}x | {:.2f}x | {:.2f}x | {:.2f}x |\n", ms[mi], sums[0][mi],
                 sums[0][mi] / sums[1][mi], sums[0][mi] / sums[2][mi], sums[0][mi] / sums[3][mi],
                 sums[0][mi] / sums[4][mi]);
    }
    if (!json_path.empty()) {
      std::ofstream(json_path) << nlohmann::json{{"gpu", env.gpus.front().name}, {"dtype", dtype_text},
                                                 {"cusparselt", env.cusparselt_version}, {"results", results}}.dump(2);
    }
  } catch (std::exception const& e) {
    fmt::print(stderr, "bench_gemm: {}\n", e.what());
    return 1;
  }
  return 0;
}
