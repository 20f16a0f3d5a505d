/// \file model_kernels.hpp
/// \brief The decoder's non-GEMM kernels (embedding, RMSNorm, RoPE + KV-cache append, causal
/// grouped-query attention, SwiGLU, greedy argmax, decode bookkeeping) as plain launchers.
///
/// Plain data only (nvcc compiles the .cu that implements them, host code calls them): every
/// launcher returns the launch status and never synchronizes. BF16 tensors are passed as void*
/// (bit patterns), row-major. Conventions shared by the launchers:
///   - a forward step processes T packed tokens; token t belongs to KV-cache slot token_slot[t]
///     at position token_pos[t] (its index in that sequence);
///   - the KV cache of one layer is [slots][capacity][kv_heads * head_dim] BF16 for K and for V;
///   - the residual stream is float32 [T, hidden]; everything a GEMM reads or writes is BF16.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace slidesparse::cuda {

/// residual[t, :] = float(embed[tokens[t], :]) (embed BF16 [vocab, hidden]); also records the
/// token in the sequence history: history[token_slot[t] * capacity + token_pos[t]] = tokens[t].
cudaError_t launch_embed(void const* embed, int const* tokens, int const* token_slot, int const* token_pos,
                         std::int64_t count, std::int64_t hidden, float* residual, int* history,
                         std::int64_t capacity, cudaStream_t stream);

/// Per row r < rows: residual[r] += float(delta[r]) when delta is not null, then
/// out[r] = BF16(residual[r] / sqrt(mean(residual[r]^2) + eps) * weight) (float32 arithmetic).
/// weight may be null: the add only (out unused).
cudaError_t launch_add_rms_norm(float* residual, void const* delta, float const* weight, std::int64_t rows,
                                std::int64_t hidden, float eps, void* out, cudaStream_t stream);

/// dst[i, :] = src[index[i], :] for i < count (BF16 rows of `cols`).
cudaError_t launch_gather_rows(void const* src, int const* index, std::int64_t count, std::int64_t cols, void* dst,
                               cudaStream_t stream);

struct RopeCacheArgs {
  void const* qkv = nullptr;  ///< [T, q_dim + 2 kv_dim] BF16: q | k | v of each token
  int const* token_slot = nullptr;
  int const* token_pos = nullptr;
  std::int64_t tokens = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  /// [positions][head_dim / 2] of (cos, sin) for the rotation of pair (i, i + head_dim/2)
  /// (the Hugging Face rotate_half layout) at each position.
  float2 const* rope_table = nullptr;
  void* q_out = nullptr;    ///< [T, q_dim] BF16, rotated
  void* k_cache = nullptr;  ///< this layer's K cache (see the file comment), rotated k stored
  void* v_cache = nullptr;
  std::int64_t capacity = 0;
};
/// RoPE on q and k in float32, rounded once to BF16; k and v appended to the cache at
/// (token_slot[t], token_pos[t]).
cudaError_t launch_rope_cache(RopeCacheArgs const& args, cudaStream_t stream);

/// Causal grouped-query attention over the KV cache, for the packed tokens of several
/// sequences. The queries of one KV head form "rows": segment s (one sequence's new tokens:
/// T_s tokens starting at packed index segment_token_start[s], in cache slot
/// segment_slot[s]) has T_s * G rows, G = heads / kv_heads, row r = (token r / G, query head
/// kv_head * G + r % G). A tile is 64 consecutive rows of one segment:
/// (tile_segment[i], tile_row_start[i]); the grid is tiles x kv_heads. Row r attends to the
/// cache positions 0 .. token_pos[its token].
struct AttentionArgs {
  void const* q = nullptr;  ///< [T, heads * head_dim] BF16
  void const* k_cache = nullptr;
  void const* v_cache = nullptr;
  std::int64_t capacity = 0;
  int const* token_pos = nullptr;
  int const* segment_slot = nullptr;
  int const* segment_token_start = nullptr;
  int const* segment_tokens = nullptr;
  int const* tile_segment = nullptr;
  int const* tile_row_start = nullptr;
  int tiles = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;  ///< head_dim a multiple of 8, at most 128
  float scale = 0;                            ///< softmax scale, 1/sqrt(head_dim)
  void* out = nullptr;                        ///< [T, heads * head_dim] BF16
  /// Split-KV (for decode, where tiles x kv_heads alone leave most SMs idle): the key blocks
  /// of each tile are shared among `splits` CTAs, each leaving unnormalized partial outputs
  /// [splits][T][heads][head_dim] and (max, sum) [splits][T][heads] that a second kernel merges.
  int splits = 1;
  std::int64_t tokens = 0;       ///< T (needed when splits > 1)
  float* partial_o = nullptr;    ///< splits * T * heads * head_dim floats
  float2* partial_ml = nullptr;  ///< splits * T * heads
};
inline constexpr int kAttentionTileRows = 64;
cudaError_t launch_attention(AttentionArgs const& args, cudaStream_t stream);

/// out[t, i] = BF16(silu(g) * u), g = gate_up[t, i], u = gate_up[t, intermediate + i].
cudaError_t launch_swiglu(void const* gate_up, std::int64_t tokens, std::int64_t intermediate, void* out,
                          cudaStream_t stream);

/// Greedy choice per row of BF16 logits [rows, vocab]: next_token[row_slot[r]] = the index of
/// the largest logit (the lowest index among equals; NaN never wins).
cudaError_t launch_argmax(void const* logits, std::int64_t rows, std::int64_t vocab, int const* row_slot,
                          int* next_token, cudaStream_t stream);

/// Decode bookkeeping for slots 0 .. batch-1, one token each (so token index = slot):
/// before the step token_pos[s] = seq_len[s]; after it seq_len[s] += 1.
cudaError_t launch_decode_positions(int const* seq_len, std::int64_t batch, int* token_pos, cudaStream_t stream);
cudaError_t launch_advance_lengths(int* seq_len, std::int64_t batch, cudaStream_t stream);

}  // namespace slidesparse::cuda
