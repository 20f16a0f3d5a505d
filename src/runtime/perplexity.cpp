#include "slidesparse/runtime/perplexity.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/obs_prune.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/io/safetensors.hpp"

namespace slidesparse::runtime {
namespace {

// -log softmax(logits)[target] in double.
double negative_log_likelihood(float const* logits, std::int64_t vocab, int target) {
  double max_logit = logits[0];
  for (std::int64_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, static_cast<double>(logits[i]));
  double sum = 0;
  for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  return -(static_cast<double>(logits[target]) - max_logit - std::log(sum));
}

}  // namespace

double PerplexityResult::perplexity() const { return scored ? std::exp(nll_sum / static_cast<double>(scored)) : 0.0; }
double PerplexityResult::first_half_perplexity() const {
  return first_half_scored ? std::exp(first_half_nll / static_cast<double>(first_half_scored)) : 0.0;
}
double PerplexityResult::second_half_perplexity() const {
  std::int64_t const n = scored - first_half_scored;
  return n ? std::exp(second_half_nll / static_cast<double>(n)) : 0.0;
}

PerplexityResult perplexity(CpuModel const& model, std::span<int const> tokens, PerplexityOptions const& o,
                            std::function<void(std::int64_t, std::int64_t)> const& progress) {
  WindowLogits const window_logits = [&](std::span<int const> window) {
    Sequence seq = model.new_sequence(static_cast<std::int64_t>(window.size()));
    return model.forward(seq, window, true);
  };
  return perplexity(window_logits, model.config().vocab, tokens, o, progress);
}

PerplexityResult perplexity(WindowLogits const& window_logits, std::int64_t vocab, std::span<int const> tokens,
                            PerplexityOptions const& o, std::function<void(std::int64_t, std::int64_t)> const& progress) {
  if (o.context < 2 || o.stride < 1 || o.stride > o.context) {
    fail(ErrorKind::kUsage, "perplexity: need context >= 2 and 1 <= stride <= context (got {} and {})", o.context, o.stride);
  }
  auto const n = static_cast<std::int64_t>(tokens.size());
  if (n < 2) fail(ErrorKind::kUsage, "perplexity: need at least 2 tokens, got {}", n);
  PerplexityResult r;
  std::int64_t const half = (n - 1) / 2;  // scored tokens 1 .. half are the first half
  std::int64_t const windows = (n - 1 + o.stride - 1) / o.stride;
  std::int64_t scored_until = 0;  // tokens 1 .. scored_until are scored
  for (std::int64_t w = 0; w < windows; ++w) {
    std::int64_t const end = std::min(n, (w + 1) * o.stride + 1);  // exclusive
    std::int64_t const begin = std::max<std::int64_t>(0, end - o.context);
    std::vector<float> const logits =
        window_logits(tokens.subspan(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin)));
    if (static_cast<std::int64_t>(logits.size()) != (end - begin) * vocab) {
      fail(ErrorKind::kInternal, "perplexity: a window of {} tokens gave {} logits (vocab {})", end - begin, logits.size(), vocab);
    }
    // logits row i predicts token begin + i + 1.
    for (std::int64_t t = std::max(scored_until + 1, begin + 1); t < end; ++t) {
      double const nll = negative_log_likelihood(logits.data() + (t - 1 - begin) * vocab, vocab, tokens[static_cast<std::size_t>(t)]);
      r.nll_sum += nll;
      ++r.scored;
      if (t <= half) {
        r.first_half_nll += nll;
        ++r.first_half_scored;
      } else {
        r.second_half_nll += nll;
      }
    }
    scored_until = end - 1;
    if (progress) progress(w + 1, windows);
  }
  return r;
}

namespace {

// A layer's projections grouped by input site (ActivationStats' numbering): q/k/v read the
// attention input, o the attention output, gate/up the MLP input, down the SwiGLU output.
std::array<std::vector<CpuLinear*>, 4> projections_by_site(LayerWeights& L) {
  return {{{&L.q, &L.k, &L.v}, {&L.o}, {&L.gate, &L.up}, {&L.down}}};
}

// The projection's dense float weight, to prune in place; `who` names the caller in the error
// for a projection already in SlideSparse form.
MatrixView prunable_weight(CpuLinear& lin, std::size_t layer, char const* who) {
  if (lin.is_slid()) fail(ErrorKind::kUsage, "{}: layer {} is already in SlideSparse form", who, layer);
  return {DType::kF32, lin.n(), lin.k(), reinterpret_cast<std::byte*>(lin.weight().data()), "linear"};
}

// Prunes the projections reading one input site of layer `layer`: by second order against the
// site's Gram matrix when given (one factorization shared by them), else by the Wanda score with
// the site's input norms (magnitude when `norms` is empty).
void prune_site(std::vector<CpuLinear*> const& projections, std::size_t layer, SparsityPattern pattern,
                std::vector<double> const* gram, std::span<float const> norms, double dampening, char const* who) {
  if (gram) {
    ObsFactor const factor(*gram, projections.front()->k(), dampening);
    for (CpuLinear* lin : projections) obs_prune_in_place(prunable_weight(*lin, layer, who), pattern, factor);
    return;
  }
  for (CpuLinear* lin : projections) prune_in_place(prunable_weight(*lin, layer, who), pattern, norms);
}

}  // namespace

void prune_model(ModelWeights& weights, SparsityPattern pattern, ActivationStats const* importance) {
  if (importance && importance->sum_squares.size() != weights.layers.size()) {
    fail(ErrorKind::kUsage, "prune_model: calibration statistics for {} layers, the model has {}",
         importance->sum_squares.size(), weights.layers.size());
  }
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    auto const by_site = projections_by_site(weights.layers[l]);
    for (std::size_t site = 0; site < by_site.size(); ++site) {
      std::vector<float> const norms = importance ? importance->norms(l, site) : std::vector<float>();
      prune_site(by_site[site], l, pattern, nullptr, norms, 0.0, "prune_model");
    }
  }
}

void prune_model_second_order(ModelWeights& weights, SparsityPattern pattern, ActivationStats const& stats,
                              double dampening) {
  if (stats.gram.size() != weights.layers.size()) {
    fail(ErrorKind::kUsage, "prune_model_second_order: Gram matrices for {} layers, the model has {} (calibrate with gram)",
         stats.gram.size(), weights.layers.size());
  }
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    auto const by_site = projections_by_site(weights.layers[l]);
    for (std::size_t site = 0; site < by_site.size(); ++site) {
      prune_site(by_site[site], l, pattern, &stats.gram[l][site], {}, dampening, "prune_model_second_order");
    }
  }
}

void prune_model_sequential(ModelWeights& weights, SparsityPattern pattern, SequentialCriterion criterion,
                            std::span<int const> tokens, std::int64_t context, double dampening,
                            std::function<void(std::int64_t, std::int64_t)> const& progress) {
  ModelConfig const& c = weights.config;
  if (context < 1) fail(ErrorKind::kUsage, "prune_model_sequential: context {} must be positive", context);
  if (tokens.empty()) fail(ErrorKind::kUsage, "prune_model_sequential: no calibration tokens");
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.vocab) {
      fail(ErrorKind::kInvalidInput, "prune_model_sequential: calibration token {} at position {} is outside the vocabulary of {}",
           tokens[t], t, c.vocab);
    }
  }
  weights.validate();
  std::int64_t const H = c.hidden, KV = c.kv_dim();
  auto const n_tokens = static_cast<std::int64_t>(tokens.size());
  auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  // The calibration windows' hidden states, h[t][hidden] for every calibration token: after
  // layer l's turn they are the output of layers 0..l as pruned, the input of layer l + 1.
  std::vector<float> h(sz(n_tokens * H));
  for (std::int64_t t = 0; t < n_tokens; ++t) std::copy_n(weights.embed.data() + tokens[sz(t)] * H, H, h.data() + t * H);
  std::vector<double> const inv_freq = c.rope_inverse_frequencies();
  std::vector<float> scratch, k_cache(sz(std::min(context, n_tokens) * KV)), v_cache(k_cache.size());
  // Runs layer `layer` over every window (each a fresh sequence from position 0, as calibrate()
  // runs them): on a copy of h up to `site` collecting that site's statistics, or (site -1) on h
  // itself to advance it.
  auto const each_window = [&](LayerWeights const& layer, int site, ActivationStats* stats) {
    for (std::int64_t begin = 0; begin < n_tokens; begin += context) {
      std::int64_t const count = std::min(context, n_tokens - begin);
      float* x = h.data() + begin * H;
      if (site >= 0) {
        scratch.assign(x, x + count * H);
        x = scratch.data();
      }
      decoder_layer_forward(c, layer, inv_freq, x, count, k_cache.data(), v_cache.data(), 0, {stats, 0, site});
    }
  };
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    LayerWeights& layer = weights.layers[l];
    auto const by_site = projections_by_site(layer);
    for (std::size_t site = 0; site < by_site.size(); ++site) {
      ActivationStats stats;
      stats.sum_squares.resize(1);
      stats.collect_gram = criterion == SequentialCriterion::kSecondOrder;
      if (stats.collect_gram) stats.gram.resize(1);
      each_window(layer, static_cast<int>(site), &stats);
      if (stats.collect_gram) {
        prune_site(by_site[site], l, pattern, &stats.gram[0][site], {}, dampening, "prune_model_sequential");
      } else {
        prune_site(by_site[site], l, pattern, nullptr, stats.norms(0, site), dampening, "prune_model_sequential");
      }
    }
    each_window(layer, -1, nullptr);
    if (progress) progress(static_cast<std::int64_t>(l) + 1, static_cast<std::int64_t>(weights.layers.size()));
  }
}

ActivationStats calibrate(CpuModel const& model, std::span<int const> tokens, std::int64_t context, bool gram) {
  if (context < 1) fail(ErrorKind::kUsage, "calibrate: context {} must be positive", context);
  ActivationStats stats;
  stats.collect_gram = gram;
  for (std::size_t begin = 0; begin < tokens.size(); begin += static_cast<std::size_t>(context)) {
    std::size_t const count = std::min(tokens.size() - begin, static_cast<std::size_t>(context));
    Sequence seq = model.new_sequence(static_cast<std::int64_t>(count));
    model.forward(seq, tokens.subspan(begin, count), false, &stats);
  }
  return stats;
}

void write_importance(ActivationStats const& stats, ModelConfig const& config, std::filesystem::path const& path,
                      std::map<std::string, std::string> metadata) {
  if (static_cast<std::int64_t>(stats.sum_squares.size()) != config.layers || stats.tokens == 0) {
    fail(ErrorKind::kUsage, "calibrate: statistics of {} layers over {} tokens for a {}-layer model", stats.sum_squares.size(),
         stats.tokens, config.layers);
  }
  // (tensor name suffix, site) per projection; sites as in ActivationStats.
  static constexpr std::pair<char const*, std::size_t> kProjections[] = {
      {"self_attn.q_proj.weight", 0}, {"self_attn.k_proj.weight", 0}, {"self_attn.v_proj.weight", 0},
      {"self_attn.o_proj.weight", 1}, {"mlp.gate_proj.weight", 2},    {"mlp.up_proj.weight", 2},
      {"mlp.down_proj.weight", 3}};
  std::int64_t const widths[4] = {config.hidden, config.q_dim(), config.hidden, config.intermediate};
  std::vector<io::TensorSpec> specs;
  std::vector<std::pair<std::size_t, std::size_t>> sources;  // (layer, site) of each spec
  for (std::int64_t l = 0; l < config.layers; ++l) {
    for (auto const& [suffix, site] : kProjections) {
      auto const& sums = stats.sum_squares[static_cast<std::size_t>(l)][site];
      if (static_cast<std::int64_t>(sums.size()) != widths[site]) {
        fail(ErrorKind::kUsage, "calibrate: layer {} {} has {} channel statistics, the config needs {}", l, suffix,
             sums.size(), widths[site]);
      }
      specs.push_back({fmt::format("model.layers.{}.{}", l, suffix), DType::kF32, {widths[site]}});
      sources.emplace_back(static_cast<std::size_t>(l), site);
    }
  }
  metadata["format"] = "pt";
  metadata["slidesparse_importance"] = "||x_k||_2 of each projection's input channel k (Wanda), for convert --prune importance";
  metadata["calibration_tokens"] = std::to_string(stats.tokens);
  io::SafetensorsWriter writer(path, specs, std::move(metadata));
  for (std::size_t i = 0; i < specs.size(); ++i) {
    std::vector<float> const norms = stats.norms(sources[i].first, sources[i].second);
    std::span<std::byte> const out = writer.bytes(i);
    std::memcpy(out.data(), norms.data(), out.size());
  }
  writer.commit();
}

std::vector<int> greedy_generate(CpuModel const& model, std::span<int const> prompt, std::int64_t max_new,
                                 std::optional<int> stop) {
  if (prompt.empty()) fail(ErrorKind::kUsage, "generate: empty prompt");
  if (max_new < 0) fail(ErrorKind::kUsage, "generate: {} new tokens", max_new);
  Sequence seq = model.new_sequence(static_cast<std::int64_t>(prompt.size()) + max_new + 1);
  std::vector<float> logits = model.forward(seq, prompt, false);
  std::vector<int> out;
  while (static_cast<std::int64_t>(out.size()) < max_new) {
    int const next = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (stop && next == *stop) break;
    out.push_back(next);
    if (static_cast<std::int64_t>(out.size()) == max_new) break;
    logits = model.forward(seq, std::span<int const>(&out.back(), 1), false);
  }
  return out;
}

}  // namespace slidesparse::runtime
