#include "slidesparse/runtime/hf_loader.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/matrix.hpp"

namespace slidesparse::runtime {
namespace {

class Loader {
 public:
  explicit Loader(io::HfCheckpoint const& ckpt) : ckpt_(ckpt) {}

  io::LogicalTensor const& tensor(std::string const& name, std::vector<std::int64_t> const& shape) const {
    io::LogicalTensor const* t = ckpt_.find(name);
    if (!t) fail(ErrorKind::kInvalidInput, "{}: tensor '{}' is missing", ckpt_.root().string(), name);
    // Norm vectors and biases are 1-D; a [N, 1] weight_scale is compared as [N, 1].
    if (t->shape != shape) {
      fail(ErrorKind::kInvalidInput, "{}: tensor '{}' has shape [{}], the config needs [{}]", ckpt_.root().string(), name,
           fmt::join(t->shape, ", "), fmt::join(shape, ", "));
    }
    return *t;
  }

  // Any weight dtype to float32 (I8/F8 codes as their values: the scale is applied by linear()).
  std::vector<float> floats(io::LogicalTensor const& t) const {
    std::vector<std::byte> raw(t.nbytes());
    ckpt_.read(t, raw);
    std::vector<float> out(t.numel());
    to_float(t.dtype, raw.data(), out, fmt::format("{}: {}", ckpt_.root().string(), t.name));
    return out;
  }
  std::vector<float> floats(std::string const& name, std::vector<std::int64_t> const& shape) const {
    return floats(tensor(name, shape));
  }

  // A projection weight [n, k] (+ bias), dequantized when it carries a compressed-tensors scale.
  CpuLinear linear(std::string const& prefix, std::int64_t n, std::int64_t k, bool bias) const {
    io::LogicalTensor const& t = tensor(prefix + ".weight", {n, k});
    std::vector<float> w = floats(t);
    if (t.dtype == DType::kI8 || t.dtype == DType::kF8E4M3) {
      std::vector<float> const scale = floats(prefix + ".weight_scale", {n, 1});
      for (std::int64_t r = 0; r < n; ++r) {
        for (std::int64_t c = 0; c < k; ++c) w[static_cast<std::size_t>(r * k + c)] *= scale[static_cast<std::size_t>(r)];
      }
    }
    std::vector<float> b = bias ? floats(prefix + ".bias", {n}) : std::vector<float>{};
    return CpuLinear(std::move(w), n, k, std::move(b));
  }

 private:
  io::HfCheckpoint const& ckpt_;
};

}  // namespace

ModelWeights load_hf_weights(io::HfCheckpoint const& ckpt) {
  ModelWeights w;
  w.config = ModelConfig::from_hf_json(ckpt.config(), (ckpt.root() / "config.json").string());
  ModelConfig const& c = w.config;
  Loader const load(ckpt);
  w.embed = load.floats("model.embed_tokens.weight", {c.vocab, c.hidden});
  for (std::int64_t l = 0; l < c.layers; ++l) {
    std::string const p = fmt::format("model.layers.{}.", l);
    LayerWeights layer;
    layer.attn_norm = load.floats(p + "input_layernorm.weight", {c.hidden});
    layer.ffn_norm = load.floats(p + "post_attention_layernorm.weight", {c.hidden});
    layer.q = load.linear(p + "self_attn.q_proj", c.q_dim(), c.hidden, c.qkv_bias);
    layer.k = load.linear(p + "self_attn.k_proj", c.kv_dim(), c.hidden, c.qkv_bias);
    layer.v = load.linear(p + "self_attn.v_proj", c.kv_dim(), c.hidden, c.qkv_bias);
    layer.o = load.linear(p + "self_attn.o_proj", c.hidden, c.q_dim(), false);
    layer.gate = load.linear(p + "mlp.gate_proj", c.intermediate, c.hidden, false);
    layer.up = load.linear(p + "mlp.up_proj", c.intermediate, c.hidden, false);
    layer.down = load.linear(p + "mlp.down_proj", c.hidden, c.intermediate, false);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = load.floats("model.norm.weight", {c.hidden});
  w.lm_head = c.tie_embeddings ? CpuLinear(w.embed, c.vocab, c.hidden) : load.linear("lm_head", c.vocab, c.hidden, false);
  w.validate();
  return w;
}

}  // namespace slidesparse::runtime
