/// \file tensor_parallel.hpp
/// \brief How a decoder layer is split over R ranks (Megatron-style tensor parallelism), and
/// the rule a (2N-2):2N weight adds: a row-parallel projection may be split along K only where
/// every shard boundary falls on a block boundary (a multiple of L = 2N).
///
///   column-parallel (split N)  qkv: rank r holds query heads [r H/R, (r+1) H/R) and KV heads
///                              [r KV/R, (r+1) KV/R) (whole heads, so attention stays local);
///                              gate/up: intermediate channels [r I/R, (r+1) I/R)
///   row-parallel (split K)     o: input channels = the rank's query heads x head_dim;
///                              down: input channels = the rank's intermediate channels;
///                              each rank's partial output [M, hidden] is summed (all-reduce)
///   replicated                 embeddings, norms, lm_head
/// A row-parallel shard is slid and lifted on its own (its own K', padded to the GEMM's K
/// alignment); this is exact only when the shard starts on a block boundary: otherwise a
/// shard-local block would straddle two of the weight's blocks and could hold more than 2N-2
/// nonzeros. Column-parallel splits never cut a block (blocks run along K).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "slidesparse/core/pattern.hpp"
#include "slidesparse/runtime/cpu_model.hpp"
#include "slidesparse/runtime/model_config.hpp"

namespace slidesparse::runtime {

struct IndexRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t size() const noexcept { return end - begin; }
  bool operator==(IndexRange const&) const = default;
};

/// Equal K shards of a row-parallel weight whose K must split on `granule`-column units (a
/// head's head_dim for o_proj, 1 for down_proj) and, with a pattern, on its blocks. Throws
/// Error(kInvalidInput) naming `what`, K, the shard width and the reason, and listing the rank
/// counts in 1..16 that would work.
std::vector<IndexRange> split_row_parallel(std::int64_t k, std::int64_t granule, int ranks,
                                           std::optional<SparsityPattern> pattern, std::string_view what);

struct RankShard {
  IndexRange heads;         ///< query heads
  IndexRange kv_heads;      ///< key/value heads
  IndexRange intermediate;  ///< MLP channels
};

struct TensorParallelPlan {
  int ranks = 1;
  std::vector<RankShard> shards;  ///< one per rank
};

/// The split of `config` over `ranks` for a pattern (nullopt: dense). Throws Error(kInvalidInput)
/// saying which dimension cannot be split (heads, KV heads, intermediate channels, or o_proj's /
/// down_proj's K on the pattern's blocks) and which rank counts would work.
TensorParallelPlan plan_tensor_parallel(ModelConfig const& config, int ranks, std::optional<SparsityPattern> pattern);

/// Rank counts in 1..max_ranks that plan_tensor_parallel accepts.
std::vector<int> valid_tensor_parallel_sizes(ModelConfig const& config, std::optional<SparsityPattern> pattern,
                                             int max_ranks = 16);

/// Rank `rank`'s part of a layer (dense form): q/k/v/gate/up rows and their biases of its heads
/// and channels, o/down columns of its inputs, norms replicated.
LayerWeights shard_layer(LayerWeights const& layer, ModelConfig const& config, TensorParallelPlan const& plan, int rank);

/// The config one rank sees for its shard (heads, kv_heads and intermediate divided by R).
ModelConfig shard_config(ModelConfig const& config, int ranks);

}  // namespace slidesparse::runtime
