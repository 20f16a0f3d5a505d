#include "slidesparse/bench/presets.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::bench {
namespace {

struct Config {
  char const* name;
  std::int64_t hidden, heads, kv_heads, head_dim, intermediate;
};

// Values of each model's published config.json.
constexpr Config kConfigs[] = {
    {"llama3.2-1b", 2048, 32, 8, 64, 8192},
    {"llama3.2-3b", 3072, 24, 8, 128, 8192},
    {"llama3.1-8b", 4096, 32, 8, 128, 14336},
    {"qwen2.5-7b", 3584, 28, 4, 128, 18944},
    {"qwen2.5-14b", 5120, 40, 8, 128, 13824},
    {"bitnet-2b", 2560, 20, 5, 128, 6912},  // microsoft/bitnet-b1.58-2B-4T
};

std::int64_t parse_positive(std::string_view text, std::string_view spec) {
  std::int64_t v = 0;
  auto const [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || v <= 0) {
    fail(ErrorKind::kUsage, "model shape '{}': '{}' is not a positive integer", spec, text);
  }
  return v;
}

}  // namespace

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (Config const& c : kConfigs) names.emplace_back(c.name);
  return names;
}

ModelShapes model_shapes(std::string_view spec) {
  std::string lower(spec);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (lower.starts_with("square:")) {
    std::int64_t const k = parse_positive(std::string_view(lower).substr(7), spec);
    return {lower, {{"square", k, k}}};
  }
  if (lower.starts_with("shape:")) {
    std::string_view const rest = std::string_view(lower).substr(6);
    // "NxK" (what the CLI passes: its --model list splits at commas) or "N,K".
    std::size_t const comma = rest.find_first_of(",x");
    if (comma == std::string_view::npos) fail(ErrorKind::kUsage, "model shape '{}': expected shape:NxK", spec);
    std::int64_t const n = parse_positive(rest.substr(0, comma), spec);
    std::int64_t const k = parse_positive(rest.substr(comma + 1), spec);
    return {lower, {{"custom", n, k}}};
  }
  for (Config const& c : kConfigs) {
    if (lower == c.name) {
      return {c.name,
              {{"qkv", (c.heads + 2 * c.kv_heads) * c.head_dim, c.hidden},
               {"o", c.hidden, c.heads * c.head_dim},
               {"gate_up", 2 * c.intermediate, c.hidden},
               {"down", c.hidden, c.intermediate}}};
    }
  }
  fail(ErrorKind::kUsage, "unknown model '{}': use one of {}, square:K or shape:NxK", spec,
       fmt::join(model_preset_names(), ", "));
}

}  // namespace slidesparse::bench
