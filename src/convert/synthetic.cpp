#include "slidesparse/convert/synthetic.hpp"

#include <nlohmann/json.hpp>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"
#include "slidesparse/core/parallel.hpp"
#include "slidesparse/core/random.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/io/safetensors.hpp"

namespace slidesparse::convert {
namespace fs = std::filesystem;

namespace {

struct TensorPlan {
  std::string name;
  std::vector<std::int64_t> shape;
  bool is_norm = false;
};

std::vector<TensorPlan> llama_tensors(SyntheticSpec const& s) {
  std::int64_t const head_dim = s.hidden / s.heads;
  std::vector<TensorPlan> t;
  t.push_back({"model.embed_tokens.weight", {s.vocab, s.hidden}});
  for (std::int64_t l = 0; l < s.layers; ++l) {
    std::string const p = fmt::format("model.layers.{}.", l);
    t.push_back({p + "input_layernorm.weight", {s.hidden}, true});
    t.push_back({p + "self_attn.q_proj.weight", {s.heads * head_dim, s.hidden}});
    t.push_back({p + "self_attn.k_proj.weight", {s.kv_heads * head_dim, s.hidden}});
    t.push_back({p + "self_attn.v_proj.weight", {s.kv_heads * head_dim, s.hidden}});
    t.push_back({p + "self_attn.o_proj.weight", {s.hidden, s.heads * head_dim}});
    t.push_back({p + "post_attention_layernorm.weight", {s.hidden}, true});
    t.push_back({p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}});
    t.push_back({p + "mlp.up_proj.weight", {s.intermediate, s.hidden}});
    t.push_back({p + "mlp.down_proj.weight", {s.hidden, s.intermediate}});
  }
  t.push_back({"model.norm.weight", {s.hidden}, true});
  if (!s.tie_embeddings) t.push_back({"lm_head.weight", {s.vocab, s.hidden}});
  return t;
}

std::uint64_t numel(std::vector<std::int64_t> const& shape) {
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}


void fill(std::span<std::byte> out, DType dtype, std::uint64_t stream, bool is_norm) {
  std::size_t const elem = dtype_size(dtype);
  std::int64_t const count = static_cast<std::int64_t>(out.size() / elem);
  parallel_for(count, static_cast<std::int64_t>(elem), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      float v = 1.0f;
      if (!is_norm) {
        std::uint64_t const r = splitmix64(stream ^ splitmix64(static_cast<std::uint64_t>(i)));
        v = (static_cast<float>(r >> 40) * 0x1p-24f - 0.5f) * 0.1f;  // uniform [-0.05, 0.05)
      }
      std::byte* p = out.data() + static_cast<std::size_t>(i) * elem;
      switch (dtype) {
        case DType::kBF16: store<std::uint16_t>(p, float_to_bf16(v).bits); break;
        case DType::kF16: store<std::uint16_t>(p, float_to_fp16(v).bits); break;
        case DType::kF32: store<float>(p, v); break;
        default: fail(ErrorKind::kUsage, "synthetic checkpoints are BF16, F16 or F32");
      }
    }
  });
}

}  // namespace

std::uint64_t SyntheticSpec::parameter_count() const {
  std::uint64_t n = 0;
  for (auto const& t : llama_tensors(*this)) n += numel(t.shape);
  return n;
}

SyntheticSpec synthetic_preset(std::string const& name) {
  SyntheticSpec s;
  if (name == "tiny") return s;
  if (name == "bench-1gb") {
    // Llama-3.2-1B-like layer shapes, 10 layers: ~1.2 GB of BF16 in 4 shards.
    s.hidden = 2048;
    s.intermediate = 8192;
    s.layers = 10;
    s.heads = 32;
    s.kv_heads = 8;
    s.vocab = 32000;
    s.shards = 4;
    return s;
  }
  fail(ErrorKind::kUsage, "unknown synthetic preset '{}' (known: tiny, bench-1gb)", name);
}

void write_synthetic_checkpoint(fs::path const& dir, SyntheticSpec const& spec) {
  if (spec.hidden % spec.heads != 0 || spec.heads % spec.kv_heads != 0 || spec.shards < 1) {
    fail(ErrorKind::kUsage, "synthetic spec: hidden must divide by heads, heads by kv_heads, "
         "shards >= 1");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(ErrorKind::kIo, "cannot create {}: {}", dir.string(), ec.message());
  auto const tensors = llama_tensors(spec);
  // Split into shards of roughly equal bytes, keeping tensor order.
  std::uint64_t total = 0;
  for (auto const& t : tensors) total += numel(t.shape) * dtype_size(spec.dtype);
  std::uint64_t const per_shard = (total + static_cast<std::uint64_t>(spec.shards) - 1) / static_cast<std::uint64_t>(spec.shards);
  std::vector<std::vector<std::size_t>> shards(static_cast<std::size_t>(spec.shards));
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    std::size_t const s = std::min<std::size_t>(static_cast<std::size_t>(running / per_shard), shards.size() - 1);
    shards[s].push_back(i);
    running += numel(tensors[i].shape) * dtype_size(spec.dtype);
  }
  std::erase_if(shards, [](auto const& v) { return v.empty(); });
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    std::string const file = shards.size() == 1
                                 ? "model.safetensors"
                                 : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    std::vector<io::TensorSpec> specs;
    for (std::size_t i : shards[s]) specs.push_back({tensors[i].name, spec.dtype, tensors[i].shape});
    io::SafetensorsWriter writer(dir / file, specs, {{"format", "pt"}});
    for (std::size_t j = 0; j < shards[s].size(); ++j) {
      std::size_t const i = shards[s][j];
      fill(writer.bytes(j), spec.dtype, splitmix64(spec.seed) ^ splitmix64(i + 1), tensors[i].is_norm);
      weight_map[tensors[i].name] = file;
    }
    writer.commit();
  }
  if (shards.size() > 1) {
    nlohmann::json const index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    io::write_text_file_atomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  nlohmann::json const config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", spec.hidden},
      {"intermediate_size", spec.intermediate},
      {"num_hidden_layers", spec.layers},
      {"num_attention_heads", spec.heads},
      {"num_key_value_heads", spec.kv_heads},
      {"vocab_size", spec.vocab},
      {"max_position_embeddings", 4096},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", spec.tie_embeddings},
      {"torch_dtype", spec.dtype == DType::kBF16 ? "bfloat16" : (spec.dtype == DType::kF16 ? "float16" : "float32")},
  };
  io::write_text_file_atomic(dir / "config.json", config.dump(2) + "\n");
}

}  // namespace slidesparse::convert
