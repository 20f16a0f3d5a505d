// The float32 CPU reference model against a plain float64 implementation written here from the
// definitions (tiny Llama and Qwen2 configs), plus its invariants: prefill == token-by-token
// decode bit for bit, GQA == MHA with repeated KV weights bit for bit, independent sequences.
#include "slidesparse/runtime/cpu_model.hpp"

#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::runtime {
namespace {

// float64 forward of the whole prompt at once, straight from the definitions.
std::vector<double> reference_logits(ModelWeights const& w, std::vector<int> const& tokens) {
  ModelConfig const& c = w.config;
  auto const T = static_cast<std::int64_t>(tokens.size());
  std::int64_t const H = c.hidden, D = c.head_dim;
  auto idx = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  auto linear = [&](CpuLinear const& lin, std::vector<double> const& x, std::int64_t rows) {
    std::vector<double> y(idx(rows * lin.n()));
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t n = 0; n < lin.n(); ++n) {
        double s = lin.bias().empty() ? 0.0 : lin.bias()[idx(n)];
        for (std::int64_t k = 0; k < lin.k(); ++k) s += x[idx(r * lin.k() + k)] * lin.weight()[idx(n * lin.k() + k)];
        y[idx(r * lin.n() + n)] = s;
      }
    }
    return y;
  };
  auto norm = [&](std::vector<double> const& x, std::vector<float> const& g) {
    std::vector<double> y(x.size());
    for (std::int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (std::int64_t i = 0; i < H; ++i) ss += x[idx(t * H + i)] * x[idx(t * H + i)];
      double const inv = 1.0 / std::sqrt(ss / static_cast<double>(H) + c.rms_eps);
      for (std::int64_t i = 0; i < H; ++i) y[idx(t * H + i)] = x[idx(t * H + i)] * inv * g[idx(i)];
    }
    return y;
  };
  std::vector<double> const inv_freq = c.rope_inverse_frequencies();
  auto rope = [&](std::vector<double>& x, std::int64_t heads) {
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t hd = 0; hd < heads; ++hd) {
        double* v = x.data() + t * heads * D + hd * D;
        for (std::int64_t i = 0; i < D / 2; ++i) {
          double const angle = static_cast<double>(t) * inv_freq[idx(i)];
          double const a = v[i], b = v[i + D / 2];
          v[i] = a * std::cos(angle) - b * std::sin(angle);
          v[i + D / 2] = b * std::cos(angle) + a * std::sin(angle);
        }
      }
    }
  };
  std::vector<double> h(idx(T * H));
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t i = 0; i < H; ++i) h[idx(t * H + i)] = w.embed[idx(tokens[idx(t)] * H + i)];
  }
  for (LayerWeights const& L : w.layers) {
    std::vector<double> const a = norm(h, L.attn_norm);
    std::vector<double> q = linear(L.q, a, T), k = linear(L.k, a, T), v = linear(L.v, a, T);
    rope(q, c.heads);
    rope(k, c.kv_heads);
    std::vector<double> attn(idx(T * c.q_dim()));
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t hd = 0; hd < c.heads; ++hd) {
        std::int64_t const kvh = hd / (c.heads / c.kv_heads);
        std::vector<double> s(idx(t + 1));
        double mx = -INFINITY, total = 0;
        for (std::int64_t p = 0; p <= t; ++p) {
          double d = 0;
          for (std::int64_t i = 0; i < D; ++i) d += q[idx(t * c.q_dim() + hd * D + i)] * k[idx(p * c.kv_dim() + kvh * D + i)];
          s[idx(p)] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, s[idx(p)]);
        }
        for (auto& x : s) total += (x = std::exp(x - mx));
        for (std::int64_t i = 0; i < D; ++i) {
          double o = 0;
          for (std::int64_t p = 0; p <= t; ++p) o += s[idx(p)] / total * v[idx(p * c.kv_dim() + kvh * D + i)];
          attn[idx(t * c.q_dim() + hd * D + i)] = o;
        }
      }
    }
    std::vector<double> const o = linear(L.o, attn, T);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += o[i];
    std::vector<double> const b = norm(h, L.ffn_norm);
    std::vector<double> g = linear(L.gate, b, T);
    std::vector<double> const u = linear(L.up, b, T);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    std::vector<double> const d = linear(L.down, g, T);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += d[i];
  }
  return linear(w.lm_head, norm(h, w.final_norm), T);
}

std::vector<int> random_tokens(std::int64_t vocab, int count, unsigned seed) {
  std::vector<int> t;
  for (int i = 0; i < count; ++i) t.push_back(static_cast<int>((1103515245u * (seed + static_cast<unsigned>(i)) + 12345u) % vocab));
  return t;
}

TEST(CpuModel, MatchesAFloat64ReferenceForBothFamilies) {
  for (char const* preset : {"tiny-llama", "tiny-qwen2"}) {
    SCOPED_TRACE(preset);
    ModelWeights const w = ModelWeights::random(ModelConfig::preset(preset), 1234);  // seed 1234
    std::vector<int> const tokens = random_tokens(w.config.vocab, 17, 7);
    CpuModel const model(w);
    Sequence seq = model.new_sequence(32);
    std::vector<float> const logits = model.forward(seq, tokens, true);
    std::vector<double> const ref = reference_logits(w, tokens);
    ASSERT_EQ(logits.size(), ref.size());
    double max_ref = 0;
    for (double x : ref) max_ref = std::max(max_ref, std::fabs(x));
    // float32 vs float64 over ~10^2-term dot products and 2 layers: relative error ~1e-6 per
    // operation; 1e-4 of the largest logit leaves two orders of magnitude of margin while a
    // wrong head, position or norm changes logits by O(max).
    for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(logits[i], ref[i], 1e-4 * max_ref) << "logit " << i;
  }
}

TEST(CpuModel, DecodeOfTokenTEqualsPrefillLogitsAtPositionTBitForBit) {
  for (char const* preset : {"tiny-llama", "tiny-qwen2"}) {
    SCOPED_TRACE(preset);
    CpuModel const model(ModelWeights::random(ModelConfig::preset(preset), 99));
    std::vector<int> const tokens = random_tokens(model.config().vocab, 23, 3);
    Sequence prefill = model.new_sequence(32);
    std::vector<float> const all = model.forward(prefill, tokens, true);
    Sequence decode = model.new_sequence(32);
    // Prefill the first 5 together, then one token at a time.
    std::vector<float> step = model.forward(decode, std::span<int const>(tokens).first(5), false);
    auto const V = static_cast<std::size_t>(model.config().vocab);
    ASSERT_TRUE(std::equal(step.begin(), step.end(), all.begin() + 4 * static_cast<std::ptrdiff_t>(V)));
    for (std::size_t t = 5; t < tokens.size(); ++t) {
      step = model.forward(decode, std::span<int const>(tokens).subspan(t, 1), false);
      ASSERT_TRUE(std::equal(step.begin(), step.end(), all.begin() + static_cast<std::ptrdiff_t>(t * V))) << "position " << t;
    }
    EXPECT_EQ(decode.length, 23);
  }
}

TEST(CpuModel, GroupedQueryAttentionEqualsMhaWithRepeatedKvHeads) {
  ModelWeights const gqa = ModelWeights::random(ModelConfig::preset("tiny-llama"), 5);  // 4 heads, 2 KV heads
  ModelWeights mha = gqa;
  mha.config.kv_heads = mha.config.heads;
  std::int64_t const D = gqa.config.head_dim, H = gqa.config.hidden, group = gqa.config.heads / gqa.config.kv_heads;
  for (LayerWeights& L : mha.layers) {
    for (CpuLinear* lin : {&L.k, &L.v}) {
      std::vector<float> w;
      for (std::int64_t hd = 0; hd < mha.config.heads; ++hd) {
        auto const src = lin->weight().begin() + (hd / group) * D * H;
        w.insert(w.end(), src, src + D * H);
      }
      *lin = CpuLinear(w, mha.config.kv_dim(), H);
    }
  }
  std::vector<int> const tokens = random_tokens(gqa.config.vocab, 11, 9);
  CpuModel const a(gqa), b(mha);
  Sequence sa = a.new_sequence(16), sb = b.new_sequence(16);
  EXPECT_EQ(a.forward(sa, tokens, true), b.forward(sb, tokens, true));
}

TEST(CpuModel, SequencesAreIndependent) {
  CpuModel const model(ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 11));
  std::vector<int> const x = random_tokens(model.config().vocab, 9, 1), y = random_tokens(model.config().vocab, 4, 2);
  Sequence s1 = model.new_sequence(16), s2 = model.new_sequence(16), alone = model.new_sequence(16);
  model.forward(s1, x, false);
  std::vector<float> const interleaved = model.forward(s2, y, false);
  EXPECT_EQ(interleaved, model.forward(alone, y, false));
}

TEST(CpuModel, RejectsBadTokensCapacityAndWeights) {
  CpuModel const model(ModelWeights::random(ModelConfig::preset("tiny-llama"), 1));
  Sequence seq = model.new_sequence(4);
  std::vector<int> const bad = {1, 2, 97};
  try {
    model.forward(seq, bad, false);
    FAIL();
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("token id 97 at position 2"), std::string::npos) << e.what();
  }
  std::vector<int> const five = {1, 2, 3, 4, 5};
  EXPECT_THROW(model.forward(seq, five, false), Error);
  ModelWeights w = ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 1);
  w.layers[1].up = CpuLinear(std::vector<float>(10, 0.0f), 5, 2);
  try {
    CpuModel m(w);
    FAIL();
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.up_proj"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, ParsesHuggingFaceConfigsAndNamesBadFields) {
  nlohmann::json j = {{"model_type", "llama"}, {"vocab_size", 128256}, {"hidden_size", 4096}, {"intermediate_size", 14336},
                      {"num_hidden_layers", 32}, {"num_attention_heads", 32}, {"num_key_value_heads", 8},
                      {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0}, {"max_position_embeddings", 131072},
                      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}};
  ModelConfig const c = ModelConfig::from_hf_json(j, "config.json");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.kv_dim(), 1024);
  EXPECT_TRUE(c.rope_scaling.llama3);
  EXPECT_FALSE(c.qkv_bias);
  // Llama-3 scaling: the highest frequency is kept, the lowest divided by the factor.
  ModelConfig plain = c;
  plain.rope_scaling = {};
  auto const scaled = c.rope_inverse_frequencies(), base = plain.rope_inverse_frequencies();
  EXPECT_DOUBLE_EQ(scaled.front(), base.front());
  EXPECT_DOUBLE_EQ(scaled.back(), base.back() / 8.0);
  nlohmann::json q = j;
  q["model_type"] = "qwen2";
  q.erase("rope_scaling");
  EXPECT_TRUE(ModelConfig::from_hf_json(q, "q").qkv_bias);
  for (auto const& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"model_type", "gpt2"}, {"hidden_size", -1}, {"num_key_value_heads", 5}, {"vocab_size", "many"}}) {
    nlohmann::json broken = j;
    broken[field] = value;
    try {
      ModelConfig::from_hf_json(broken, "broken.json");
      FAIL() << field;
    } catch (Error const& e) {
      EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(ModelConfig::preset("qwen2.5-7b").kv_dim(), 512);
  EXPECT_EQ(ModelConfig::preset("llama3.1-8b").intermediate, 14336);
  EXPECT_THROW(ModelConfig::preset("gpt-5"), Error);
}

TEST(RandomLayerWeights, DeterministicShapedAndPruned) {
  ModelConfig const c = ModelConfig::preset("tiny-qwen2");
  LayerWeights const a = random_layer_weights(c, 1, 77, std::nullopt);
  LayerWeights const b = random_layer_weights(c, 1, 77, std::nullopt);
  LayerWeights const other = random_layer_weights(c, 0, 77, std::nullopt);
  EXPECT_EQ(a.gate.weight(), b.gate.weight());
  EXPECT_NE(a.gate.weight(), other.gate.weight());
  EXPECT_EQ(a.q.n(), c.q_dim());
  EXPECT_EQ(a.down.k(), c.intermediate);
  EXPECT_EQ(a.q.bias().size(), static_cast<std::size_t>(c.q_dim()));  // Qwen2: q/k/v bias
  // Uniform with standard deviation 0.02: sample variance of the 80 x 48 up_proj within 10 %.
  double sum = 0, sq = 0;
  for (float x : a.up.weight()) sum += x, sq += static_cast<double>(x) * x;
  double const n = static_cast<double>(a.up.weight().size());
  EXPECT_NEAR(std::sqrt(sq / n - (sum / n) * (sum / n)), 0.02, 0.002);
  // Pruned: every block of 8 along K keeps at most 6 nonzeros (K = 48 and 80: whole blocks).
  LayerWeights const p = random_layer_weights(c, 1, 77, SparsityPattern::parse("6:8"));
  for (CpuLinear const* lin : {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down}) {
    for (std::int64_t r = 0; r < lin->n(); ++r) {
      for (std::int64_t b0 = 0; b0 < lin->k(); b0 += 8) {
        int nonzero = 0;
        for (std::int64_t j = b0; j < std::min(b0 + 8, lin->k()); ++j) nonzero += lin->weight()[static_cast<std::size_t>(r * lin->k() + j)] != 0.0f;
        ASSERT_LE(nonzero, 6) << "row " << r << " block " << b0 / 8;
      }
    }
  }
  EXPECT_THROW(random_layer_weights(c, c.layers, 77, std::nullopt), Error);
}

}  // namespace
}  // namespace slidesparse::runtime
