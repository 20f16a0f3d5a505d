#include "slidesparse/runtime/gguf_loader.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::runtime {
namespace {

std::vector<float> load(io::GgufFile const& file, std::string const& name, std::vector<std::int64_t> const& shape) {
  io::GgufTensorInfo const& t = file.at(name);
  if (t.shape() != shape) {
    fail(ErrorKind::kInvalidInput, "{}: tensor '{}' has shape [{}], the config needs [{}]", file.path().string(), name,
         fmt::join(t.shape(), ", "), fmt::join(shape, ", "));
  }
  return file.dequantize(t);
}

// Undo llama.cpp's q/k row permutation (see the header): rows of each head of `head_dim` rows.
std::vector<float> unpermute_rope_rows(std::vector<float> const& w, std::int64_t heads, std::int64_t head_dim,
                                       std::int64_t cols) {
  std::vector<float> out(w.size());
  std::int64_t const half = head_dim / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t i = 0; i < half; ++i) {
      for (std::int64_t j = 0; j < 2; ++j) {
        std::int64_t const hf_row = h * head_dim + j * half + i;
        std::int64_t const gguf_row = h * head_dim + 2 * i + j;
        std::copy_n(w.begin() + gguf_row * cols, cols, out.begin() + hf_row * cols);
      }
    }
  }
  return out;
}

}  // namespace

ModelConfig gguf_model_config(io::GgufFile const& f) {
  std::string const arch = f.require_string("general.architecture");
  if (arch != "llama") {
    fail(ErrorKind::kInvalidInput, "{}: architecture '{}' is not supported (llama)", f.path().string(), arch);
  }
  ModelConfig c;
  c.name = f.get_string("general.name").value_or(f.path().filename().string());
  c.arch = Architecture::kLlama;
  c.layers = f.require_int("llama.block_count");
  c.hidden = f.require_int("llama.embedding_length");
  c.intermediate = f.require_int("llama.feed_forward_length");
  c.heads = f.require_int("llama.attention.head_count");
  c.kv_heads = f.get_int("llama.attention.head_count_kv").value_or(c.heads);
  c.head_dim = f.get_int("llama.rope.dimension_count").value_or(c.hidden / c.heads);
  c.max_position = f.get_int("llama.context_length").value_or(2048);
  c.rms_eps = f.get_float("llama.attention.layer_norm_rms_epsilon").value_or(1e-5);
  c.rope_theta = f.get_float("llama.rope.freq_base").value_or(10000.0);
  io::GgufTensorInfo const& embed = f.at("token_embd.weight");
  c.vocab = embed.shape().front();
  c.tie_embeddings = f.find("output.weight") == nullptr;
  c.validate();
  return c;
}

ModelWeights load_gguf_weights(io::GgufFile const& f) {
  ModelWeights w;
  w.config = gguf_model_config(f);
  ModelConfig const& c = w.config;
  w.embed = load(f, "token_embd.weight", {c.vocab, c.hidden});
  for (std::int64_t l = 0; l < c.layers; ++l) {
    std::string const p = fmt::format("blk.{}.", l);
    LayerWeights L;
    L.attn_norm = load(f, p + "attn_norm.weight", {c.hidden});
    L.ffn_norm = load(f, p + "ffn_norm.weight", {c.hidden});
    L.q = CpuLinear(unpermute_rope_rows(load(f, p + "attn_q.weight", {c.q_dim(), c.hidden}), c.heads, c.head_dim, c.hidden),
                    c.q_dim(), c.hidden);
    L.k = CpuLinear(unpermute_rope_rows(load(f, p + "attn_k.weight", {c.kv_dim(), c.hidden}), c.kv_heads, c.head_dim, c.hidden),
                    c.kv_dim(), c.hidden);
    L.v = CpuLinear(load(f, p + "attn_v.weight", {c.kv_dim(), c.hidden}), c.kv_dim(), c.hidden);
    L.o = CpuLinear(load(f, p + "attn_output.weight", {c.hidden, c.q_dim()}), c.hidden, c.q_dim());
    L.gate = CpuLinear(load(f, p + "ffn_gate.weight", {c.intermediate, c.hidden}), c.intermediate, c.hidden);
    L.up = CpuLinear(load(f, p + "ffn_up.weight", {c.intermediate, c.hidden}), c.intermediate, c.hidden);
    L.down = CpuLinear(load(f, p + "ffn_down.weight", {c.hidden, c.intermediate}), c.hidden, c.intermediate);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = load(f, "output_norm.weight", {c.hidden});
  w.lm_head = c.tie_embeddings ? CpuLinear(w.embed, c.vocab, c.hidden)
                               : CpuLinear(load(f, "output.weight", {c.vocab, c.hidden}), c.vocab, c.hidden);
  w.validate();
  return w;
}

TokenizerData gguf_tokenizer_data(io::GgufFile const& f) {
  std::string const model = f.require_string("tokenizer.ggml.model");
  if (model != "gpt2") {
    fail(ErrorKind::kInvalidInput, "{}: tokenizer model '{}' is not supported (gpt2 byte-level BPE)", f.path().string(), model);
  }
  TokenizerData d;
  d.tokens = f.require_string_array("tokenizer.ggml.tokens");
  d.merges = f.require_string_array("tokenizer.ggml.merges");
  if (auto types = f.get_int_array("tokenizer.ggml.token_type")) {
    for (std::int64_t const t : *types) d.token_types.push_back(static_cast<int>(t));
  }
  auto id = [&](char const* key) -> std::optional<int> {
    if (auto v = f.get_int(key)) return static_cast<int>(*v);
    return std::nullopt;
  };
  d.bos = id("tokenizer.ggml.bos_token_id");
  d.eos = id("tokenizer.ggml.eos_token_id");
  d.unk = id("tokenizer.ggml.unknown_token_id");
  d.pad = id("tokenizer.ggml.padding_token_id");
  d.pre = f.get_string("tokenizer.ggml.pre").value_or("");
  d.add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(false);
  return d;
}

}  // namespace slidesparse::runtime
