#include "slidesparse/runtime/cpu_model.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/parallel.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/random.hpp"
#include "slidesparse/core/slide.hpp"

namespace slidesparse::runtime {
namespace {

// Fixed-order dot product: lane j accumulates terms k = j (mod 8), lanes are combined pairwise.
// Independent lanes let the compiler vectorize without reassociating anything.
float combine(float const (&lane)[8]) {
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

float dot(float const* a, float const* b, std::int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lane[j] += a[i + j] * b[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) lane[j] += a[i] * b[i];
  return combine(lane);
}

// The SlideSparse dot x' . w' over the nonzeros of a row of W' (in lifted-column order): the
// product of lifted column c goes to the lane of its source column (source mod 8), so the
// nonzero products meet the same lanes in the same order as in dot() of the dense row. The
// products skipped (zero weights: empty window slots, duplicated activation copies, padding)
// add ±0 in dot(), which leaves a partial sum unchanged (a lane starts at +0 and a rounded sum
// is never -0).
float slid_dot(float const* x_lifted, std::int32_t const* column, float const* value, std::uint8_t const* lane_of,
               std::int64_t count) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (std::int64_t i = 0; i < count; ++i) lane[lane_of[i]] += x_lifted[column[i]] * value[i];
  return combine(lane);
}

// RMSNorm of one row: x / sqrt(mean(x^2) + eps) * w, the mean accumulated in double.
void rms_norm(float const* x, float const* w, std::int64_t n, double eps, float* y) {
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  auto const inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  for (std::int64_t i = 0; i < n; ++i) y[i] = (x[i] * inv) * w[i];
}

// Rotates pairs (i, i + d/2) of one head vector by position * inv_freq[i] (Hugging Face
// rotate_half layout).
void rope(float* v, std::int64_t head_dim, std::int64_t position, std::vector<double> const& inv_freq) {
  std::int64_t const half = head_dim / 2;
  for (std::int64_t i = 0; i < half; ++i) {
    double const angle = static_cast<double>(position) * inv_freq[static_cast<std::size_t>(i)];
    auto const c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    float const a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

std::vector<float> random_vector(std::mt19937_64& rng, std::size_t n, float mean, float stddev) {
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace

CpuLinear::CpuLinear(std::vector<float> weight, std::int64_t n, std::int64_t k, std::vector<float> bias)
    : weight_(std::move(weight)), bias_(std::move(bias)), n_(n), k_(k) {
  if (n <= 0 || k <= 0 || static_cast<std::int64_t>(weight_.size()) != n * k ||
      (!bias_.empty() && static_cast<std::int64_t>(bias_.size()) != n)) {
    fail(ErrorKind::kInvalidInput, "CpuLinear: weight of {} values for [{}, {}] with {} bias entries", weight_.size(), n, k,
         bias_.size());
  }
}

CpuLinear CpuLinear::slid(SparsityPattern pattern) const {
  if (is_slid()) fail(ErrorKind::kUsage, "CpuLinear: already in SlideSparse form");
  ActivationLayout const layout = ActivationLayout::slid(pattern, k_);
  std::int64_t const kl = layout.k_lifted();
  CpuLinear out;
  out.weight_.assign(static_cast<std::size_t>(n_ * kl), 0.0f);
  ConstMatrixView const w{DType::kF32, n_, k_, reinterpret_cast<std::byte const*>(weight_.data()), "linear"};
  MatrixView lifted{DType::kF32, n_, kl, reinterpret_cast<std::byte*>(out.weight_.data()), "linear (slid)"};
  slide(w, pattern, layout.shape(), lifted);
  out.bias_ = bias_;
  out.n_ = n_;
  out.k_ = k_;
  out.gather_.assign(layout.gather().begin(), layout.gather().end());
  out.nz_row_start_.assign(1, 0);
  for (std::int64_t r = 0; r < n_; ++r) {
    for (std::int64_t c = 0; c < kl; ++c) {
      float const v = out.weight_[static_cast<std::size_t>(r * kl + c)];
      if (v == 0.0f) continue;
      out.nz_column_.push_back(static_cast<std::int32_t>(c));
      out.nz_value_.push_back(v);
      out.nz_lane_.push_back(static_cast<std::uint8_t>(out.gather_[static_cast<std::size_t>(c)] & 7));
    }
    out.nz_row_start_.push_back(static_cast<std::int64_t>(out.nz_column_.size()));
  }
  return out;
}

void CpuLinear::forward(float const* x, std::int64_t m, float* y) const {
  if (is_slid()) {
    // lift x -> x' [m, K'] (x'[c] = x[source(c)], 0 for padding), then y = x' W'^T.
    std::int64_t const kl = k_stored();
    std::vector<float> lifted(static_cast<std::size_t>(m * kl));
    for (std::int64_t row = 0; row < m; ++row) {
      for (std::int64_t c = 0; c < kl; ++c) {
        std::int64_t const s = gather_[static_cast<std::size_t>(c)];
        lifted[static_cast<std::size_t>(row * kl + c)] = s < 0 ? 0.0f : x[row * k_ + s];
      }
    }
    parallel_for(n_, kl * 4 * std::max<std::int64_t>(m, 1), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t row = 0; row < m; ++row) {
        for (std::int64_t j = begin; j < end; ++j) {
          auto const first = nz_row_start_[static_cast<std::size_t>(j)];
          auto const count = nz_row_start_[static_cast<std::size_t>(j) + 1] - first;
          float v = slid_dot(lifted.data() + row * kl, nz_column_.data() + first, nz_value_.data() + first,
                             nz_lane_.data() + first, count);
          if (!bias_.empty()) v += bias_[static_cast<std::size_t>(j)];
          y[row * n_ + j] = v;
        }
      }
    });
    return;
  }
  // Parallel over output channels (each thread streams its slice of W once for all M rows).
  parallel_for(n_, k_ * 4 * std::max<std::int64_t>(m, 1), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = 0; row < m; ++row) {
      float const* xr = x + row * k_;
      for (std::int64_t j = begin; j < end; ++j) {
        float v = dot(xr, weight_.data() + j * k_, k_);
        if (!bias_.empty()) v += bias_[static_cast<std::size_t>(j)];
        y[row * n_ + j] = v;
      }
    }
  });
}

ModelWeights ModelWeights::random(ModelConfig const& c, std::uint64_t seed) {
  c.validate();
  std::mt19937_64 rng(seed);
  auto matrix = [&](std::int64_t n, std::int64_t k, bool bias) {
    std::vector<float> b = bias ? random_vector(rng, static_cast<std::size_t>(n), 0.0f, 0.02f) : std::vector<float>{};
    return CpuLinear(random_vector(rng, static_cast<std::size_t>(n * k), 0.0f, 0.02f), n, k, std::move(b));
  };
  ModelWeights w;
  w.config = c;
  w.embed = random_vector(rng, static_cast<std::size_t>(c.vocab * c.hidden), 0.0f, 0.02f);
  for (std::int64_t l = 0; l < c.layers; ++l) {
    LayerWeights layer;
    layer.attn_norm = random_vector(rng, static_cast<std::size_t>(c.hidden), 1.0f, 0.05f);
    layer.ffn_norm = random_vector(rng, static_cast<std::size_t>(c.hidden), 1.0f, 0.05f);
    layer.q = matrix(c.q_dim(), c.hidden, c.qkv_bias);
    layer.k = matrix(c.kv_dim(), c.hidden, c.qkv_bias);
    layer.v = matrix(c.kv_dim(), c.hidden, c.qkv_bias);
    layer.o = matrix(c.hidden, c.q_dim(), false);
    layer.gate = matrix(c.intermediate, c.hidden, false);
    layer.up = matrix(c.intermediate, c.hidden, false);
    layer.down = matrix(c.hidden, c.intermediate, false);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = random_vector(rng, static_cast<std::size_t>(c.hidden), 1.0f, 0.05f);
  w.lm_head = c.tie_embeddings ? CpuLinear(w.embed, c.vocab, c.hidden) : matrix(c.vocab, c.hidden, false);
  return w;
}

std::vector<float> random_values(std::size_t count, float mean, float stddev, std::uint64_t seed) {
  // Uniform on [mean - a, mean + a] with a = sqrt(3) * stddev; element i from splitmix64 of
  // (seed, i), so the result does not depend on the thread count.
  std::vector<float> v(count);
  float const a = std::sqrt(3.0f) * stddev;
  std::uint64_t const stream = splitmix64(seed);
  parallel_for(static_cast<std::int64_t>(count), 4, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      std::uint64_t const bits = splitmix64(stream ^ static_cast<std::uint64_t>(i));
      float const u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
      v[static_cast<std::size_t>(i)] = mean + a * (2.0f * u - 1.0f);
    }
  });
  return v;
}

LayerWeights random_layer_weights(ModelConfig const& c, std::int64_t layer, std::uint64_t seed,
                                  std::optional<SparsityPattern> pattern) {
  c.validate();
  if (layer < 0 || layer >= c.layers) fail(ErrorKind::kUsage, "layer {} of a {}-layer model", layer, c.layers);
  std::uint64_t next = splitmix64(seed ^ splitmix64(static_cast<std::uint64_t>(layer) + 1));
  auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  auto matrix = [&](std::int64_t n, std::int64_t k, bool bias, char const* name) {
    std::vector<float> w = random_values(sz(n * k), 0.0f, 0.02f, ++next);
    if (pattern) {
      prune_in_place(MatrixView{DType::kF32, n, k, reinterpret_cast<std::byte*>(w.data()), name}, *pattern);
    }
    std::vector<float> b = bias ? random_values(sz(n), 0.0f, 0.02f, ++next) : std::vector<float>{};
    return CpuLinear(std::move(w), n, k, std::move(b));
  };
  LayerWeights L;
  L.attn_norm = random_values(sz(c.hidden), 1.0f, 0.05f, ++next);
  L.ffn_norm = random_values(sz(c.hidden), 1.0f, 0.05f, ++next);
  L.q = matrix(c.q_dim(), c.hidden, c.qkv_bias, "q_proj");
  L.k = matrix(c.kv_dim(), c.hidden, c.qkv_bias, "k_proj");
  L.v = matrix(c.kv_dim(), c.hidden, c.qkv_bias, "v_proj");
  L.o = matrix(c.hidden, c.q_dim(), false, "o_proj");
  L.gate = matrix(c.intermediate, c.hidden, false, "gate_proj");
  L.up = matrix(c.intermediate, c.hidden, false, "up_proj");
  L.down = matrix(c.hidden, c.intermediate, false, "down_proj");
  return L;
}

void ModelWeights::validate() const {
  ModelConfig const& c = config;
  c.validate();
  auto check = [&](std::string const& what, std::size_t have, std::int64_t want) {
    if (static_cast<std::int64_t>(have) != want) {
      fail(ErrorKind::kInvalidInput, "model {}: {} has {} values, the config needs {}", c.name, what, have, want);
    }
  };
  auto check_linear = [&](std::string const& what, CpuLinear const& lin, std::int64_t n, std::int64_t k, bool bias) {
    if (lin.n() != n || lin.k() != k) {
      fail(ErrorKind::kInvalidInput, "model {}: {} is [{}, {}], the config needs [{}, {}]", c.name, what, lin.n(), lin.k(), n, k);
    }
    if (bias != !lin.bias().empty()) {
      fail(ErrorKind::kInvalidInput, "model {}: {} {} a bias, the config says {}", c.name, what,
           lin.bias().empty() ? "lacks" : "has", bias ? "it has one" : "it has none");
    }
  };
  check("embed", embed.size(), c.vocab * c.hidden);
  check("final_norm", final_norm.size(), c.hidden);
  check_linear("lm_head", lm_head, c.vocab, c.hidden, false);
  check("layers", layers.size(), c.layers);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    LayerWeights const& L = layers[l];
    std::string const p = "layers." + std::to_string(l) + ".";
    check(p + "attn_norm", L.attn_norm.size(), c.hidden);
    check(p + "ffn_norm", L.ffn_norm.size(), c.hidden);
    check_linear(p + "q_proj", L.q, c.q_dim(), c.hidden, c.qkv_bias);
    check_linear(p + "k_proj", L.k, c.kv_dim(), c.hidden, c.qkv_bias);
    check_linear(p + "v_proj", L.v, c.kv_dim(), c.hidden, c.qkv_bias);
    check_linear(p + "o_proj", L.o, c.hidden, c.q_dim(), false);
    check_linear(p + "gate_proj", L.gate, c.intermediate, c.hidden, false);
    check_linear(p + "up_proj", L.up, c.intermediate, c.hidden, false);
    check_linear(p + "down_proj", L.down, c.hidden, c.intermediate, false);
  }
}

void ModelWeights::slide_projections(SparsityPattern pattern) {
  for (std::size_t l = 0; l < layers.size(); ++l) {
    LayerWeights& L = layers[l];
    for (CpuLinear* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) {
      try {
        *lin = lin->slid(pattern);
      } catch (Error const& e) {
        fail(ErrorKind::kInvalidInput, "layer {}: {}", l, e.what());
      }
    }
  }
}

CpuModel::CpuModel(ModelWeights weights) : weights_(std::move(weights)) {
  weights_.validate();
  inv_freq_ = weights_.config.rope_inverse_frequencies();
}

Sequence CpuModel::new_sequence(std::int64_t capacity) const {
  ModelConfig const& c = config();
  if (capacity <= 0) fail(ErrorKind::kUsage, "sequence capacity {} must be positive", capacity);
  Sequence s;
  s.capacity = capacity;
  std::size_t const n = static_cast<std::size_t>(c.layers * capacity * c.kv_dim());
  s.k.assign(n, 0.0f);
  s.v.assign(n, 0.0f);
  return s;
}

std::vector<float> ActivationStats::norms(std::size_t layer, std::size_t site) const {
  std::vector<double> const& s = sum_squares.at(layer)[site];
  std::vector<float> out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<float>(std::sqrt(s[i]));
  return out;
}

namespace {
void accumulate(ActivationStats* stats, std::size_t layer, std::size_t site, float const* x, std::int64_t m, std::int64_t k) {
  if (!stats) return;
  std::vector<double>& s = stats->sum_squares[layer][site];
  if (s.empty()) s.assign(static_cast<std::size_t>(k), 0.0);
  for (std::int64_t r = 0; r < m; ++r) {
    for (std::int64_t c = 0; c < k; ++c) s[static_cast<std::size_t>(c)] += static_cast<double>(x[r * k + c]) * x[r * k + c];
  }
  if (!stats->collect_gram) return;
  // G[a][c] += x[t][a] * x[t][c] over the tokens t for c >= a, rows of G in parallel (each owns
  // its row, so the sums are in token order whatever the scheduling); then the lower triangle is
  // mirrored from the upper one (the same sums: G stays exactly symmetric).
  std::vector<double>& g = stats->gram[layer][site];
  if (g.empty()) g.assign(static_cast<std::size_t>(k * k), 0.0);
  parallel_for(k, 4 * k * m, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t a = begin; a < end; ++a) {
      double* const ga = g.data() + a * k;
      for (std::int64_t t = 0; t < m; ++t) {
        double const xa = x[t * k + a];
        if (xa == 0.0) continue;
        float const* const xt = x + t * k;
        for (std::int64_t c = a; c < k; ++c) ga[c] += xa * static_cast<double>(xt[c]);
      }
    }
  });
  for (std::int64_t a = 0; a < k; ++a) {
    for (std::int64_t c = 0; c < a; ++c) g[static_cast<std::size_t>(a * k + c)] = g[static_cast<std::size_t>(c * k + a)];
  }
}
}  // namespace

void decoder_layer_forward(ModelConfig const& c, LayerWeights const& L, std::vector<double> const& inv_freq, float* h,
                           std::int64_t t_count, float* kc, float* vc, std::int64_t p0, LayerCalibration const& calibration) {
  std::int64_t const H = c.hidden, D = c.head_dim, Q = c.q_dim(), KV = c.kv_dim(), I = c.intermediate;
  std::int64_t const group = c.heads / c.kv_heads;
  int const stop = calibration.stop_after_site;
  if (stop < -1 || stop > 3) fail(ErrorKind::kInternal, "decoder_layer_forward: stop_after_site {} is not -1..3", stop);
  // Collects site `site` when calibrating (every site for a whole-layer pass, else only the one
  // the pass stops after) and says whether the pass ends there.
  auto const site_done = [&](int site, float const* x, std::int64_t k) {
    if (calibration.stats && (stop == -1 || stop == site)) accumulate(calibration.stats, calibration.stats_layer, static_cast<std::size_t>(site), x, t_count, k);
    return stop == site;
  };
  auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  std::vector<float> a(sz(t_count * H)), q(sz(t_count * Q)), k(sz(t_count * KV)), v(sz(t_count * KV)),
      attn(sz(t_count * Q)), proj(sz(t_count * H));
  float const scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (std::int64_t t = 0; t < t_count; ++t) rms_norm(h + t * H, L.attn_norm.data(), H, c.rms_eps, a.data() + t * H);
  if (site_done(0, a.data(), H)) return;
  L.q.forward(a.data(), t_count, q.data());
  L.k.forward(a.data(), t_count, k.data());
  L.v.forward(a.data(), t_count, v.data());
  for (std::int64_t t = 0; t < t_count; ++t) {
    for (std::int64_t hd = 0; hd < c.heads; ++hd) rope(q.data() + t * Q + hd * D, D, p0 + t, inv_freq);
    for (std::int64_t hd = 0; hd < c.kv_heads; ++hd) rope(k.data() + t * KV + hd * D, D, p0 + t, inv_freq);
    std::copy_n(k.data() + t * KV, KV, kc + (p0 + t) * KV);
    std::copy_n(v.data() + t * KV, KV, vc + (p0 + t) * KV);
  }
  // Causal attention: token t (position p0 + t) attends to positions 0 .. p0 + t.
  parallel_for(t_count * c.heads, (p0 + t_count) * D * 8, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> score(sz(p0 + t_count));
    for (std::int64_t idx = begin; idx < end; ++idx) {
      std::int64_t const t = idx / c.heads, hd = idx % c.heads, kvh = hd / group;
      std::int64_t const last = p0 + t;
      float const* qv = q.data() + t * Q + hd * D;
      float max_score = -INFINITY;
      for (std::int64_t p = 0; p <= last; ++p) {
        score[sz(p)] = dot(qv, kc + p * KV + kvh * D, D) * scale;
        max_score = std::max(max_score, score[sz(p)]);
      }
      double total = 0;
      for (std::int64_t p = 0; p <= last; ++p) {
        score[sz(p)] = std::exp(score[sz(p)] - max_score);
        total += score[sz(p)];
      }
      auto const inv_total = static_cast<float>(1.0 / total);
      float* out = attn.data() + t * Q + hd * D;
      std::fill_n(out, D, 0.0f);
      for (std::int64_t p = 0; p <= last; ++p) {
        float const w = score[sz(p)] * inv_total;
        float const* vv = vc + p * KV + kvh * D;
        for (std::int64_t d = 0; d < D; ++d) out[d] += w * vv[d];
      }
    }
  });
  if (site_done(1, attn.data(), Q)) return;
  L.o.forward(attn.data(), t_count, proj.data());
  for (std::int64_t i = 0; i < t_count * H; ++i) h[i] += proj[sz(i)];
  for (std::int64_t t = 0; t < t_count; ++t) rms_norm(h + t * H, L.ffn_norm.data(), H, c.rms_eps, a.data() + t * H);
  if (site_done(2, a.data(), H)) return;
  std::vector<float> g(sz(t_count * I)), u(sz(t_count * I));
  L.gate.forward(a.data(), t_count, g.data());
  L.up.forward(a.data(), t_count, u.data());
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  if (site_done(3, g.data(), I)) return;
  L.down.forward(g.data(), t_count, proj.data());
  for (std::int64_t i = 0; i < t_count * H; ++i) h[i] += proj[sz(i)];
}

std::vector<float> CpuModel::forward(Sequence& seq, std::span<int const> tokens, bool all_logits,
                                     ActivationStats* stats) const {
  ModelConfig const& c = config();
  auto const t_count = static_cast<std::int64_t>(tokens.size());
  if (t_count == 0) return {};
  if (seq.length + t_count > seq.capacity) {
    fail(ErrorKind::kUsage, "sequence of capacity {} cannot take {} more tokens after {}", seq.capacity, t_count, seq.length);
  }
  for (std::int64_t t = 0; t < t_count; ++t) {
    int const id = tokens[static_cast<std::size_t>(t)];
    if (id < 0 || id >= c.vocab) {
      fail(ErrorKind::kInvalidInput, "token id {} at position {} is outside the vocabulary of {}", id, seq.length + t, c.vocab);
    }
  }
  std::int64_t const H = c.hidden, KV = c.kv_dim();
  auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  std::vector<float> h(sz(t_count * H)), a(sz(t_count * H));
  for (std::int64_t t = 0; t < t_count; ++t) {
    std::copy_n(weights_.embed.data() + tokens[sz(t)] * H, H, h.data() + t * H);
  }
  if (stats) {
    stats->sum_squares.resize(static_cast<std::size_t>(c.layers));
    if (stats->collect_gram) stats->gram.resize(static_cast<std::size_t>(c.layers));
    stats->tokens += t_count;
  }
  for (std::int64_t l = 0; l < c.layers; ++l) {
    decoder_layer_forward(c, weights_.layers[sz(l)], inv_freq_, h.data(), t_count, seq.k.data() + l * seq.capacity * KV,
                          seq.v.data() + l * seq.capacity * KV, seq.length, {stats, sz(l), -1});
  }
  seq.length += t_count;
  std::int64_t const first = all_logits ? 0 : t_count - 1;
  std::int64_t const rows = t_count - first;
  for (std::int64_t t = first; t < t_count; ++t) {
    rms_norm(h.data() + t * H, weights_.final_norm.data(), H, c.rms_eps, a.data() + (t - first) * H);
  }
  std::vector<float> logits(sz(rows * c.vocab));
  weights_.lm_head.forward(a.data(), rows, logits.data());
  return logits;
}

}  // namespace slidesparse::runtime
