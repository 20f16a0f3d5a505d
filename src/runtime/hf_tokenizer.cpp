// Hugging Face tokenizer.json (byte-level BPE) -> TokenizerData (see tokenizer.hpp).
#include <fmt/format.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/runtime/tokenizer.hpp"

namespace slidesparse::runtime {
namespace {

// The split expressions of the pre-tokenizers we implement, as tokenizer.json spells them.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string brief(nlohmann::json const& j) {
  std::string s = j.dump();
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

bool is_byte_level(nlohmann::json const& p, bool with_regex) {
  return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true) == with_regex;
}

// The pre-tokenizer name TokenizerData::pre takes, from the pre_tokenizer definition.
std::string pre_tokenizer_name(nlohmann::json const& pre, std::string_view source) {
  if (is_byte_level(pre, true)) return "gpt2";
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array() && pre["pretokenizers"].size() == 2) {
    nlohmann::json const& first = pre["pretokenizers"][0];
    nlohmann::json const& second = pre["pretokenizers"][1];
    if (first.value("type", "") == "Split" && is_byte_level(second, false) && first.contains("pattern") &&
        first["pattern"].contains("Regex") && first.value("behavior", "") == "Isolated" && !first.value("invert", false)) {
      std::string const regex = first["pattern"]["Regex"].get<std::string>();
      if (regex == kLlama3Regex) return "llama3";
      if (regex == kQwen2Regex) return "qwen2";
    }
    if (first.value("type", "") == "Digits" && first.value("individual_digits", false) && is_byte_level(second, true)) {
      return "smollm";
    }
  }
  fail(ErrorKind::kInvalidInput, "{}: pre_tokenizer {} is not one this tokenizer implements (GPT-2's ByteLevel, "
       "Llama-3's or Qwen2's Split + ByteLevel, Digits + ByteLevel)", source, brief(pre));
}

// A token given as "text" or {"content": "text", ...} in tokenizer_config.json.
std::optional<std::string> config_token(nlohmann::json const* config, char const* key) {
  if (!config || !config->contains(key)) return std::nullopt;
  nlohmann::json const& v = (*config)[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

TokenizerData tokenizer_data_from_hf(nlohmann::json const& j, nlohmann::json const* config, std::string_view source) {
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    fail(ErrorKind::kInvalidInput, "{}: not a tokenizer.json (no \"model\" object)", source);
  }
  nlohmann::json const& model = j["model"];
  if (model.value("type", "") != "BPE") {
    fail(ErrorKind::kInvalidInput, "{}: model type '{}' is not supported (byte-level BPE only)", source, model.value("type", "?"));
  }
  if (model.value("byte_fallback", false)) {
    fail(ErrorKind::kInvalidInput, "{}: a BPE with byte_fallback (SentencePiece style) is not supported", source);
  }
  if (j.contains("normalizer") && !j["normalizer"].is_null() && j["normalizer"].value("type", "") != "NFC") {
    fail(ErrorKind::kInvalidInput, "{}: normalizer {} is not supported (none or NFC; text is taken as given)", source,
         brief(j["normalizer"]));
  }
  if (!model.contains("vocab") || !model["vocab"].is_object() || !model.contains("merges") || !model["merges"].is_array()) {
    fail(ErrorKind::kInvalidInput, "{}: model needs a \"vocab\" object and a \"merges\" array", source);
  }
  TokenizerData d;
  std::vector<std::optional<std::string>> by_id;
  std::vector<int> types;
  auto place = [&](std::int64_t id, std::string const& text, int type, char const* where) {
    if (id < 0 || id > (std::int64_t{1} << 24)) fail(ErrorKind::kInvalidInput, "{}: {} id {} for '{}' is out of range", source, where, id, text);
    auto const i = static_cast<std::size_t>(id);
    if (by_id.size() <= i) {
      by_id.resize(i + 1);
      types.resize(i + 1, 1);
    }
    if (by_id[i] && *by_id[i] != text) {
      fail(ErrorKind::kInvalidInput, "{}: id {} is both '{}' and '{}'", source, id, *by_id[i], text);
    }
    by_id[i] = text;
    types[i] = type;
  };
  for (auto const& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) fail(ErrorKind::kInvalidInput, "{}: vocab entry '{}' has no integer id", source, text);
    place(id.get<std::int64_t>(), text, 1, "vocab");
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (auto const& t : j["added_tokens"]) {
      if (!t.contains("id") || !t.contains("content")) fail(ErrorKind::kInvalidInput, "{}: added token {} lacks id or content", source, brief(t));
      place(t["id"].get<std::int64_t>(), t["content"].get<std::string>(), t.value("special", false) ? 3 : 4, "added token");
    }
  }
  for (std::size_t i = 0; i < by_id.size(); ++i) {
    if (!by_id[i]) {
      by_id[i] = fmt::format("<unused id {}>", i);
      types[i] = 5;
    }
    d.tokens.push_back(*by_id[i]);
  }
  d.token_types = types;
  for (std::size_t r = 0; r < model["merges"].size(); ++r) {
    nlohmann::json const& m = model["merges"][r];
    if (m.is_string()) {
      d.merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      d.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      fail(ErrorKind::kInvalidInput, "{}: merge {} is neither \"left right\" nor [left, right]: {}", source, r, brief(m));
    }
  }
  d.pre = j.contains("pre_tokenizer") ? pre_tokenizer_name(j["pre_tokenizer"], source) : "gpt2";
  d.ignore_merges = model.value("ignore_merges", false);
  auto id_of = [&](std::string const& text) -> std::optional<int> {
    for (std::size_t i = 0; i < d.tokens.size(); ++i) {
      if (d.tokens[i] == text) return static_cast<int>(i);
    }
    return std::nullopt;
  };
  if (auto const t = config_token(config, "bos_token")) d.bos = id_of(*t);
  if (auto const t = config_token(config, "eos_token")) d.eos = id_of(*t);
  if (auto const t = config_token(config, "unk_token")) d.unk = id_of(*t);
  if (auto const t = config_token(config, "pad_token")) d.pad = id_of(*t);
  // A TemplateProcessing post-processor that starts with a special token prepends it (Llama-3's
  // <|begin_of_text|>); tokenizer_config's add_bos_token overrides.
  if (j.contains("post_processor") && j["post_processor"].is_object() &&
      j["post_processor"].value("type", "") == "TemplateProcessing" && j["post_processor"].contains("single")) {
    nlohmann::json const& single = j["post_processor"]["single"];
    if (single.is_array() && !single.empty() && single[0].contains("SpecialToken")) {
      if (auto const id = id_of(single[0]["SpecialToken"].value("id", ""))) {
        d.bos = d.bos.value_or(*id);
        d.add_bos = true;
      }
    }
  }
  if (config && config->contains("add_bos_token") && (*config)["add_bos_token"].is_boolean()) {
    d.add_bos = (*config)["add_bos_token"].get<bool>() && d.bos.has_value();
  }
  return d;
}

TokenizerData load_hf_tokenizer(std::filesystem::path const& dir) {
  std::filesystem::path const file = dir / "tokenizer.json";
  if (!std::filesystem::exists(file)) fail(ErrorKind::kIo, "{}: no tokenizer.json", dir.string());
  nlohmann::json const tokenizer = io::read_json_file(file);
  std::optional<nlohmann::json> config;
  if (std::filesystem::exists(dir / "tokenizer_config.json")) config = io::read_json_file(dir / "tokenizer_config.json");
  return tokenizer_data_from_hf(tokenizer, config ? &*config : nullptr, file.string());
}

}  // namespace slidesparse::runtime
