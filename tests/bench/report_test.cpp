#include "slidesparse/bench/report.hpp"

#include <gtest/gtest.h>

#include "slidesparse/bench/presets.hpp"
#include "slidesparse/core/error.hpp"

namespace slidesparse::bench {
namespace {

Measurement row(std::string layer, std::int64_t m, std::string variant, std::string pattern, double us,
                std::string mode = "layer") {
  Measurement x;
  x.model = "toy";
  x.layer = std::move(layer);
  x.n = 64;
  x.k = 64;
  x.m = m;
  x.dtype = "fp8";
  x.mode = std::move(mode);
  x.variant = std::move(variant);
  x.pruned_to = std::move(pattern);
  x.time = {us, us * 0.9, us * 1.2};
  return x;
}

TEST(BenchPresets, ShapesFollowTheModelConfigs) {
  ModelShapes const q = model_shapes("Qwen2.5-7B");
  ASSERT_EQ(q.layers.size(), 4u);
  EXPECT_EQ(q.layers[0].n, 4608);  // (28 + 2 * 4) * 128
  EXPECT_EQ(q.layers[0].k, 3584);
  EXPECT_EQ(q.layers[2].n, 37888);
  EXPECT_EQ(q.layers[3].k, 18944);
  ModelShapes const l = model_shapes("llama3.1-8b");
  EXPECT_EQ(l.layers[0].n, 6144);
  EXPECT_EQ(l.layers[2].n, 28672);
  EXPECT_EQ(model_shapes("llama3.2-1b").layers[0].n, 3072);
  EXPECT_EQ(model_shapes("qwen2.5-14b").layers[0].n, 7168);
  EXPECT_EQ(model_shapes("bitnet-2b").layers[2].n, 13824);
  EXPECT_EQ(model_shapes("square:1000").layers[0].n, 1000);
  EXPECT_EQ(model_shapes("shape:17,33").layers[0].k, 33);
  EXPECT_EQ(model_shapes("shape:17x33").layers[0].n, 17);  // the CLI's form (its lists split at ',')
  EXPECT_EQ(model_shapes("shape:17x33").layers[0].k, 33);
  EXPECT_EQ(model_preset_names().size(), 6u);
  EXPECT_THROW(model_shapes("gpt-5"), Error);
  EXPECT_THROW(model_shapes("shape:17"), Error);
  EXPECT_THROW(model_shapes("square:-3"), Error);
}

TEST(BenchReport, SpeedupEfficiencyAndSums) {
  std::vector<Measurement> const rows = {
      row("a", 64, "dense", "2:4", 100), row("a", 64, "2:4", "2:4", 50),   // 2.0x
      row("b", 64, "dense", "2:4", 300), row("b", 64, "2:4", "2:4", 250),  // 1.2x
      row("a", 64, "dense", "6:8", 100), row("a", 64, "6:8", "6:8", 75),   // 1.333x
      row("b", 64, "dense", "6:8", 300), row("b", 64, "6:8", "6:8", 300),  // 1.0x
  };
  auto const c = compare(rows);
  auto find = [&](std::string const& layer, std::string const& pattern) {
    for (auto const& x : c) {
      if (x.layer == layer && x.pattern == pattern) return x;
    }
    ADD_FAILURE() << "missing " << layer << " " << pattern;
    return Comparison{};
  };
  EXPECT_DOUBLE_EQ(find("a", "2:4").speedup, 2.0);
  // 6:8 on a: (1.333 / 2.0) / (1.333 / 2) = 1: all of its share of the 2:4 gain.
  EXPECT_NEAR(*find("a", "6:8").efficiency_vs_24, 1.0, 1e-12);
  Comparison const sum = find("sum", "2:4");
  EXPECT_DOUBLE_EQ(sum.dense_us, 400);
  EXPECT_DOUBLE_EQ(sum.sparse_us, 300);
  EXPECT_NEAR(find("sum", "6:8").speedup, 400.0 / 375.0, 1e-12);
  EXPECT_NEAR(sum.spread, 0.3, 1e-12);  // (1.2 - 0.9) / 1
}

TEST(BenchReport, TheBaselineIsTheFastestDenseVariant) {
  std::vector<Measurement> const rows = {row("a", 1, "dense", "6:8", 120), row("a", 1, "dense-unfused", "6:8", 100),
                                         row("a", 1, "6:8", "6:8", 110)};
  auto const c = compare(rows);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_DOUBLE_EQ(c[0].dense_us, 100);
  EXPECT_EQ(c[0].dense_variant, "dense-unfused");
}

TEST(BenchReport, TheSparseTimeIsTheFastestSparseBackend) {
  std::vector<Measurement> const rows = {row("a", 1, "dense", "6:8", 120), row("a", 1, "dense-cutlass", "6:8", 100),
                                         row("a", 1, "6:8", "6:8", 110), row("a", 1, "6:8-cutlass", "6:8", 80),
                                         row("a", 1, "4:6-cutlass", "6:8", 10),  // another pattern's: ignored
                                         row("a", 1, "6:8-dispatch", "6:8", 85)};  // reported apart
  auto const c = compare(rows);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_DOUBLE_EQ(c[0].sparse_us, 80);
  ASSERT_TRUE(c[0].dispatch_us);
  EXPECT_DOUBLE_EQ(*c[0].dispatch_us, 85);
  EXPECT_DOUBLE_EQ(c[0].speedup, 1.25);
  EXPECT_EQ(c[0].sparse_variant, "6:8-cutlass");
  EXPECT_EQ(c[0].dense_variant, "dense-cutlass");
  Report report;
  report.measurements = rows;
  EXPECT_NE(to_markdown(report).find("`cutlass/cutlass`"), std::string::npos) << to_markdown(report);
}

TEST(BenchReport, CrossoverIsWhereSparseWinsFromThereOn) {
  std::vector<Measurement> rows;
  // speedups by M: 1: 1.1 (wins), 16: 0.9, 256: 1.05, 4096: 1.2 -> crossover 256 (not 1).
  for (auto [m, s] : {std::pair<std::int64_t, double>{1, 1.1}, {16, 0.9}, {256, 1.05}, {4096, 1.2}}) {
    rows.push_back(row("a", m, "dense", "6:8", 100 * s));
    rows.push_back(row("a", m, "6:8", "6:8", 100));
  }
  auto const c = compare(rows);
  EXPECT_EQ(crossover_m(c, "toy", "a", "fp8", "layer", "6:8"), 256);
  rows.push_back(row("a", 8192, "dense", "6:8", 90));
  rows.push_back(row("a", 8192, "6:8", "6:8", 100));
  EXPECT_FALSE(crossover_m(compare(rows), "toy", "a", "fp8", "layer", "6:8"));
}

TEST(BenchReport, WritesJsonCsvAndMarkdown) {
  Report report;
  report.copy_gbps = 3000;
  report.environment = {{"gpu", "test"}};
  report.measurements = {row("a", 64, "dense", "6:8", 100), row("a", 64, "6:8", "6:8", 80)};
  Measurement q = row("a", 64, "6:8", "6:8", 2, "quant_lift");
  q.bytes = 3e6;  // 3 MB in 2 us = 1500 GB/s = 50 % of copy
  report.measurements.push_back(q);
  auto const json = to_json(report);
  EXPECT_EQ(json["measurements"].size(), 3u);
  EXPECT_NEAR(json["measurements"][2]["fraction_of_copy"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(json["comparisons"][0]["speedup"].get<double>(), 1.25, 1e-12);
  EXPECT_EQ(json["crossover_m"][0]["m"], 64);
  std::string const csv = to_csv(report);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  std::string const md = to_markdown(report);
  EXPECT_NE(md.find("**1.25×**"), std::string::npos) << md;
  EXPECT_NE(md.find("50 %"), std::string::npos) << md;
}

}  // namespace
}  // namespace slidesparse::bench
