/// \file cpu_model.hpp
/// \brief The float32 CPU reference of a Llama / Qwen2 decoder: the model every GPU backend and
/// every accuracy number is checked against.
///
/// One forward step over T new tokens of one sequence (positions p0 .. p0+T-1):
///   h = embed[token]
///   per layer:  a = RMSNorm(h) ; q,k,v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)
///               RoPE(q, k) by position (pairs (i, i + head_dim/2), the Hugging Face layout)
///               K/V appended to the sequence's cache; causal attention per head, query head h
///               reading KV head h / (heads / kv_heads), scale 1/sqrt(head_dim)
///               h += attn Wo^T ; b = RMSNorm(h) ; h += (silu(b Wg^T) * (b Wu^T)) Wd^T
///   logits = RMSNorm(h) W_lm^T (W_lm = embed when tied)
/// Every row of every linear is an independent dot product with a fixed summation order, so a
/// token's logits do not depend on how many tokens are processed together (prefill == decode,
/// bit for bit). Linears run on `parallel_for` threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "slidesparse/core/pattern.hpp"
#include "slidesparse/runtime/model_config.hpp"

namespace slidesparse::runtime {

/// y [M, N] = x [M, K] W^T (+ bias) with W [N, K] row-major, in float32. The dot product sums
/// 8 interleaved partial sums (k mod 8) and adds them pairwise: the order is fixed, so results
/// are reproducible and independent of M and of threading.
///
/// SlideSparse form (slid()): W' = slide(W) [N, K'] and x' = lift(x) [M, K'], y = x' W'^T — the
/// path the GPU's 2:4 kernels take, on the CPU. Each product x'[k'] w'[k'] with w' != 0 is one
/// product x[k] w[k] of the dense layer (k = the lifted column's source) and is added to the
/// dense lane k mod 8, in increasing k (slide places nonzeros in column order); the other
/// products are ±0 and change no partial sum. So a SlideSparse layer's output equals the dense
/// layer's on the pruned weight bit for bit: what it shows is that the slide and lift data
/// movement loses and duplicates nothing.
class CpuLinear {
 public:
  CpuLinear() = default;
  CpuLinear(std::vector<float> weight, std::int64_t n, std::int64_t k, std::vector<float> bias = {});
  /// y [m, N] from x [m, K] (both row-major), in either form.
  void forward(float const* x, std::int64_t m, float* y) const;
  /// This (dense, pruned to `pattern`) layer in SlideSparse form. Error(kInvalidInput) naming
  /// the row and block where the weight breaks the pattern.
  CpuLinear slid(SparsityPattern pattern) const;
  bool is_slid() const noexcept { return !gather_.empty(); }
  std::int64_t n() const noexcept { return n_; }
  std::int64_t k() const noexcept { return k_; }
  /// K' of the SlideSparse form, K for a dense layer.
  std::int64_t k_stored() const noexcept { return is_slid() ? static_cast<std::int64_t>(gather_.size()) : k_; }
  /// W [N, K], or W' [N, K'] in SlideSparse form.
  std::vector<float> const& weight() const noexcept { return weight_; }
  std::vector<float>& weight() noexcept { return weight_; }
  std::vector<float> const& bias() const noexcept { return bias_; }

 private:
  std::vector<float> weight_;
  std::vector<float> bias_;
  std::int64_t n_ = 0, k_ = 0;
  std::vector<std::int64_t> gather_;  ///< SlideSparse form: source column of each lifted column (-1: padding)
  /// SlideSparse form, per row the nonzeros of W' in lifted-column order: column, value and the
  /// dense lane (source column mod 8); row r's are [row_start_[r], row_start_[r + 1]).
  std::vector<std::int32_t> nz_column_;
  std::vector<float> nz_value_;
  std::vector<std::uint8_t> nz_lane_;
  std::vector<std::int64_t> nz_row_start_;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  ///< [hidden]
  CpuLinear q, k, v, o, gate, up, down;
};

struct ModelWeights {
  ModelConfig config;
  std::vector<float> embed;       ///< [vocab, hidden]
  std::vector<float> final_norm;  ///< [hidden]
  CpuLinear lm_head;              ///< [vocab, hidden]; a copy of embed when tied
  std::vector<LayerWeights> layers;

  /// Random weights with the config's shapes (normal, std 0.02 for matrices, norms near 1,
  /// small biases), deterministic in `seed`. For tests and performance work.
  static ModelWeights random(ModelConfig const& config, std::uint64_t seed);
  /// Throws Error(kInvalidInput) naming the first tensor whose size does not fit the config.
  void validate() const;
  /// Puts q, k, v, o, gate, up and down of every layer into SlideSparse form (they must obey the
  /// pattern: prune first). Embeddings, norms and lm_head stay dense.
  void slide_projections(SparsityPattern pattern);
};

/// Random weights of one layer with the config's shapes (uniform, std 0.02; norms near 1),
/// generated in parallel, deterministic in (seed, layer); projections magnitude-pruned to
/// `pattern` when given. For the presets: a 7B layer in well under a second.
LayerWeights random_layer_weights(ModelConfig const& config, std::int64_t layer, std::uint64_t seed,
                                  std::optional<SparsityPattern> pattern);
/// Random float values (uniform, standard deviation `stddev`, mean `mean`), parallel.
std::vector<float> random_values(std::size_t count, float mean, float stddev, std::uint64_t seed);


/// A sequence's KV cache: [layers][capacity][kv_dim] for K and V.
struct Sequence {
  std::int64_t capacity = 0;
  std::int64_t length = 0;  ///< tokens already in the cache
  std::vector<float> k, v;
};

/// Per-input-channel sums of squared activations seen by each projection's input, for
/// importance (Wanda) pruning: importance[k] = sqrt(sum over tokens of x_k^2) = ||x_k||_2.
/// Per layer: [0] the input of q/k/v (hidden), [1] of o (q_dim), [2] of gate/up (hidden),
/// [3] of down (intermediate).
///
/// With `collect_gram` set before the pass, also each site's Gram matrix X^T X [K][K] (row-major,
/// the input of second-order pruning, core/obs_prune.hpp): K^2 doubles per site and K^2
/// multiply-adds per token, so meant for small models.
struct ActivationStats {
  std::vector<std::array<std::vector<double>, 4>> sum_squares;  ///< [layer][site][channel]
  bool collect_gram = false;
  std::vector<std::array<std::vector<double>, 4>> gram;  ///< [layer][site][K * K] when collect_gram
  std::int64_t tokens = 0;
  /// ||x_k||_2 of one site as float (the prune API's importance vector).
  std::vector<float> norms(std::size_t layer, std::size_t site) const;
};

/// Where one decoder layer's pass collects calibration statistics. stats == nullptr: none.
/// stop_after_site == -1: the whole layer, collecting every site into stats[stats_layer];
/// 0..3: collect only that site and return right after computing it (sequential pruning
/// calibrates one site at a time; h is then partly updated and the caller discards it).
struct LayerCalibration {
  ActivationStats* stats = nullptr;
  std::size_t stats_layer = 0;
  int stop_after_site = -1;
};

/// One decoder layer (the per-layer step of the file comment) on the hidden states h [T, hidden]
/// of T tokens at positions p0 .. p0+T-1, updated in place; K/V of the new tokens are written to
/// k_cache / v_cache [>= p0+T, kv_dim] (this layer's cache), whose rows 0 .. p0-1 hold the
/// history. CpuModel::forward is this over the layers; exposed for layer-by-layer (sequential)
/// calibration. `inv_freq` is config.rope_inverse_frequencies().
void decoder_layer_forward(ModelConfig const& config, LayerWeights const& layer, std::vector<double> const& inv_freq,
                           float* h, std::int64_t t_count, float* k_cache, float* v_cache, std::int64_t p0,
                           LayerCalibration const& calibration = {});

class CpuModel {
 public:
  explicit CpuModel(ModelWeights weights);
  ModelConfig const& config() const noexcept { return weights_.config; }
  ModelWeights const& weights() const noexcept { return weights_; }

  Sequence new_sequence(std::int64_t capacity) const;
  /// Appends `tokens` to the sequence and returns their logits [T, vocab] (all_logits) or the
  /// last token's [vocab]. Throws Error for a token id outside the vocabulary (naming it and
  /// its position) or a sequence that would exceed its capacity.
  /// `stats`, when given, accumulates the projections' input statistics (calibration).
  std::vector<float> forward(Sequence& sequence, std::span<int const> tokens, bool all_logits,
                             ActivationStats* stats = nullptr) const;

 private:
  ModelWeights weights_;
  std::vector<double> inv_freq_;
};

}  // namespace slidesparse::runtime
