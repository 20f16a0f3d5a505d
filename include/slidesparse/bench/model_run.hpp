/// \file model_run.hpp
/// \brief End-to-end throughput of the GPU decoder (`slidesparse run`): prefill and decode
/// tokens per second for one model, dtype and pattern, optionally beside dense.
///
/// Method (the paper's): prefill = B sequences of P tokens in one forward step (M = B * P) with
/// output length 1 (each sequence's last logits and greedy token); decode = G greedy steps of
/// one token per sequence after that prefill, each step one CUDA graph launch. Prefill is timed
/// with CUDA events around the forward step (a warm-up step first, then `repeats` steps on
/// emptied sequences; median, min, max); decode over all G steps. Weights are far larger than
/// L2, so no buffer rotation is needed. A profiled pass (CUDA events around every operation)
/// splits the time into linear layers, attention and the rest.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "slidesparse/core/dtype.hpp"
#include "slidesparse/core/pattern.hpp"
#include "slidesparse/cuda/linear.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::bench {

struct ModelRunOptions {
  /// "preset:NAME" (random weights with the real shapes), a Hugging Face directory, or a
  /// .gguf file.
  std::string model = "preset:qwen2.5-7b";
  DType dtype = DType::kF8E4M3;
  std::optional<SparsityPattern> pattern;  ///< nullopt: dense
  bool compare_dense = false;              ///< also run dense of the same dtype and report speedups
  cuda::GemmBackend backend = cuda::GemmBackend::kAuto;
  std::int64_t batch = 8;
  std::int64_t prompt_len = 512;
  std::int64_t gen_len = 128;
  int repeats = 3;
  bool profile = true;  ///< time breakdown (linear / attention / other) in a separate pass
  bool use_graph = true;
  std::uint64_t seed = 2026;
  io::TuningCache* tuning = nullptr;
  std::string command;
  std::function<void(std::string const&)> progress;
};

/// Runs the measurement; JSON with the environment, per variant (sparse, dense) the load time,
/// memory, prefill and decode timings and tokens/s, breakdowns, and the speedups.
nlohmann::json run_model(ModelRunOptions const& options);

/// Human-readable summary of run_model's result.
std::string model_run_summary(nlohmann::json const& result);

}  // namespace slidesparse::bench
