// The real model the accuracy work uses (SmolLM2-135M-Instruct, Q4_1 GGUF, installed by
// scripts/setup.sh into .deps/models/): config, tokenizer and a greedy next token through the
// CPU reference model. Skips, naming the path, when the file is absent.
#include "slidesparse/runtime/gguf_loader.hpp"
#include "slidesparse/runtime/perplexity.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

namespace slidesparse::runtime {
namespace {

std::filesystem::path model_path() {
  if (char const* env = std::getenv("SLIDESPARSE_SMOLLM2_GGUF"); env && *env) return env;
  // tests/runtime/<this file> -> <source root>/.deps/models/...
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / ".deps" / "models" /
         "SmolLM2-135M-Instruct.Q4_1.gguf";
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(model_path())) GTEST_SKIP() << "model file absent: " << model_path() << " (scripts/setup.sh installs it)";
  }
};

TEST_F(SmolLM2, ConfigAndTokenizerComeFromTheFile) {
  io::GgufFile const f = io::GgufFile::open(model_path());
  ModelConfig const c = gguf_model_config(f);
  EXPECT_EQ(c.layers, 30);
  EXPECT_EQ(c.hidden, 576);
  EXPECT_EQ(c.intermediate, 1536);
  EXPECT_EQ(c.heads, 9);
  EXPECT_EQ(c.kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab, 49152);
  BpeTokenizer const tok(gguf_tokenizer_data(f));
  std::vector<int> const ids = tok.encode("Hello world! 123", {.add_special = false});
  EXPECT_EQ(ids, (std::vector<int>{19556, 905, 17, 216, 33, 34, 35}));
  EXPECT_EQ(tok.decode(ids), "Hello world! 123");
}

TEST_F(SmolLM2, GreedyNextTokenIsSensible) {
  io::GgufFile const f = io::GgufFile::open(model_path());
  BpeTokenizer const tok(gguf_tokenizer_data(f));
  CpuModel const model(load_gguf_weights(f));
  // A wrong RoPE layout, norm or head mapping turns this into noise; a working model knows it.
  std::vector<int> const prompt = tok.encode("The capital of France is", {.add_special = false});
  Sequence seq = model.new_sequence(64);
  std::vector<float> const logits = model.forward(seq, prompt, false);
  int const best = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::string const word = tok.decode(std::vector<int>{best});
  std::printf("  'The capital of France is' -> '%s' (id %d)\n", word.c_str(), best);
  EXPECT_EQ(word, " Paris");
}

TEST_F(SmolLM2, PerplexityOfPlainEnglishIsLow) {
  // The greedy " Paris" survives some layout bugs (a wrong RoPE row order still rotates q and k
  // alike); the perplexity of ordinary prose does not: 22.7 here, 83 with llama.cpp's q/k row
  // order left in place (on WikiText, 18.9 vs 291).
  io::GgufFile const f = io::GgufFile::open(model_path());
  BpeTokenizer const tok(gguf_tokenizer_data(f));
  CpuModel const model(load_gguf_weights(f));
  std::string const text =
      "The city lies on a wide river that flows slowly to the sea. In the summer, many people walk along "
      "the banks in the evening, and small boats carry visitors from one bridge to the next. The old market "
      "square is surrounded by houses with red roofs, and on Saturdays farmers sell fruit, bread and cheese "
      "there. Most of the children in the city go to school by bicycle, even when it rains.";
  std::vector<int> const ids = tok.encode(text, {.add_special = false});
  double const ppl = perplexity(model, ids, {256, 256}).perplexity();
  std::printf("  perplexity of the test paragraph (%zu tokens): %.2f\n", ids.size(), ppl);
  EXPECT_LT(ppl, 40.0);
}

TEST_F(SmolLM2, GreedyGenerationContinuesSensibly) {
  io::GgufFile const f = io::GgufFile::open(model_path());
  BpeTokenizer const tok(gguf_tokenizer_data(f));
  CpuModel const model(load_gguf_weights(f));
  std::vector<int> const prompt = tok.encode("The capital of France is", {.add_special = false});
  std::vector<int> const out = greedy_generate(model, prompt, 4, tok.eos());
  ASSERT_FALSE(out.empty());
  std::string const text = tok.decode(out);
  std::printf("  'The capital of France is' -> '%s'\n", text.c_str());
  EXPECT_EQ(text.rfind(" Paris", 0), 0u) << text;
}

TEST_F(SmolLM2, SlideSparsePathGivesTheDensePrunedLogitsBitForBit) {
  // Issue 6's losslessness claim on the real model: pruned to 6:8 (magnitude), the SlideSparse
  // path (slid W', lifted x) and the dense path on the pruned weights give identical logits.
  io::GgufFile const f = io::GgufFile::open(model_path());
  BpeTokenizer const tok(gguf_tokenizer_data(f));
  ModelWeights w = load_gguf_weights(f);
  prune_model(w, SparsityPattern::parse("6:8"));
  ModelWeights slid = w;
  slid.slide_projections(SparsityPattern::parse("6:8"));
  CpuModel const dense_model(std::move(w)), slid_model(std::move(slid));
  std::vector<int> const ids = tok.encode("The city lies on a wide river that flows slowly", {.add_special = false});
  Sequence a = dense_model.new_sequence(32), b = slid_model.new_sequence(32);
  std::vector<float> const la = dense_model.forward(a, ids, true), lb = slid_model.forward(b, ids, true);
  ASSERT_EQ(la.size(), lb.size());
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
}

}  // namespace
}  // namespace slidesparse::runtime
