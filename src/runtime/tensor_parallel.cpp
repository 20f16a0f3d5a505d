#include "slidesparse/runtime/tensor_parallel.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::runtime {
namespace {

// Why `ranks` cannot split a row-parallel K, or empty.
std::string row_parallel_problem(std::int64_t k, std::int64_t granule, int ranks, std::optional<SparsityPattern> pattern) {
  if (ranks == 1) return {};
  if (k % (granule * ranks) != 0) {
    return fmt::format("{} input channels ({} units of {}) do not divide into {} equal shards", k, k / granule, granule, ranks);
  }
  std::int64_t const width = k / ranks;
  if (pattern && width % pattern->block() != 0) {
    return fmt::format("{} channels per rank is not a multiple of the {} block {}, so a block would straddle two ranks",
                       width, pattern->to_string(), pattern->block());
  }
  return {};
}

std::string plan_problem(ModelConfig const& c, int ranks, std::optional<SparsityPattern> pattern) {
  if (ranks < 1) return fmt::format("{} ranks", ranks);
  if (c.heads % ranks != 0) {
    return fmt::format("num_attention_heads {} is not a multiple of {} (each rank needs whole query heads)", c.heads, ranks);
  }
  if (c.kv_heads % ranks != 0) {
    return fmt::format("num_key_value_heads {} is not a multiple of {} (each rank needs whole KV heads)", c.kv_heads, ranks);
  }
  if (c.intermediate % ranks != 0) {
    return fmt::format("intermediate_size {} is not a multiple of {}", c.intermediate, ranks);
  }
  if (std::string p = row_parallel_problem(c.q_dim(), c.head_dim, ranks, pattern); !p.empty()) return "o_proj: " + p;
  if (std::string p = row_parallel_problem(c.intermediate, 1, ranks, pattern); !p.empty()) return "down_proj: " + p;
  return {};
}

std::string pattern_name(std::optional<SparsityPattern> pattern) { return pattern ? pattern->to_string() : "dense"; }

// Rows [begin, end) of a row-major [rows, cols] matrix, or columns [begin, end).
std::vector<float> take_rows(std::vector<float> const& m, std::int64_t cols, IndexRange r) {
  return {m.begin() + r.begin * cols, m.begin() + r.end * cols};
}
std::vector<float> take_cols(std::vector<float> const& m, std::int64_t rows, std::int64_t cols, IndexRange r) {
  std::vector<float> out;
  out.reserve(static_cast<std::size_t>(rows * r.size()));
  for (std::int64_t i = 0; i < rows; ++i) out.insert(out.end(), m.begin() + i * cols + r.begin, m.begin() + i * cols + r.end);
  return out;
}
CpuLinear column_shard(CpuLinear const& lin, IndexRange rows) {
  std::vector<float> bias = lin.bias().empty() ? std::vector<float>{}
                                               : std::vector<float>(lin.bias().begin() + rows.begin, lin.bias().begin() + rows.end);
  return CpuLinear(take_rows(lin.weight(), lin.k(), rows), rows.size(), lin.k(), std::move(bias));
}
CpuLinear row_shard(CpuLinear const& lin, IndexRange cols) {
  return CpuLinear(take_cols(lin.weight(), lin.n(), lin.k(), cols), lin.n(), cols.size());
}

}  // namespace

std::vector<IndexRange> split_row_parallel(std::int64_t k, std::int64_t granule, int ranks,
                                           std::optional<SparsityPattern> pattern, std::string_view what) {
  if (ranks < 1 || granule < 1 || k < 1) fail(ErrorKind::kUsage, "{}: cannot split K = {} into {} ranks", what, k, ranks);
  if (std::string const problem = row_parallel_problem(k, granule, ranks, pattern); !problem.empty()) {
    std::vector<int> ok;
    for (int r = 1; r <= 16; ++r) {
      if (row_parallel_problem(k, granule, r, pattern).empty()) ok.push_back(r);
    }
    fail(ErrorKind::kInvalidInput, "{}: cannot split K = {} over {} ranks for {}: {}; rank counts that work: {}", what, k, ranks,
         pattern_name(pattern), problem, fmt::join(ok, ", "));
  }
  std::vector<IndexRange> out;
  std::int64_t const width = k / ranks;
  for (int r = 0; r < ranks; ++r) out.push_back({r * width, (r + 1) * width});
  return out;
}

std::vector<int> valid_tensor_parallel_sizes(ModelConfig const& config, std::optional<SparsityPattern> pattern, int max_ranks) {
  std::vector<int> ok;
  for (int r = 1; r <= max_ranks; ++r) {
    if (plan_problem(config, r, pattern).empty()) ok.push_back(r);
  }
  return ok;
}

TensorParallelPlan plan_tensor_parallel(ModelConfig const& c, int ranks, std::optional<SparsityPattern> pattern) {
  c.validate();
  if (std::string const problem = plan_problem(c, ranks, pattern); !problem.empty()) {
    fail(ErrorKind::kInvalidInput, "{} cannot be split over {} ranks for {}: {}; rank counts that work: {}", c.name, ranks,
         pattern_name(pattern), problem, fmt::join(valid_tensor_parallel_sizes(c, pattern), ", "));
  }
  TensorParallelPlan plan;
  plan.ranks = ranks;
  std::int64_t const h = c.heads / ranks, kv = c.kv_heads / ranks, i = c.intermediate / ranks;
  for (int r = 0; r < ranks; ++r) plan.shards.push_back({{r * h, (r + 1) * h}, {r * kv, (r + 1) * kv}, {r * i, (r + 1) * i}});
  return plan;
}

ModelConfig shard_config(ModelConfig const& config, int ranks) {
  ModelConfig c = config;
  c.heads /= ranks;
  c.kv_heads /= ranks;
  c.intermediate /= ranks;
  c.name = fmt::format("{} (1/{} shard)", config.name, ranks);
  return c;
}

LayerWeights shard_layer(LayerWeights const& layer, ModelConfig const& c, TensorParallelPlan const& plan, int rank) {
  if (rank < 0 || rank >= plan.ranks) fail(ErrorKind::kUsage, "rank {} of {}", rank, plan.ranks);
  RankShard const& s = plan.shards[static_cast<std::size_t>(rank)];
  std::int64_t const d = c.head_dim;
  IndexRange const q{s.heads.begin * d, s.heads.end * d}, kv{s.kv_heads.begin * d, s.kv_heads.end * d};
  LayerWeights out;
  out.attn_norm = layer.attn_norm;
  out.ffn_norm = layer.ffn_norm;
  out.q = column_shard(layer.q, q);
  out.k = column_shard(layer.k, kv);
  out.v = column_shard(layer.v, kv);
  out.o = row_shard(layer.o, q);
  out.gate = column_shard(layer.gate, s.intermediate);
  out.up = column_shard(layer.up, s.intermediate);
  out.down = row_shard(layer.down, s.intermediate);
  return out;
}

}  // namespace slidesparse::runtime
