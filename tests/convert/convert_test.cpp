// Checkpoint-level pipelines: convert (prune, quantize, pass-through, metadata, atomicity),
// compressed-tensors inputs (W8A8, sparse-24-bitmask), slide_file, verify and inspect.
#include "slidesparse/convert/convert.hpp"

#include <fstream>

#include "common/test_util.hpp"
#include "slidesparse/convert/synthetic.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/quantize.hpp"
#include "slidesparse/core/slide.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::convert {
namespace {

namespace fs = std::filesystem;
using io::HfCheckpoint;

std::vector<std::byte> bytes_of(HfCheckpoint const& ckpt, std::string const& name) {
  io::LogicalTensor const* t = ckpt.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  std::vector<std::byte> out(t->nbytes());
  ckpt.read(*t, out);
  return out;
}

ConvertOptions quiet(char const* pattern) {
  ConvertOptions o;
  o.pattern = SparsityPattern::parse(pattern);
  o.progress = false;
  return o;
}

std::string error_of(std::function<void()> const& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (Error const& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SyntheticSpec spec = synthetic_preset("tiny");
    spec.seed = 77;
    write_synthetic_checkpoint(dir_ / "dense", spec);
    std::ofstream(dir_ / "dense" / "tokenizer.json") << "{\"model\": {}}";
  }
  test::TempDir dir_;
};

TEST_F(ConvertTest, PrunesSelectedWeightsExactlyAndPassesTheRestThrough) {
  auto const report = convert_checkpoint(dir_ / "dense", dir_ / "out", quiet("6:8"));
  EXPECT_EQ(report.tensors.size(), 14u);  // 2 layers x 7 projections
  HfCheckpoint const in = HfCheckpoint::open(dir_ / "dense");
  HfCheckpoint const out = HfCheckpoint::open(dir_ / "out");
  ASSERT_EQ(out.shard_files(), in.shard_files());
  ASSERT_TRUE(out.is_sharded());
  TensorSelection const selection("", "");
  for (auto const& t : in.tensors()) {
    std::vector<std::byte> expected = bytes_of(in, t.name);
    if (selection.selects(t, true)) {
      prune_in_place({t.dtype, t.shape[0], t.shape[1], expected.data(), t.name},
                     SparsityPattern::parse("6:8"));
    }
    EXPECT_EQ(bytes_of(out, t.name), expected) << t.name;
    EXPECT_EQ(out.find(t.name)->dtype, t.dtype);
    EXPECT_EQ(out.find(t.name)->shard, t.shard) << "tensor moved to another shard: " << t.name;
  }
  EXPECT_EQ(out.tensors().size(), in.tensors().size());
  // The record: config.json and every shard's __metadata__.
  auto const& section = out.config()["slidesparse"];
  EXPECT_EQ(section["pattern"], "6:8");
  EXPECT_EQ(section["k_alignment"], 32);
  EXPECT_EQ(section["format"], "pruned-dense");
  EXPECT_EQ(section["tensors"].size(), 14u);
  EXPECT_EQ(section["tensors"]["model.layers.1.mlp.down_proj.weight"]["k"], 688);
  EXPECT_EQ(section["tensors"]["model.layers.1.mlp.down_proj.weight"]["k_lifted"], 1056);  // 86*12 = 1032 -> 1056
  EXPECT_EQ(out.config()["hidden_size"], 256);
  for (std::size_t s = 0; s < out.shard_files().size(); ++s) {
    EXPECT_EQ(nlohmann::json::parse(out.shard(s).metadata().at("slidesparse")), section);
  }
  EXPECT_TRUE(fs::exists(dir_ / "out" / "tokenizer.json"));
  // No staging directory left behind.
  for (auto const& e : fs::directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos) << e.path();
  }
  EXPECT_TRUE(verify_checkpoint(dir_ / "out", std::nullopt, "", "").ok());
}

TEST_F(ConvertTest, QuantizesToW8A8WithPerChannelScales) {
  for (auto [quant, dtype, format] : {std::tuple{QuantTarget::kFp8, DType::kF8E4M3, "float-quantized"},
                                      std::tuple{QuantTarget::kInt8, DType::kI8, "int-quantized"}}) {
    ConvertOptions options = quiet("6:8");
    options.quant = quant;
    options.overwrite = true;
    convert_checkpoint(dir_ / "dense", dir_ / "q", options);
    HfCheckpoint const in = HfCheckpoint::open(dir_ / "dense");
    HfCheckpoint const out = HfCheckpoint::open(dir_ / "q");
    EXPECT_EQ(out.config()["quantization_config"]["format"], format);
    EXPECT_EQ(out.config()["quantization_config"]["quant_method"], "compressed-tensors");
    for (char const* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}) {
      io::LogicalTensor const& src = *in.find(name);
      std::vector<std::byte> pruned = bytes_of(in, name);
      prune_in_place({src.dtype, src.shape[0], src.shape[1], pruned.data(), name}, SparsityPattern::parse("6:8"));
      std::vector<std::byte> codes(static_cast<std::size_t>(src.shape[0] * src.shape[1]));
      std::vector<float> scales(static_cast<std::size_t>(src.shape[0]));
      quantize_weight_per_channel({src.dtype, src.shape[0], src.shape[1], pruned.data(), name},
                                  {dtype, src.shape[0], src.shape[1], codes.data(), name}, scales);
      io::LogicalTensor const* w = out.find(name);
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->dtype, dtype);
      EXPECT_EQ(bytes_of(out, name), codes) << name;
      std::string const scale_name = std::string(name).replace(std::string(name).size() - 6, 6, "weight_scale");
      io::LogicalTensor const* s = out.find(scale_name);
      ASSERT_NE(s, nullptr) << scale_name;
      EXPECT_EQ(s->dtype, DType::kF32);
      EXPECT_EQ(s->shape, (std::vector<std::int64_t>{src.shape[0], 1}));
      EXPECT_EQ(s->shard, w->shard);
      auto const sb = bytes_of(out, scale_name);
      EXPECT_EQ(std::memcmp(sb.data(), scales.data(), sb.size()), 0);
    }
    EXPECT_TRUE(verify_checkpoint(dir_ / "q", std::nullopt, "", "").ok());
  }
}

TEST_F(ConvertTest, KeepsAnExistingW8A8QuantizationAndRefusesToRequantize) {
  ConvertOptions options = quiet("6:8");
  options.quant = QuantTarget::kInt8;
  convert_checkpoint(dir_ / "dense", dir_ / "int8", options);
  // Re-prune the INT8 checkpoint to 4:6: codes are pruned, scales pass through unchanged.
  convert_checkpoint(dir_ / "int8", dir_ / "int8-46", quiet("4:6"));
  HfCheckpoint const a = HfCheckpoint::open(dir_ / "int8");
  HfCheckpoint const b = HfCheckpoint::open(dir_ / "int8-46");
  char const* const w = "model.layers.0.mlp.up_proj.weight";
  EXPECT_EQ(b.find(w)->dtype, DType::kI8);
  EXPECT_EQ(bytes_of(b, "model.layers.0.mlp.up_proj.weight_scale"), bytes_of(a, "model.layers.0.mlp.up_proj.weight_scale"));
  EXPECT_TRUE(verify_checkpoint(dir_ / "int8-46", std::nullopt, "", "").ok());
  ConvertOptions fp8 = quiet("6:8");
  fp8.quant = QuantTarget::kFp8;
  ErrorKind kind{};
  std::string const message = error_of([&] { convert_checkpoint(dir_ / "int8", dir_ / "x", fp8); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUsage);
  EXPECT_NE(message.find("already quantized"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST_F(ConvertTest, ImportancePruningUsesTheGivenChannelScores) {
  HfCheckpoint const in = HfCheckpoint::open(dir_ / "dense");
  TensorSelection const selection("", "");
  std::vector<io::OwnedTensor> importance;
  test::Rng rng(5);
  SCOPED_TRACE(rng.describe());
  std::map<std::string, std::vector<float>> scores;
  for (auto const& t : in.tensors()) {
    if (!selection.selects(t, true)) continue;
    std::vector<float> s(static_cast<std::size_t>(t.shape[1]));
    for (auto& v : s) v = rng.uniform(0.0f, 4.0f);
    scores[t.name] = s;
    io::OwnedTensor o{{t.name, DType::kF32, {t.shape[1]}}, std::vector<std::byte>(s.size() * 4)};
    std::memcpy(o.data.data(), s.data(), o.data.size());
    importance.push_back(std::move(o));
  }
  io::write_safetensors(dir_ / "importance.safetensors", importance);
  ConvertOptions options = quiet("6:8");
  options.prune = PruneMethod::kImportance;
  options.importance_file = dir_ / "importance.safetensors";
  convert_checkpoint(dir_ / "dense", dir_ / "out", options);
  HfCheckpoint const out = HfCheckpoint::open(dir_ / "out");
  for (auto const& [name, s] : scores) {
    io::LogicalTensor const& t = *in.find(name);
    std::vector<std::byte> expected = bytes_of(in, name);
    prune_in_place({t.dtype, t.shape[0], t.shape[1], expected.data(), name}, SparsityPattern::parse("6:8"), s);
    EXPECT_EQ(bytes_of(out, name), expected) << name;
  }
  // Importance changes the choice relative to magnitude pruning.
  convert_checkpoint(dir_ / "dense", dir_ / "magnitude", quiet("6:8"));
  HfCheckpoint const mag = HfCheckpoint::open(dir_ / "magnitude");
  EXPECT_NE(bytes_of(mag, "model.layers.0.mlp.up_proj.weight"), bytes_of(out, "model.layers.0.mlp.up_proj.weight"));
  // A missing vector is named.
  std::vector<io::OwnedTensor> partial(importance.begin() + 1, importance.end());
  io::write_safetensors(dir_ / "partial.safetensors", partial);
  options.importance_file = dir_ / "partial.safetensors";
  std::string const message = error_of([&] { convert_checkpoint(dir_ / "dense", dir_ / "y", options); });
  EXPECT_NE(message.find(importance.front().spec.name), std::string::npos) << message;
}

TEST_F(ConvertTest, FailsCleanlyAndLeavesNothingBehind) {
  // Existing non-empty output: refused, untouched.
  fs::create_directories(dir_ / "taken");
  std::ofstream(dir_ / "taken" / "keep.txt") << "mine";
  ErrorKind kind{};
  error_of([&] { convert_checkpoint(dir_ / "dense", dir_ / "taken", quiet("6:8")); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUsage);
  EXPECT_TRUE(fs::exists(dir_ / "taken" / "keep.txt"));
  // A NaN in the last shard fails the run after earlier shards were written: no output, no
  // staging directory.
  HfCheckpoint const in = HfCheckpoint::open(dir_ / "dense");
  std::string const last_shard = in.shard_files().back();
  std::string victim;
  for (auto const& t : in.tensors()) {
    if (t.shard == in.shard_files().size() - 1 && t.name.ends_with("down_proj.weight")) victim = t.name;
  }
  ASSERT_FALSE(victim.empty());
  std::vector<io::OwnedTensor> tensors;
  for (auto const& t : in.tensors()) {
    if (t.shard != in.shard_files().size() - 1) continue;
    io::OwnedTensor o{{t.name, t.dtype, t.shape}, bytes_of(in, t.name)};
    if (t.name == victim) store<std::uint16_t>(o.data.data() + 2 * (3 * t.shape[1] + 5), 0x7FC0);  // NaN at row 3, col 5
    tensors.push_back(std::move(o));
  }
  io::write_safetensors(dir_ / "dense" / last_shard, tensors);
  std::string const message = error_of([&] { convert_checkpoint(dir_ / "dense", dir_ / "out", quiet("6:8")); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidInput);
  EXPECT_NE(message.find(victim), std::string::npos) << message;
  EXPECT_NE(message.find("row 3, column 5"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  for (auto const& e : fs::directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos) << e.path();
  }
}

TEST_F(ConvertTest, RejectsAnIndexThatDisagreesWithItsShards) {
  nlohmann::json index = io::read_json_file(dir_ / "dense" / "model.safetensors.index.json");
  index["weight_map"]["model.layers.0.mlp.up_proj.weight"] = index["weight_map"]["lm_head.weight"];
  std::ofstream(dir_ / "dense" / "model.safetensors.index.json") << index.dump();
  std::string const message = error_of([&] { HfCheckpoint::open(dir_ / "dense"); });
  EXPECT_NE(message.find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << message;
  index["weight_map"]["x"] = "../evil.safetensors";
  std::ofstream(dir_ / "dense" / "model.safetensors.index.json") << index.dump();
  EXPECT_NE(error_of([&] { HfCheckpoint::open(dir_ / "dense"); }).find("plain"), std::string::npos);
}

// A compressed-tensors sparse-24-bitmask checkpoint, written by hand from a known 2:4 weight.
TEST(Bitmask24, DecodesToTheDenseWeightAndConverts) {
  test::TempDir dir;
  test::Rng rng(24);
  SCOPED_TRACE(rng.describe());
  std::int64_t const rows = 6, cols = 20;  // 20 columns: the bitmask rows have a partial byte
  std::vector<std::uint16_t> dense(static_cast<std::size_t>(rows * cols), 0);
  std::vector<std::uint16_t> kept;
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(rows * 3), 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t g = 0; g < cols / 4; ++g) {
      int const a = rng.uniform_int(0, 3);
      int const b = (a + 1 + rng.uniform_int(0, 2)) % 4;
      for (int j = 0; j < 4; ++j) {
        if (j != a && j != b) continue;
        std::int64_t const c = 4 * g + j;
        dense[static_cast<std::size_t>(r * cols + c)] = float_to_bf16(rng.uniform(0.5f, 2.0f)).bits;
        mask[static_cast<std::size_t>(r * 3 + c / 8)] |= static_cast<std::uint8_t>(1u << (c % 8));
      }
    }
    for (std::int64_t c = 0; c < cols; ++c) {
      if (mask[static_cast<std::size_t>(r * 3 + c / 8)] >> (c % 8) & 1) kept.push_back(dense[static_cast<std::size_t>(r * cols + c)]);
    }
  }
  auto as_bytes = [](auto const& v) {
    std::vector<std::byte> b(v.size() * sizeof(v[0]));
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  std::vector<std::int64_t> const shape_values = {rows, cols};
  std::vector<io::OwnedTensor> tensors = {
      {{"model.layers.0.mlp.up_proj.shape", DType::kI64, {2, 1}}, as_bytes(shape_values)},
      {{"model.layers.0.mlp.up_proj.compressed", DType::kBF16, {rows, cols / 2}}, as_bytes(kept)},
      {{"model.layers.0.mlp.up_proj.bitmask", DType::kU8, {rows, 3}}, as_bytes(mask)},
      {{"model.norm.weight", DType::kBF16, {4}}, std::vector<std::byte>(8, std::byte{1})},
  };
  fs::create_directories(dir / "in");
  io::write_safetensors(dir / "in" / "model.safetensors", tensors);
  nlohmann::json const config = {
      {"model_type", "llama"},
      {"quantization_config", {{"quant_method", "compressed-tensors"},
                               {"sparsity_config", {{"format", "sparse-24-bitmask"}, {"sparsity_structure", "2:4"}}}}}};
  std::ofstream(dir / "in" / "config.json") << config.dump();
  HfCheckpoint const ckpt = HfCheckpoint::open(dir / "in");
  EXPECT_TRUE(ckpt.has_bitmask_sparsity());
  ASSERT_EQ(ckpt.tensors().size(), 2u);
  EXPECT_EQ(bytes_of(ckpt, "model.layers.0.mlp.up_proj.weight"), as_bytes(dense));
  // Row ranges decode from the right offset.
  std::vector<std::byte> rows_2_4(static_cast<std::size_t>(2 * cols * 2));
  ckpt.read_rows(*ckpt.find("model.layers.0.mlp.up_proj.weight"), 2, 4, rows_2_4);
  EXPECT_EQ(std::memcmp(rows_2_4.data(), dense.data() + 2 * cols, rows_2_4.size()), 0);
  // 2:4 already satisfies 6:8: converting prunes nothing and writes the dense weight.
  ConvertOptions options = quiet("6:8");
  auto const report = convert_checkpoint(dir / "in", dir / "out", options);
  ASSERT_EQ(report.tensors.size(), 1u);
  EXPECT_EQ(report.tensors[0].zeroed, 0);
  HfCheckpoint const out = HfCheckpoint::open(dir / "out");
  EXPECT_FALSE(out.has_bitmask_sparsity());
  EXPECT_EQ(bytes_of(out, "model.layers.0.mlp.up_proj.weight"), as_bytes(dense));
  EXPECT_EQ(out.find("model.layers.0.mlp.up_proj.weight")->storage, io::LogicalTensor::Storage::kPlain);

  // Inconsistent triplets are named.
  tensors[2].data[0] = std::byte{0xFF};  // one more bit than values
  io::write_safetensors(dir / "in" / "model.safetensors", tensors);
  EXPECT_NE(error_of([&] { HfCheckpoint::open(dir / "in"); }).find("marks"), std::string::npos);
  tensors[2].data[0] = static_cast<std::byte>(mask[0]);
  tensors[2].data[2] = static_cast<std::byte>(mask[2] | 0x80);  // bit past column 20
  io::write_safetensors(dir / "in" / "model.safetensors", tensors);
  EXPECT_NE(error_of([&] { HfCheckpoint::open(dir / "in"); }).find("past column"), std::string::npos);
}

TEST_F(ConvertTest, SlideFileWritesTheSlidLayoutAndVerifyChecksIt) {
  ConvertOptions options = quiet("6:8");
  options.quant = QuantTarget::kInt8;
  convert_checkpoint(dir_ / "dense", dir_ / "int8", options);
  HfCheckpoint const pruned = HfCheckpoint::open(dir_ / "int8");
  fs::path const shard = dir_ / "int8" / pruned.shard_files()[0];
  SlideFileOptions slide_options;
  slide_options.pattern = SparsityPattern::parse("6:8");
  slide_options.progress = false;
  slide_options.include = kDefaultLinearRegex;
  auto const report = slide_file(shard, dir_ / "slid.safetensors", slide_options);
  ASSERT_FALSE(report.tensors.empty());
  HfCheckpoint const slid = HfCheckpoint::open(dir_ / "slid.safetensors");
  auto const section = nlohmann::json::parse(slid.shard(0).metadata().at("slidesparse"));
  EXPECT_EQ(section["format"], "slid");
  for (auto const& t : report.tensors) {
    io::LogicalTensor const& src = *pruned.find(t.name);
    LiftedShape const shape = lifted_shape(SparsityPattern::parse("6:8"), src.shape[1]);
    std::vector<std::byte> expected(static_cast<std::size_t>(src.shape[0] * shape.k_lifted));
    auto const in = bytes_of(pruned, t.name);
    slide({src.dtype, src.shape[0], src.shape[1], in.data(), t.name}, SparsityPattern::parse("6:8"), shape,
          {src.dtype, src.shape[0], shape.k_lifted, expected.data(), t.name});
    EXPECT_EQ(bytes_of(slid, t.name), expected);
    EXPECT_EQ(section["tensors"][t.name]["k_lifted"], shape.k_lifted);
  }
  // Scales and norms pass through.
  EXPECT_EQ(bytes_of(slid, "model.layers.0.self_attn.q_proj.weight_scale"),
            bytes_of(pruned, "model.layers.0.self_attn.q_proj.weight_scale"));
  auto const ok = verify_checkpoint(dir_ / "slid.safetensors", std::nullopt, "", "");
  EXPECT_TRUE(ok.slid_layout);
  EXPECT_TRUE(ok.ok());
  // A dense weight cannot be slid: the error names tensor, row and block.
  SlideFileOptions dense_options = slide_options;
  HfCheckpoint const dense = HfCheckpoint::open(dir_ / "dense");
  std::string const message = error_of([&] {
    slide_file(dir_ / "dense" / dense.shard_files()[0], dir_ / "bad.safetensors", dense_options);
  });
  EXPECT_NE(message.find("row 0, block 0"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "bad.safetensors"));
}

TEST_F(ConvertTest, VerifyReportsViolationsOfUnprunedWeights) {
  auto const report = verify_checkpoint(dir_ / "dense", SparsityPattern::parse("6:8"), "", "");
  EXPECT_FALSE(report.ok());
  ASSERT_EQ(report.tensors.size(), 14u);
  for (auto const& t : report.tensors) {
    EXPECT_FALSE(t.ok);
    ASSERT_FALSE(t.check.first.empty());
    EXPECT_EQ(t.check.first[0].row, 0);
    EXPECT_EQ(t.check.first[0].block, 0);
    EXPECT_EQ(t.check.first[0].nonzeros, 8);
  }
  // Pruned to 4:6, it also satisfies nothing sparser than 4:6 but does satisfy 14:16.
  convert_checkpoint(dir_ / "dense", dir_ / "p46", quiet("4:6"));
  EXPECT_TRUE(verify_checkpoint(dir_ / "p46", SparsityPattern::parse("4:6"), "", "").ok());
  EXPECT_FALSE(verify_checkpoint(dir_ / "p46", SparsityPattern::parse("2:4"), "", "").ok());
  auto const inspection = inspect_checkpoint(dir_ / "p46");
  int profiled = 0;
  for (auto const& t : inspection) {
    if (t.name == "model.layers.0.self_attn.q_proj.weight") {
      ASSERT_TRUE(t.profile.has_value());
      EXPECT_EQ(t.profile->sparsest()->to_string(), "4:6");
      EXPECT_NEAR(t.profile->zero_fraction(), 1.0 / 3, 0.01);
      ++profiled;
    }
    if (t.name == "model.embed_tokens.weight") {
      EXPECT_FALSE(t.profile->sparsest().has_value());
    }
  }
  EXPECT_EQ(profiled, 1);
  auto const json = inspection_to_json(inspection);
  EXPECT_EQ(json["tensors"].size(), inspection.size());
}

}  // namespace
}  // namespace slidesparse::convert
