/// \file perplexity.hpp
/// \brief Perplexity of a token stream under the CPU model, with sliding context windows, and
/// pruning a loaded model's projection weights to a pattern.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "slidesparse/core/pattern.hpp"
#include "slidesparse/runtime/cpu_model.hpp"

namespace slidesparse::runtime {

struct PerplexityOptions {
  std::int64_t context = 512;  ///< tokens of context per window (the model sees at most this many)
  std::int64_t stride = 256;   ///< window step: every token is scored once, with >= context - stride of history
                               ///< (except near the start)
};

struct PerplexityResult {
  double nll_sum = 0;           ///< sum of -log p(token | history), natural log
  std::int64_t scored = 0;      ///< tokens scored (every token but the first)
  double first_half_nll = 0;    ///< the same over the first and second half of the scored tokens,
  double second_half_nll = 0;   ///< to judge the spread of the estimate
  std::int64_t first_half_scored = 0;
  double perplexity() const;
  double first_half_perplexity() const;
  double second_half_perplexity() const;
};

/// Windows end at stride, 2·stride, ... (and the last token); each covers the `context` tokens
/// before its end and scores the tokens that the previous window did not. Log-softmax in double.
/// progress(done, total) is called after every window.
PerplexityResult perplexity(CpuModel const& model, std::span<int const> tokens, PerplexityOptions const& options,
                            std::function<void(std::int64_t, std::int64_t)> const& progress = {});
/// The logits [window.size(), vocab] of a window of tokens run as a fresh sequence: what a
/// backend provides so that the same windowing scores it (the GPU model's sequence_logits).
using WindowLogits = std::function<std::vector<float>(std::span<int const> window)>;
/// perplexity() over any backend's window logits (vocab = their row length).
PerplexityResult perplexity(WindowLogits const& window_logits, std::int64_t vocab, std::span<int const> tokens,
                            PerplexityOptions const& options,
                            std::function<void(std::int64_t, std::int64_t)> const& progress = {});

/// Prunes q, k, v, o, gate, up and down of every layer to the pattern along K: by magnitude, or,
/// with calibration statistics, by the Wanda score |w[n][k]| * ||x_k||_2 of each projection's
/// input. Embeddings, norms and lm_head are kept.
void prune_model(ModelWeights& weights, SparsityPattern pattern, ActivationStats const* importance = nullptr);

/// Prunes the same projections by second-order pruning with error compensation (SparseGPT,
/// core/obs_prune.hpp): each projection's weights against the Gram matrix of its input from a
/// calibration pass run with collect_gram (one factorization per layer and input site, shared by
/// q/k/v and by gate/up). The kept weights change (they absorb the pruned ones' error), so the
/// pruned model is its own checkpoint, not a mask over the original. Throws Error(kUsage) when
/// the statistics hold no Gram matrices for the model's layers.
void prune_model_second_order(ModelWeights& weights, SparsityPattern pattern, ActivationStats const& stats,
                              double dampening = 0.01);

/// The pruning criterion of prune_model_sequential: Wanda (|w| * ||x_k||_2) or second-order
/// (SparseGPT, with error compensation).
enum class SequentialCriterion { kImportance, kSecondOrder };

/// Sequential ("true sequential") calibration and pruning, the procedure of the SparseGPT and
/// Wanda papers: layer by layer, and within a layer input site by input site (q/k/v, then o, then
/// gate/up, then down), each site's statistics come from the calibration tokens run through the
/// model as pruned so far, so every projection is pruned against the inputs it will see, and
/// later layers compensate for earlier ones' error (one-pass calibrate() sees the dense model's
/// inputs everywhere). `tokens` run in windows of `context` from position 0, as calibrate() runs
/// them; the hidden states of all calibration tokens are kept (tokens x hidden floats). Equal,
/// bit for bit, to alternating calibrate() on the current model with pruning one site. Throws
/// Error(kUsage) for no tokens, Error(kInvalidInput) for a token outside the vocabulary (naming
/// its position). progress(layers done, layers) after each layer.
void prune_model_sequential(ModelWeights& weights, SparsityPattern pattern, SequentialCriterion criterion,
                            std::span<int const> tokens, std::int64_t context, double dampening = 0.01,
                            std::function<void(std::int64_t, std::int64_t)> const& progress = {});

/// Runs the model over `tokens` in windows of `context` and collects the projections' input
/// statistics (the calibration pass behind importance pruning); with `gram` also the Gram
/// matrices for prune_model_second_order.
ActivationStats calibrate(CpuModel const& model, std::span<int const> tokens, std::int64_t context, bool gram = false);
/// Writes the importance vectors of a calibration pass for `slidesparse convert --prune
/// importance`: one F32 [K] tensor per projection, named like its Hugging Face weight
/// ("model.layers.<l>.self_attn.{q,k,v,o}_proj.weight", "model.layers.<l>.mlp.{gate,up,down}_proj.weight"),
/// value ||x_k||_2 of that projection's input channel k (q/k/v share one vector, as gate/up do).
/// Atomic (temporary file renamed when complete); `metadata` goes into the header.
/// Throws Error(kUsage) when the statistics do not cover every layer and site of the config.
void write_importance(ActivationStats const& stats, ModelConfig const& config, std::filesystem::path const& path,
                      std::map<std::string, std::string> metadata = {});

/// Greedy decoding: runs the prompt, then appends the most likely token (lowest id on ties) up to
/// max_new times, stopping after `stop` (not included) when given. Returns the new tokens.
std::vector<int> greedy_generate(CpuModel const& model, std::span<int const> prompt, std::int64_t max_new,
                                 std::optional<int> stop = std::nullopt);

}  // namespace slidesparse::runtime
