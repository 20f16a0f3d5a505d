// Loading Hugging Face directories into the CPU model: the synthetic Llama checkpoint, the same
// after `convert` to 6:8 W8A8 (codes * per-channel scales), and clear errors for missing tensors.
#include "slidesparse/runtime/hf_loader.hpp"

#include <cmath>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/convert/convert.hpp"
#include "slidesparse/convert/synthetic.hpp"
#include "slidesparse/core/numeric.hpp"

namespace slidesparse::runtime {
namespace {

std::vector<float> run(ModelWeights w, std::vector<int> const& tokens) {
  CpuModel const model(std::move(w));
  Sequence s = model.new_sequence(static_cast<std::int64_t>(tokens.size()));
  return model.forward(s, tokens, false);
}

TEST(HfLoader, LoadsTheSyntheticLlamaAndItsW8A8Conversion) {
  test::TempDir dir;
  convert::SyntheticSpec spec;  // tiny: hidden 256, 2 layers, 4 heads / 2 KV heads, BF16, 2 shards
  convert::write_synthetic_checkpoint(dir / "dense", spec);
  ModelWeights const dense = load_hf_weights(dir / "dense");
  EXPECT_EQ(dense.config.hidden, spec.hidden);
  EXPECT_EQ(dense.config.kv_heads, spec.kv_heads);
  EXPECT_EQ(dense.layers.size(), 2u);
  // Values are the stored BF16 values.
  io::HfCheckpoint const ck = io::HfCheckpoint::open(dir / "dense");
  io::LogicalTensor const& q = *ck.find("model.layers.1.self_attn.q_proj.weight");
  std::vector<std::byte> raw(q.nbytes());
  ck.read(q, raw);
  EXPECT_EQ(dense.layers[1].q.weight()[77], bf16_to_float(bf16_t{load<std::uint16_t>(raw.data() + 2 * 77)}));

  convert::ConvertOptions options;
  options.quant = convert::QuantTarget::kInt8;
  options.progress = false;
  convert::convert_checkpoint(dir / "dense", dir / "int8", options);
  ModelWeights const int8 = load_hf_weights(dir / "int8");
  io::HfCheckpoint const ck8 = io::HfCheckpoint::open(dir / "int8");
  io::LogicalTensor const& codes = *ck8.find("model.layers.0.mlp.down_proj.weight");
  io::LogicalTensor const& scales = *ck8.find("model.layers.0.mlp.down_proj.weight_scale");
  std::vector<std::byte> c(codes.nbytes()), s(scales.nbytes());
  ck8.read(codes, c);
  ck8.read(scales, s);
  std::int64_t const k = spec.intermediate, row = 3, col = 5;
  float const expected = static_cast<float>(load<std::int8_t>(c.data() + row * k + col)) * load<float>(s.data() + 4 * row);
  EXPECT_EQ(int8.layers[0].down.weight()[static_cast<std::size_t>(row * k + col)], expected);
  // 6:8: every block of 8 input channels keeps at most 6 nonzeros.
  auto const& w = int8.layers[0].down.weight();
  for (std::int64_t b = 0; b < k / 8; ++b) {
    int nonzeros = 0;
    for (std::int64_t j = 0; j < 8; ++j) nonzeros += w[static_cast<std::size_t>(row * k + b * 8 + j)] != 0.0f;
    ASSERT_LE(nonzeros, 6) << "block " << b;
  }
  std::vector<int> const tokens = {1, 17, 300, 5, 511};
  for (float x : run(dense, tokens)) ASSERT_TRUE(std::isfinite(x));
  for (float x : run(int8, tokens)) ASSERT_TRUE(std::isfinite(x));
}

TEST(HfLoader, NamesMissingTensorsAndBadConfigs) {
  test::TempDir dir;
  convert::SyntheticSpec spec;
  spec.shards = 1;
  convert::write_synthetic_checkpoint(dir / "m", spec);
  nlohmann::json config = io::read_json_file(dir / "m" / "config.json");
  config["num_hidden_layers"] = 3;
  io::write_text_file_atomic(dir / "m" / "config.json", config.dump());
  try {
    load_hf_weights(dir / "m");
    FAIL();
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("'model.layers.2.input_layernorm.weight' is missing"), std::string::npos) << e.what();
  }
  config["num_hidden_layers"] = 2;
  config["intermediate_size"] = 700;
  io::write_text_file_atomic(dir / "m" / "config.json", config.dump());
  try {
    load_hf_weights(dir / "m");
    FAIL();
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("gate_proj.weight' has shape [688, 256], the config needs [700, 256]"), std::string::npos)
        << e.what();
  }
  config["model_type"] = "mistral";
  io::write_text_file_atomic(dir / "m" / "config.json", config.dump());
  EXPECT_THROW(load_hf_weights(dir / "m"), Error);
}

}  // namespace
}  // namespace slidesparse::runtime
