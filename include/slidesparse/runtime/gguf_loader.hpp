/// \file gguf_loader.hpp
/// \brief A llama-architecture GGUF file (e.g. SmolLM2-135M-Instruct Q4_1) as CPU model
/// weights and a tokenizer.
///
/// Tensor names (llama.cpp): token_embd, blk.<l>.{attn_norm, attn_q, attn_k, attn_v,
/// attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output (absent when the
/// embeddings are tied). Weights are dequantized to float32 (Q4_0, Q4_1, Q8_0, F16, BF16, F32).
///
/// RoPE layout: llama.cpp's converter permutes the rows of attn_q and attn_k within each head
/// so that rotation pairs are adjacent (2i, 2i+1); the CPU model rotates Hugging Face's pairs
/// (i, i + d/2). The loader undoes the permutation: HF row j·(d/2) + i of a head = GGUF row
/// 2i + j (j = 0, 1; i < d/2).
#pragma once

#include "slidesparse/io/gguf.hpp"
#include "slidesparse/runtime/cpu_model.hpp"
#include "slidesparse/runtime/tokenizer.hpp"

namespace slidesparse::runtime {

/// Config from the `llama.*` metadata; Error(kInvalidInput) naming a missing key or an
/// architecture other than llama.
ModelConfig gguf_model_config(io::GgufFile const& file);
ModelWeights load_gguf_weights(io::GgufFile const& file);
/// The `tokenizer.ggml.*` metadata (model "gpt2").
TokenizerData gguf_tokenizer_data(io::GgufFile const& file);

}  // namespace slidesparse::runtime
