/// \file presets.hpp
/// \brief Linear-layer shapes of real models, for benchmarks that need no download.
///
/// Per model the four GEMMs of one decoder layer, as W [N, K] (N output channels, K input):
///   qkv      N = (heads + 2 * kv_heads) * head_dim,  K = hidden
///   o        N = hidden,                             K = heads * head_dim
///   gate_up  N = 2 * intermediate,                   K = hidden
///   down     N = hidden,                             K = intermediate
/// (from each model's config.json: hidden_size, num_attention_heads, num_key_value_heads,
/// head_dim, intermediate_size).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slidesparse::bench {

struct LayerShape {
  std::string name;
  std::int64_t n = 0;
  std::int64_t k = 0;
};

struct ModelShapes {
  std::string name;
  std::vector<LayerShape> layers;
};

/// "llama3.2-1b", "llama3.2-3b", "llama3.1-8b", "qwen2.5-7b", "qwen2.5-14b", "bitnet-2b".
std::vector<std::string> model_preset_names();

/// A preset by name (case-insensitive), "square:K" (one K x K layer) or "shape:NxK" (one
/// custom layer). Throws Error(kUsage) listing the presets for an unknown name.
ModelShapes model_shapes(std::string_view spec);

}  // namespace slidesparse::bench
