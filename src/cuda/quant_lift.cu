// Fused per-token quantization + activation lifting (the GPU twin of core/lift.cpp's
// quantize_lift and lift). One warp per row:
//   pass 1  absmax over the original K columns (16-byte loads where aligned), warp reduction;
//           scale = max(absmax, 1e-12) / QMAX, inv = 1 / scale (IEEE division: no fast math);
//   pass 2  each lane takes whole source blocks g of 2N columns (one vector load) and lifts
//           them: window w of block g is one 32-bit word of INT8/FP8 codes at lifted columns
//           g*(4N-4) + 4w .. +3 <- source g*2N + 2w .. +3; a warp stages its 32 blocks in
//           shared memory and writes them out with contiguous 16-byte stores.
// The dense (identity) layout moves chunks of 16 columns with 16-byte stores.
// Bit-exact against the CPU reference: every value is x * inv rounded once (RN), then
// rint + clamp (INT8) or cvt.rn.satfinite (E4M3), exactly as core/quantize.hpp specifies.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "quant_lift_launch.hpp"

namespace slidesparse::cuda::detail {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr float kScaleFloor = 1e-12f;  // = core/quantize.hpp kScaleFloor

template <InputType kIn>
__device__ __forceinline__ float to_float(std::uint16_t bits) {
  if constexpr (kIn == InputType::kBF16) {
    return __uint_as_float(static_cast<std::uint32_t>(bits) << 16);
  } else {
    return __half2float(__ushort_as_half(bits));
  }
}

template <OutputType kOut>
__device__ __forceinline__ std::uint32_t quantize_code(float x, float inv_scale) {
  float const v = __fmul_rn(x, inv_scale);  // one rounding, never contracted
  if constexpr (kOut == OutputType::kI8) {
    int q = __float2int_rn(v);  // half to even; NaN -> 0; saturates
    q = min(max(q, -127), 127);
    return static_cast<std::uint32_t>(q) & 0xFFu;
  } else {
    return static_cast<std::uint32_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
  }
}

template <OutputType kOut>
constexpr float quant_max() {
  return kOut == OutputType::kI8 ? 127.0f : 448.0f;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
  return v;
}

// Loads `kCount` consecutive 16-bit values starting at p with the widest vector loads the
// alignment allows (the caller guarantees p is aligned to kAlignBytes).
template <int kCount, int kAlignBytes>
__device__ __forceinline__ void load_u16(std::uint16_t const* p, std::uint16_t (&v)[kCount]) {
  constexpr int kBytes = 2 * kCount;
  constexpr int kVec = (kBytes % 16 == 0 && kAlignBytes % 16 == 0) ? 16
                       : (kBytes % 8 == 0 && kAlignBytes % 8 == 0) ? 8
                       : (kBytes % 4 == 0 && kAlignBytes % 4 == 0) ? 4 : 2;
  if constexpr (kVec == 16) {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      uint4 const w = reinterpret_cast<uint4 const*>(p)[i];
      std::uint32_t const words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[8 * i + 2 * j] = static_cast<std::uint16_t>(words[j]);
        v[8 * i + 2 * j + 1] = static_cast<std::uint16_t>(words[j] >> 16);
      }
    }
  } else if constexpr (kVec == 8) {
#pragma unroll
    for (int i = 0; i < kBytes / 8; ++i) {
      uint2 const w = reinterpret_cast<uint2 const*>(p)[i];
      v[4 * i] = static_cast<std::uint16_t>(w.x);
      v[4 * i + 1] = static_cast<std::uint16_t>(w.x >> 16);
      v[4 * i + 2] = static_cast<std::uint16_t>(w.y);
      v[4 * i + 3] = static_cast<std::uint16_t>(w.y >> 16);
    }
  } else if constexpr (kVec == 4) {
#pragma unroll
    for (int i = 0; i < kBytes / 4; ++i) {
      std::uint32_t const w = reinterpret_cast<std::uint32_t const*>(p)[i];
      v[2 * i] = static_cast<std::uint16_t>(w);
      v[2 * i + 1] = static_cast<std::uint16_t>(w >> 16);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kCount; ++i) v[i] = p[i];
  }
}

// Number of the kCount columns starting at `begin` that lie before `k` (0 .. kCount).
template <int kCount>
__device__ __forceinline__ int columns_before(std::int64_t begin, std::int64_t k) {
  std::int64_t const left = k - begin;
  return left <= 0 ? 0 : (left >= kCount ? kCount : static_cast<int>(left));
}

// Loads kCount values from p, zero beyond `valid` (a partial block at the end of the row).
template <int kCount>
__device__ __forceinline__ void load_u16_guarded(std::uint16_t const* p, int valid, std::uint16_t (&v)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) v[i] = i < valid ? p[i] : std::uint16_t{0};
}

template <int kWords>
__device__ __forceinline__ void store_words(void* p, std::uint32_t const (&w)[kWords]) {
  // Lifted outputs of one block start at a multiple of kWords * 4 bytes.
  if constexpr (kWords % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kWords / 4; ++i) {
      reinterpret_cast<uint4*>(p)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
    }
  } else if constexpr (kWords % 2 == 0) {
#pragma unroll
    for (int i = 0; i < kWords / 2; ++i) reinterpret_cast<uint2*>(p)[i] = make_uint2(w[2 * i], w[2 * i + 1]);
  } else {
#pragma unroll
    for (int i = 0; i < kWords; ++i) reinterpret_cast<std::uint32_t*>(p)[i] = w[i];
  }
}

// Packs lifted outputs: 8-bit codes 4 per word, or 16-bit values 2 per word.
template <InputType kIn, OutputType kOut, int kOutCount>
__device__ __forceinline__ void pack(std::uint16_t const (&src)[kOutCount], float inv_scale,
                                     std::uint32_t (&words)[kOut == OutputType::kSame ? kOutCount / 2 : kOutCount / 4]) {
  if constexpr (kOut == OutputType::kSame) {
#pragma unroll
    for (int i = 0; i < kOutCount / 2; ++i) words[i] = src[2 * i] | (static_cast<std::uint32_t>(src[2 * i + 1]) << 16);
  } else {
#pragma unroll
    for (int i = 0; i < kOutCount / 4; ++i) {
      std::uint32_t w = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) w |= quantize_code<kOut>(to_float<kIn>(src[4 * i + j]), inv_scale) << (8 * j);
      words[i] = w;
    }
  }
}

// Lifted bytes one source block produces (4(N-1) outputs), and per-warp staging of 32 blocks.
template <OutputType kOut, int kN>
constexpr int block_out_bytes() {
  return 4 * (kN - 1) * (kOut == OutputType::kSame ? 2 : 1);
}

template <InputType kIn, OutputType kOut, int kN>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) quant_lift_kernel(QuantLiftArgs const a) {
  // A CTA of 8 warps serves 8 / W rows; the W warps of a row split its columns (W > 1 when M is
  // too small to fill the GPU with one warp per row).
  int const lane = static_cast<int>(threadIdx.x) & 31;
  int const warp = static_cast<int>(threadIdx.x) / 32;
  int const w_per_row = a.warps_per_row;
  int const sub = warp % w_per_row;  // this warp's share of the row
  std::int64_t const row = static_cast<std::int64_t>(blockIdx.x) * (kWarpsPerBlock / w_per_row) + warp / w_per_row;
  bool const active = row < a.m;  // no early return: the CTA meets at __syncthreads below
  std::uint16_t const* __restrict__ const x_global = static_cast<std::uint16_t const*>(a.x) + (active ? row : 0) * a.ldx;
  constexpr int kOutBytes = kOut == OutputType::kSame ? 2 : 1;
  // __restrict__: the output never aliases the input, so loads may move ahead of earlier stores.
  std::uint8_t* __restrict__ const out = static_cast<std::uint8_t*>(a.out) + (active ? row : 0) * a.k_lifted * kOutBytes;
  int const t = sub * 32 + lane;  // thread index within the row's warps
  int const row_threads = w_per_row * 32;

  // Pass 1: the row's warps copy it into shared memory (16-byte loads where the global row is
  // aligned) and reduce its absmax on the way, so pass 2 reads the row from shared memory and
  // DRAM/L2 see each input byte once. Slot: 2K bytes rounded up to 16, 16-byte aligned.
  extern __shared__ uint4 row_slots[];
  std::int64_t const slot_vectors = (2 * a.k + 15) / 16;
  auto* const slot = reinterpret_cast<std::uint16_t*>(row_slots + (warp / w_per_row) * slot_vectors);
  float absmax = 0.0f;
  if (active) {
    if ((reinterpret_cast<std::uintptr_t>(x_global) & 15) == 0) {
      std::int64_t const vec_end = a.k / 8;
#pragma unroll 4
      for (std::int64_t i = t; i < vec_end; i += row_threads) {
        uint4 const w = reinterpret_cast<uint4 const*>(x_global)[i];
        reinterpret_cast<uint4*>(slot)[i] = w;
        if constexpr (kOut != OutputType::kSame) {
          std::uint32_t const words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            absmax = fmaxf(absmax, fabsf(to_float<kIn>(static_cast<std::uint16_t>(words[j]))));
            absmax = fmaxf(absmax, fabsf(to_float<kIn>(static_cast<std::uint16_t>(words[j] >> 16))));
          }
        }
      }
      for (std::int64_t c = vec_end * 8 + t; c < a.k; c += row_threads) {
        slot[c] = x_global[c];
        absmax = fmaxf(absmax, fabsf(to_float<kIn>(x_global[c])));
      }
    } else {
      for (std::int64_t c = t; c < a.k; c += row_threads) {
        slot[c] = x_global[c];
        absmax = fmaxf(absmax, fabsf(to_float<kIn>(x_global[c])));
      }
    }
  }
  __shared__ float warp_absmax[kWarpsPerBlock];
  absmax = warp_max(absmax);  // fmaxf ignores NaN, like the CPU reference
  if (lane == 0) warp_absmax[warp] = absmax;
  __syncthreads();  // the slot and the per-warp maxima are complete
  float inv_scale = 1.0f;
  if constexpr (kOut != OutputType::kSame) {
    int const first = warp - sub;
    for (int i = 0; i < w_per_row; ++i) absmax = fmaxf(absmax, warp_absmax[first + i]);
    float const scale = fmaxf(absmax, kScaleFloor) / quant_max<kOut>();
    inv_scale = 1.0f / scale;
    if (active && t == 0) a.scales[row] = scale;
  }
  if (!active) return;
  std::uint16_t const* const x = slot;  // pass 2 reads shared memory, 16-byte aligned
  constexpr bool aligned16 = true;

  if constexpr (kN == 0) {
    // Identity layout: chunks of 16 columns -> 16 outputs (16 or 32 bytes, 16-byte stores that
    // are contiguous across the warp), zero past K.
    constexpr int kChunk = 16;
    constexpr int kUnroll = 2;  // two 32-byte loads in flight per lane
    for (std::int64_t c0 = kChunk * t; c0 < a.k_lifted; c0 += kUnroll * kChunk * row_threads) {
      std::uint16_t v[kUnroll][kChunk];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        std::int64_t const c = c0 + static_cast<std::int64_t>(u) * kChunk * row_threads;
        if (aligned16 && c + kChunk <= a.k) {
          load_u16<kChunk, 16>(x + c, v[u]);
        } else {
          load_u16_guarded<kChunk>(x + c, columns_before<kChunk>(c, a.k), v[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        std::int64_t const c = c0 + static_cast<std::int64_t>(u) * kChunk * row_threads;
        if (c >= a.k_lifted) break;
        std::uint32_t words[kOut == OutputType::kSame ? kChunk / 2 : kChunk / 4];
        pack<kIn, kOut, kChunk>(v[u], inv_scale, words);
        store_words(out + c * kOutBytes, words);
      }
    }
  } else {
    constexpr int kBlock = 2 * kN;              // source columns per block
    constexpr int kLifted = 4 * (kN - 1);       // lifted columns per block
    constexpr int kBlockBytes = block_out_bytes<kOut, kN>();
    constexpr int kWords = kBlockBytes / 4;
    // Each lane lifts kUnroll blocks into the warp's staging area (all loads issued before the
    // first use, so kUnroll * 4N bytes per lane are in flight); the warp then writes the
    // segment's contiguous output (32 * kUnroll * kBlockBytes, a multiple of 16) with 16-byte
    // stores. A lane's own output (kBlockBytes, e.g. 12 for 6:8) would not be 16-byte aligned.
    constexpr int kUnroll = (4 * kN) >= 64 ? 1 : 64 / (4 * kN);  // ~64 bytes of input per lane
    constexpr int kSegBlocks = 32 * kUnroll;
    __shared__ uint4 stage_storage[kWarpsPerBlock][kSegBlocks * kBlockBytes / 16];
    auto* const stage = reinterpret_cast<std::uint8_t*>(stage_storage[warp]);
    std::int64_t const blocks = a.k_raw / kLifted;
    std::int64_t const full_blocks = a.k / kBlock;
    // Source block g starts at byte 4N*g of the row: aligned to gcd(4N, 16) when the row is.
    constexpr int kBlockAlign = (4 * kN) % 16 == 0 ? 16 : ((4 * kN) % 8 == 0 ? 8 : 4);
    for (std::int64_t seg = sub; seg * kSegBlocks < blocks; seg += w_per_row) {
      std::uint16_t v[kUnroll][kBlock];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // block of (segment, u, lane): coalesced per u
        std::int64_t const g = seg * kSegBlocks + u * 32 + lane;
        if (aligned16 && g < full_blocks) {
          load_u16<kBlock, kBlockAlign>(x + g * kBlock, v[u]);
        } else {
          load_u16_guarded<kBlock>(x + g * kBlock, g < blocks ? columns_before<kBlock>(g * kBlock, a.k) : 0, v[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        // Window w takes source positions 2w .. 2w+3.
        std::uint16_t lifted[kLifted];
#pragma unroll
        for (int w = 0; w < kN - 1; ++w) {
#pragma unroll
          for (int j = 0; j < 4; ++j) lifted[4 * w + j] = v[u][2 * w + j];
        }
        std::uint32_t words[kWords];
        pack<kIn, kOut, kLifted>(lifted, inv_scale, words);
        store_words(stage + (u * 32 + lane) * kBlockBytes, words);
      }
      __syncwarp();
      std::int64_t const seg_blocks = min(static_cast<std::int64_t>(kSegBlocks), blocks - seg * kSegBlocks);
      int const seg_bytes = static_cast<int>(seg_blocks) * kBlockBytes;  // a multiple of 4
      std::uint8_t* const dst = out + seg * kSegBlocks * kBlockBytes;    // 16-byte aligned
      for (int i = lane; i < seg_bytes / 16; i += 32) {
        reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<uint4 const*>(stage)[i];
      }
      for (int i = seg_bytes / 16 * 4 + lane; i < seg_bytes / 4; i += 32) {
        reinterpret_cast<std::uint32_t*>(dst)[i] = reinterpret_cast<std::uint32_t const*>(stage)[i];
      }
      __syncwarp();  // the stage is rewritten by the next segment
    }
    // Alignment tail [k_raw, k_lifted): zeros, one 32-bit word per thread step.
    std::int64_t const tail_words = (a.k_lifted - a.k_raw) * kOutBytes / 4;
    auto* const tail = reinterpret_cast<std::uint32_t*>(out + a.k_raw * kOutBytes);
    for (std::int64_t i = t; i < tail_words; i += row_threads) tail[i] = 0;
  }
}

template <InputType kIn, OutputType kOut>
cudaError_t launch_for_pattern(QuantLiftArgs const& a, cudaStream_t stream) {
  dim3 const block(kWarpsPerBlock * 32);
  int const rows_per_block = kWarpsPerBlock / a.warps_per_row;
  dim3 const grid(static_cast<unsigned>((a.m + rows_per_block - 1) / rows_per_block));
  std::size_t const smem = static_cast<std::size_t>(rows_per_block) * static_cast<std::size_t>((2 * a.k + 15) / 16 * 16);
  if (smem > kMaxRowSharedBytes) return cudaErrorInvalidValue;
  switch (a.n) {
#define SLIDESPARSE_QUANT_LIFT_CASE(N)                                                              \
  case N: {                                                                                         \
    /* Opt in to more than 48 KB of dynamic shared memory, once per instantiation (a host-side   */ \
    /* attribute, not stream work: capture-safe).                                                */ \
    static cudaError_t const opt_in = cudaFuncSetAttribute(                                         \
        quant_lift_kernel<kIn, kOut, N>, cudaFuncAttributeMaxDynamicSharedMemorySize,               \
        static_cast<int>(kMaxRowSharedBytes));                                                      \
    if (opt_in != cudaSuccess) return opt_in;                                                       \
    quant_lift_kernel<kIn, kOut, N><<<grid, block, smem, stream>>>(a);                              \
    break;                                                                                          \
  }
    SLIDESPARSE_QUANT_LIFT_CASE(0)
    SLIDESPARSE_QUANT_LIFT_CASE(2)
    SLIDESPARSE_QUANT_LIFT_CASE(3)
    SLIDESPARSE_QUANT_LIFT_CASE(4)
    SLIDESPARSE_QUANT_LIFT_CASE(5)
    SLIDESPARSE_QUANT_LIFT_CASE(6)
    SLIDESPARSE_QUANT_LIFT_CASE(7)
    SLIDESPARSE_QUANT_LIFT_CASE(8)
    SLIDESPARSE_QUANT_LIFT_CASE(9)
    SLIDESPARSE_QUANT_LIFT_CASE(10)
    SLIDESPARSE_QUANT_LIFT_CASE(11)
    SLIDESPARSE_QUANT_LIFT_CASE(12)
    SLIDESPARSE_QUANT_LIFT_CASE(13)
    SLIDESPARSE_QUANT_LIFT_CASE(14)
    SLIDESPARSE_QUANT_LIFT_CASE(15)
    SLIDESPARSE_QUANT_LIFT_CASE(16)
#undef SLIDESPARSE_QUANT_LIFT_CASE
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quant_lift(QuantLiftArgs const& a, cudaStream_t stream) {
  if (a.m == 0) return cudaSuccess;
  if (a.warps_per_row < 1 || a.warps_per_row > kWarpsPerBlock || kWarpsPerBlock % a.warps_per_row != 0) {
    return cudaErrorInvalidValue;
  }
  bool const bf16 = a.input == InputType::kBF16;
  switch (a.output) {
    case OutputType::kI8:
      return bf16 ? launch_for_pattern<InputType::kBF16, OutputType::kI8>(a, stream)
                  : launch_for_pattern<InputType::kF16, OutputType::kI8>(a, stream);
    case OutputType::kF8E4M3:
      return bf16 ? launch_for_pattern<InputType::kBF16, OutputType::kF8E4M3>(a, stream)
                  : launch_for_pattern<InputType::kF16, OutputType::kF8E4M3>(a, stream);
    case OutputType::kSame:
      return bf16 ? launch_for_pattern<InputType::kBF16, OutputType::kSame>(a, stream)
                  : launch_for_pattern<InputType::kF16, OutputType::kSame>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace slidesparse::cuda::detail
