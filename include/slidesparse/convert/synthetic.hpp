/// \file synthetic.hpp
/// \brief Synthetic Llama-shaped Hugging Face checkpoints with random weights, so the tools can
/// be exercised and benchmarked without a download.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::convert {

struct SyntheticSpec {
  std::int64_t hidden = 256;
  std::int64_t intermediate = 688;  ///< 688 = 16 * 43: not a multiple of 32
  std::int64_t layers = 2;
  std::int64_t heads = 4;
  std::int64_t kv_heads = 2;
  std::int64_t vocab = 512;
  DType dtype = DType::kBF16;
  int shards = 2;  ///< > 1 writes model-0000i-of-0000n.safetensors + index
  std::uint64_t seed = 1;
  bool tie_embeddings = false;

  std::uint64_t parameter_count() const;
};

/// Named presets: "tiny" (CI-sized, < 2 MB) and "bench-1gb" (~1.2 GB of BF16, for the convert
/// benchmark). Throws Error(kUsage) for an unknown name, listing the known ones.
SyntheticSpec synthetic_preset(std::string const& name);

/// Writes config.json (LlamaForCausalLM), the safetensors shard(s) and, when sharded, the
/// index. Weights are uniform in [-0.05, 0.05) from a counter-based generator seeded by `seed`
/// (reproducible, fast, and free of exact zeros except by chance), norms are 1.
void write_synthetic_checkpoint(std::filesystem::path const& dir, SyntheticSpec const& spec);

}  // namespace slidesparse::convert
