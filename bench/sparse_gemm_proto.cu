/// \file sparse_gemm_proto.cu
/// \brief Prototype of a hand-written Hopper 2:4 FP8 / INT8 GEMM for SlideSparse, the step
/// docs/PERFORMANCE.md ("What the next kernel step would change") proposes; not wired into the
/// library. y[token][n] = Out(row_scale[n] token_scale[token] sum_k W[n][k] X[token][k] + bias[n])
/// with W 2:4 along K (the lifted weight) — a SlideSparse W8A8 layer's GEMM and epilogue, in the
/// library's order and rounding (cutlass_gemm.hpp), E4M3 (F32 accumulators) or INT8 (INT32). What it
/// changes against CUTLASS's sparse kernels:
///   - 256 x 128 CTA tiles (weight rows x tokens): two consumer warpgroups of 128 rows, each two
///     m64n128k64 sparse instructions per K = 64, so every B byte loaded from L2 feeds 256 rows;
///   - the weight tiled once at load time (make_tiles): compressed A images per (tile, k-tile)
///     and the 2:4 metadata in fragment order ([consumer thread] x 16 bytes per stage: one
///     conflict-free 16-byte shared load per thread per stage), both fetched by bulk copies;
///     the activations X [m][k] read by TMA as the quant+lift kernel writes them (row-major,
///     K' a multiple of 16), zero-filled past m and k;
///   - wgmma batches of several stages run back to back between two drains of the tensor pipe
///     (Schedule below), where CUTLASS's sparse mainloop drains after every k-tile
///     (K_PIPE_MMAS = 0);
///   - the epilogue in two shared-memory passes: fragments x row scale, then per token x token
///     scale + bias, rounded once to Out and stored as contiguous 16-byte runs of y.
/// Why groups and not a double buffer: a first version loaded stage k+1's metadata while stage
/// k's batch was in flight (one wgmma.wait_group 1 per stage). ptxas (CUDA 13.0) reported "C7513
/// Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma
/// instructions defining input registers of a wgmma between start and end of the pipeline
/// stage", and the SASS showed every QGMMA followed by its own WARPGROUP.DEPBAR — worse than
/// draining once per stage. While batches chain on the same accumulators, ptxas treats the whole
/// chain as one pipeline stage, and a register loaded from memory anywhere in it breaks it;
/// descriptors (ALU results) do not. So every schedule here loads a group's metadata before the
/// group's first wgmma and drains once per group; scripts/check_wgmma_schedule.py checks in CI
/// that the compiled chains are as long as the schedule says (nvdisasm, no GPU).
/// Layouts (bench/sparse_wgmma_layout.hpp): A rows of 64 compressed bytes per stage, 64-byte
/// swizzle; B tokens x 128 bytes, 128-byte swizzle; metadata owner per meta_slot (formula C0) — all three
/// checked on the GPU by bench_wgmma_sp_layout, which must pass first.
///
/// Modes: default — for every schedule, exactness on awkward sizes (N, M not multiples of the tile, odd and even
/// k-tile counts) with small-integer data (|w| <= 4, |x| <= 3: every partial sum is an integer
/// below 2^24, exact in F32), F32 output poisoned with NaN; then the timing of Qwen2.5-7B's
/// gate_up GEMM (N = 37888, K = 3584, M = 4096) with random full-range E4M3 codes (the power draw
/// of real data) and BF16 output (what a layer writes; no scales yet), every schedule on one
/// tiling, median [min, max] of 10 launches after a warm-up, in TFLOP/s of the dense-equivalent
/// problem (A is 68 MB, beyond the 50 MB L2, so each launch streams it cold).
/// `--emulate`: the exactness cases against a host model that reads the same pre-tiled images
/// through the same layout functions (checks the host's tiling without a GPU; CI runs it).
/// Built for sm_90a only (CMake target bench_sparse_gemm_proto).
#include <cuda.h>  // CUtensorMap (types only: the encoder comes from the runtime's driver entry point)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "../src/cuda/sm90/ptx.cuh"
#include "sparse_wgmma_layout.hpp"

namespace {

using namespace slidesparse::cuda::sm90;
using namespace slidesparse::bench::sparse_wgmma;

constexpr int kTileN = 256;   // weight rows per CTA
constexpr int kTileM = 128;   // tokens per CTA
constexpr int kStageK = 128;  // dense K per stage
constexpr int kABytes = kTileN * kStageK / 2;  // 16384: compressed A
constexpr int kBBytes = kTileM * kStageK;      // 16384
constexpr int kEBytes = 2 * 128 * 16;          // 4096: [consumer thread 256] x 4 words
constexpr int kStageBytes = kABytes + kBBytes + kEBytes;
constexpr int kThreads = 3 * 128;  // producer warpgroup + two consumer warpgroups

/// How the consumers walk the stages. Every schedule loads a group's metadata before its first
/// wgmma starts, because a metadata register written while a batch is in flight makes ptxas
/// serialize every wgmma (C7513, file comment; SASS: one WARPGROUP.DEPBAR after each QGMMA).
///   stages: depth of the shared-memory ring (36 KB each; 6 at most in 227 KB);
///   group:  stages whose batches run back to back between two drains of the tensor pipe
///           (1 = CUTLASS's schedule, a drain per stage; G holds 4 G metadata registers). A stage
///           goes back to the producer as soon as its own batch retires (wgmma.wait_group
///           G-1-j), so the producer refills while the group's later batches run;
///   stagger: the second consumer warpgroup starts with a one-stage group, so the two
///           warpgroups drain at different times and one keeps the tensor cores busy while the
///           other waits (both still read every stage).
struct Schedule {
  int stages, group;
  bool stagger;
  __host__ __device__ constexpr int smem_bytes() const { return stages * kStageBytes + 1024 + 2 * stages * 8; }
};

// wgmma.wait_group with an operand known only after unrolling (the immediate must be constant).
__device__ __forceinline__ void wgmma_wait_pending(int pending) {
  switch (pending) {
    case 0: wgmma_wait<0>(); break;
    case 1: wgmma_wait<1>(); break;
    case 2: wgmma_wait<2>(); break;
    default: wgmma_wait<3>(); break;
  }
}

// The producer's wait for the consumers to hand back a stage, which gives up: a first run on a
// GPU that hangs (a byte count or an arrival count that never completes, or a wgmma that never
// retires) records in host memory which k-tile's stage never came back (mapped memory stays
// readable after the trap leaves the context unusable) and traps, after seconds. Only the
// producer (40 registers) checks: the consumers' waits stay plain, since every live register
// there counts (128 accumulators, up to 16 metadata words, 168 registers at 384 threads; one
// more and ptxas serializes the G = 4 schedule, C7512). No printf: a call makes ptxas
// serialize every wgmma of the kernel (C7510).
struct HangReport {
  unsigned block_x, block_y, k_tile_plus_one;  // 0: no report
};
__device__ HangReport* g_hang_report;  // mapped host memory, set once by the host

__device__ __forceinline__ void wait_released_or_trap(uint64_t* bar, uint32_t parity, int k_tile) {
  // Counting tries: each waits up to a hardware time limit, so 2^26 tries are seconds.
  for (unsigned tries = 0; !mbarrier_try_wait(bar, parity);) {
    if (++tries == (1u << 26)) {
      volatile HangReport* r = g_hang_report;
      r->block_x = blockIdx.x, r->block_y = blockIdx.y, r->k_tile_plus_one = unsigned(k_tile) + 1;
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

/// Epilogue staging: a warpgroup's 128 rows x 128 tokens of accumulators as F32, stored
/// [token][row] with each token's row padded by 4 floats, so that the fragment stores (a warp's
/// lanes: 8 rows x 4 tokens two apart, 2 x 132 = 264 = 8 mod 32 words between those tokens) hit
/// 32 different banks, and every token's 128 outputs leave as one contiguous run of y.
constexpr int kStagePitch = 128 + 4;  // floats per token row
// y[token][row] = Out(((acc * token_scale[token]) * row_scale[row]) + bias[row]) — the per-token
// activation scale, the per-channel weight scale and the bias of a SlideSparse layer in the
// library's order (cutlass_gemm.hpp, core/epilogue.hpp), each product and sum rounded on its own
// (no contraction: __fmul_rn / __fadd_rn), INT32 accumulators converted to F32 first, then one
// rounding to Out. bias may be null.
// Out: float (the exactness checks) or __nv_bfloat16 (the timing: the output a layer writes).
// (The schedule travels as three template arguments: nvcc's host stubs reject class-type ones.)
template <Operand kIn, class Out, int kStages, int kGroup, bool kStagger>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_gemm(uint8_t const* __restrict__ a_tiles, uint8_t const* __restrict__ e_tiles,
                __grid_constant__ CUtensorMap const x_map, int k_tiles, int n, int m,
                float const* __restrict__ row_scale, float const* __restrict__ token_scale,
                float const* __restrict__ bias, Out* __restrict__ y) {
  static_assert(kGroup >= 1 && kGroup <= 4 && kGroup < kStages, "wgmma_wait_pending covers 3 pending groups");
  static_assert(Schedule{kStages, kGroup, kStagger}.smem_bytes() <= 227 * 1024, "shared memory ring too deep");
  static_assert(2 * 128 * kStagePitch * sizeof(float) <= kStages * kStageBytes, "epilogue staging exceeds the ring");
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // Aligned to 1024 (the 128-byte swizzle's atom) by an offset, not through an integer cast,
  // so that the compiler still knows it is shared memory (LDS/STS, not generic loads).
  uint8_t* smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  int const m_tile = blockIdx.x, n_tile = blockIdx.y;  // tokens fastest: neighbours share A tiles in L2
  int const warpgroup = threadIdx.x / 128, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], 2 * 4);  // one arrival per consumer warp
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {  // producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x == 0) {
      uint8_t const* a = a_tiles + size_t(n_tile) * k_tiles * kABytes;
      uint8_t const* e = e_tiles + size_t(n_tile) * k_tiles * kEBytes;
      for (int kt = 0; kt < k_tiles; ++kt) {
        int const s = kt % kStages;
        if (kt >= kStages) wait_released_or_trap(&empty[s], ((kt / kStages) - 1) & 1, kt - kStages);
        uint8_t* stage = smem + s * kStageBytes;
        mbarrier_arrive_expect_tx(&full[s], kStageBytes);
        bulk_copy_g2s(stage, a + size_t(kt) * kABytes, kABytes, &full[s]);
        // B: tokens [128 m_tile, +128) x bytes [128 kt, +128) of X [m][k] (row-major, as the
        // quant+lift kernel writes it), 128-byte swizzle; beyond m or k the box reads zeros.
        tma_load_2d(stage + kABytes, &x_map, kt * kStageK, m_tile * kTileM, &full[s]);
        bulk_copy_g2s(stage + kABytes + kBBytes, e + size_t(kt) * kEBytes, kEBytes, &full[s]);
      }
      // Watchdog only: wait until the last stages come back too (the release of k-tile kt
      // completes phase kt / kStages of its slot's empty barrier).
      for (int kt = max(0, k_tiles - kStages); kt < k_tiles; ++kt) {
        wait_released_or_trap(&empty[kt % kStages], (kt / kStages) & 1, kt);
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  int const wg = warpgroup - 1;           // rows [128 wg, 128 wg + 128) of the tile
  int const ct = threadIdx.x - 128;       // consumer thread 0..255
  int const t = threadIdx.x % 128;        // thread within the warpgroup
  Accumulator<kIn> acc[2][64];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[r][i] = 0;

  // Stages [kt, kt + G): wait for all of them and load their metadata (one 16-byte shared load
  // per thread and stage), then issue their batches back to back, one commit group per stage,
  // and retire them in order, handing each stage back as its batch completes. The last wait
  // (pending 0) is the group's one drain of the tensor pipe.
  auto group_step = [&](int kt, auto group_size) {
    constexpr int G = decltype(group_size)::value;
    uint4 meta[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      int const s = (kt + j) % kStages;
      mbarrier_wait(&full[s], ((kt + j) / kStages) & 1);
      meta[j] = reinterpret_cast<uint4 const*>(smem + s * kStageBytes + kABytes + kBBytes)[ct];
    }
    fence_accumulators(acc[0]);
    fence_accumulators(acc[1]);
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < G; ++j) {
      uint8_t const* stage = smem + ((kt + j) % kStages) * kStageBytes;
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
      if (lane == 0) mbarrier_arrive(&empty[(kt + j) % kStages]);
    }
    fence_accumulators(acc[0]);
    fence_accumulators(acc[1]);
  };
  int kt = 0;
  if (kStagger && wg == 1 && k_tiles > 0) group_step(kt++, std::integral_constant<int, 1>{});
  for (; kt + kGroup <= k_tiles; kt += kGroup) group_step(kt, std::integral_constant<int, kGroup>{});
  for (; kt < k_tiles; ++kt) group_step(kt, std::integral_constant<int, 1>{});
  wgmma_wait<0>();
  fence_accumulators(acc[0]);
  fence_accumulators(acc[1]);

  // Epilogue, in two passes so that few values are live at once (the 128 accumulators already
  // fill most of the registers): the fragments into shared memory as F32, then each token's row
  // of 128 outputs scaled, biased and rounded on the way out to y. Both consumer
  // warpgroups must be done reading the ring before either overwrites it (every stage the
  // producer filled has been consumed by then).
  named_barrier_sync(1, 256);
  float* staged = reinterpret_cast<float*>(smem) + wg * 128 * kStagePitch;  // [token 0..127][row 0..127]
  // Accumulator (row block rb, d[i]) of thread t: warpgroup row 64 rb + 16 (t / 32) + (t % 32) / 4
  // + 8 ((i / 2) % 2), tile token 8 (i / 4) + 2 (t % 4) + i % 2 (the m64nNk F32 D fragment).
  int const warp = t / 32;
  int const row0 = n_tile * kTileN + wg * 128, token0 = m_tile * kTileM;
  int const rows_here = min(128, n - row0), tokens_here = min(128, m - token0);
#pragma unroll
  for (int rb = 0; rb < 2; ++rb) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int const r = rb * 64 + 16 * warp + lane / 4 + 8 * h;
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        if ((i / 2) % 2 == h) {
          // INT32 -> F32 rounds to nearest (exact below 2^24), as CUTLASS's epilogue converts.
          float const v = kIn == Operand::kE4M3 ? float(acc[rb][i]) : __int2float_rn(int(acc[rb][i]));
          staged[(8 * (i / 4) + 2 * (lane % 4) + i % 2) * kStagePitch + r] = v;
        }
      }
    }
  }
  named_barrier_sync(2 + wg, 128);
  // Pass 2: thread-chunks of 8 consecutive rows of one token; 16-byte stores where y's rows are
  // 16-byte aligned, single elements otherwise (and at the edge of n).
  bool const vector_rows = (size_t(n) * sizeof(Out)) % 16 == 0 && rows_here == 128;
  for (int idx = t; idx < tokens_here * 16; idx += 128) {
    int const tok = idx / 16, r = (idx % 16) * 8;
    float const ts = token_scale[token0 + tok];
    alignas(16) Out out[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      int const row = row0 + r + j;
      bool const inside = r + j < rows_here;
      float const rs = inside ? row_scale[row] : 0.f;
      float const b = bias != nullptr && inside ? bias[row] : 0.f;
      out[j] = static_cast<Out>(__fadd_rn(__fmul_rn(__fmul_rn(staged[tok * kStagePitch + r + j], ts), rs), b));
    }
    Out* dst = &y[size_t(token0 + tok) * n + row0 + r];
    if (vector_rows) {
#pragma unroll
      for (int v = 0; v < int(sizeof(out)) / 16; ++v) reinterpret_cast<uint4*>(dst)[v] = reinterpret_cast<uint4 const*>(out)[v];
    } else {
      for (int j = 0; j < 8 && r + j < rows_here; ++j) dst[j] = out[j];
    }
  }
}

// ---- host: weight tiling (load time), the host model, the reference -------------------------

struct Problem {
  Operand in;
  int n, m, k;  // k a multiple of 16 (TMA's row-stride rule; the lifted K' is), any number of k-tiles
  std::vector<uint8_t> w, x;  // E4M3 codes or INT8 bytes, row-major [n][k] (2:4 along k) and [m][k]
  std::vector<float> row_scale, token_scale, bias;  // [n], [m], [n]
  int n_tiles() const { return (n + kTileN - 1) / kTileN; }
  int m_tiles() const { return (m + kTileM - 1) / kTileM; }
  int k_tiles() const { return (k + kStageK - 1) / kStageK; }
  float value(uint8_t code) const { return in == Operand::kE4M3 ? from_e4m3(code) : float(int8_t(code)); }
  bool nonzero(uint8_t code) const { return in == Operand::kE4M3 ? (code & 0x7F) != 0 : code != 0; }
};

struct Tiles {
  std::vector<uint8_t> a, e;
};

// The weight's load-time form. a: [n_tile][k_tile] images of 256 rows x 64 compressed bytes
// (offset_sw64); e: [n_tile][k_tile] x [consumer thread (wg * 128 + t)] x 4 words (row block * 2 +
// K half). Rows beyond n and K beyond k stay zero (indices {0, 1}).
Tiles make_tiles(Problem const& p) {
  int const kt_count = p.k_tiles();
  Tiles t;
  t.a.assign(size_t(p.n_tiles()) * kt_count * kABytes, 0);
  t.e.assign(size_t(p.n_tiles()) * kt_count * kEBytes, 0);
  for (int row = 0; row < p.n_tiles() * kTileN; ++row) {
    int const nt = row / kTileN, r = row % kTileN, wg = r / 128, rb = (r % 128) / 64, m64 = r % 64;
    for (int kt = 0; kt < kt_count; ++kt) {
      uint8_t* a = &t.a[(size_t(nt) * kt_count + kt) * kABytes];
      auto* e = reinterpret_cast<uint32_t*>(&t.e[(size_t(nt) * kt_count + kt) * kEBytes]);
      for (int group = 0; group < kStageK / 4; ++group) {  // 32 groups: K halves of 16
        int idx[2] = {0, 1}, kept = 0;
        uint8_t val[2] = {0, 0};
        int const k0 = kt * kStageK + 4 * group;
        if (row < p.n && k0 < p.k) {
          uint8_t const* src = &p.w[size_t(row) * p.k + k0];
          for (int j = 0; j < 4; ++j) {
            if (p.nonzero(src[j])) {
              if (kept == 2) {
                std::fprintf(stderr, "weight row %d, k %d: more than 2 nonzeros in a group of 4\n", row, k0);
                std::exit(2);
              }
              idx[kept] = j;
              val[kept++] = src[j];
            }
          }
          // One nonzero at j: pair it with a zero position, indices ascending ({j, j+1}, or {2, 3}
          // with the value second when j = 3). None: {0, 1} with zeros.
          if (kept == 1 && idx[0] == 3) {
            idx[0] = 2, idx[1] = 3, val[1] = val[0], val[0] = 0;
          } else if (kept == 1) {
            idx[1] = idx[0] + 1;
          }
        }
        int const half = group / 16, g = group % 16;
        for (int j = 0; j < 2; ++j) a[offset_sw64(r, half * 32 + 2 * g + j)] = val[j];
        MetaSlot const slot = meta_slot(m64, g);
        e[(wg * 128 + slot.thread) * 4 + rb * 2 + half] |= uint32_t(idx[0] | (idx[1] << 2)) << (4 * slot.nibble);
      }
    }
  }
  return t;
}

// The epilogue's arithmetic in the kernel's order (F32, each step rounded; g++ on x86-64 does
// not contract without -mfma).
float epilogue(Problem const& p, float acc, int token, int row) {
  return ((acc * p.token_scale[token]) * p.row_scale[row]) + (p.bias.empty() ? 0.f : p.bias[row]);
}

// y [m][n] read back through the weight tiles, the layout functions and the metadata owners: what
// the kernel computes if the layouts hold (B is X itself: its layout in shared memory is TMA's).
std::vector<float> emulate(Problem const& p, Tiles const& t) {
  int const kt_count = p.k_tiles();
  std::vector<float> y(size_t(p.m) * p.n, 0.f);
  std::vector<float> dense(size_t(kt_count) * kStageK);
  for (int row = 0; row < p.n; ++row) {
    int const nt = row / kTileN, r = row % kTileN, wg = r / 128, rb = (r % 128) / 64, m64 = r % 64;
    std::fill(dense.begin(), dense.end(), 0.f);
    for (int kt = 0; kt < kt_count; ++kt) {
      uint8_t const* a = &t.a[(size_t(nt) * kt_count + kt) * kABytes];
      auto const* e = reinterpret_cast<uint32_t const*>(&t.e[(size_t(nt) * kt_count + kt) * kEBytes]);
      for (int group = 0; group < kStageK / 4; ++group) {
        int const half = group / 16, g = group % 16;
        MetaSlot const slot = meta_slot(m64, g);
        uint32_t const bits = (e[(wg * 128 + slot.thread) * 4 + rb * 2 + half] >> (4 * slot.nibble)) & 0xF;
        int const idx[2] = {int(bits & 3), int(bits >> 2)};
        for (int j = 0; j < 2; ++j) {
          dense[kt * kStageK + 4 * group + idx[j]] += p.value(a[offset_sw64(r, half * 32 + 2 * g + j)]);
        }
      }
    }
    for (int token = 0; token < p.m; ++token) {
      float acc = 0.f;
      for (int k = 0; k < p.k; ++k) acc += dense[k] * p.value(p.x[size_t(token) * p.k + k]);
      y[size_t(token) * p.n + row] = epilogue(p, acc, token, row);
    }
  }
  return y;
}

std::vector<float> reference(Problem const& p) {
  std::vector<float> y(size_t(p.m) * p.n);
  for (int token = 0; token < p.m; ++token) {
    for (int row = 0; row < p.n; ++row) {
      double acc = 0;
      for (int k = 0; k < p.k; ++k) {
        acc += double(p.value(p.w[size_t(row) * p.k + k])) * p.value(p.x[size_t(token) * p.k + k]);
      }
      y[size_t(token) * p.n + row] = epilogue(p, float(acc), token, row);
    }
  }
  return y;
}

// Random 2:4 weights and activations: small integers with power-of-two scales and integer biases
// (every step of the kernel's arithmetic exact in F32), or random full-range codes (timing).
Problem make_problem(Operand in, int n, int m, int k, bool small_integers, bool with_bias, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p{in, n, m, k, std::vector<uint8_t>(size_t(n) * k, 0), std::vector<uint8_t>(size_t(m) * k), {}, {}, {}};
  auto code = [&](int limit) -> uint8_t {
    if (small_integers) {
      int const v = int(rng() % (2 * limit + 1)) - limit;
      return in == Operand::kE4M3 ? e4m3(v) : uint8_t(int8_t(v));
    }
    uint8_t c = uint8_t(rng() >> 56);
    if (in == Operand::kS8) return c;
    return (c & 0x7F) == 0x7F ? uint8_t(c ^ 1) : c;  // no NaN codes
  };
  constexpr int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  for (int row = 0; row < n; ++row) {
    for (int group = 0; group < k / 4; ++group) {
      int const pair = int(rng() % 6);
      for (int j = 0; j < 2; ++j) p.w[size_t(row) * k + 4 * group + kPairs[pair][j]] = code(4);
    }
  }
  for (auto& c : p.x) c = code(3);
  for (int row = 0; row < n; ++row) p.row_scale.push_back(std::ldexp(1.f, int(rng() % 5) - 2));
  for (int token = 0; token < m; ++token) p.token_scale.push_back(std::ldexp(1.f, int(rng() % 3) - 1));
  if (with_bias) {
    for (int row = 0; row < n; ++row) p.bias.push_back(float(int(rng() % 7) - 3));
  }
  return p;
}

// Round to nearest even, as the kernel's float -> __nv_bfloat16 conversion does.
uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// The TMA description of X [m][k] E4M3 (row-major, rows k bytes apart): 128 x 128-byte boxes with
// the 128-byte swizzle the B descriptor expects; out-of-range elements read as zeros.
CUtensorMap make_x_map(void* x, int m, int k) {
  PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  cudaDriverEntryPointQueryResult found{};
  SPARSE_WGMMA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&encode),
                                                      12000, cudaEnableDefault, &found));
  if (found != cudaDriverEntryPointSuccess || encode == nullptr) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled: not provided by this driver\n");
    std::exit(2);
  }
  CUtensorMap map{};
  cuuint64_t const dims[2] = {cuuint64_t(k), cuuint64_t(m)};
  cuuint64_t const strides[1] = {cuuint64_t(k)};  // bytes between rows; a multiple of 16
  cuuint32_t const box[2] = {kStageK, kTileM};
  cuuint32_t const element_strides[2] = {1, 1};
  CUresult const r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, x, dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled(X [%d][%d]): error %d\n", m, k, int(r));
    std::exit(2);
  }
  return map;
}

template <class Out>
struct DeviceRun {
  float ms = 0, ms_min = 0, ms_max = 0;  ///< median, fastest and slowest timed launch
  std::vector<Out> y;                    ///< when asked for
};

template <class T>
T* to_device(std::vector<T> const& v) {
  if (v.empty()) return nullptr;
  T* d = nullptr;
  SPARSE_WGMMA_CHECK(cudaMalloc(&d, v.size() * sizeof(T)));
  SPARSE_WGMMA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Host side of wait_or_trap: the report lives in mapped pinned memory, cleared before each launch.
HangReport* hang_report() {
  static HangReport* host = [] {
    HangReport* h = nullptr;
    SPARSE_WGMMA_CHECK(cudaHostAlloc(&h, sizeof(HangReport), cudaHostAllocMapped));
    HangReport* d = nullptr;
    SPARSE_WGMMA_CHECK(cudaHostGetDevicePointer(&d, h, 0));
    SPARSE_WGMMA_CHECK(cudaMemcpyToSymbol(g_hang_report, &d, sizeof(d)));
    return h;
  }();
  return host;
}

// cudaEventSynchronize after a launch; on failure, says what the kernel recorded first.
void sync_launch(cudaEvent_t stop) {
  cudaError_t const err = cudaEventSynchronize(stop);
  if (err == cudaSuccess) return;
  HangReport const volatile* r = hang_report();  // written by the device behind the compiler's back
  if (r->k_tile_plus_one != 0) {
    std::fprintf(stderr, "sparse_gemm: block (%u, %u): the consumers never handed back the stage of k-tile %u "
                 "(a full barrier that never completed, or a wgmma that never retired)\n",
                 r->block_x, r->block_y, r->k_tile_plus_one - 1);
  }
  std::fprintf(stderr, "sparse_gemm launch: %s\n", cudaGetErrorString(err));
  std::exit(2);
}

template <Operand kIn, class Out, Schedule kSchedule>
DeviceRun<Out> run_on_device(Problem const& p, Tiles const& t, int launches, bool copy_out) {
  constexpr int kSmemBytes = kSchedule.smem_bytes();
  auto* kernel = sparse_gemm<kIn, Out, kSchedule.stages, kSchedule.group, kSchedule.stagger>;
  uint8_t* a = to_device(t.a);
  uint8_t* e = to_device(t.e);
  uint8_t* x = to_device(p.x);
  float* row_scale = to_device(p.row_scale);
  float* token_scale = to_device(p.token_scale);
  float* bias = to_device(p.bias);  // null without a bias
  Out* y;
  size_t const y_bytes = size_t(p.m) * p.n * sizeof(Out);
  SPARSE_WGMMA_CHECK(cudaMalloc(&y, y_bytes));
  SPARSE_WGMMA_CHECK(cudaMemset(y, 0xFF, y_bytes));  // NaN: an unwritten output shows
  CUtensorMap const x_map = make_x_map(x, p.m, p.k);
  SPARSE_WGMMA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  dim3 const grid(p.m_tiles(), p.n_tiles());
  cudaEvent_t start, stop;
  SPARSE_WGMMA_CHECK(cudaEventCreate(&start));
  SPARSE_WGMMA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  *hang_report() = HangReport{};
  for (int i = 0; i <= launches; ++i) {  // launch 0: warm-up
    SPARSE_WGMMA_CHECK(cudaEventRecord(start));
    kernel<<<grid, kThreads, kSmemBytes>>>(a, e, x_map, p.k_tiles(), p.n, p.m, row_scale, token_scale, bias, y);
    SPARSE_WGMMA_CHECK(cudaGetLastError());
    SPARSE_WGMMA_CHECK(cudaEventRecord(stop));
    sync_launch(stop);
    float ms = 0;
    SPARSE_WGMMA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (i > 0) times.push_back(ms);
  }
  DeviceRun<Out> out;
  if (!times.empty()) {
    std::sort(times.begin(), times.end());
    out.ms = times[times.size() / 2];
    out.ms_min = times.front();
    out.ms_max = times.back();
  }
  if (copy_out) {
    out.y.resize(size_t(p.m) * p.n);
    SPARSE_WGMMA_CHECK(cudaMemcpy(out.y.data(), y, y_bytes, cudaMemcpyDeviceToHost));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  for (void* ptr : {static_cast<void*>(a), static_cast<void*>(e), static_cast<void*>(x), static_cast<void*>(row_scale),
                    static_cast<void*>(token_scale), static_cast<void*>(bias), static_cast<void*>(y)}) {
    cudaFree(ptr);
  }
  return out;
}

// The schedules measured: CUTLASS's (a drain per stage) first, then longer groups, with and
// without the staggered second warpgroup.
constexpr Schedule kSchedules[] = {{4, 1, false}, {4, 2, false}, {5, 2, true},
                                   {6, 3, false}, {6, 3, true},  {6, 4, false}};
constexpr int kScheduleCount = sizeof(kSchedules) / sizeof(kSchedules[0]);

// Runs f.template operator()<kSchedules[i]>() for the schedule chosen at run time.
template <class F, int... I>
void with_schedule(int i, F&& f, std::integer_sequence<int, I...>) {
  ((i == I ? f.template operator()<kSchedules[I]>() : void()), ...);
}
template <class F>
void with_schedule(int i, F&& f) {
  with_schedule(i, f, std::make_integer_sequence<int, kScheduleCount>{});
}

// Mismatches of got against want (F32 values or BF16 bit patterns); prints the first.
template <class T>
size_t count_mismatches(std::vector<T> const& got, std::vector<T> const& want, int n, char const* what) {
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(got[i] == want[i]) && bad++ == 0) first = i;
  }
  if (bad) {
    std::printf(" %s MISMATCH (%zu of %zu; first token %zu row %zu: %g vs %g)", what, bad, want.size(), first / n,
                first % n, double(got[first]), double(want[first]));
  } else {
    std::printf(" %s EXACT", what);
  }
  return bad;
}

// Exactness of every schedule (or the host model) on the awkward cases, then the gate_up timing,
// for one operand type; false on any mismatch.
template <Operand kIn>
bool check_and_time(bool emulate_only, int only) {
  auto const wanted = [&](int sched) { return only < 0 || sched == only; };
  uint64_t const seed = 20261204;
  struct Case {
    int n, m, k;
    bool bias;
  };
  // N and M off the tiles (N odd: the epilogue's element-wise path), k-tile counts odd (5) and
  // even (8), one k-tile (1), K not a multiple of the 128-byte stage (400, 16: TMA's zero fill
  // and the weight tiles' zero padding), the 1 x 1 corner, one case without a bias.
  Case const cases[] = {{520, 200, 640, true},   {256, 128, 1024, true}, {1000, 7, 128, false},
                        {264, 1025, 384, true},  {517, 130, 400, true},  {1, 1, 16, true}};
  bool ok = true;
  char const* const name = kIn == Operand::kE4M3 ? "FP8 E4M3" : "INT8";
  // Host side: one check against the host model. GPU: every schedule on every case, F32 out
  // (equal to the reference) and BF16 out (equal to the reference rounded to nearest even).
  for (int sched = 0; sched < (emulate_only ? 1 : kScheduleCount); ++sched) {
    if (!emulate_only && !wanted(sched)) continue;
    if (!emulate_only) {
      std::printf("%s, schedule %d: stages %d, group %d, stagger %d\n", name, sched, kSchedules[sched].stages,
                  kSchedules[sched].group, int(kSchedules[sched].stagger));
    }
    for (Case const& c : cases) {
      Problem const p = make_problem(kIn, c.n, c.m, c.k, true, c.bias, seed + c.n);
      Tiles const t = make_tiles(p);
      std::vector<float> const ref = reference(p);
      std::printf("  %s exactness N=%d M=%d K=%d%s (seed %llu):", name, c.n, c.m, c.k, c.bias ? "" : " no bias",
                  static_cast<unsigned long long>(seed + c.n));
      size_t bad = 0;
      if (emulate_only) {
        bad += count_mismatches(emulate(p, t), ref, c.n, "host model");
      } else {
        with_schedule(sched, [&]<Schedule kS>() {
          bad += count_mismatches(run_on_device<kIn, float, kS>(p, t, 0, true).y, ref, c.n, "F32");
          std::vector<__nv_bfloat16> const got = run_on_device<kIn, __nv_bfloat16, kS>(p, t, 0, true).y;
          std::vector<uint16_t> got_bits(got.size()), want_bits(ref.size());
          std::memcpy(got_bits.data(), got.data(), got.size() * 2);
          for (size_t i = 0; i < ref.size(); ++i) want_bits[i] = bf16_bits(ref[i]);
          bad += count_mismatches(got_bits, want_bits, c.n, "BF16");
        });
      }
      std::printf("\n");
      ok = ok && bad == 0;
    }
  }
  if (!emulate_only && ok) {
    int const n = 37888, m = 4096, k = 3584;  // Qwen2.5-7B gate_up, prefill of 4096 tokens
    Problem const p = make_problem(kIn, n, m, k, false, false, seed);
    Tiles const t = make_tiles(p);
    std::printf("%s timing N=%d M=%d K=%d, random codes, scaled BF16 out, median [min, max] of 10 launches after "
                "a warm-up; TFLOP/s (TOP/s) of the dense-equivalent problem, %% of the 3958 sparse peak (CUTLASS "
                "2:4 FP8 with its fused epilogue on the H200: 639 us, 1740):\n", name, n, m, k);
    for (int sched = 0; sched < kScheduleCount; ++sched) {
      if (!wanted(sched)) continue;
      DeviceRun<__nv_bfloat16> r;
      with_schedule(sched, [&]<Schedule kS>() { r = run_on_device<kIn, __nv_bfloat16, kS>(p, t, 10, false); });
      double const tflops = 2.0 * n * m * k / (r.ms * 1e-3) / 1e12;
      std::printf("  %s schedule %d (stages %d, group %d, stagger %d): %.1f us [%.1f, %.1f], %.0f TFLOP/s, %.1f %%\n",
                  name, sched, kSchedules[sched].stages, kSchedules[sched].group, int(kSchedules[sched].stagger),
                  r.ms * 1e3, r.ms_min * 1e3, r.ms_max * 1e3, tflops, 100.0 * tflops / 3958.0);
    }
  }
  return ok;
}

}  // namespace

/// Usage: bench_sparse_gemm_proto [--emulate | --schedule I]
int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a run killed by a timeout keeps what it printed
  bool emulate_only = false;
  int only = -1;  // --schedule I: that schedule alone (for a profiler run)
  if (argc == 3 && std::strcmp(argv[1], "--schedule") == 0) {
    char* end = nullptr;
    only = int(std::strtol(argv[2], &end, 10));
    if (*end != '\0' || only < 0 || only >= kScheduleCount) {
      std::fprintf(stderr, "--schedule: '%s' is not a schedule index 0..%d\n", argv[2], kScheduleCount - 1);
      return 2;
    }
  } else if (!parse_emulate(argc, argv, emulate_only)) {
    std::fprintf(stderr, "   or: %s --schedule I (0..%d)\n", argv[0], kScheduleCount - 1);
    return 2;
  }
  if (!emulate_only && !have_sm90("sparse_gemm_proto")) return 0;
  bool ok = true;
  for (Operand in : {Operand::kE4M3, Operand::kS8}) {
    ok = (in == Operand::kE4M3 ? check_and_time<Operand::kE4M3>(emulate_only, only)
                               : check_and_time<Operand::kS8>(emulate_only, only)) && ok;
  }
  std::printf("sparse_gemm_proto: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
