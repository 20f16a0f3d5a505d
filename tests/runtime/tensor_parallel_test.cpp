// Tensor-parallel sharding arithmetic (runtime/tensor_parallel.hpp): which rank counts split a
// model for a pattern, the errors that say why not, and a layer split into R row-parallel
// shards inside one process: each shard slid and lifted on its own, INT8 partial sums added,
// equal to the unsplit layer exactly.
#include "slidesparse/runtime/tensor_parallel.hpp"

#include <cstring>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/slide.hpp"

namespace slidesparse::runtime {
namespace {

std::string error_of(auto&& f) {
  try {
    f();
  } catch (Error const& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TensorParallel, RankCountsOfThePresets) {
  ModelConfig const qwen7 = ModelConfig::preset("qwen2.5-7b"), qwen14 = ModelConfig::preset("qwen2.5-14b");
  ModelConfig const llama8 = ModelConfig::preset("llama3.1-8b");
  SparsityPattern const p68 = SparsityPattern::parse("6:8"), p46 = SparsityPattern::parse("4:6");
  // Qwen2.5-7B: 28 heads, 4 KV heads -> 1, 2, 4; 4:6 cannot split o_proj (1792 = 298 blocks of 6 + 4).
  EXPECT_EQ(valid_tensor_parallel_sizes(qwen7, std::nullopt), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(valid_tensor_parallel_sizes(qwen7, p68), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(valid_tensor_parallel_sizes(qwen7, p46), (std::vector<int>{1}));
  // Qwen2.5-14B: 40 heads, 8 KV heads, 13824 channels; 6:8 keeps every split of the dense model.
  EXPECT_EQ(valid_tensor_parallel_sizes(qwen14, std::nullopt), (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(valid_tensor_parallel_sizes(qwen14, p68), (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(valid_tensor_parallel_sizes(llama8, p68), (std::vector<int>{1, 2, 4, 8}));

  std::string const kv = error_of([&] { plan_tensor_parallel(qwen7, 7, p68); });  // 28 heads split, 4 KV heads do not
  EXPECT_NE(kv.find("num_key_value_heads 4 is not a multiple of 7"), std::string::npos) << kv;
  EXPECT_NE(kv.find("rank counts that work: 1, 2, 4"), std::string::npos) << kv;
  std::string const o = error_of([&] { plan_tensor_parallel(qwen7, 2, p46); });
  EXPECT_NE(o.find("o_proj: 1792 channels per rank is not a multiple of the 4:6 block 6"), std::string::npos) << o;
  EXPECT_NE(o.find("rank counts that work: 1"), std::string::npos) << o;

  TensorParallelPlan const plan = plan_tensor_parallel(qwen14, 4, p68);
  ASSERT_EQ(plan.shards.size(), 4u);
  EXPECT_EQ(plan.shards[3].heads, (IndexRange{30, 40}));
  EXPECT_EQ(plan.shards[3].kv_heads, (IndexRange{6, 8}));
  EXPECT_EQ(plan.shards[1].intermediate, (IndexRange{3456, 6912}));
  ModelConfig const shard = shard_config(qwen14, 4);
  EXPECT_EQ(shard.heads, 10);
  EXPECT_EQ(shard.kv_heads, 2);
  EXPECT_EQ(shard.intermediate, 3456);
}

// acc [M, N] = x [M, K] * W [N, K]^T over INT8 codes, exactly (int64).
std::vector<std::int64_t> int_gemm(test::OwnedMatrix const& x, test::OwnedMatrix const& w) {
  std::vector<std::int64_t> acc(static_cast<std::size_t>(x.rows * w.rows), 0);
  for (std::int64_t m = 0; m < x.rows; ++m) {
    for (std::int64_t n = 0; n < w.rows; ++n) {
      std::int64_t s = 0;
      for (std::int64_t k = 0; k < x.cols; ++k) s += std::int64_t{x.get<std::int8_t>(m, k)} * w.get<std::int8_t>(n, k);
      acc[static_cast<std::size_t>(m * w.rows + n)] = s;
    }
  }
  return acc;
}

test::OwnedMatrix columns(test::OwnedMatrix const& a, IndexRange r) {
  test::OwnedMatrix out(a.dtype, a.rows, r.size());
  for (std::int64_t i = 0; i < a.rows; ++i) {
    for (std::int64_t c = r.begin; c < r.end; ++c) out.set<std::int8_t>(i, c - r.begin, a.get<std::int8_t>(i, c));
  }
  return out;
}

TEST(TensorParallel, RowParallelShardsSlidOnTheirOwnSumToTheLayerExactly) {
  // Every pattern; K from one block per rank to many, plus K not a multiple of the block (the
  // last rank's shard ends in a partial block); 1..4 ranks.
  test::Rng rng(20261125);
  SCOPED_TRACE(rng.describe());
  for (int half = 2; half <= 16; ++half) {
    SparsityPattern const pattern = SparsityPattern::from_half_block(half);
    int const L = pattern.block();
    for (int ranks = 1; ranks <= 4; ++ranks) {
      for (std::int64_t k : {std::int64_t{L} * ranks, std::int64_t{L} * ranks * 3 + (ranks == 1 ? 5 : 0),
                             std::int64_t{L} * ranks * 7}) {
        SCOPED_TRACE(pattern.to_string() + " ranks " + std::to_string(ranks) + " K " + std::to_string(k));
        std::int64_t const N = 13, M = 7;
        test::OwnedMatrix w(DType::kI8, N, k), x(DType::kI8, M, k);
        for (std::int64_t i = 0; i < N; ++i) {
          for (std::int64_t c = 0; c < k; ++c) w.set<std::int8_t>(i, c, static_cast<std::int8_t>(rng.uniform_int(-127, 127)));
        }
        for (std::int64_t i = 0; i < M; ++i) {
          for (std::int64_t c = 0; c < k; ++c) x.set<std::int8_t>(i, c, static_cast<std::int8_t>(rng.uniform_int(-127, 127)));
        }
        prune_in_place(w.view("w"), pattern);
        std::vector<std::int64_t> const full = int_gemm(x, w);
        std::vector<std::int64_t> sum(full.size(), 0);
        for (IndexRange const& r : split_row_parallel(k, 1, ranks, pattern, "test")) {
          test::OwnedMatrix const wr = columns(w, r), xr = columns(x, r);
          LiftedShape const shape = lifted_shape(pattern, r.size());
          test::OwnedMatrix wl(DType::kI8, N, shape.k_lifted), xl(DType::kI8, M, shape.k_lifted);
          slide(wr.cview("w shard"), pattern, shape, wl.view("w' shard"));
          lift(xr.cview("x shard"), ActivationLayout::slid(pattern, r.size()), xl.view("x' shard"));
          std::vector<std::int64_t> const part = int_gemm(xl, wl);
          for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];
        }
        ASSERT_EQ(sum, full);
      }
    }
  }
}

TEST(TensorParallel, AShardBoundaryInsideABlockBreaksThePatternAndIsRefused) {
  // 6:8, K = 24 over 2 ranks: the boundary at column 12 is inside block 1. With nonzeros at
  // 10..15 (block 1) and 16..21 (block 2) the weight obeys 6:8, but rank 1's first local block
  // (columns 12..19) holds 8 nonzeros: sliding that shard must fail, and the planner refuses.
  SparsityPattern const pattern = SparsityPattern::parse("6:8");
  test::OwnedMatrix w(DType::kI8, 1, 24);
  for (int c = 10; c < 22; ++c) w.set<std::int8_t>(0, c, 1);
  LiftedShape const whole = lifted_shape(pattern, 24);
  test::OwnedMatrix wl(DType::kI8, 1, whole.k_lifted);
  EXPECT_NO_THROW(slide(w.cview(), pattern, whole, wl.view()));
  test::OwnedMatrix const shard = columns(w, {12, 24});
  LiftedShape const local = lifted_shape(pattern, 12);
  test::OwnedMatrix sl(DType::kI8, 1, local.k_lifted);
  EXPECT_THROW(slide(shard.cview(), pattern, local, sl.view()), Error);
  std::string const refused = error_of([&] { split_row_parallel(24, 1, 2, pattern, "down_proj"); });
  EXPECT_NE(refused.find("down_proj: cannot split K = 24 over 2 ranks for 6:8: 12 channels per rank is not a multiple of "
                         "the 6:8 block 8"), std::string::npos) << refused;
  EXPECT_NE(refused.find("rank counts that work: 1, 3"), std::string::npos) << refused;
  EXPECT_EQ(split_row_parallel(24, 1, 2, std::nullopt, "down_proj").size(), 2u);  // dense: any even split
}

TEST(TensorParallel, ShardedLayerReproducesTheFullProjections) {
  // Column shards are whole rows: each rank's q/k/v/gate/up outputs are the full layer's
  // columns bit for bit. Row shards: the ranks' o/down outputs sum to the full output (float
  // sums in another order: within a few ulps of the magnitudes involved).
  ModelConfig const c = ModelConfig::preset("tiny-qwen2");  // 6 heads, 2 KV heads, 80 channels
  ModelWeights const w = ModelWeights::random(c, 9);
  LayerWeights const& full = w.layers[1];
  TensorParallelPlan const plan = plan_tensor_parallel(c, 2, std::nullopt);
  test::Rng rng(9);
  std::int64_t const M = 3;
  std::vector<float> a(static_cast<std::size_t>(M * c.hidden)), act(static_cast<std::size_t>(M * c.intermediate)),
      attn(static_cast<std::size_t>(M * c.q_dim()));
  for (float& v : a) v = rng.normal();
  for (float& v : act) v = rng.normal();
  for (float& v : attn) v = rng.normal();
  auto run = [&](CpuLinear const& lin, std::vector<float> const& x) {
    std::vector<float> y(static_cast<std::size_t>(M * lin.n()));
    lin.forward(x.data(), M, y.data());
    return y;
  };
  std::vector<float> const q = run(full.q, a), o = run(full.o, attn), down = run(full.down, act);
  std::vector<double> o_sum(o.size(), 0.0), down_sum(down.size(), 0.0);
  for (int r = 0; r < plan.ranks; ++r) {
    LayerWeights const s = shard_layer(full, c, plan, r);
    RankShard const& rs = plan.shards[static_cast<std::size_t>(r)];
    std::vector<float> const qr = run(s.q, a);
    std::int64_t const q0 = rs.heads.begin * c.head_dim, qn = s.q.n();
    for (std::int64_t m = 0; m < M; ++m) {
      for (std::int64_t j = 0; j < qn; ++j) {
        ASSERT_EQ(qr[static_cast<std::size_t>(m * qn + j)], q[static_cast<std::size_t>(m * c.q_dim() + q0 + j)]) << "rank " << r;
      }
    }
    auto cols = [&](std::vector<float> const& x, std::int64_t width, IndexRange range) {
      std::vector<float> out;
      for (std::int64_t m = 0; m < M; ++m) out.insert(out.end(), x.begin() + m * width + range.begin, x.begin() + m * width + range.end);
      return out;
    };
    std::vector<float> const orr = run(s.o, cols(attn, c.q_dim(), {q0, q0 + qn}));
    std::vector<float> const dr = run(s.down, cols(act, c.intermediate, rs.intermediate));
    for (std::size_t i = 0; i < o.size(); ++i) o_sum[i] += orr[i];
    for (std::size_t i = 0; i < down.size(); ++i) down_sum[i] += dr[i];
    EXPECT_EQ(s.k.bias().size(), static_cast<std::size_t>(c.kv_dim() / 2));
  }
  for (std::size_t i = 0; i < o.size(); ++i) EXPECT_NEAR(o_sum[i], o[i], 1e-5) << i;
  for (std::size_t i = 0; i < down.size(); ++i) EXPECT_NEAR(down_sum[i], down[i], 1e-5) << i;
}

}  // namespace
}  // namespace slidesparse::runtime
