/// \file model_config.hpp
/// \brief Decoder-only Llama / Qwen2 model configuration: from a Hugging Face config.json or a
/// built-in preset with the real shapes, validated with errors that name the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace slidesparse::runtime {

enum class Architecture { kLlama, kQwen2 };

/// Llama-3 "llama3" RoPE frequency scaling (rope_scaling in config.json); factor 1 = none.
struct RopeScaling {
  bool llama3 = false;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position = 8192;
};

struct ModelConfig {
  std::string name;
  Architecture arch = Architecture::kLlama;
  std::int64_t vocab = 0;
  std::int64_t hidden = 0;
  std::int64_t intermediate = 0;
  std::int64_t layers = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t max_position = 0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_embeddings = false;
  bool qkv_bias = false;  ///< Qwen2: q/k/v projections carry a bias

  /// Parses config.json (model_type llama or qwen2); `source` names it in errors.
  static ModelConfig from_hf_json(nlohmann::json const& config, std::string_view source);
  /// "llama3.2-1b", "llama3.2-3b", "llama3.1-8b", "qwen2.5-7b", "qwen2.5-14b" (real shapes),
  /// and "tiny-llama", "tiny-qwen2" (small shapes for tests). Throws Error(kUsage) listing them.
  static ModelConfig preset(std::string_view name);
  static std::vector<std::string> preset_names();

  /// Throws Error(kInvalidInput) naming the first inconsistent field.
  void validate() const;
  std::int64_t q_dim() const noexcept { return heads * head_dim; }
  std::int64_t kv_dim() const noexcept { return kv_heads * head_dim; }
  /// RoPE inverse frequencies [head_dim / 2], with the Llama-3 scaling applied.
  std::vector<double> rope_inverse_frequencies() const;
};

}  // namespace slidesparse::runtime
