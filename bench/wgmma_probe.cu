/// \file wgmma_probe.cu
/// \brief Where does a Hopper 2:4 GEMM mainloop lose its time? Issue-rate probe for FP8 wgmma and
/// sparse wgmma (wgmma.sp) with the operands in shared memory or A in registers, with and without
/// a copy-engine pipeline refilling shared memory as a real GEMM does.
///
/// Question it answers (docs/PERFORMANCE.md, "Why the sparse kernel stalls"): the CUTLASS 2:4
/// kernel keeps the tensor pipe only ~59 % busy while the dense one reaches ~85 %. Hypothesis:
/// shared memory moves ~128 B/clk/SM in total, reads by the tensor cores and writes by the copy
/// engine together. A sparse m64nNk64 instruction reads its whole B tile (N x 64 bytes) for 64
/// rows of A, i.e. 1/64 byte per MAC, and at the full sparse rate (8192 FP8 MAC/clk/SM) that is
/// already 128 B/clk; A (1/128 B per MAC compressed) and the copy engine's writes of the next
/// stages (1/M_tile + 1/(2 N_tile) B per MAC) come on top. Predicted caps (fraction of the sparse
/// peak) = 128 / (bytes per clk at full rate):
///   sparse SS, 128x256 tile, refilled  : 128 / (128 + 16 + 64 + 16 + meta) ~ 0.57
///   sparse SS, no refill               : 128 / (128 + 16)                  ~ 0.89
///   sparse RS (A in registers), no refill                                   ~ 1.0
///   sparse RS, 128x256, B refilled     : 128 / (128 + 64)                  ~ 0.67
///   sparse RS, 256x128 (2 x 128 rows), B refilled : 128 / (128 + 32)       ~ 0.80
/// and dense SS 128x256 refilled (64 + 16 + 32 + 16 B/clk at 4096 MAC/clk): ~1.0.
/// If the probe shows these, a kernel that streams the (static, pre-permuted) weight from global
/// memory straight into registers and gives each B tile to more rows of A beats the CUTLASS
/// sparse kernel by up to ~1.4x; if not, the limit is elsewhere.
///
/// The probe is a GEMM mainloop without an epilogue: one CTA per SM, `kWarpgroups` consumer
/// warpgroups each covering kRowsPerWg rows of A, one producer warp refilling a kStages-deep
/// ring of shared-memory stages (K = 128 logical per stage) with bulk copies from an L2-resident
/// buffer, full/empty mbarriers between them. Values are random valid E4M3 codes; results are
/// discarded. Timing: SM cycles (clock64) of the consumer loop, and wall time by CUDA events.
/// Built for sm_90a only (CMake target bench_wgmma_probe).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../src/cuda/sm90/ptx.cuh"

namespace {

using namespace slidesparse::cuda::sm90;

#define PROBE_CHECK(call)                                                                   \
  do {                                                                                      \
    cudaError_t err_ = (call);                                                              \
    if (err_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

enum class Op { kDenseSS, kSparseSS, kSparseRS };
/// Where the A fragments of the RS variants come from: fixed registers; 16-byte global loads
/// (L2-resident window) into a ring of registers kARing stages ahead, plain or with
/// L1::no_allocate; or copied with the stage by the copy engine (laid out in fragment order,
/// [fragment][thread] x 16 bytes) and read with 16-byte shared loads just before use.
enum class AMode { kStatic, kLdg, kLdgNoAllocate, kSmem };

template <Op kOp_, int kN_, int kWarpgroups_, int kRowsPerWg_, bool kRefill_, bool kRefillA_, AMode kAMode_,
          int kARing_, int kStages_>
struct Probe {
  static constexpr Op kOp = kOp_;
  static constexpr int kN = kN_, kWarpgroups = kWarpgroups_, kRowsPerWg = kRowsPerWg_, kStages = kStages_;
  static constexpr bool kRefill = kRefill_, kRefillA = kRefillA_;
  static constexpr AMode kAMode = kAMode_;
  static constexpr bool kLoadA = kAMode == AMode::kLdg || kAMode == AMode::kLdgNoAllocate;
  static constexpr bool kSparse = kOp != Op::kDenseSS;
  static constexpr int kTileM = kWarpgroups * kRowsPerWg;
  static constexpr int kStageK = 128;                                   // logical K per stage
  static constexpr int kBBytes = kN * kStageK;                          // [kN][128] FP8, SW128
  static constexpr int kRowBlocks = kRowsPerWg / 64;
  static constexpr int kAFrags = kRowBlocks * 2;   // per stage: row blocks x two k64 halves
  static constexpr int kABytes = kOp == Op::kSparseRS ? (kAMode == AMode::kSmem ? kAFrags * kWarpgroups * 128 * 16 : 0)
                                                      : kTileM * (kSparse ? kStageK / 2 : kStageK);
  static constexpr int kStageBytes = kBBytes + kABytes;
  static constexpr int kCopyBytes = kBBytes + (kRefillA ? kABytes : 0);  // refilled per stage
  static constexpr int kThreads = (kWarpgroups + 1) * 128;
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;
  static constexpr int kAcc = kN / 2;
  static constexpr double kMacPerStage = double(kTileM) * kN * kStageK;
  // Register split (setmaxnreg): the producer warpgroup gives its registers to the consumers.
  static constexpr int kProducerRegs = kWarpgroups == 2 ? 40 : 24;
  static constexpr int kConsumerRegs = kWarpgroups == 2 ? 232 : 120;
  static constexpr int kARing = kLoadA ? kARing_ : 1;  // A fragment sets held in registers
};

template <class P>
__global__ void __launch_bounds__(P::kThreads, 1)
    probe_kernel(uint8_t const* __restrict__ src, uint32_t src_window, uint4 const* __restrict__ a_src,
                 uint32_t a_window, int stages_total, long long* cycles, float* sink) {
  constexpr Op kOp = P::kOp;
  constexpr int kN = P::kN, kStages = P::kStages, kWarpgroups = P::kWarpgroups;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * P::kStageBytes);
  uint64_t* empty = full + kStages;
  int const warpgroup = threadIdx.x / 128;
  int const lane = threadIdx.x % 32;
  int const warp = threadIdx.x / 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], kWarpgroups * 4);
    }
    fence_barrier_init();
  }
  // Fill every stage once with the source bytes (the no-refill variants read these forever).
  for (int i = threadIdx.x; i < kStages * P::kStageBytes / 16; i += blockDim.x) {
    reinterpret_cast<uint4*>(smem)[i] = reinterpret_cast<uint4 const*>(src)[i % (src_window / 16)];
  }
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();

  if (warpgroup == 0) {  // producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(P::kProducerRegs));
    if constexpr (P::kRefill) {
      if (warp == 0 && lane == 0) {
        uint32_t offset = (blockIdx.x * 7919u * 1024u) % src_window;
        for (int it = 0; it < stages_total; ++it) {
          int const s = it % kStages;
          if (it >= kStages) mbarrier_wait(&empty[s], ((it / kStages) - 1) & 1);
          mbarrier_arrive_expect_tx(&full[s], P::kCopyBytes);
          if (offset + P::kCopyBytes > src_window) offset = 0;
          bulk_copy_g2s(smem + s * P::kStageBytes, src + offset, P::kCopyBytes, &full[s]);
          offset += P::kCopyBytes;
        }
      }
    }
  } else {

  // Consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(P::kConsumerRegs));
  int const wg = warpgroup - 1;
  float acc[P::kRowBlocks][P::kAcc];
#pragma unroll
  for (int r = 0; r < P::kRowBlocks; ++r)
#pragma unroll
    for (int i = 0; i < P::kAcc; ++i) acc[r][i] = 0.f;
  uint32_t const meta = 0x44444444u;  // every group keeps lanes 0 and 1: a valid 2:4 pattern
  constexpr int kAFrags = P::kAFrags, kARing = P::kARing;
  // A fragments of the next kARing stages (RS variants); loads are coalesced 16-byte reads, 512
  // bytes per warp and fragment, from an L2-resident window.
  uint4 a_frag[kARing][kAFrags];
  auto a_load = [&](int step, int f) {
    uint4 const* ptr = &a_src[((blockIdx.x * 7u + step * 13u) * 4096u + f * 1024u + (threadIdx.x - 128)) % a_window];
    if constexpr (P::kAMode == AMode::kLdgNoAllocate) {
      uint4 v;
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(ptr));
      return v;
    } else {
      return *ptr;
    }
  };
#pragma unroll
  for (int q = 0; q < kARing; ++q)
#pragma unroll
    for (int f = 0; f < kAFrags; ++f) a_frag[q][f] = a_load(q, f);

  long long const start = clock64();
  for (int it = 0; it < stages_total; it += kARing) {
#pragma unroll
    for (int q = 0; q < kARing; ++q) {
      int const step = it + q;
      int const s = step % kStages;
      if constexpr (P::kRefill) mbarrier_wait(&full[s], (step / kStages) & 1);
      uint32_t const stage = smem_u32(smem + s * P::kStageBytes);
      uint32_t const a_base = stage + P::kBBytes;
      if constexpr (P::kAMode == AMode::kSmem) {
        // This stage's fragments, [fragment][consumer thread] x 16 bytes: conflict-free 16-byte loads.
        uint4 const* a_stage = reinterpret_cast<uint4 const*>(smem + s * P::kStageBytes + P::kBBytes);
#pragma unroll
        for (int f = 0; f < kAFrags; ++f) a_frag[0][f] = a_stage[f * (kWarpgroups * 128) + (threadIdx.x - 128)];
      }
      wgmma_fence();
#pragma unroll
      for (int r = 0; r < P::kRowBlocks; ++r) {
        int const row0 = (wg * P::kRowBlocks + r) * 64;
        if constexpr (kOp == Op::kDenseSS) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            uint64_t const da = smem_desc(a_base + row0 * 128 + k * 32, 1024, kSwizzle128);
            uint64_t const db = smem_desc(stage + k * 32, 1024, kSwizzle128);
            if constexpr (kN == 256) wgmma_dense_ss_n256(acc[r], da, db);
            else wgmma_dense_ss_n128(acc[r], da, db);
          }
        } else {
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            uint64_t const db = smem_desc(stage + k * 64, 1024, kSwizzle128);
            if constexpr (kOp == Op::kSparseSS) {
              // Compressed A: 64 bytes per row per stage (64-byte swizzle, 8-row groups 512 B apart).
              uint64_t const da = smem_desc(a_base + row0 * 64 + k * 32, 512, kSwizzle64);
              if constexpr (kN == 256) wgmma_sparse_ss_n256(acc[r], da, db, meta);
              else wgmma_sparse_ss_n128(acc[r], da, db, meta);
            } else {
              uint4 const& a = a_frag[q][r * 2 + k];
              if constexpr (kN == 256) wgmma_sparse_rs_n256(acc[r], a, db, meta);
              else wgmma_sparse_rs_n128(acc[r], a, db, meta);
            }
          }
        }
      }
      wgmma_commit();
      wgmma_wait<1>();  // the previous stage's instructions are done
      if constexpr (P::kLoadA) {
        // The previous stage's A fragments are free again: load those of the stage kARing - 1 ahead.
        int const prev = (q + kARing - 1) % kARing;  // a constant once the loop is unrolled
#pragma unroll
        for (int f = 0; f < kAFrags; ++f) a_frag[prev][f] = a_load(step - 1 + kARing, f);
      }
      if constexpr (P::kRefill) {
        if (step > 0 && lane == 0) mbarrier_arrive(&empty[(step - 1) % kStages]);
      }
    }
  }
  wgmma_wait<0>();
  long long const stop = clock64();
  if (threadIdx.x == 128) cycles[blockIdx.x] = stop - start;
  float sum = 0.f;
#pragma unroll
  for (int r = 0; r < P::kRowBlocks; ++r)
#pragma unroll
    for (int i = 0; i < P::kAcc; ++i) sum += acc[r][i];
  if (sum == 1234.5f) sink[threadIdx.x] = sum;  // keeps the accumulators alive
  }
}

struct Result {
  double tflops, mac_per_clk, frac_of_peak, clock_ghz;
};

template <Op kOp, int kN, int kWarpgroups, int kRowsPerWg, bool kRefill, bool kRefillA, AMode kAMode,
          int kARing = 4, int kStages = 4>
Result run_probe(int reps, char const* name, uint8_t const* src, uint32_t src_window, uint4 const* a_src, uint32_t a_window,
                 int sms, long long* cycles, float* sink) {
  using P = Probe<kOp, kN, kWarpgroups, kRowsPerWg, kRefill, kRefillA, kAMode, kARing, kStages>;
  auto kernel = probe_kernel<P>;
  PROBE_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, P::kSmemBytes));
  int const stages_total = 4000;  // a multiple of P::kARing and P::kStages
  cudaEvent_t start, stop;
  PROBE_CHECK(cudaEventCreate(&start));
  PROBE_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms_runs;
  std::vector<long long> host_cycles(sms);
  double best_mac_clk = 0;
  for (int rep = 0; rep <= reps; ++rep) {
    PROBE_CHECK(cudaEventRecord(start));
    kernel<<<sms, P::kThreads, P::kSmemBytes>>>(src, src_window, a_src, a_window, stages_total, cycles, sink);
    PROBE_CHECK(cudaGetLastError());
    PROBE_CHECK(cudaEventRecord(stop));
    PROBE_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PROBE_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (rep == 0 && reps > 0) continue;  // warm-up
    ms_runs.push_back(ms);
    PROBE_CHECK(cudaMemcpy(host_cycles.data(), cycles, sms * sizeof(long long), cudaMemcpyDeviceToHost));
    long long max_cycles = 0;
    for (long long c : host_cycles) max_cycles = c > max_cycles ? c : max_cycles;
    best_mac_clk = std::max(best_mac_clk, P::kMacPerStage * stages_total / double(max_cycles));
  }
  std::sort(ms_runs.begin(), ms_runs.end());
  double const ms = ms_runs[ms_runs.size() / 2];
  double const flops = 2.0 * P::kMacPerStage * stages_total * sms;
  double const peak_mac_clk = P::kSparse ? 8192.0 : 4096.0;  // FP8 MAC/clk/SM (sparse: dense-equivalent)
  Result r{flops / (ms * 1e-3) / 1e12, best_mac_clk, best_mac_clk / peak_mac_clk, 0};
  // Clock estimate: cycles of the slowest SM over the kernel's wall time (includes launch).
  long long max_cycles = 0;
  for (long long c : host_cycles) max_cycles = c > max_cycles ? c : max_cycles;
  r.clock_ghz = double(max_cycles) / (ms * 1e-3) / 1e9;
  std::printf("| %-52s | %7.0f | %6.0f | %5.1f %% | %4.2f |\n", name, r.tflops, r.mac_per_clk,
              100.0 * r.frac_of_peak, r.clock_ghz);
  std::fflush(stdout);
  PROBE_CHECK(cudaEventDestroy(start));
  PROBE_CHECK(cudaEventDestroy(stop));
  return r;
}

uint8_t random_e4m3(uint64_t& state) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  uint8_t b = static_cast<uint8_t>(state >> 56);
  if ((b & 0x7F) == 0x7F) b ^= 1;  // no NaN codes
  return b;
}

}  // namespace

/// Usage: bench_wgmma_probe [--only I] [--reps R]  (I: a variant's row, from 0; R timed launches
/// after one warm-up, default 5; --reps 0 launches each kernel once, for the profiler).
int main(int argc, char** argv) {
  int only = -1, reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--only") == 0) only = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--only ROW] [--reps R]\n", argv[0]);
      return 2;
    }
  }
  int device = 0;
  PROBE_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  PROBE_CHECK(cudaGetDeviceProperties(&prop, device));
  if (prop.major != 9) {
    std::printf("wgmma_probe: needs a Hopper GPU (sm_90), found %s (sm_%d%d); skipped\n", prop.name, prop.major,
                prop.minor);
    return 0;
  }
  int const sms = prop.multiProcessorCount;
  uint64_t const seed = 20261204;
  std::printf("wgmma_probe on %s, %d SMs, seed %llu, 4000 stages of K=128 per CTA, one CTA per SM\n", prop.name,
              sms, static_cast<unsigned long long>(seed));
  uint32_t const src_window = 8u << 20;  // 8 MiB: stays in L2, as a GEMM's re-read operands mostly do
  uint32_t const a_window = (4u << 20) / 16;
  std::vector<uint8_t> host(src_window);
  uint64_t state = seed;
  for (auto& b : host) b = random_e4m3(state);
  uint8_t* src = nullptr;
  uint4* a_src = nullptr;
  long long* cycles = nullptr;
  float* sink = nullptr;
  PROBE_CHECK(cudaMalloc(&src, src_window));
  PROBE_CHECK(cudaMalloc(&a_src, a_window * 16));
  PROBE_CHECK(cudaMalloc(&cycles, sms * sizeof(long long)));
  PROBE_CHECK(cudaMalloc(&sink, 1024 * sizeof(float)));
  PROBE_CHECK(cudaMemcpy(src, host.data(), src_window, cudaMemcpyHostToDevice));
  PROBE_CHECK(cudaMemcpy(a_src, host.data(), a_window * 16, cudaMemcpyHostToDevice));

  std::printf("| variant | TFLOP/s | MAC/clk/SM | of peak | GHz |\n|---|---|---|---|---|\n");
  // Template: op, N, warpgroups, rows per warpgroup, refill B, refill A too, A source [, ring].
  int row = 0;
  if (only < 0 || only == row) run_probe<Op::kDenseSS, 256, 2, 64, false, false, AMode::kStatic>(reps, "dense SS 128x256, static smem", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kDenseSS, 256, 2, 64, true, true, AMode::kStatic>(reps, "dense SS 128x256, A+B refilled", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseSS, 256, 2, 64, false, false, AMode::kStatic>(reps, "sparse SS 128x256, static smem", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseSS, 256, 2, 64, true, false, AMode::kStatic>(reps, "sparse SS 128x256, B refilled, A static in smem", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseSS, 256, 2, 64, true, true, AMode::kStatic>(reps, "sparse SS 128x256, A+B refilled", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 256, 2, 64, false, false, AMode::kStatic>(reps, "sparse RS 128x256, static smem, static A", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 256, 2, 64, true, false, AMode::kStatic>(reps, "sparse RS 128x256, B refilled, static A", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 256, 2, 64, true, false, AMode::kLdg>(reps, "sparse RS 128x256, B refilled, A ldg ring 4", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 256, 2, 64, true, false, AMode::kLdgNoAllocate>(reps, "sparse RS 128x256, B refilled, A ldg no_alloc ring 4", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 256, 2, 64, true, true, AMode::kSmem>(reps, "sparse RS 128x256, A+B refilled, A lds", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 128, 2, 128, false, false, AMode::kStatic>(reps, "sparse RS 256x128, static smem, static A", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 128, 2, 128, true, false, AMode::kStatic>(reps, "sparse RS 256x128, B refilled, static A", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 128, 2, 128, true, false, AMode::kLdg>(reps, "sparse RS 256x128, B refilled, A ldg ring 4", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 128, 2, 128, true, false, AMode::kLdg, 2>(reps, "sparse RS 256x128, B refilled, A ldg ring 2", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 128, 2, 128, true, false, AMode::kLdgNoAllocate>(reps, "sparse RS 256x128, B refilled, A ldg no_alloc ring 4", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseRS, 128, 2, 128, true, true, AMode::kSmem>(reps, "sparse RS 256x128, A+B refilled, A lds", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  if (only < 0 || only == row) run_probe<Op::kSparseSS, 128, 2, 128, true, true, AMode::kStatic>(reps, "sparse SS 256x128, A+B refilled", src, src_window, a_src, a_window, sms, cycles, sink);
  ++row;
  PROBE_CHECK(cudaFree(src));
  PROBE_CHECK(cudaFree(a_src));
  PROBE_CHECK(cudaFree(cycles));
  PROBE_CHECK(cudaFree(sink));
  return 0;
}
