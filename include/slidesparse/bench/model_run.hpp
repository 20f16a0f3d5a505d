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
#include <vector>

#include <nlohmann/json.hpp>

#include "slidesparse/core/dtype.hpp"
#include "slidesparse/core/pattern.hpp"
#include "slidesparse/cuda/linear.hpp"
#include "slidesparse/runtime/gpu_model.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::bench {

struct ModelRunOptions {
  /// "preset:NAME" (random weights with the real shapes), a Hugging Face directory, or a
  /// .gguf file.
  std::string model = "preset:qwen2.5-7b";
  DType dtype = DType::kF8E4M3;
  /// One model load per entry (nullopt: dense); every (batch, prompt length) point on each.
  std::vector<std::optional<SparsityPattern>> patterns = {SparsityPattern::parse("6:8")};
  bool compare_dense = false;  ///< add dense of the same dtype (if not listed) and report speedups
  cuda::GemmBackend backend = cuda::GemmBackend::kAuto;
  bool dense_fallback = false;  ///< GpuModelOptions::dense_fallback for every variant (dense W8A8: its best dense form)
  /// With dense_fallback: after each load, GpuModel::release_unchosen up to the largest M the
  /// points run (max B x P), so the model holds only the candidates it chose.
  bool release_unchosen = false;
  /// ...trading up to this fraction of each M bucket's time for memory (0: free only what no
  /// bucket chose).
  double release_tolerance = 0.0;
  runtime::AttentionBackend attention = runtime::AttentionBackend::kAuto;
  std::vector<std::int64_t> batches = {8};
  std::vector<std::int64_t> prompt_lens = {512};
  std::int64_t gen_len = 128;
  int repeats = 3;
  bool profile = true;  ///< time breakdown (linear / attention / other) in a separate pass
  bool use_graph = true;
  std::uint64_t seed = 2026;
  io::TuningCache* tuning = nullptr;
  std::string command;
  std::function<void(std::string const&)> progress;
};

/// Runs the measurement; JSON with the environment, per variant (pattern or dense) the load time
/// and per (B, P) point the memory, prefill and decode timings and tokens/s, the breakdown, and
/// every sparse point's speedup over the dense one.
nlohmann::json run_model(ModelRunOptions const& options);

/// Human-readable summary of run_model's result.
std::string model_run_summary(nlohmann::json const& result);

}  // namespace slidesparse::bench
