// The decoder's non-GEMM kernels (interface and conventions: slidesparse/cuda/model_kernels.hpp).
// Everything but attention is memory bound and written as one simple pass; attention is a
// FlashAttention-2-style kernel on mma.sync m16n8k16 BF16 tensor-core instructions.
#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

#include "slidesparse/cuda/model_kernels.hpp"

namespace slidesparse::cuda {
namespace {

__device__ __forceinline__ float bf16_bits_to_float(std::uint16_t bits) {
  return __uint_as_float(static_cast<std::uint32_t>(bits) << 16);
}
__device__ __forceinline__ std::uint16_t float_to_bf16_bits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared /* [32] */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  int const warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  int const warps = static_cast<int>(blockDim.x + 31) / 32;
  T total = 0;
  for (int w = 0; w < warps; ++w) total += shared[w];
  __syncthreads();  // shared may be reused by the caller's next reduction
  return total;
}

// ------------------------------------------------------------------------------------------
// Embedding, RMSNorm, gather, SwiGLU: one CTA per row (grid-stride over columns).
// ------------------------------------------------------------------------------------------

__global__ void embed_kernel(std::uint16_t const* embed, int const* tokens, int const* token_slot,
                             int const* token_pos, std::int64_t hidden, float* residual, int* history,
                             std::int64_t capacity) {
  std::int64_t const t = blockIdx.x;
  int const token = tokens[t];
  std::uint16_t const* src = embed + static_cast<std::int64_t>(token) * hidden;
  float* dst = residual + t * hidden;
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = bf16_bits_to_float(src[i]);
  if (threadIdx.x == 0 && history) history[static_cast<std::int64_t>(token_slot[t]) * capacity + token_pos[t]] = token;
}

__global__ void add_rms_norm_kernel(float* residual, std::uint16_t const* delta, float const* weight,
                                    std::int64_t hidden, float eps, std::uint16_t* out) {
  __shared__ float partial[32];
  std::int64_t const r = blockIdx.x;
  float* x = residual + r * hidden;
  float sum = 0;
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = x[i];
    if (delta) {
      v += bf16_bits_to_float(delta[r * hidden + i]);
      x[i] = v;
    }
    sum += v * v;
  }
  if (!weight) return;
  float const total = block_sum(sum, partial);
  float const inv = 1.0f / sqrtf(total / static_cast<float>(hidden) + eps);
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    out[r * hidden + i] = float_to_bf16_bits((x[i] * inv) * weight[i]);
  }
}

__global__ void gather_rows_kernel(std::uint16_t const* src, int const* index, std::int64_t cols, std::uint16_t* dst) {
  std::int64_t const r = blockIdx.x;
  std::uint16_t const* s = src + static_cast<std::int64_t>(index[r]) * cols;
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[r * cols + i] = s[i];
}

// 8 columns per thread with 16-byte loads and stores (intermediate % 8 == 0); grid (column
// chunks, tokens) so a handful of decode tokens still fill the GPU.
__global__ void swiglu_vec8_kernel(std::uint16_t const* gate_up, std::int64_t intermediate, std::uint16_t* out) {
  std::int64_t const t = blockIdx.y;
  std::int64_t const i = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (i >= intermediate) return;
  uint4 const g = *reinterpret_cast<uint4 const*>(gate_up + t * 2 * intermediate + i);
  uint4 const u = *reinterpret_cast<uint4 const*>(gate_up + t * 2 * intermediate + intermediate + i);
  std::uint32_t const gw[4] = {g.x, g.y, g.z, g.w}, uw[4] = {u.x, u.y, u.z, u.w};
  std::uint32_t ow[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float r[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float const gv = bf16_bits_to_float(static_cast<std::uint16_t>(gw[j] >> (16 * e)));
      float const uv = bf16_bits_to_float(static_cast<std::uint16_t>(uw[j] >> (16 * e)));
      r[e] = gv / (1.0f + expf(-gv)) * uv;
    }
    ow[j] = static_cast<std::uint32_t>(float_to_bf16_bits(r[0])) | (static_cast<std::uint32_t>(float_to_bf16_bits(r[1])) << 16);
  }
  *reinterpret_cast<uint4*>(out + t * intermediate + i) = make_uint4(ow[0], ow[1], ow[2], ow[3]);
}

__global__ void swiglu_kernel(std::uint16_t const* gate_up, std::int64_t intermediate, std::uint16_t* out) {
  std::int64_t const t = blockIdx.x;
  std::uint16_t const* g = gate_up + t * 2 * intermediate;
  std::uint16_t const* u = g + intermediate;
  for (std::int64_t i = threadIdx.x; i < intermediate; i += blockDim.x) {
    float const gv = bf16_bits_to_float(g[i]);
    float const silu = gv / (1.0f + expf(-gv));
    out[t * intermediate + i] = float_to_bf16_bits(silu * bf16_bits_to_float(u[i]));
  }
}

// ------------------------------------------------------------------------------------------
// RoPE + KV append: one CTA per token. Pair (i, i + D/2) of every q and k head rotates by the
// table's (cos, sin) at the token's position; v is copied.
// ------------------------------------------------------------------------------------------

__global__ void rope_cache_kernel(RopeCacheArgs a) {
  std::int64_t const t = blockIdx.x;
  int const D = a.head_dim, half = D / 2;
  std::int64_t const q_dim = static_cast<std::int64_t>(a.heads) * D, kv_dim = static_cast<std::int64_t>(a.kv_heads) * D;
  auto const* row = static_cast<std::uint16_t const*>(a.qkv) + t * (q_dim + 2 * kv_dim);
  int const pos = a.token_pos[t];
  std::int64_t const cache_row = (static_cast<std::int64_t>(a.token_slot[t]) * a.capacity + pos) * kv_dim;
  auto* q_out = static_cast<std::uint16_t*>(a.q_out) + t * q_dim;
  auto* k_out = static_cast<std::uint16_t*>(a.k_cache) + cache_row;
  auto* v_out = static_cast<std::uint16_t*>(a.v_cache) + cache_row;
  float2 const* table = a.rope_table + static_cast<std::int64_t>(pos) * half;
  int const pairs = (a.heads + a.kv_heads) * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    int const head = p / half, i = p % half;
    bool const is_q = head < a.heads;
    std::int64_t const base = is_q ? static_cast<std::int64_t>(head) * D : q_dim + static_cast<std::int64_t>(head - a.heads) * D;
    float const x0 = bf16_bits_to_float(row[base + i]), x1 = bf16_bits_to_float(row[base + i + half]);
    float2 const cs = table[i];
    float const y0 = x0 * cs.x - x1 * cs.y;
    float const y1 = x1 * cs.x + x0 * cs.y;
    std::uint16_t* dst = is_q ? q_out + base : k_out + (base - q_dim);
    dst[i] = float_to_bf16_bits(y0);
    dst[i + half] = float_to_bf16_bits(y1);
  }
  for (std::int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) v_out[i] = row[q_dim + kv_dim + i];
}

// ------------------------------------------------------------------------------------------
// Attention. CTA = 4 warps = one tile of 64 query rows (16 per warp) of one KV head; keys in
// blocks of 64 staged in shared memory. Per warp and key block:
//   S [16, 64] = Q K^T           mma m16n8k16: A = Q rows (registers, loaded once), B = K rows
//   online softmax per row        (running max m, running sum l, exp2 with log2(e) folded into
//                                 the scale), O rescaled by exp2(m_old - m_new)
//   O [16, D] += P V              P reused from the S accumulators as A fragments (the C layout
//                                 of two adjacent n8 tiles is the A layout of one k16 step),
//                                 V fragments via ldmatrix.trans
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): g = lane / 4, c = lane % 4;
//   A regs {0,1,2,3} = rows {g, g+8, g, g+8} x cols {2c, 2c, 2c+8, 2c+8} (+1 in the high half)
//   B regs {0,1}     = k rows {2c, 2c+8} (+1) x n col g
//   C regs {0,1,2,3} = (row g, cols 2c, 2c+1), (row g+8, cols 2c, 2c+1)
// Shared rows are padded by 8 elements (16 bytes) so the 8 rows a fragment load touches fall
// into different banks.
// ------------------------------------------------------------------------------------------

constexpr int kAttnWarps = 4;
constexpr int kKeyBlock = 64;

__device__ __forceinline__ void mma_bf16(float (&d)[4], std::uint32_t const (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], void const* shared_ptr) {
  auto const addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(shared_ptr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 const v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t const*>(&v);
}

template <int kD>  // head_dim rounded up to a multiple of 16
__global__ void __launch_bounds__(kAttnWarps * 32) attention_kernel(AttentionArgs a) {
  constexpr int kStride = kD + 8;  // shared row stride in elements
  __shared__ alignas(16) std::uint16_t k_tile[kKeyBlock * kStride];
  __shared__ alignas(16) std::uint16_t v_tile[kKeyBlock * kStride];

  int const tile = blockIdx.x, kv_head = blockIdx.y;
  int const seg = a.tile_segment[tile], row0 = a.tile_row_start[tile];
  int const slot = a.segment_slot[seg], tok0 = a.segment_token_start[seg], ntok = a.segment_tokens[seg];
  int const group = a.heads / a.kv_heads, rows = ntok * group, D = a.head_dim;
  std::int64_t const q_dim = static_cast<std::int64_t>(a.heads) * D, kv_dim = static_cast<std::int64_t>(a.kv_heads) * D;
  int const warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  int const g = lane / 4, c = lane % 4;

  // This thread's two rows (g and g + 8 of the warp's 16): token, query head, last key.
  int token[2], head[2], limit[2];
  bool valid[2];
  for (int h = 0; h < 2; ++h) {
    int const r = row0 + warp * 16 + g + 8 * h;
    valid[h] = r < rows;
    token[h] = tok0 + (valid[h] ? r / group : 0);
    head[h] = kv_head * group + (valid[h] ? r % group : 0);
    limit[h] = valid[h] ? a.token_pos[token[h]] : -1;
  }
  int const last_row = min(row0 + kAttentionTileRows, rows) - 1;
  int const kv_end = a.token_pos[tok0 + last_row / group] + 1;  // positions grow with the token index

  // Q as A fragments, straight from global memory (read once per CTA).
  auto const* q = static_cast<std::uint16_t const*>(a.q);
  std::uint32_t qf[kD / 16][4];
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int const h = i & 1, col = kk * 16 + 2 * c + ((i & 2) ? 8 : 0);
      qf[kk][i] = (valid[h] && col < D)
                      ? *reinterpret_cast<std::uint32_t const*>(q + token[h] * q_dim + static_cast<std::int64_t>(head[h]) * D + col)
                      : 0u;
    }
  }

  float const scale_log2 = a.scale * 1.4426950408889634f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[kD / 8][4];
#pragma unroll
  for (int j = 0; j < kD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

  std::int64_t const cache_base = static_cast<std::int64_t>(slot) * a.capacity * kv_dim + static_cast<std::int64_t>(kv_head) * D;
  auto const* k_src = static_cast<std::uint16_t const*>(a.k_cache) + cache_base;
  auto const* v_src = static_cast<std::uint16_t const*>(a.v_cache) + cache_base;

  // Split-KV (decode): CTA z of gridDim.z takes an equal share of the key blocks and leaves
  // unnormalized partial results for attention_combine_kernel.
  int const blocks_total = (kv_end + kKeyBlock - 1) / kKeyBlock;
  int const per_split = (blocks_total + a.splits - 1) / a.splits;
  int const kb_begin = static_cast<int>(blockIdx.z) * per_split * kKeyBlock;
  int const kb_end = min(kv_end, (static_cast<int>(blockIdx.z) + 1) * per_split * kKeyBlock);
  for (int kb = kb_begin; kb < kb_end; kb += kKeyBlock) {
    __syncthreads();  // the previous block's tiles are no longer read
    // Stage K and V [64 keys][kD] in 16-byte chunks; keys past kv_end and columns past D are 0
    // (their scores are masked; zeros keep P * V finite).
    constexpr int kChunks = kD / 8;
    for (int i = static_cast<int>(threadIdx.x); i < kKeyBlock * kChunks; i += kAttnWarps * 32) {
      int const key = i / kChunks, col = (i % kChunks) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (kb + key < kv_end && col < D) {
        std::int64_t const off = static_cast<std::int64_t>(kb + key) * kv_dim + col;
        kv = *reinterpret_cast<uint4 const*>(k_src + off);
        vv = *reinterpret_cast<uint4 const*>(v_src + off);
      }
      *reinterpret_cast<uint4*>(k_tile + key * kStride + col) = kv;
      *reinterpret_cast<uint4*>(v_tile + key * kStride + col) = vv;
    }
    __syncthreads();
    if (row0 + warp * 16 >= rows) continue;  // a warp without rows only helps staging

    float s[kKeyBlock / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeyBlock / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        std::uint16_t const* kr = k_tile + (nt * 8 + g) * kStride + kk * 16 + 2 * c;
        mma_bf16(s[nt], qf[kk], *reinterpret_cast<std::uint32_t const*>(kr), *reinterpret_cast<std::uint32_t const*>(kr + 8));
      }
    }
    // Scale (log2 domain), causal mask, online softmax for the two rows.
    float row_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kKeyBlock / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int const h = e >> 1, key = kb + nt * 8 + 2 * c + (e & 1);
        float const v = key <= limit[h] ? s[nt][e] * scale_log2 : -INFINITY;
        s[nt][e] = v;
        row_max[h] = fmaxf(row_max[h], v);
      }
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xFFFFFFFFu, row_max[h], 1));
      row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xFFFFFFFFu, row_max[h], 2));
      float const m_new = fmaxf(m[h], row_max[h]);
      // A row that has seen no visible key yet keeps m = -inf: exponents use 0 instead, so
      // exp2(-inf - 0) = 0 and no -inf - -inf appears.
      float const m_use = m_new == -INFINITY ? 0.0f : m_new;
      alpha[h] = exp2f(m[h] - m_use);
      m[h] = m_new;
      l[h] *= alpha[h];
#pragma unroll
      for (int nt = 0; nt < kKeyBlock / 8; ++nt) {
        float const p0 = exp2f(s[nt][2 * h] - m_use), p1 = exp2f(s[nt][2 * h + 1] - m_use);
        s[nt][2 * h] = p0;
        s[nt][2 * h + 1] = p1;
        l[h] += p0 + p1;  // this thread's columns; the quad's partial sums are added at the end
      }
    }
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
    // O += P V, 16 keys per step.
#pragma unroll
    for (int ks = 0; ks < kKeyBlock / 16; ++ks) {
      std::uint32_t const pa[4] = {pack_bf16(s[2 * ks][0], s[2 * ks][1]), pack_bf16(s[2 * ks][2], s[2 * ks][3]),
                                   pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                                   pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3])};
      // ldmatrix.x4.trans: lanes 0-7 / 8-15 / 16-23 / 24-31 address the rows of the 8x8
      // matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15);
      // transposed, they are the B fragments of two n8 tiles of d.
      int const key = ks * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
      for (int dn = 0; dn < kD / 16; ++dn) {
        std::uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_tile + key * kStride + dn * 16 + (lane / 16) * 8);
        mma_bf16(o[2 * dn], pa, vb[0], vb[1]);
        mma_bf16(o[2 * dn + 1], pa, vb[2], vb[3]);
      }
    }
  }

  auto* out = static_cast<std::uint16_t*>(a.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xFFFFFFFFu, l[h], 1);
    l[h] += __shfl_xor_sync(0xFFFFFFFFu, l[h], 2);
    if (!valid[h]) continue;
    if (a.splits > 1) {
      // Partial row (token, head) of split z: o unnormalized [D], (m, l) in the log2 domain.
      std::int64_t const prow = static_cast<std::int64_t>(blockIdx.z) * a.tokens * a.heads +
                                static_cast<std::int64_t>(token[h]) * a.heads + head[h];
      float* po = a.partial_o + prow * D;
#pragma unroll
      for (int j = 0; j < kD / 8; ++j) {
        int const col = j * 8 + 2 * c;
        if (col < D) *reinterpret_cast<float2*>(po + col) = make_float2(o[j][2 * h], o[j][2 * h + 1]);
      }
      if (c == 0) a.partial_ml[prow] = make_float2(m[h], l[h]);
      continue;
    }
    float const inv = 1.0f / l[h];
    std::uint16_t* dst = out + token[h] * q_dim + static_cast<std::int64_t>(head[h]) * D;
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) {
      int const col = j * 8 + 2 * c;
      if (col < D) {
        *reinterpret_cast<std::uint32_t*>(dst + col) = pack_bf16(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
      }
    }
  }
}

// Merges the splits of split-KV attention: one CTA per (token, head), one thread per column.
// With M = max_z m_z: out = sum_z 2^(m_z - M) o_z / sum_z 2^(m_z - M) l_z (a split that saw no
// visible key has m = -inf and contributes 0).
__global__ void attention_combine_kernel(AttentionArgs a) {
  std::int64_t const row = blockIdx.x;  // token * heads + head
  int const col = static_cast<int>(threadIdx.x);
  std::int64_t const rows = a.tokens * a.heads;
  float mx = -INFINITY;
  for (int z = 0; z < a.splits; ++z) mx = fmaxf(mx, a.partial_ml[z * rows + row].x);
  float num = 0, den = 0;
  for (int z = 0; z < a.splits; ++z) {
    float2 const ml = a.partial_ml[z * rows + row];
    float const w = ml.x == -INFINITY ? 0.0f : exp2f(ml.x - mx);
    den += w * ml.y;
    if (col < a.head_dim) num += w * a.partial_o[(z * rows + row) * a.head_dim + col];
  }
  if (col < a.head_dim) static_cast<std::uint16_t*>(a.out)[row * a.head_dim + col] = float_to_bf16_bits(num / den);
}

// ------------------------------------------------------------------------------------------
// Greedy argmax and decode bookkeeping.
// ------------------------------------------------------------------------------------------

// Candidate (value, index) beats the current best: a real index over none, a larger value, or
// the lower index of an equal value (values are never NaN here; index -1 = nothing seen).
__device__ __forceinline__ bool better(float value, int index, float best_value, int best_index) {
  return index >= 0 && (best_index < 0 || value > best_value || (value == best_value && index < best_index));
}

__global__ void argmax_kernel(std::uint16_t const* logits, std::int64_t vocab, int const* row_slot, int* next_token) {
  __shared__ float best_value[32];
  __shared__ int best_index[32];
  std::int64_t const r = blockIdx.x;
  float bv = -INFINITY;
  int bi = -1;
  for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    float const v = bf16_bits_to_float(logits[r * vocab + i]);
    if (v > bv || bi < 0) {  // NaN never compares greater; the first index seen is kept on ties
      if (v == v) {
        bv = v;
        bi = static_cast<int>(i);
      } else if (bi < 0) {
        bi = static_cast<int>(i);
      }
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    float const ov = __shfl_xor_sync(0xFFFFFFFFu, bv, o);
    int const oi = __shfl_xor_sync(0xFFFFFFFFu, bi, o);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  int const warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) {
    best_value[warp] = bv;
    best_index[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int const warps = static_cast<int>(blockDim.x) / 32;
    for (int w = 1; w < warps; ++w) {
      float const ov = best_value[w];
      int const oi = best_index[w];
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    next_token[row_slot ? row_slot[r] : static_cast<int>(r)] = bi < 0 ? 0 : bi;
  }
}

__global__ void decode_positions_kernel(int const* seq_len, std::int64_t batch, int* token_pos) {
  std::int64_t const s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s < batch) token_pos[s] = seq_len[s];
}

__global__ void advance_lengths_kernel(int* seq_len, std::int64_t batch) {
  std::int64_t const s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s < batch) seq_len[s] += 1;
}

int threads_for(std::int64_t cols) {
  return cols >= 1024 ? 256 : cols >= 256 ? 128 : 64;
}

}  // namespace

cudaError_t launch_embed(void const* embed, int const* tokens, int const* token_slot, int const* token_pos,
                         std::int64_t count, std::int64_t hidden, float* residual, int* history, std::int64_t capacity,
                         cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  embed_kernel<<<static_cast<unsigned>(count), threads_for(hidden), 0, stream>>>(
      static_cast<std::uint16_t const*>(embed), tokens, token_slot, token_pos, hidden, residual, history, capacity);
  return cudaGetLastError();
}

cudaError_t launch_add_rms_norm(float* residual, void const* delta, float const* weight, std::int64_t rows,
                                std::int64_t hidden, float eps, void* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  add_rms_norm_kernel<<<static_cast<unsigned>(rows), threads_for(hidden), 0, stream>>>(
      residual, static_cast<std::uint16_t const*>(delta), weight, hidden, eps, static_cast<std::uint16_t*>(out));
  return cudaGetLastError();
}

cudaError_t launch_gather_rows(void const* src, int const* index, std::int64_t count, std::int64_t cols, void* dst,
                               cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  gather_rows_kernel<<<static_cast<unsigned>(count), threads_for(cols), 0, stream>>>(
      static_cast<std::uint16_t const*>(src), index, cols, static_cast<std::uint16_t*>(dst));
  return cudaGetLastError();
}

cudaError_t launch_rope_cache(RopeCacheArgs const& args, cudaStream_t stream) {
  if (args.tokens == 0) return cudaSuccess;
  rope_cache_kernel<<<static_cast<unsigned>(args.tokens), 128, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t launch_attention(AttentionArgs const& args, cudaStream_t stream) {
  if (args.tiles == 0) return cudaSuccess;
  if (args.head_dim <= 0 || args.head_dim % 8 != 0 || args.head_dim > 128 || args.kv_heads <= 0 ||
      args.heads % args.kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  if (args.splits < 1 || (args.splits > 1 && (!args.partial_o || !args.partial_ml || args.tokens <= 0))) {
    return cudaErrorInvalidValue;
  }
  dim3 const grid(static_cast<unsigned>(args.tiles), static_cast<unsigned>(args.kv_heads), static_cast<unsigned>(args.splits));
  int const padded = (args.head_dim + 15) / 16 * 16;
  switch (padded) {
    case 16: attention_kernel<16><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    case 32: attention_kernel<32><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    case 48: attention_kernel<48><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    case 64: attention_kernel<64><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    case 80: attention_kernel<80><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    case 96: attention_kernel<96><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    case 112: attention_kernel<112><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
    default: attention_kernel<128><<<grid, kAttnWarps * 32, 0, stream>>>(args); break;
  }
  if (args.splits > 1) {
    cudaError_t const status = cudaGetLastError();
    if (status != cudaSuccess) return status;
    attention_combine_kernel<<<static_cast<unsigned>(args.tokens * args.heads), (args.head_dim + 31) / 32 * 32, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

cudaError_t launch_swiglu(void const* gate_up, std::int64_t tokens, std::int64_t intermediate, void* out,
                          cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  if (intermediate % 8 == 0) {
    dim3 const grid(static_cast<unsigned>((intermediate / 8 + 255) / 256), static_cast<unsigned>(tokens));
    swiglu_vec8_kernel<<<grid, 256, 0, stream>>>(static_cast<std::uint16_t const*>(gate_up), intermediate,
                                                 static_cast<std::uint16_t*>(out));
    return cudaGetLastError();
  }
  swiglu_kernel<<<static_cast<unsigned>(tokens), threads_for(intermediate), 0, stream>>>(
      static_cast<std::uint16_t const*>(gate_up), intermediate, static_cast<std::uint16_t*>(out));
  return cudaGetLastError();
}

cudaError_t launch_argmax(void const* logits, std::int64_t rows, std::int64_t vocab, int const* row_slot,
                          int* next_token, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  argmax_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(static_cast<std::uint16_t const*>(logits), vocab,
                                                                  row_slot, next_token);
  return cudaGetLastError();
}

cudaError_t launch_decode_positions(int const* seq_len, std::int64_t batch, int* token_pos, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  decode_positions_kernel<<<static_cast<unsigned>((batch + 255) / 256), 256, 0, stream>>>(seq_len, batch, token_pos);
  return cudaGetLastError();
}

cudaError_t launch_advance_lengths(int* seq_len, std::int64_t batch, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  advance_lengths_kernel<<<static_cast<unsigned>((batch + 255) / 256), 256, 0, stream>>>(seq_len, batch);
  return cudaGetLastError();
}

}  // namespace slidesparse::cuda
