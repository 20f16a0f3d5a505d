/// \file sparse_gemm_proto.cu
/// \brief The experiment around SlideSparse's hand-written Hopper 2:4 GEMM
/// (src/cuda/sm90/sparse_gemm_kernel.cuh: what it does and why, and the layouts): every compiled
/// schedule (sparse_layout.hpp) checked for exactness and timed, FP8 E4M3 and INT8, with a
/// watchdog (the kernel's hang report) for first runs. The weight is tiled by the library
/// (sparse_tiles.hpp).
///
/// Modes: default — for FP8 E4M3 and INT8 and every schedule, exactness on awkward sizes (N, M
/// not multiples of the tile, odd and even k-tile counts, K not a multiple of the stage, 1 x 1)
/// with small-integer data (|w| <= 4, |x| <= 3: every partial sum is an integer below 2^24, exact
/// in F32), power-of-two scales and integer biases, F32 output (equal to the reference) and BF16
/// (equal to the reference rounded to nearest even), outputs poisoned with NaN; then the timing
/// of Qwen2.5-7B's gate_up GEMM (N = 37888, K = 3584, M = 4096) with random full-range codes (the
/// power draw of real data) and scaled BF16 output, every schedule on one tiling, median [min,
/// max] of 10 launches after a warm-up, in TFLOP/s of the dense-equivalent problem (A is 68 MB,
/// beyond the 50 MB L2, so each launch streams it cold).
/// `--emulate`: the exactness cases against a host model that reads the same pre-tiled images
/// through the same layout functions (checks the tiling without a GPU; CI runs it).
/// `--schedule I`: that schedule alone (a profiler run).
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
#include <exception>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "../src/cuda/sm90/sparse_gemm_kernel.cuh"
#include "../src/cuda/sm90/sparse_tiles.hpp"
#include "sparse_wgmma_layout.hpp"

namespace {

using namespace slidesparse::cuda::sm90;
using namespace slidesparse::bench::sparse_wgmma;

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

// The weight's load-time form: the library's tiling (src/cuda/sm90/sparse_tiles.hpp).
SparseTiles make_tiles(Problem const& p) {
  return tile_sparse_weight(p.w.data(), p.n, p.k, p.in == Operand::kE4M3 ? WeightCodes::kE4M3 : WeightCodes::kI8,
                            "sparse_gemm_proto weight");
}

// The epilogue's arithmetic in the kernel's order (F32, each step rounded; g++ on x86-64 does
// not contract without -mfma).
float epilogue(Problem const& p, float acc, int token, int row) {
  return ((acc * p.token_scale[token]) * p.row_scale[row]) + (p.bias.empty() ? 0.f : p.bias[row]);
}

// y [m][n] computed from the weight read back out of the tiles (untile_sparse_weight: the same
// layout functions and metadata owners, inverted) — what the kernel computes if the layouts hold
// (B is X itself: its layout in shared memory is TMA's).
std::vector<float> emulate(Problem const& p, SparseTiles const& t) {
  std::vector<uint8_t> const w = untile_sparse_weight(t);
  std::vector<float> y(size_t(p.m) * p.n, 0.f);
  for (int row = 0; row < p.n; ++row) {
    for (int token = 0; token < p.m; ++token) {
      float acc = 0.f;
      for (int k = 0; k < p.k; ++k) acc += p.value(w[size_t(row) * p.k + k]) * p.value(p.x[size_t(token) * p.k + k]);
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

// The kernel's TMA description of X [m][k] (encode_x_map, sparse_gemm_kernel.cuh); exits on failure.
CUtensorMap make_x_map(void* x, int m, int k) {
  CUtensorMap map{};
  if (CUresult const r = encode_x_map(&map, x, m, k); r != CUDA_SUCCESS) {
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

// Host side of the kernel's hang report: mapped pinned memory (host pointer; the device pointer
// next to it), cleared before each launch.
struct MappedHangReport {
  HangReport* host = nullptr;
  HangReport* device = nullptr;
};
MappedHangReport const& hang_report() {
  static MappedHangReport const report = [] {
    MappedHangReport r;
    SPARSE_WGMMA_CHECK(cudaHostAlloc(&r.host, sizeof(HangReport), cudaHostAllocMapped));
    SPARSE_WGMMA_CHECK(cudaHostGetDevicePointer(&r.device, r.host, 0));
    return r;
  }();
  return report;
}

// cudaEventSynchronize after a launch; on failure, says what the kernel recorded first.
void sync_launch(cudaEvent_t stop) {
  cudaError_t const err = cudaEventSynchronize(stop);
  if (err == cudaSuccess) return;
  HangReport const volatile* r = hang_report().host;  // written by the device behind the compiler's back
  if (r->iteration_plus_one != 0) {
    std::fprintf(stderr, "sparse_gemm: block %u: the consumers never handed back the stage of its k-iteration %u "
                 "(a full barrier that never completed, or a wgmma that never retired)\n",
                 r->block, r->iteration_plus_one - 1);
  }
  std::fprintf(stderr, "sparse_gemm launch: %s\n", cudaGetErrorString(err));
  std::exit(2);
}

template <Operand kIn, class Out, Schedule kSchedule>
DeviceRun<Out> run_on_device(Problem const& p, SparseTiles const& t, int launches, bool copy_out) {
  constexpr int kSmemBytes = kSchedule.smem_bytes();
  auto* kernel = sparse_gemm<kIn, Out, kSchedule.stages, kSchedule.group, kSchedule.stagger>;
  uint8_t* a = to_device(t.values);
  auto* e = reinterpret_cast<uint8_t*>(to_device(t.metadata));
  uint8_t* x = to_device(p.x);
  float* row_scale = to_device(p.row_scale);
  float* token_scale = to_device(p.token_scale);
  float* bias = to_device(p.bias);  // null without a bias
  Out* y;
  size_t const y_bytes = size_t(p.m) * p.n * sizeof(Out);
  SPARSE_WGMMA_CHECK(cudaMalloc(&y, y_bytes));
  SPARSE_WGMMA_CHECK(cudaMemset(y, 0xFF, y_bytes));  // NaN: an unwritten output shows
  CUtensorMap const x_map = make_x_map(x, p.m, p.k);
  // BF16 output with 16-byte rows: the epilogue's TMA stores (as the library launches it).
  CUtensorMap y_map{};
  int const y_by_tma = std::is_same_v<Out, __nv_bfloat16> && encode_y_map(&y_map, y, p.m, p.n) == CUDA_SUCCESS;
  SPARSE_WGMMA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  int device = 0, sms = 0;  // persistent: one CTA per SM (at most one per tile)
  SPARSE_WGMMA_CHECK(cudaGetDevice(&device));
  SPARSE_WGMMA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  dim3 const grid(persistent_grid(p.m, p.n, sms));
  static bool const said_clusters = [&] {  // once per kernel: are the grid's clusters all resident?
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = kSmemBytes;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) == cudaSuccess) {
      std::printf("  proto: %d clusters of %d CTAs can be resident; this grid has %u\n", clusters, kCluster,
                  grid.x / kCluster);
    }
    return true;
  }();
  (void)said_clusters;
  cudaEvent_t start, stop;
  SPARSE_WGMMA_CHECK(cudaEventCreate(&start));
  SPARSE_WGMMA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  *hang_report().host = HangReport{};
  for (int i = 0; i <= launches; ++i) {  // launch 0: warm-up
    SPARSE_WGMMA_CHECK(cudaEventRecord(start));
    kernel<<<grid, kThreads, kSmemBytes>>>(a, e, x_map, y_map, y_by_tma, p.k_tiles(), p.n, p.m, row_scale, token_scale,
                                           bias, y, hang_report().device);
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
      SparseTiles const t = make_tiles(p);
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
    SparseTiles const t = make_tiles(p);
    std::printf("%s timing N=%d M=%d K=%d, random codes, scaled BF16 out, median [min, max] of 10 launches after "
                "a warm-up; TFLOP/s (TOP/s) of the dense-equivalent problem, %% of the 3958 sparse peak (CUTLASS "
                "2:4 FP8 with its fused epilogue, GEMM only, on the H200 on 2026-12-04: median 647 us, min 640; "
                "scripts/gpu_sm90_check.sh re-measures it beside this run):\n", name, n, m, k);
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
  try {
    for (Operand in : {Operand::kE4M3, Operand::kS8}) {
      ok = (in == Operand::kE4M3 ? check_and_time<Operand::kE4M3>(emulate_only, only)
                                 : check_and_time<Operand::kS8>(emulate_only, only)) && ok;
    }
  } catch (std::exception const& e) {  // the library's tiling reports bad weights as slidesparse::Error
    std::fprintf(stderr, "sparse_gemm_proto: %s\n", e.what());
    return 2;
  }
  std::printf("sparse_gemm_proto: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
