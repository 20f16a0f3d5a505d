/// \file hf_loader.hpp
/// \brief Loads a Hugging Face Llama / Qwen2 directory into float32 CPU model weights.
///
/// Reads config.json (runtime::ModelConfig) and the standard tensor names
/// (model.embed_tokens, model.layers.<l>.{input_layernorm, self_attn.{q,k,v,o}_proj,
/// post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head). Weights may be
/// BF16 / F16 / F32, compressed-tensors W8A8 (I8 or F8_E4M3 `weight` with an F32 `weight_scale`
/// [N, 1]: w = code * scale[n]) or sparse-24-bitmask triplets — so the pruned checkpoints that
/// `slidesparse convert` writes load directly. Missing tensors and wrong shapes are errors naming
/// the tensor, the expected and the found shape.
#pragma once

#include <filesystem>

#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/runtime/cpu_model.hpp"

namespace slidesparse::runtime {

ModelWeights load_hf_weights(io::HfCheckpoint const& checkpoint);
inline ModelWeights load_hf_weights(std::filesystem::path const& dir) { return load_hf_weights(io::HfCheckpoint::open(dir)); }

}  // namespace slidesparse::runtime
