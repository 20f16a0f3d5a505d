/// \file sparse_gemm_proto.cu
/// \brief Prototype of a hand-written Hopper 2:4 FP8 GEMM mainloop for SlideSparse, the step
/// docs/PERFORMANCE.md ("What the next kernel step would change") proposes; not wired into the
/// library. y[token][n] = sum_k W[n][k] X[token][k] with W 2:4 along K (the lifted weight), F32
/// out. What it changes against CUTLASS's sparse kernels:
///   - 256 x 128 CTA tiles (weight rows x tokens): two consumer warpgroups of 128 rows, each two
///     m64n128k64 sparse instructions per K = 64, so every B byte in shared memory feeds 256 rows;
///   - the 2:4 metadata pre-arranged on the host in fragment order ([consumer thread] x 16 bytes
///     per stage: one conflict-free 16-byte shared load per thread per stage) and double-buffered
///     in registers, so one stage's wgmma batch stays in flight while the next stage's metadata is
///     loaded (CUTLASS's sparse mainloop waits for all of them every k-tile, K_PIPE_MMAS = 0);
///   - one producer thread refilling kStages stages with three bulk copies of pre-tiled images
///     (A, metadata, B: contiguous per (tile, k-tile)), so no tensor maps are needed. Pre-tiling X
///     stands in for a quant_lift that writes this layout.
/// ptxas (CUDA 13.0) reports for this kernel "C7513 Potential Performance Loss: wgmma.mma_async
/// instructions are serialized due to non wgmma instructions defining input registers of a wgmma
/// between start and end of the pipeline stage": a metadata word loaded from memory (shared or
/// global, also through an ALU op) while a batch is in flight makes ptxas serialize, whereas
/// metadata computed by ALU ops alone, or waiting for every batch (kInFlight = 0, CUTLASS's
/// choice), does not warn. So the double buffer may buy nothing; -DSLIDESPARSE_PROTO_IN_FLIGHT=0
/// builds the waiting variant to measure both (compile-only experiments, 2026-12-04).
/// Layouts (bench/sparse_wgmma_layout.hpp): A rows of 64 compressed bytes per stage, 64-byte
/// swizzle; B tokens x 128 bytes, 128-byte swizzle; metadata owner per formula H0 — all three
/// checked on the GPU by bench_wgmma_sp_layout, which must pass first.
///
/// Modes: default — exactness on awkward sizes (N, M not multiples of the tile, odd and even
/// k-tile counts) with small-integer data (|w| <= 4, |x| <= 3: every partial sum is an integer
/// below 2^24, exact in F32), F32 output poisoned with NaN; then the timing of Qwen2.5-7B's
/// gate_up GEMM (N = 37888, K = 3584, M = 4096) with random full-range E4M3 codes (the power draw
/// of real data) and BF16 output (what a layer writes; no scales yet), median of 10 launches after
/// a warm-up, in TFLOP/s of the dense-equivalent problem.
/// `--emulate`: the exactness cases against a host model that reads the same pre-tiled images
/// through the same layout functions (checks the host's tiling without a GPU; CI runs it).
/// Built for sm_90a only (CMake target bench_sparse_gemm_proto).
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
#include <vector>

#include "../src/cuda/sm90/ptx.cuh"
#include "sparse_wgmma_layout.hpp"

namespace {

using namespace slidesparse::cuda::sm90;
using namespace slidesparse::bench::sparse_wgmma;

constexpr int kTileN = 256;   // weight rows per CTA
constexpr int kTileM = 128;   // tokens per CTA
constexpr int kStageK = 128;  // dense K per stage
constexpr int kStages = 4;
constexpr int kABytes = kTileN * kStageK / 2;  // 16384: compressed A
constexpr int kBBytes = kTileM * kStageK;      // 16384
constexpr int kEBytes = 2 * 128 * 16;          // 4096: [consumer thread 256] x 4 words
constexpr int kStageBytes = kABytes + kBBytes + kEBytes;
constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;
constexpr int kThreads = 3 * 128;  // producer warpgroup + two consumer warpgroups
#ifndef SLIDESPARSE_PROTO_IN_FLIGHT
#define SLIDESPARSE_PROTO_IN_FLIGHT 1
#endif
constexpr int kInFlight = SLIDESPARSE_PROTO_IN_FLIGHT;  // wgmma batches left running at each wait
static_assert(kInFlight == 0 || kInFlight == 1, "one batch in flight at most (two metadata buffers)");

// Word w (= row block * 2 + K half) of a thread's metadata for this stage.
__device__ __forceinline__ uint32_t word(uint4 const& m, int w) {
  return w == 0 ? m.x : w == 1 ? m.y : w == 2 ? m.z : m.w;
}

// Keeps a metadata buffer's registers alive and unchanged up to this point: the wgmma batch that
// reads them may still be running until the wgmma_wait that precedes the call.
__device__ __forceinline__ void fence_meta(uint4& m) {
  asm volatile("" : "+r"(m.x), "+r"(m.y), "+r"(m.z), "+r"(m.w)::"memory");
}

// Out: float (the exactness checks) or __nv_bfloat16 (the timing: the output a layer writes).
template <class Out>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_gemm(uint8_t const* __restrict__ a_tiles, uint8_t const* __restrict__ e_tiles,
                uint8_t const* __restrict__ b_tiles, int k_tiles, int n, int m, Out* __restrict__ y) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
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
      uint8_t const* b = b_tiles + size_t(m_tile) * k_tiles * kBBytes;
      for (int kt = 0; kt < k_tiles; ++kt) {
        int const s = kt % kStages;
        if (kt >= kStages) mbarrier_wait(&empty[s], ((kt / kStages) - 1) & 1);
        uint8_t* stage = smem + s * kStageBytes;
        mbarrier_arrive_expect_tx(&full[s], kStageBytes);
        bulk_copy_g2s(stage, a + size_t(kt) * kABytes, kABytes, &full[s]);
        bulk_copy_g2s(stage + kABytes, b + size_t(kt) * kBBytes, kBBytes, &full[s]);
        bulk_copy_g2s(stage + kABytes + kBBytes, e + size_t(kt) * kEBytes, kEBytes, &full[s]);
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  int const wg = warpgroup - 1;           // rows [128 wg, 128 wg + 128) of the tile
  int const ct = threadIdx.x - 128;       // consumer thread 0..255
  int const t = threadIdx.x % 128;        // thread within the warpgroup
  float acc[2][64];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[r][i] = 0.f;
  uint4 meta[2];

  // One stage: its metadata into meta[cur], its four instructions, then wait until the previous
  // stage's batch is done (so meta[1 - cur] and that stage's shared memory are free again).
  auto stage_step = [&](int kt, uint4& cur, uint4& prev) {
    int const s = kt % kStages;
    mbarrier_wait(&full[s], (kt / kStages) & 1);
    uint8_t const* stage = smem + s * kStageBytes;
    cur = reinterpret_cast<uint4 const*>(stage + kABytes + kBBytes)[ct];
    uint32_t const a_base = smem_u32(stage) + wg * 128 * 64;
    uint32_t const b_base = smem_u32(stage + kABytes);
    wgmma_fence();
#pragma unroll
    for (int rb = 0; rb < 2; ++rb) {
#pragma unroll
      for (int kh = 0; kh < 2; ++kh) {
        uint64_t const da = smem_desc(a_base + rb * 64 * 64 + kh * 32, 512, kSwizzle64);
        uint64_t const db = smem_desc(b_base + kh * 64, 1024, kSwizzle128);
        wgmma_sparse_ss_n128(acc[rb], da, db, word(cur, rb * 2 + kh));
      }
    }
    wgmma_commit();
    wgmma_wait<kInFlight>();
    fence_meta(prev);
    // The stage whose batch is now complete goes back to the producer.
    if (kt >= kInFlight && lane == 0) mbarrier_arrive(&empty[(kt - kInFlight) % kStages]);
  };
  for (int kt = 0; kt < k_tiles; kt += 2) {
    stage_step(kt, meta[0], meta[1]);
    if (kt + 1 < k_tiles) stage_step(kt + 1, meta[1], meta[0]);
  }
  wgmma_wait<0>();
  fence_accumulators(acc[0]);
  fence_accumulators(acc[1]);

  // Accumulator (row block rb, d[i]) of thread t: tile row 128 wg + 64 rb + 16 (t / 32) + (t % 32)
  // / 4 + 8 ((i / 2) % 2), token 8 (i / 4) + 2 (t % 4) + i % 2; y is [token][n].
  int const warp = t / 32;
#pragma unroll
  for (int rb = 0; rb < 2; ++rb) {
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      int const row = n_tile * kTileN + wg * 128 + rb * 64 + 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
      int const token = m_tile * kTileM + 8 * (i / 4) + 2 * (lane % 4) + i % 2;
      if (row < n && token < m) y[size_t(token) * n + row] = static_cast<Out>(acc[rb][i]);
    }
  }
}

// ---- host: pre-tiling ----------------------------------------------------------------------

struct Problem {
  int n, m, k;  // k a multiple of kStageK (the lifted K' is padded to it)
  std::vector<uint8_t> w, x;  // E4M3 codes, row-major [n][k] (2:4 along k) and [m][k]
  int n_tiles() const { return (n + kTileN - 1) / kTileN; }
  int m_tiles() const { return (m + kTileM - 1) / kTileM; }
  int k_tiles() const { return k / kStageK; }
};

struct Tiles {
  std::vector<uint8_t> a, e, b;
};

// a: [n_tile][k_tile] images of 256 rows x 64 compressed bytes (offset_sw64); e: [n_tile][k_tile]
// x [consumer thread (wg * 128 + t)] x 4 words (row block * 2 + K half); b: [m_tile][k_tile]
// images of 128 tokens x 128 bytes (offset_sw128). Rows / tokens beyond n / m stay zero.
Tiles make_tiles(Problem const& p) {
  int const kt_count = p.k_tiles();
  Tiles t;
  t.a.assign(size_t(p.n_tiles()) * kt_count * kABytes, 0);
  t.e.assign(size_t(p.n_tiles()) * kt_count * kEBytes, 0);
  t.b.assign(size_t(p.m_tiles()) * kt_count * kBBytes, 0);
  for (int row = 0; row < p.n_tiles() * kTileN; ++row) {
    int const nt = row / kTileN, r = row % kTileN, wg = r / 128, rb = (r % 128) / 64, m64 = r % 64;
    for (int kt = 0; kt < kt_count; ++kt) {
      uint8_t* a = &t.a[(size_t(nt) * kt_count + kt) * kABytes];
      auto* e = reinterpret_cast<uint32_t*>(&t.e[(size_t(nt) * kt_count + kt) * kEBytes]);
      for (int group = 0; group < kStageK / 4; ++group) {  // 32 groups: K halves of 16
        int idx[2] = {0, 1}, kept = 0;
        uint8_t val[2] = {0, 0};
        if (row < p.n) {
          uint8_t const* src = &p.w[size_t(row) * p.k + kt * kStageK + 4 * group];
          for (int j = 0; j < 4; ++j) {
            if (src[j] & 0x7F) {
              if (kept == 2) {
                std::fprintf(stderr, "weight row %d, k %d: more than 2 nonzeros in a group of 4\n", row,
                             kt * kStageK + 4 * group);
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
  for (int token = 0; token < p.m; ++token) {
    int const mt = token / kTileM, r = token % kTileM;
    for (int k = 0; k < p.k; ++k) {
      t.b[(size_t(mt) * kt_count + k / kStageK) * kBBytes + offset_sw128(r, k % kStageK)] = p.x[size_t(token) * p.k + k];
    }
  }
  return t;
}

// y [m][n] read back through the tiles, the layout functions and the metadata owners: what the
// kernel computes if the layouts hold.
std::vector<float> emulate(Problem const& p, Tiles const& t) {
  int const kt_count = p.k_tiles();
  std::vector<float> y(size_t(p.m) * p.n, 0.f);
  std::vector<float> dense(p.k);
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
          dense[kt * kStageK + 4 * group + idx[j]] += from_e4m3(a[offset_sw64(r, half * 32 + 2 * g + j)]);
        }
      }
    }
    for (int token = 0; token < p.m; ++token) {
      int const mt = token / kTileM, tr = token % kTileM;
      float acc = 0.f;
      for (int k = 0; k < p.k; ++k) {
        acc += dense[k] * from_e4m3(t.b[(size_t(mt) * kt_count + k / kStageK) * kBBytes + offset_sw128(tr, k % kStageK)]);
      }
      y[size_t(token) * p.n + row] = acc;
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
        acc += double(from_e4m3(p.w[size_t(row) * p.k + k])) * from_e4m3(p.x[size_t(token) * p.k + k]);
      }
      y[size_t(token) * p.n + row] = float(acc);
    }
  }
  return y;
}

// Random 2:4 weights and activations: small integers (exact) or random full-range codes.
Problem make_problem(int n, int m, int k, bool small_integers, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p{n, m, k, std::vector<uint8_t>(size_t(n) * k, 0), std::vector<uint8_t>(size_t(m) * k)};
  auto code = [&](int limit) -> uint8_t {
    if (small_integers) return e4m3(int(rng() % (2 * limit + 1)) - limit);
    uint8_t c = uint8_t(rng() >> 56);
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
  return p;
}

struct DeviceRun {
  float ms = 0;
  std::vector<float> y;  ///< F32 runs only
};

template <class Out>
DeviceRun run_on_device(Problem const& p, Tiles const& t, int launches) {
  uint8_t *a, *e, *b;
  Out* y;
  size_t const y_bytes = size_t(p.m) * p.n * sizeof(Out);
  SPARSE_WGMMA_CHECK(cudaMalloc(&a, t.a.size()));
  SPARSE_WGMMA_CHECK(cudaMalloc(&e, t.e.size()));
  SPARSE_WGMMA_CHECK(cudaMalloc(&b, t.b.size()));
  SPARSE_WGMMA_CHECK(cudaMalloc(&y, y_bytes));
  SPARSE_WGMMA_CHECK(cudaMemcpy(a, t.a.data(), t.a.size(), cudaMemcpyHostToDevice));
  SPARSE_WGMMA_CHECK(cudaMemcpy(e, t.e.data(), t.e.size(), cudaMemcpyHostToDevice));
  SPARSE_WGMMA_CHECK(cudaMemcpy(b, t.b.data(), t.b.size(), cudaMemcpyHostToDevice));
  SPARSE_WGMMA_CHECK(cudaMemset(y, 0xFF, y_bytes));  // NaN: an unwritten output shows
  SPARSE_WGMMA_CHECK(cudaFuncSetAttribute(sparse_gemm<Out>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  dim3 const grid(p.m_tiles(), p.n_tiles());
  cudaEvent_t start, stop;
  SPARSE_WGMMA_CHECK(cudaEventCreate(&start));
  SPARSE_WGMMA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i <= launches; ++i) {  // launch 0: warm-up
    SPARSE_WGMMA_CHECK(cudaEventRecord(start));
    sparse_gemm<Out><<<grid, kThreads, kSmemBytes>>>(a, e, b, p.k_tiles(), p.n, p.m, y);
    SPARSE_WGMMA_CHECK(cudaGetLastError());
    SPARSE_WGMMA_CHECK(cudaEventRecord(stop));
    SPARSE_WGMMA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SPARSE_WGMMA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (i > 0) times.push_back(ms);
  }
  DeviceRun out;
  if (!times.empty()) {
    std::sort(times.begin(), times.end());
    out.ms = times[times.size() / 2];
  }
  if constexpr (std::is_same_v<Out, float>) {
    out.y.resize(size_t(p.m) * p.n);
    SPARSE_WGMMA_CHECK(cudaMemcpy(out.y.data(), y, y_bytes, cudaMemcpyDeviceToHost));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(e);
  cudaFree(b);
  cudaFree(y);
  return out;
}

}  // namespace

/// Usage: bench_sparse_gemm_proto [--emulate]
int main(int argc, char** argv) {
  bool emulate_only = false;
  if (!parse_emulate(argc, argv, emulate_only)) return 2;
  if (!emulate_only && !have_sm90("sparse_gemm_proto")) return 0;
  uint64_t const seed = 20261204;
  struct Case {
    int n, m, k;
  };
  // N and M off the tiles, k-tile counts odd (5) and even (8), one k-tile (1).
  Case const cases[] = {{520, 200, 640}, {256, 128, 1024}, {1000, 7, 128}, {264, 1025, 384}};
  bool ok = true;
  for (Case const& c : cases) {
    Problem const p = make_problem(c.n, c.m, c.k, true, seed + c.n);
    Tiles const t = make_tiles(p);
    std::vector<float> const ref = reference(p);
    std::vector<float> const got = emulate_only ? emulate(p, t) : run_on_device<float>(p, t, 0).y;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (!(got[i] == ref[i]) && bad++ == 0) first = i;
    }
    std::printf("  exactness N=%d M=%d K=%d (seed %llu): %s", c.n, c.m, c.k,
                static_cast<unsigned long long>(seed + c.n), bad ? "MISMATCH" : "EXACT");
    if (bad) {
      std::printf(" (%zu of %zu; first token %zu row %zu: %g vs %g)", bad, ref.size(), first / c.n, first % c.n,
                  got[first], ref[first]);
    }
    std::printf("\n");
    ok = ok && bad == 0;
  }
  if (!emulate_only && ok) {
    int const n = 37888, m = 4096, k = 3584;  // Qwen2.5-7B gate_up, prefill of 4096 tokens
    Problem const p = make_problem(n, m, k, false, seed);
    DeviceRun const r = run_on_device<__nv_bfloat16>(p, make_tiles(p), 10);
    double const tflops = 2.0 * n * m * k / (r.ms * 1e-3) / 1e12;
    std::printf("  timing N=%d M=%d K=%d, random E4M3, BF16 out: %.1f us median of 10, %.0f TFLOP/s "
                "dense-equivalent (%.1f %% of 3958; CUTLASS 2:4 on the H200: 639 us, 1740)\n", n, m, k, r.ms * 1e3,
                tflops, 100.0 * tflops / 3958.0);
  }
  std::printf("sparse_gemm_proto: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
