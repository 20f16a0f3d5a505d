/// \file sparse_gemm_kernel.cuh
/// \brief SlideSparse's hand-written Hopper (sm_90a) 2:4 GEMM with the W8A8 layer's epilogue:
///   y[token][n] = Out(((acc * token_scale[token]) * row_scale[n]) + bias[n]),
///   acc = sum_k W'[n][k] X[token][k], W' 2:4 along K' (the slid weight), E4M3 (F32 acc) or INT8
/// (INT32 acc) — the arithmetic and rounding of cutlass_gemm.hpp and core/epilogue.hpp.
/// What it does differently from CUTLASS's sparse kernels:
///   - 256 x 128 CTA tiles (weight rows x tokens): two consumer warpgroups of 128 rows, each two
///     m64n128k64 sparse instructions per K = 64, so every B byte loaded from L2 feeds 256 rows;
///   - the weight tiled once at load time (sparse_tiles.hpp): compressed A images per (tile,
///     k-tile) and the 2:4 metadata in fragment order ([consumer thread] x 16 bytes per stage: one
///     conflict-free 16-byte shared load per thread per stage), both fetched by bulk copies; the
///     activations X [m][K'] read by TMA as the quant+lift kernel writes them (row-major, K' a
///     multiple of 16), zero-filled past m and K';
///   - wgmma batches of several stages run back to back between two drains of the tensor pipe
///     (Schedule, sparse_layout.hpp), where CUTLASS's sparse mainloop drains after every k-tile
///     (K_PIPE_MMAS = 0);
///   - the epilogue per chunk of 32 tokens: BF16 y (16-byte aligned, N % 8 == 0) scaled, biased
///     and rounded in registers, stored transposed by stmatrix into a swizzled staging and written
///     by double-buffered TMA stores (20 % faster than the two shared-memory passes it replaced,
///     H100, 2026-12-06); other outputs keep those passes (fragments to F32, then per token
///     scaled, biased, rounded once to Out and stored as runs of y);
///   - clusters of kCluster CTAs on consecutive token tiles of the same weight rows: each CTA
///     loads 1 / kCluster of every weight stage and multicasts it to the cluster, so the L2
///     serves 16 + 20 / kCluster KB per stage per CTA instead of 36 (2-3 % faster on an H100);
///   - persistent: one CTA per SM walks the tiles (bands of 2048 tokens swept across the n
///     tiles, cluster_tile in sparse_layout.hpp), the producer running on into
///     the next tile's stages while the consumers write the last one out (the epilogue has its
///     own shared memory). The first, non-persistent version paid the CTA start, the pipeline
///     fill and the epilogue once per tile: 25 % slower than CUTLASS's persistent 2:4 kernel on
///     an H100 (2026-12-06), whatever the schedule.
/// Why groups and not a double buffer: a first version loaded stage k+1's metadata while stage
/// k's batch was in flight (one wgmma.wait_group 1 per stage). ptxas (CUDA 13.0) reported "C7513
/// Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma
/// instructions defining input registers of a wgmma between start and end of the pipeline
/// stage", and the SASS showed every QGMMA followed by its own WARPGROUP.DEPBAR — worse than
/// draining once per stage. While batches chain on the same accumulators, ptxas treats the whole
/// chain as one pipeline stage, and a register loaded from memory anywhere in it breaks it;
/// descriptors (ALU results) do not. So every schedule loads a group's metadata before the
/// group's first wgmma and drains once per group; scripts/check_wgmma_schedule.py checks in CI
/// that the compiled chains are as long as the schedule says (nvdisasm, no GPU).
/// Layouts (sparse_layout.hpp): A rows of 64 compressed bytes per stage, 64-byte swizzle; B
/// tokens x 128 bytes, 128-byte swizzle (TMA's); metadata owner per meta_slot (formula C0) —
/// checked on a GPU by bench_wgmma_sp_layout. Device code only; include from .cu files built for
/// sm_90a.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "ptx.cuh"
#include "sparse_layout.hpp"

namespace slidesparse::cuda::sm90 {

// wgmma.wait_group with an operand known only after unrolling (the immediate must be constant).
__device__ __forceinline__ void wgmma_wait_pending(int pending) {
  switch (pending) {
    case 0: wgmma_wait<0>(); break;
    case 1: wgmma_wait<1>(); break;
    case 2: wgmma_wait<2>(); break;
    default: wgmma_wait<3>(); break;
  }
}

// The producer's wait for the consumers to hand back a stage, which can give up: a first run on a
// GPU that hangs (a byte count or an arrival count that never completes, or a wgmma that never
// retires) records in host memory which k-tile's stage never came back (mapped memory stays
// readable after the trap leaves the context unusable) and traps, after seconds. Only the
// producer (40 registers) checks: the consumers' waits stay plain, since every live register
// there counts (128 accumulators, up to 16 metadata words, 168 registers at 384 threads; one
// more and ptxas serializes the G = 4 schedule, C7512). No printf: a call makes ptxas
// serialize every wgmma of the kernel (C7510).
// cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda); null
// where the driver does not provide it.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 const encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// The kernel's x_map: x' [m][k] bytes (row-major, rows k bytes apart, k a multiple of 16) in
// kTileM x kStageK boxes with the 128-byte swizzle the B descriptor expects; rows past m and
// columns past k read as zeros. CUDA_ERROR_NOT_SUPPORTED without the driver's encoder.
inline CUresult encode_x_map(CUtensorMap* map, void const* x, int64_t m, int64_t k) {
  PFN_cuTensorMapEncodeTiled_v12000 const encode = tensor_map_encoder();
  if (encode == nullptr) return CUDA_ERROR_NOT_SUPPORTED;
  cuuint64_t const dims[2] = {cuuint64_t(k), cuuint64_t(m)};
  cuuint64_t const strides[1] = {cuuint64_t(k)};
  cuuint32_t const box[2] = {kStageK, kTileM};
  cuuint32_t const element_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(x), dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

// The kernel's y_map (BF16 output through TMA stores): y [m][n] BF16 row-major in boxes of
// kEpilogueTokens tokens x 64 rows (128 bytes, the 128-byte swizzle the epilogue's staging is
// written in). Not CUDA_SUCCESS where TMA cannot describe y (y not 16-byte aligned, n * 2 not a
// multiple of 16) or the driver has no encoder.
inline CUresult encode_y_map(CUtensorMap* map, void* y, int64_t m, int64_t n) {
  PFN_cuTensorMapEncodeTiled_v12000 const encode = tensor_map_encoder();
  if (encode == nullptr) return CUDA_ERROR_NOT_SUPPORTED;
  if ((n * 2) % 16 != 0 || reinterpret_cast<uintptr_t>(y) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  cuuint64_t const dims[2] = {cuuint64_t(n), cuuint64_t(m)};
  cuuint64_t const strides[1] = {cuuint64_t(n) * 2};
  cuuint32_t const box[2] = {64, cuuint32_t(kEpilogueTokens)};
  cuuint32_t const element_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, y, dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

// The persistent grid: one CTA per SM in clusters of kCluster (each a cluster tile of
// kCluster x 1 CTA tiles), at most one cluster per cluster tile. An H100's or H200's 132 SMs
// hold 66 clusters of two (TPCs are SM pairs; bench_sparse_gemm_proto prints the occupancy API's
// count to confirm it); a GPU that holds fewer runs the rest as a later wave, still correct.
inline unsigned persistent_grid(long long m, long long n, int multiprocessors) {
  long long const m_groups = ((m + kTileM - 1) / kTileM + kCluster - 1) / kCluster;
  long long const cluster_tiles = m_groups * ((n + kTileN - 1) / kTileN);
  long long const clusters = cluster_tiles < multiprocessors / kCluster ? cluster_tiles : multiprocessors / kCluster;
  return static_cast<unsigned>(kCluster * (clusters > 0 ? clusters : 1));
}

struct HangReport {
  unsigned block, iteration_plus_one;  // CTA and its k-iteration (over all its tiles); 0: no report
};

// hang: mapped host memory, or null for a plain wait (the library's launches).
__device__ __forceinline__ void wait_released_or_trap(uint64_t* bar, uint32_t parity, int iteration, HangReport* hang) {
  if (hang == nullptr) {
    mbarrier_wait(bar, parity);
    return;
  }
  // Counting tries: each waits up to a hardware time limit, so 2^26 tries are seconds.
  for (unsigned tries = 0; !mbarrier_try_wait(bar, parity);) {
    if (++tries == (1u << 26)) {
      volatile HangReport* r = hang;
      r->block = blockIdx.x, r->iteration_plus_one = unsigned(iteration) + 1;
      __threadfence_system();
      __trap();
    }
  }
}

// Word w (= row block * 2 + K half) of a thread's metadata for one stage.
__device__ __forceinline__ uint32_t word(uint4 const& m, int w) {
  return w == 0 ? m.x : w == 1 ? m.y : w == 2 ? m.z : m.w;
}

/// Operand type of both operands: FP8 E4M3 (F32 accumulators) or INT8 (INT32 accumulators).
enum class Operand : int { kE4M3, kS8 };
template <Operand kIn>
using Accumulator = std::conditional_t<kIn == Operand::kE4M3, float, int32_t>;

// y[token][row] = Out(((acc * token_scale[token]) * row_scale[row]) + bias[row]) — the per-token
// activation scale, the per-channel weight scale and the bias of a SlideSparse layer in the
// library's order (cutlass_gemm.hpp, core/epilogue.hpp), each product and sum rounded on its own
// (no contraction: __fmul_rn / __fadd_rn), INT32 accumulators converted to F32 first, then one
// rounding to Out. bias may be null.
// Out: float (the exactness checks) or __nv_bfloat16 (the timing: the output a layer writes).
// y_by_tma (BF16 only): y_map describes y [m][n] (BF16, boxes of 32 tokens x 64 rows, 128-byte
// swizzle) and the epilogue stores through it; otherwise (and y_map unused) element-wise.
// (The schedule travels as three template arguments: nvcc's host stubs reject class-type ones.)
template <Operand kIn, class Out, int kStages, int kGroup, bool kStagger>
__global__ void __launch_bounds__(kThreads, 1) __cluster_dims__(kCluster, 1, 1)
    sparse_gemm(uint8_t const* __restrict__ a_tiles, uint8_t const* __restrict__ e_tiles,
                __grid_constant__ CUtensorMap const x_map, __grid_constant__ CUtensorMap const y_map, int y_by_tma,
                int k_tiles, int n, int m,
                float const* __restrict__ row_scale, float const* __restrict__ token_scale,
                float const* __restrict__ bias, Out* __restrict__ y, HangReport* hang) {
  static_assert(kGroup >= 1 && kGroup <= 4 && kGroup < kStages, "wgmma_wait_pending covers 3 pending groups");
  static_assert(Schedule{kStages, kGroup, kStagger}.smem_bytes() <= 227 * 1024, "shared memory ring too deep");
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // Aligned to 1024 (the 128-byte swizzle's atom) by an offset, not through an integer cast,
  // so that the compiler still knows it is shared memory (LDS/STS, not generic loads).
  // [ring: kStages x kStageBytes][epilogue staging: kEpilogueBytes][full, empty barriers]
  uint8_t* smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
  float* staging = reinterpret_cast<float*>(smem + kStages * kStageBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes + kEpilogueBytes);
  uint64_t* empty = full + kStages;
  // Cluster tiles (kCluster token tiles side by side, one n tile) in cluster_tile's order (bands
  // of token tiles swept across the n tiles, sparse_layout.hpp); cluster c takes cluster tiles
  // c, c + clusters, ..., and its CTA of rank r the token tile kCluster * m_group + r (past m when m_tiles is not a multiple of kCluster: that
  // CTA still loads its share of the weight stages for the others, and stores nothing). The
  // ring's k-iterations run on across the CTA's tiles: iteration it uses stage it % kStages in
  // phase (it / kStages) & 1.
  int const m_tiles = (m + kTileM - 1) / kTileM;
  int const m_groups = (m_tiles + kCluster - 1) / kCluster;
  int const n_tiles = (n + kTileN - 1) / kTileN;
  int const tiles = m_groups * n_tiles;
  int const cluster = blockIdx.x / kCluster, clusters = gridDim.x / kCluster;
  uint32_t const rank = cluster_cta_rank();
  int const warpgroup = threadIdx.x / 128, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], 2 * 4 * kCluster);  // one arrival per consumer warp of the cluster
    }
    fence_barrier_init();
  }
  // Every CTA's barriers are initialized before any peer multicasts into it or arrives on them.
  cluster_sync();

  if (warpgroup == 0) {  // producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x == 0) {
      int it = 0;
      for (int tile = cluster; tile < tiles; tile += clusters) {
        // A CTA past m reads the last real token tile (its result is never stored).
        ClusterTile const at = cluster_tile(tile, m_groups, n_tiles);
        int const m_tile = min(kCluster * at.m_group + int(rank), m_tiles - 1), n_tile = at.n_tile;
        uint8_t const* a = a_tiles + size_t(n_tile) * k_tiles * kABytes;
        uint8_t const* e = e_tiles + size_t(n_tile) * k_tiles * kEBytes;
        for (int kt = 0; kt < k_tiles; ++kt, ++it) {
          int const s = it % kStages;
          if (it >= kStages) wait_released_or_trap(&empty[s], ((it / kStages) - 1) & 1, it - kStages, hang);
          uint8_t* stage = smem + s * kStageBytes;
          // The whole stage arrives in every CTA: its own B, and each CTA's share (bytes
          // [rank * share, +share)) of the A image and of the metadata, multicast to all. The
          // slot is free in every CTA: its empty barrier counts the whole cluster's consumers.
          constexpr uint32_t kAShare = kABytes / kCluster, kEShare = kEBytes / kCluster;
          constexpr uint16_t kEveryCta = (1u << kCluster) - 1;
          mbarrier_arrive_expect_tx(&full[s], kStageBytes);
          bulk_copy_g2s_multicast(stage + rank * kAShare, a + size_t(kt) * kABytes + rank * kAShare, kAShare, &full[s],
                                  kEveryCta);
          // B: tokens [128 m_tile, +128) x bytes [128 kt, +128) of X [m][k] (row-major, as the
          // quant+lift kernel writes it), 128-byte swizzle; beyond m or k the box reads zeros.
          tma_load_2d(stage + kABytes, &x_map, kt * kStageK, m_tile * kTileM, &full[s]);
          bulk_copy_g2s_multicast(stage + kABytes + kBBytes + rank * kEShare, e + size_t(kt) * kEBytes + rank * kEShare,
                                  kEShare, &full[s], kEveryCta);
        }
      }
      // Watchdog only (with a hang report): wait until the last stages come back too (the
      // release of iteration j completes phase j / kStages of its slot's empty barrier).
      for (int j = max(0, it - kStages); hang != nullptr && j < it; ++j) {
        wait_released_or_trap(&empty[j % kStages], (j / kStages) & 1, j, hang);
      }
    }
    // No cluster_sync here: barrier.cluster waits only for threads that have not exited, and
    // this CTA's consumers keep its shared memory alive until the peers are done with it.
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  int const wg = warpgroup - 1;           // rows [128 wg, 128 wg + 128) of the tile
  int const ct = threadIdx.x - 128;       // consumer thread 0..255
  int const t = threadIdx.x % 128;        // thread within the warpgroup
  Accumulator<kIn> acc[2][64];

  // Iterations [it, it + G): wait for all of them and load their metadata (one 16-byte shared
  // load per thread and stage), then issue their batches back to back, one commit group per
  // stage, and retire them in order, handing each stage back as its batch completes. The last
  // wait (pending 0) is the group's one drain of the tensor pipe.
  auto group_step = [&](int it, auto group_size) {
    constexpr int G = decltype(group_size)::value;
    uint4 meta[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      int const s = (it + j) % kStages;
      mbarrier_wait(&full[s], ((it + j) / kStages) & 1);
      meta[j] = reinterpret_cast<uint4 const*>(smem + s * kStageBytes + kABytes + kBBytes)[ct];
    }
    fence_accumulators(acc[0]);
    fence_accumulators(acc[1]);
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < G; ++j) {
      uint8_t const* stage = smem + ((it + j) % kStages) * kStageBytes;
      uint32_t const a_base = smem_u32(stage) + wg * 128 * 64;
      uint32_t const b_base = smem_u32(stage + kABytes);
#pragma unroll
      for (int rb = 0; rb < 2; ++rb) {
#pragma unroll
        for (int kh = 0; kh < 2; ++kh) {
          uint64_t const da = smem_desc(a_base + rb * 64 * 64 + kh * 32, 512, kSwizzle64);
          uint64_t const db = smem_desc(b_base + kh * 64, 1024, kSwizzle128);
          if constexpr (kIn == Operand::kE4M3) {
            wgmma_sparse_ss_n128(acc[rb], da, db, word(meta[j], rb * 2 + kh));
          } else {
            wgmma_sparse_ss_n128_s8(acc[rb], da, db, word(meta[j], rb * 2 + kh));
          }
        }
      }
      wgmma_commit();
    }
#pragma unroll
    for (int j = 0; j < G; ++j) {
      wgmma_wait_pending(G - 1 - j);
      // Lane r hands the stage back to the producer of the cluster's CTA r (each one
      // multicasts into this CTA's copy of the slot).
      if (lane < kCluster) mbarrier_arrive_cluster(&empty[(it + j) % kStages], lane);
    }
    fence_accumulators(acc[0]);
    fence_accumulators(acc[1]);
  };

  float* staged = staging + wg * kEpilogueTokens * kStagePitch;  // [token 0..31][row 0..127]
  int const warp = t / 32;
  int stores_issued = 0;  // TMA epilogue: chunks stored so far (buffer = stores_issued % 2)
  int it0 = 0;  // the tile's first k-iteration
  for (int tile = cluster; tile < tiles; tile += clusters, it0 += k_tiles) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[r][i] = 0;
    int kt = 0;
    if (kStagger && wg == 1 && k_tiles > 0) group_step(it0 + kt++, std::integral_constant<int, 1>{});
    for (; kt + kGroup <= k_tiles; kt += kGroup) group_step(it0 + kt, std::integral_constant<int, kGroup>{});
    for (; kt < k_tiles; ++kt) group_step(it0 + kt, std::integral_constant<int, 1>{});
    wgmma_wait<0>();
    fence_accumulators(acc[0]);
    fence_accumulators(acc[1]);

    // Epilogue, per chunk of 32 tokens in two passes so that few values are live at once (the
    // 128 accumulators already fill most of the registers): the chunk's fragments into the
    // warpgroup's staging as F32, then each token's 128 outputs scaled, biased and rounded on
    // the way out to y.
    // Accumulator (row block rb, d[i]) of thread t: warpgroup row 64 rb + 16 (t / 32) + (t % 32) / 4
    // + 8 ((i / 2) % 2), tile token 8 (i / 4) + 2 (t % 4) + i % 2 (the m64nNk F32 D fragment),
    // so chunk c holds i / 4 in [4 c, 4 c + 4).
    ClusterTile const at = cluster_tile(tile, m_groups, n_tiles);
    int const m_tile = kCluster * at.m_group + int(rank), n_tile = at.n_tile;
    int const row0 = n_tile * kTileN + wg * 128, token0 = m_tile * kTileM;
    int const rows_here = min(128, n - row0), tokens_here = min(128, m - token0);
    if constexpr (std::is_same_v<Out, __nv_bfloat16>) {
      if (y_by_tma) {
        // Scaled, biased and rounded in registers, stored transposed into the staging by
        // stmatrix ([token][row] BF16, the layout of y's TMA boxes), written by TMA stores that
        // run while the next chunk (or the next tile's mainloop) proceeds. Per warpgroup two
        // buffers of two boxes (rows [64 rb, +64) of its 128) x 32 tokens x 128 bytes, 128-byte
        // swizzle: 16-byte chunk j of token row T at T * 128 + ((j ^ (T % 8)) * 16).
        float rs[2][2], b[2][2];  // rows row0 + 64 rb + 16 warp + lane / 4 + 8 h
#pragma unroll
        for (int rb = 0; rb < 2; ++rb) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            int const r = rb * 64 + 16 * warp + lane / 4 + 8 * h;
            rs[rb][h] = r < rows_here ? row_scale[row0 + r] : 0.f;
            b[rb][h] = bias != nullptr && r < rows_here ? bias[row0 + r] : 0.f;
          }
        }
        uint8_t* const wg_staging = reinterpret_cast<uint8_t*>(staging) + wg * 16384;
#pragma unroll
        for (int c = 0; c < kTileM / kEpilogueTokens; ++c) {
          if (c * kEpilogueTokens >= tokens_here) break;  // the same for the whole warpgroup
          uint8_t* const buffer = wg_staging + (stores_issued % 2) * 8192;
          // The buffer's previous store (two chunks ago) must have read it.
          if (t == 0) bulk_wait_group_read<1>();
          named_barrier_sync(2 + wg, 128);
          float ts[4][2];  // tokens token0 + 8 q + 2 (lane % 4) + e, q = 4 c + qq
#pragma unroll
          for (int qq = 0; qq < 4; ++qq) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              int const tok = 8 * (4 * c + qq) + 2 * (lane % 4) + e;
              ts[qq][e] = tok < tokens_here ? token_scale[token0 + tok] : 0.f;
            }
          }
#pragma unroll
          for (int rb = 0; rb < 2; ++rb) {
            uint32_t const box = smem_u32(buffer + rb * 4096);
#pragma unroll
            for (int p = 0; p < 2; ++p) {  // matrices (q, h) = (4c + 2p, 0), (4c + 2p, 1), (4c + 2p + 1, 0), (4c + 2p + 1, 1)
              uint32_t packed[4];
#pragma unroll
              for (int mi = 0; mi < 4; ++mi) {
                int const qq = 2 * p + mi / 2, h = mi % 2;
                int const i0 = 4 * (4 * c + qq) + 2 * h;  // d[i0], d[i0 + 1]: tokens 8 q + 2 (lane % 4) + {0, 1}
                float v[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                  float const a = kIn == Operand::kE4M3 ? float(acc[rb][i0 + e]) : __int2float_rn(int(acc[rb][i0 + e]));
                  v[e] = __fadd_rn(__fmul_rn(__fmul_rn(a, ts[qq][e]), rs[rb][h]), b[rb][h]);
                }
                __nv_bfloat162 const pair = __floats2bfloat162_rn(v[0], v[1]);  // .x (low half) = v[0]
                packed[mi] = *reinterpret_cast<uint32_t const*>(&pair);
              }
              // Lane l addresses stored row l % 8 of matrix l / 8 (sparse_layout.hpp).
              StagingRow const at = epilogue_stmatrix_row(lane, warp, p);
              stmatrix_x4_trans(box + offset_sw128(at.token, 16 * at.chunk), packed[0], packed[1], packed[2], packed[3]);
            }
          }
          fence_proxy_async_shared();
          named_barrier_sync(2 + wg, 128);
          if (t == 0) {
            tma_store_2d(&y_map, buffer, row0, token0 + c * kEpilogueTokens);
            tma_store_2d(&y_map, buffer + 4096, row0 + 64, token0 + c * kEpilogueTokens);
            bulk_commit_group();
          }
          ++stores_issued;
        }
        continue;
      }
    }
    // 16-byte stores where y's rows are 16-byte aligned, single elements otherwise (and at the
    // edge of n).
    bool const vector_rows = (size_t(n) * sizeof(Out)) % 16 == 0 && rows_here == 128;
#pragma unroll
    for (int c = 0; c < kTileM / kEpilogueTokens; ++c) {
      if (c * kEpilogueTokens >= tokens_here) break;  // the same for the whole warpgroup
#pragma unroll
      for (int rb = 0; rb < 2; ++rb) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int const r = rb * 64 + 16 * warp + lane / 4 + 8 * h;
#pragma unroll
          for (int i = 0; i < 64; ++i) {
            if ((i / 2) % 2 == h && i / 4 >= 4 * c && i / 4 < 4 * c + 4) {
              // INT32 -> F32 rounds to nearest (exact below 2^24), as CUTLASS's epilogue converts.
              float const v = kIn == Operand::kE4M3 ? float(acc[rb][i]) : __int2float_rn(int(acc[rb][i]));
              staged[(8 * (i / 4 - 4 * c) + 2 * (lane % 4) + i % 2) * kStagePitch + r] = v;
            }
          }
        }
      }
      named_barrier_sync(2 + wg, 128);
      // Pass 2: thread-chunks of 8 consecutive rows of one token.
      int const chunk_token0 = token0 + c * kEpilogueTokens;
      int const chunk_tokens = min(kEpilogueTokens, tokens_here - c * kEpilogueTokens);
      for (int idx = t; idx < chunk_tokens * 16; idx += 128) {
        int const tok = idx / 16, r = (idx % 16) * 8;
        float const ts = token_scale[chunk_token0 + tok];
        alignas(16) Out out[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          int const row = row0 + r + j;
          bool const inside = r + j < rows_here;
          float const rs = inside ? row_scale[row] : 0.f;
          float const b = bias != nullptr && inside ? bias[row] : 0.f;
          out[j] = static_cast<Out>(__fadd_rn(__fmul_rn(__fmul_rn(staged[tok * kStagePitch + r + j], ts), rs), b));
        }
        Out* dst = &y[size_t(chunk_token0 + tok) * n + row0 + r];
        if (vector_rows) {
#pragma unroll
          for (int v = 0; v < int(sizeof(out)) / 16; ++v) reinterpret_cast<uint4*>(dst)[v] = reinterpret_cast<uint4 const*>(out)[v];
        } else {
          for (int j = 0; j < 8 && r + j < rows_here; ++j) dst[j] = out[j];
        }
      }
      named_barrier_sync(2 + wg, 128);  // the staging is free for the next chunk
    }
  }
  // The TMA stores read the staging after their issue: the CTA's shared memory must outlive them.
  if (stores_issued > 0 && t == 0) bulk_wait_group<0>();
  // The peers' consumers arrive on this CTA's empty barriers until their last stage: stay until
  // every non-exited thread of the cluster (their consumers) is here.
  cluster_sync();
}

}  // namespace slidesparse::cuda::sm90
