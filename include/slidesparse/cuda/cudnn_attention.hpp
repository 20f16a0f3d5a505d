/// \file cudnn_attention.hpp
/// \brief Causal grouped-query attention for prefill steps through cuDNN's fused flash attention
/// (an SDPA graph of the cuDNN frontend), reading the decoder's KV cache in place.
///
/// The problem is the one of cuda::launch_attention (model_kernels.hpp): a step holds B segments;
/// segment b has T_b new tokens, packed from token index start_b in q [T, heads * head_dim] and
/// out (same shape), its keys and values are the first L_b = (position of its last token) + 1
/// rows of KV-cache slot slot_b, and query t of the segment (position L_b - T_b + t) attends to
/// cache rows 0 .. L_b - T_b + t.
///
/// How that maps onto cuDNN's SDPA (BF16 in and out, float32 softmax and accumulation):
///   - Q and O are "ragged" BSHD tensors [B, heads, S_q, head_dim] with token stride
///     heads * head_dim; q_offsets[b] = start_b * heads * head_dim (elements; B + 1 entries) places
///     each segment, seq_len_q[b] = T_b masks the padding up to S_q (the graph's bucket).
///   - K and V are paged: the cache of one layer, [slots][capacity][kv_heads][head_dim], is read
///     as `slots * capacity / block` pages of `block` rows (page p = rows p * block .. of the
///     cache viewed as one [slots * capacity] table); page_table[b][j] = slot_b * capacity / block
///     + j, seq_len_kv[b] = L_b.
///   - The causal mask is aligned bottom-right (query T_b - 1 sees key L_b - 1), which is the
///     decoder's rule for chunked prefill as well as for a fresh prompt.
/// One graph is built per (B, S_q bucket) on first use (tens of milliseconds) and kept; a run
/// then only executes it (no allocation once the workspace has grown; asynchronous on the
/// stream). Not used for decode steps (one query per sequence), where the own split-KV kernel
/// and CUDA graphs serve better.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <cuda_runtime.h>

namespace slidesparse::cuda {

struct CudnnAttentionArgs {
  void const* q = nullptr;        ///< [T, heads * head_dim] BF16, packed segments
  void* out = nullptr;            ///< [T, heads * head_dim] BF16
  void const* k_cache = nullptr;  ///< this layer's [slots][capacity][kv_heads * head_dim] BF16
  void const* v_cache = nullptr;
  std::int64_t segments = 0;            ///< B
  std::int64_t max_segment_tokens = 0;  ///< >= every T_b (selects the graph's S_q bucket)
  int const* seq_len_q = nullptr;       ///< [B] T_b
  int const* seq_len_kv = nullptr;      ///< [B] L_b
  int const* q_offsets = nullptr;       ///< [B + 1] start_b * heads * head_dim (the last: T * heads * head_dim)
  int const* page_table = nullptr;      ///< [B][pages_per_slot()]
};

class CudnnAttention {
 public:
  /// Empty when this build and the cuDNN library loaded at run time can run it for these
  /// shapes, else why not (built without cuDNN, cuDNN older than 9.8 — ragged queries over
  /// paged caches —, head_dim not a multiple of 8 or above 128, heads not a multiple of
  /// kv_heads, capacity not a multiple of 8 rows).
  static std::string unsupported(int heads, int kv_heads, int head_dim, std::int64_t capacity);
  /// "cudnn-91400" (the loaded library's version) or "cudnn-none".
  static std::string version();

  /// `scale`: the softmax scale (1/sqrt(head_dim)). Throws Error(kUsage) naming the reason
  /// where unsupported() is not empty.
  CudnnAttention(int heads, int kv_heads, int head_dim, std::int64_t slots, std::int64_t capacity, float scale);
  ~CudnnAttention();
  CudnnAttention(CudnnAttention const&) = delete;
  CudnnAttention& operator=(CudnnAttention const&) = delete;

  /// Rows per page of the cache view (the largest of 128, 64, ..., 8 that divides capacity).
  std::int64_t block() const noexcept { return block_; }
  std::int64_t pages_per_slot() const noexcept { return capacity_ / block_; }
  /// Builds (first time) and executes the graph for args.segments and the bucket of
  /// args.max_segment_tokens. Throws Error naming the cuDNN message if a graph cannot be built
  /// or run.
  void run(CudnnAttentionArgs const& args, cudaStream_t stream);
  /// Device bytes held: the workspace.
  std::size_t device_bytes() const noexcept;
  /// The S_q a graph is built for: max_segment_tokens rounded up to a power of two, at least 64.
  static std::int64_t query_bucket(std::int64_t max_segment_tokens);

 private:
  struct Impl;
  int heads_, kv_heads_, head_dim_;
  std::int64_t slots_, capacity_, block_;
  float scale_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slidesparse::cuda
