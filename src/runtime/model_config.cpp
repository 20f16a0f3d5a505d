#include "slidesparse/runtime/model_config.hpp"

#include <cmath>
#include <numbers>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::runtime {
namespace {

std::int64_t require_int(nlohmann::json const& j, char const* key, std::string_view source) {
  auto const it = j.find(key);
  if (it == j.end() || !it->is_number_integer() || it->get<std::int64_t>() <= 0) {
    fail(ErrorKind::kInvalidInput, "{}: '{}' must be a positive integer{}", source, key,
         it == j.end() ? " (missing)" : fmt::format(" (got {})", it->dump()));
  }
  return it->get<std::int64_t>();
}

double number_or(nlohmann::json const& j, char const* key, double fallback, std::string_view source) {
  auto const it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail(ErrorKind::kInvalidInput, "{}: '{}' must be a number (got {})", source, key, it->dump());
  return it->get<double>();
}

struct Preset {
  char const* name;
  Architecture arch;
  std::int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, max_position;
  double rms_eps, rope_theta;
  bool llama3_rope, tie, qkv_bias;
};

// Values of each model's published config.json (Llama-3.x: rope_scaling llama3, factor 32 for
// 3.2 and 8 for 3.1, low 1, high 4, original 8192).
constexpr Preset kPresets[] = {
    {"llama3.2-1b", Architecture::kLlama, 128256, 2048, 8192, 16, 32, 8, 64, 131072, 1e-5, 500000.0, true, true, false},
    {"llama3.2-3b", Architecture::kLlama, 128256, 3072, 8192, 28, 24, 8, 128, 131072, 1e-5, 500000.0, true, true, false},
    {"llama3.1-8b", Architecture::kLlama, 128256, 4096, 14336, 32, 32, 8, 128, 131072, 1e-5, 500000.0, true, false, false},
    {"qwen2.5-7b", Architecture::kQwen2, 152064, 3584, 18944, 28, 28, 4, 128, 32768, 1e-6, 1000000.0, false, false, true},
    {"qwen2.5-14b", Architecture::kQwen2, 152064, 5120, 13824, 48, 40, 8, 128, 32768, 1e-5, 1000000.0, false, false, true},
    {"tiny-llama", Architecture::kLlama, 97, 64, 96, 2, 4, 2, 16, 256, 1e-5, 10000.0, true, false, false},
    {"tiny-qwen2", Architecture::kQwen2, 101, 48, 80, 2, 6, 2, 8, 256, 1e-6, 10000.0, false, true, true},
};

}  // namespace

ModelConfig ModelConfig::from_hf_json(nlohmann::json const& j, std::string_view source) {
  if (!j.is_object()) fail(ErrorKind::kInvalidInput, "{}: config must be a JSON object", source);
  std::string const type = j.value("model_type", "");
  ModelConfig c;
  if (type == "llama") {
    c.arch = Architecture::kLlama;
  } else if (type == "qwen2") {
    c.arch = Architecture::kQwen2;
    c.qkv_bias = true;
  } else {
    fail(ErrorKind::kInvalidInput, "{}: model_type '{}' is not supported (llama, qwen2)", source, type);
  }
  c.name = j.value("_name_or_path", std::string(source));
  c.vocab = require_int(j, "vocab_size", source);
  c.hidden = require_int(j, "hidden_size", source);
  c.intermediate = require_int(j, "intermediate_size", source);
  c.layers = require_int(j, "num_hidden_layers", source);
  c.heads = require_int(j, "num_attention_heads", source);
  c.kv_heads = j.contains("num_key_value_heads") ? require_int(j, "num_key_value_heads", source) : c.heads;
  c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? require_int(j, "head_dim", source) : c.hidden / c.heads;
  c.max_position = j.contains("max_position_embeddings") ? require_int(j, "max_position_embeddings", source) : 4096;
  c.rms_eps = number_or(j, "rms_norm_eps", 1e-6, source);
  c.rope_theta = number_or(j, "rope_theta", 10000.0, source);
  c.tie_embeddings = j.value("tie_word_embeddings", false);
  if (j.contains("attention_bias") && j["attention_bias"].is_boolean()) c.qkv_bias = j["attention_bias"].get<bool>();
  if (auto const it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    std::string const kind = it->value("rope_type", it->value("type", ""));
    if (kind == "llama3") {
      c.rope_scaling.llama3 = true;
      c.rope_scaling.factor = number_or(*it, "factor", 1.0, source);
      c.rope_scaling.low_freq_factor = number_or(*it, "low_freq_factor", 1.0, source);
      c.rope_scaling.high_freq_factor = number_or(*it, "high_freq_factor", 4.0, source);
      c.rope_scaling.original_max_position =
          static_cast<std::int64_t>(number_or(*it, "original_max_position_embeddings", 8192, source));
    } else if (!kind.empty() && kind != "default") {
      fail(ErrorKind::kInvalidInput, "{}: rope_scaling type '{}' is not supported (llama3)", source, kind);
    }
  }
  c.validate();
  return c;
}

std::vector<std::string> ModelConfig::preset_names() {
  std::vector<std::string> names;
  for (Preset const& p : kPresets) names.emplace_back(p.name);
  return names;
}

ModelConfig ModelConfig::preset(std::string_view name) {
  for (Preset const& p : kPresets) {
    if (name == p.name) {
      ModelConfig c;
      c.name = p.name;
      c.arch = p.arch;
      c.vocab = p.vocab, c.hidden = p.hidden, c.intermediate = p.intermediate, c.layers = p.layers;
      c.heads = p.heads, c.kv_heads = p.kv_heads, c.head_dim = p.head_dim, c.max_position = p.max_position;
      c.rms_eps = p.rms_eps, c.rope_theta = p.rope_theta, c.tie_embeddings = p.tie, c.qkv_bias = p.qkv_bias;
      if (p.llama3_rope) {
        c.rope_scaling.llama3 = true;
        c.rope_scaling.factor = std::string_view(p.name).starts_with("llama3.1") ? 8.0 : 32.0;
      }
      c.validate();
      return c;
    }
  }
  fail(ErrorKind::kUsage, "unknown model preset '{}': use one of {}", name, fmt::join(preset_names(), ", "));
}

void ModelConfig::validate() const {
  auto bad = [&](std::string_view what) { fail(ErrorKind::kInvalidInput, "model config {}: {}", name, what); };
  if (vocab <= 0 || hidden <= 0 || intermediate <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || head_dim <= 0) {
    bad("every size must be positive");
  }
  if (heads % kv_heads != 0) bad(fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}", heads, kv_heads));
  if (head_dim % 2 != 0) bad(fmt::format("head_dim {} must be even (RoPE rotates pairs)", head_dim));
  if (!(rms_eps > 0) || !(rope_theta > 0)) bad("rms_norm_eps and rope_theta must be positive");
  if (rope_scaling.llama3 && (!(rope_scaling.factor >= 1) || !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor) ||
                              rope_scaling.original_max_position <= 0)) {
    bad("llama3 rope_scaling needs factor >= 1, high_freq_factor > low_freq_factor and a positive original length");
  }
}

std::vector<double> ModelConfig::rope_inverse_frequencies() const {
  std::int64_t const half = head_dim / 2;
  std::vector<double> inv(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(rope_theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    if (rope_scaling.llama3) {
      // Llama 3: long wavelengths are slowed down by `factor`, short ones kept, and the band in
      // between interpolated smoothly by where the wavelength falls relative to the original
      // context.
      RopeScaling const& s = rope_scaling;
      double const wavelength = 2 * std::numbers::pi / f;
      double const low_wavelength = static_cast<double>(s.original_max_position) / s.low_freq_factor;
      double const high_wavelength = static_cast<double>(s.original_max_position) / s.high_freq_factor;
      if (wavelength > low_wavelength) {
        f /= s.factor;
      } else if (wavelength >= high_wavelength) {
        double const smooth = (static_cast<double>(s.original_max_position) / wavelength - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[static_cast<std::size_t>(i)] = f;
  }
  return inv;
}

}  // namespace slidesparse::runtime
