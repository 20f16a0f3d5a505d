#include "slidesparse/runtime/perplexity.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <random>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/obs_prune.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/convert/convert.hpp"
#include "slidesparse/convert/synthetic.hpp"
#include "slidesparse/io/safetensors.hpp"
#include "slidesparse/runtime/hf_loader.hpp"

namespace slidesparse::runtime {
namespace {

std::vector<int> tokens_of(std::int64_t vocab, int n) {
  std::vector<int> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int>((7919u * static_cast<unsigned>(i) + 13u) % vocab));
  return t;
}

TEST(Perplexity, UniformLogitsGiveTheVocabularySize) {
  ModelWeights w = ModelWeights::random(ModelConfig::preset("tiny-llama"), 3);
  w.lm_head = CpuLinear(std::vector<float>(w.lm_head.weight().size(), 0.0f), w.lm_head.n(), w.lm_head.k());
  CpuModel const model(w);
  PerplexityResult const r = perplexity(model, tokens_of(model.config().vocab, 40), {16, 8});
  EXPECT_EQ(r.scored, 39);
  EXPECT_NEAR(r.perplexity(), static_cast<double>(model.config().vocab), 1e-9 * static_cast<double>(model.config().vocab));
  EXPECT_EQ(r.first_half_scored, 19);
}

TEST(Perplexity, EveryTokenIsScoredOnceAndFullContextDoesNotDependOnTheStride) {
  CpuModel const model(ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 4));
  std::vector<int> const t = tokens_of(model.config().vocab, 37);
  for (std::int64_t stride : {1, 5, 36, 40}) {
    SCOPED_TRACE(stride);
    std::int64_t windows = 0;
    PerplexityResult const r = perplexity(model, t, {64, std::min<std::int64_t>(stride, 64)},
                                          [&](std::int64_t done, std::int64_t total) { windows = total, (void)done; });
    EXPECT_EQ(r.scored, 36);
    // context >= sequence: every token sees its whole prefix, whatever the windows.
    EXPECT_EQ(r.nll_sum, perplexity(model, t, {64, 64}).nll_sum);
    EXPECT_EQ(windows, (36 + std::min<std::int64_t>(stride, 64) - 1) / std::min<std::int64_t>(stride, 64));
  }
  // A shorter context changes the history, hence the result.
  EXPECT_NE(perplexity(model, t, {8, 4}).nll_sum, perplexity(model, t, {64, 64}).nll_sum);
  EXPECT_THROW(perplexity(model, t, {8, 9}), Error);
}

TEST(SlideSparseCpu, SlidLayerEqualsTheDensePrunedLayerBitForBit) {
  // Every pattern, K a multiple of 2N and not (1001, 18), with and without bias, M = 1 and 7.
  std::mt19937_64 rng(2718);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (char const* name : {"2:4", "4:6", "6:8", "8:10", "14:16"}) {
    SparsityPattern const pattern = SparsityPattern::parse(name);
    for (std::int64_t const k : {18, 64, 1001}) {
      for (bool const bias : {false, true}) {
        SCOPED_TRACE(::testing::Message() << name << " K=" << k << " bias=" << bias << " seed 2718");
        std::int64_t const n = 13;
        std::vector<float> w(static_cast<std::size_t>(n * k)), b;
        for (float& v : w) v = normal(rng);
        if (bias) b.assign(static_cast<std::size_t>(n), 0.25f);
        MatrixView view{DType::kF32, n, k, reinterpret_cast<std::byte*>(w.data()), "w"};
        prune_in_place(view, pattern);
        CpuLinear const dense(w, n, k, b);
        CpuLinear const slid = dense.slid(pattern);
        EXPECT_TRUE(slid.is_slid());
        EXPECT_GE(slid.k_stored(), k);  // 2:4 lifts to K itself
        for (std::int64_t const m : {1, 7}) {
          std::vector<float> x(static_cast<std::size_t>(m * k));
          for (float& v : x) v = normal(rng);
          std::vector<float> yd(static_cast<std::size_t>(m * n), -1.0f), ys(yd.size(), -2.0f);
          dense.forward(x.data(), m, yd.data());
          slid.forward(x.data(), m, ys.data());
          ASSERT_EQ(0, std::memcmp(yd.data(), ys.data(), yd.size() * sizeof(float)));
        }
      }
    }
  }
  // An unpruned weight is refused, naming the row and block.
  std::vector<float> full(8 * 16, 1.0f);
  try {
    (void)CpuLinear(full, 8, 16).slid(SparsityPattern::parse("6:8"));
    FAIL() << "a dense weight was slid";
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("row"), std::string::npos) << e.what();
  }
}

TEST(SlideSparseCpu, SlidModelLogitsEqualTheDensePrunedModelBitForBit) {
  for (char const* preset : {"tiny-llama", "tiny-qwen2"}) {
    SCOPED_TRACE(preset);
    ModelWeights w = ModelWeights::random(ModelConfig::preset(preset), 11);
    prune_model(w, SparsityPattern::parse("6:8"));
    ModelWeights slid = w;
    slid.slide_projections(SparsityPattern::parse("6:8"));
    EXPECT_TRUE(slid.layers[0].down.is_slid());
    EXPECT_THROW(prune_model(slid, SparsityPattern::parse("6:8")), Error);
    CpuModel const dense_model(std::move(w)), slid_model(std::move(slid));
    std::vector<int> const t = tokens_of(dense_model.config().vocab, 9);
    Sequence a = dense_model.new_sequence(16), b = slid_model.new_sequence(16);
    std::vector<float> const la = dense_model.forward(a, t, true), lb = slid_model.forward(b, t, true);
    ASSERT_EQ(la.size(), lb.size());
    ASSERT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
  }
}

TEST(Generate, GreedyDecodingFollowsTheArgmaxAndStopsAtTheStopToken) {
  CpuModel const model(ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 21));
  std::vector<int> const prompt = tokens_of(model.config().vocab, 5);
  std::vector<int> const out = greedy_generate(model, prompt, 6);
  ASSERT_EQ(out.size(), 6u);
  // Each new token is the argmax of the logits after everything before it (a full re-run).
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::vector<int> context = prompt;
    context.insert(context.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(i));
    Sequence seq = model.new_sequence(static_cast<std::int64_t>(context.size()));
    std::vector<float> const logits = model.forward(seq, context, false);
    EXPECT_EQ(out[i], static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin())) << i;
  }
  // Stopping at the third generated token keeps the first two.
  std::vector<int> const stopped = greedy_generate(model, prompt, 6, out[2]);
  EXPECT_EQ(stopped, std::vector<int>(out.begin(), out.begin() + (out[0] == out[2] ? 0 : out[1] == out[2] ? 1 : 2)));
  EXPECT_THROW(greedy_generate(model, {}, 3), Error);
}

TEST(Perplexity, PruneModelObeysThePatternAndKeepsEmbeddings) {
  ModelWeights w = ModelWeights::random(ModelConfig::preset("tiny-llama"), 5);
  std::vector<float> const embed = w.embed;
  prune_model(w, SparsityPattern::parse("6:8"));
  EXPECT_EQ(w.embed, embed);
  auto const& g = w.layers[1].gate;
  for (std::int64_t r = 0; r < g.n(); ++r) {
    for (std::int64_t b = 0; b * 8 < g.k(); ++b) {
      int nz = 0;
      for (std::int64_t j = b * 8; j < std::min(g.k(), b * 8 + 8); ++j) nz += g.weight()[static_cast<std::size_t>(r * g.k() + j)] != 0.0f;
      ASSERT_LE(nz, 6);
    }
  }
}

TEST(Perplexity, CalibrationCollectsEveryProjectionInputAndDrivesImportancePruning) {
  ModelWeights const w = ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 6);
  CpuModel const model(w);
  std::vector<int> const t = tokens_of(w.config.vocab, 30);
  ActivationStats const stats = calibrate(model, t, 16);
  EXPECT_EQ(stats.tokens, 30);
  ASSERT_EQ(stats.sum_squares.size(), 2u);
  EXPECT_EQ(stats.sum_squares[1][0].size(), static_cast<std::size_t>(w.config.hidden));
  EXPECT_EQ(stats.sum_squares[1][1].size(), static_cast<std::size_t>(w.config.q_dim()));
  EXPECT_EQ(stats.sum_squares[1][3].size(), static_cast<std::size_t>(w.config.intermediate));
  // Uniform importance ranks like magnitude; real statistics change some choices.
  ActivationStats uniform = stats;
  for (auto& layer : uniform.sum_squares) {
    for (auto& site : layer) std::fill(site.begin(), site.end(), 4.0);
  }
  ModelWeights by_magnitude = w, by_uniform = w, by_importance = w;
  SparsityPattern const p = SparsityPattern::parse("6:8");
  prune_model(by_magnitude, p);
  prune_model(by_uniform, p, &uniform);
  prune_model(by_importance, p, &stats);
  EXPECT_EQ(by_uniform.layers[0].down.weight(), by_magnitude.layers[0].down.weight());
  EXPECT_NE(by_importance.layers[0].down.weight(), by_magnitude.layers[0].down.weight());
  ActivationStats short_stats = stats;
  short_stats.sum_squares.pop_back();
  EXPECT_THROW(prune_model(by_magnitude, p, &short_stats), Error);
}

TEST(Perplexity, SecondOrderPruningUsesEachSitesGramMatrix) {
  ModelWeights const w = ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 7);
  CpuModel const model(w);
  std::vector<int> const t = tokens_of(w.config.vocab, 40);
  ActivationStats const stats = calibrate(model, t, 16, /*gram=*/true);
  ASSERT_EQ(stats.gram.size(), 2u);
  // The Gram matrix of every site is K x K, symmetric, and its diagonal is the sum of squares
  // (the same products in the same token order: equal as doubles).
  for (std::size_t l = 0; l < 2; ++l) {
    for (std::size_t site = 0; site < 4; ++site) {
      std::vector<double> const& s = stats.sum_squares[l][site];
      std::vector<double> const& g = stats.gram[l][site];
      auto const k = static_cast<std::int64_t>(s.size());
      ASSERT_EQ(static_cast<std::int64_t>(g.size()), k * k) << "layer " << l << " site " << site;
      for (std::int64_t a = 0; a < k; ++a) {
        ASSERT_EQ(g[static_cast<std::size_t>(a * k + a)], s[static_cast<std::size_t>(a)]) << "site " << site << " channel " << a;
        for (std::int64_t b = 0; b < a; ++b) {
          ASSERT_EQ(g[static_cast<std::size_t>(a * k + b)], g[static_cast<std::size_t>(b * k + a)]);
        }
      }
    }
  }
  SparsityPattern const p = SparsityPattern::parse("6:8");
  ModelWeights pruned = w, by_importance = w;
  prune_model_second_order(pruned, p, stats);
  prune_model(by_importance, p, &stats);
  for (std::size_t l = 0; l < 2; ++l) {
    LayerWeights const& L = pruned.layers[l];
    for (CpuLinear const* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) {
      std::vector<float> const& wt = lin->weight();
      for (std::int64_t r = 0; r < lin->n(); ++r) {
        for (std::int64_t b = 0; b * 8 < lin->k(); ++b) {
          int nz = 0;
          for (std::int64_t j = b * 8; j < std::min(lin->k(), b * 8 + 8); ++j) nz += wt[static_cast<std::size_t>(r * lin->k() + j)] != 0.0f;
          ASSERT_LE(nz, 6) << "layer " << l << " row " << r << " block " << b;
        }
      }
    }
  }
  // The kept weights absorbed the pruned ones' error: not a mask over the original.
  EXPECT_NE(pruned.layers[0].down.weight(), by_importance.layers[0].down.weight());
  EXPECT_EQ(pruned.embed, w.embed);
  // Statistics without Gram matrices are refused, naming the remedy.
  ActivationStats const plain = calibrate(model, t, 16);
  test::expect_error([&] { prune_model_second_order(pruned, p, plain); }, ErrorKind::kUsage, {"calibrate with gram"});
}

// The sequential procedure spelled out the slow way, through nothing but the public one-pass
// pieces: for each layer and input site in order, calibrate the model as pruned so far and prune
// that one site's projections.
ModelWeights sequential_by_alternation(ModelWeights w, SparsityPattern p, SequentialCriterion criterion,
                                       std::span<int const> tokens, std::int64_t context, double dampening) {
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& L = w.layers[l];
    std::array<std::vector<CpuLinear*>, 4> const sites = {{{&L.q, &L.k, &L.v}, {&L.o}, {&L.gate, &L.up}, {&L.down}}};
    for (std::size_t site = 0; site < 4; ++site) {
      ActivationStats const stats = calibrate(CpuModel(w), tokens, context, criterion == SequentialCriterion::kSecondOrder);
      std::optional<ObsFactor> factor;
      if (criterion == SequentialCriterion::kSecondOrder) factor.emplace(stats.gram[l][site], sites[site].front()->k(), dampening);
      for (CpuLinear* lin : sites[site]) {
        MatrixView const view{DType::kF32, lin->n(), lin->k(), reinterpret_cast<std::byte*>(lin->weight().data()), "w"};
        if (factor) {
          obs_prune_in_place(view, p, *factor);
        } else {
          prune_in_place(view, p, stats.norms(l, site));
        }
      }
    }
  }
  return w;
}

TEST(Perplexity, SequentialPruningEqualsCalibratingThePrunedModelSiteBySite) {
  ModelWeights const w = ModelWeights::random(ModelConfig::preset("tiny-qwen2"), 8);
  std::vector<int> const t = tokens_of(w.config.vocab, 37);  // windows of 16, 16 and 5 tokens
  SparsityPattern const p = SparsityPattern::parse("6:8");
  for (SequentialCriterion const criterion : {SequentialCriterion::kImportance, SequentialCriterion::kSecondOrder}) {
    bool const second = criterion == SequentialCriterion::kSecondOrder;
    SCOPED_TRACE(second ? "second order" : "importance");
    ModelWeights sequential = w;
    std::vector<std::int64_t> progress;
    prune_model_sequential(sequential, p, criterion, t, 16, 0.05, [&](std::int64_t done, std::int64_t total) {
      EXPECT_EQ(total, 2);
      progress.push_back(done);
    });
    EXPECT_EQ(progress, (std::vector<std::int64_t>{1, 2}));
    ModelWeights const expect = sequential_by_alternation(w, p, criterion, t, 16, 0.05);
    // One pass: every site calibrated on the dense model.
    ModelWeights one_pass = w;
    ActivationStats const dense_stats = calibrate(CpuModel(w), t, 16, second);
    if (second) {
      prune_model_second_order(one_pass, p, dense_stats, 0.05);
    } else {
      prune_model(one_pass, p, &dense_stats);
    }
    for (std::size_t l = 0; l < 2; ++l) {
      LayerWeights const& a = sequential.layers[l];
      LayerWeights const& b = expect.layers[l];
      LayerWeights const& c = one_pass.layers[l];
      char const* names[] = {"q", "k", "v", "o", "gate", "up", "down"};
      CpuLinear const* as[] = {&a.q, &a.k, &a.v, &a.o, &a.gate, &a.up, &a.down};
      CpuLinear const* bs[] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
      CpuLinear const* cs[] = {&c.q, &c.k, &c.v, &c.o, &c.gate, &c.up, &c.down};
      for (int i = 0; i < 7; ++i) {
        ASSERT_EQ(as[i]->weight(), bs[i]->weight()) << "layer " << l << " " << names[i];
        // Layer 0's q/k/v read the embeddings' norm, the same in both procedures; everything
        // after them reads inputs that pruning has changed.
        if (l == 0 && i < 3) {
          EXPECT_EQ(as[i]->weight(), cs[i]->weight()) << names[i];
        } else {
          EXPECT_NE(as[i]->weight(), cs[i]->weight()) << "layer " << l << " " << names[i];
        }
      }
    }
  }
  // One window shorter than the context (the caches are sized by the tokens, not the context).
  ModelWeights short_run = w;
  prune_model_sequential(short_run, p, SequentialCriterion::kImportance, std::span(t).first(11), 64);
  ModelWeights const short_expect =
      sequential_by_alternation(w, p, SequentialCriterion::kImportance, std::span(t).first(11), 64, 0.01);
  EXPECT_EQ(short_run.layers[1].down.weight(), short_expect.layers[1].down.weight());
  EXPECT_EQ(short_run.layers[1].q.weight(), short_expect.layers[1].q.weight());
  ModelWeights copy = w;
  std::vector<int> bad = t;
  bad[20] = static_cast<int>(w.config.vocab);
  test::expect_error([&] { prune_model_sequential(copy, p, SequentialCriterion::kImportance, bad, 16); },
                     ErrorKind::kInvalidInput, {"position 20"});
  test::expect_error([&] { prune_model_sequential(copy, p, SequentialCriterion::kImportance, {}, 16); }, ErrorKind::kUsage,
                     {"no calibration tokens"});
}

TEST(Calibrate, ImportanceFileFeedsConvertToTheSamePruningAsEvalPpl) {
  // calibrate -> write_importance -> convert --prune importance must prune exactly as
  // prune_model with the same statistics (the eval ppl path): same masks on the same BF16
  // values, so the converted checkpoint loads to the very weights prune_model produces.
  std::filesystem::path const dir = std::filesystem::temp_directory_path() /
                                    ("slidesparse-calibrate-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  convert::SyntheticSpec spec = convert::synthetic_preset("tiny");
  spec.shards = 1;
  convert::write_synthetic_checkpoint(dir / "in", spec);
  ModelWeights w = load_hf_weights(dir / "in");
  std::vector<int> tokens(150);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 37 + 11) % static_cast<std::size_t>(spec.vocab));
  ActivationStats const stats = calibrate(CpuModel(w), tokens, 64);
  write_importance(stats, w.config, dir / "importance.safetensors", {{"test", "1"}});

  io::SafetensorsFile const file = io::SafetensorsFile::open(dir / "importance.safetensors");
  ASSERT_EQ(file.tensors().size(), static_cast<std::size_t>(7 * spec.layers));
  io::TensorInfo const* down = file.find("model.layers.1.mlp.down_proj.weight");
  ASSERT_NE(down, nullptr);
  std::vector<float> const expect = stats.norms(1, 3);
  ASSERT_EQ(down->shape, std::vector<std::int64_t>{spec.intermediate});
  EXPECT_EQ(std::memcmp(file.bytes(*down).data(), expect.data(), expect.size() * sizeof(float)), 0);

  SparsityPattern const pattern = SparsityPattern::parse("6:8");
  convert::ConvertOptions options;
  options.pattern = pattern;
  options.prune = convert::PruneMethod::kImportance;
  options.importance_file = dir / "importance.safetensors";
  options.progress = false;
  convert::convert_checkpoint(dir / "in", dir / "out", options);
  ModelWeights const converted = load_hf_weights(dir / "out");
  ModelWeights by_magnitude = w;
  prune_model(w, pattern, &stats);
  prune_model(by_magnitude, pattern);
  std::size_t differ_from_magnitude = 0;
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights const& a = w.layers[l];
    LayerWeights const& b = converted.layers[l];
    LayerWeights const& m = by_magnitude.layers[l];
    EXPECT_EQ(a.q.weight(), b.q.weight()) << "layer " << l;
    EXPECT_EQ(a.o.weight(), b.o.weight()) << "layer " << l;
    EXPECT_EQ(a.up.weight(), b.up.weight()) << "layer " << l;
    EXPECT_EQ(a.down.weight(), b.down.weight()) << "layer " << l;
    for (std::size_t i = 0; i < a.down.weight().size(); ++i) differ_from_magnitude += a.down.weight()[i] != m.down.weight()[i];
  }
  // And the importance did change the choice (otherwise the test above proves nothing).
  EXPECT_GT(differ_from_magnitude, 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace slidesparse::runtime
