// bench_ceilings: the device ceilings every SlideSparse kernel is judged against.
//
//   1. Device-to-device copy bandwidth (cudaMemcpyAsync; bytes read + bytes written).
//   2. Dense GEMM rate through cuBLASLt, best of the top-8 heuristic algorithms, cold L2, for
//      FP8 E4M3 -> BF16, BF16, FP16, INT8 -> INT32 (and INT8 -> BF16 where cuBLASLt has it).
//
// GEMM layout (the one the SlideSparse backends use; "TN", which FP8 needs on Hopper):
//   A = weight [N,K] row-major = column-major K x N, ld = K, opA = T
//   B = activations [M,K] row-major = column-major K x M, ld = K, opB = N
//   D = column-major N x M, ld = N (= row-major [M,N]); cuBLASLt's (m, n, k) = (N, M, K).
// Inputs hold small integers in {-2..2} in the operand dtype, so every sum is an exact integer
// and a few outputs are checked against a host reference after timing.
//
// Usage: bench_ceilings [--json PATH] [--device N]
// Exit codes: 0 done (or no GPU), 1 a CUDA/cuBLASLt error or a failed output check, 2 usage.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace {

using json = nlohmann::json;

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kWorkspaceBytes = 64 * kMiB;
constexpr int kHeuristicAlgos = 8;
constexpr int kGemmWarmup = 3;
constexpr int kGemmRuns = 10;
constexpr int kCopyWarmup = 3;
constexpr int kCopyRuns = 30;

// ---------------------------------------------------------------------------------------------
// Error checking: every CUDA / cuBLASLt call goes through one of these macros.
// ---------------------------------------------------------------------------------------------

/// A cuBLASLt call returned an error status. Not sticky (unlike some CUDA errors), so one GEMM
/// configuration failing does not stop the others.
class CublasError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void check_cuda(cudaError_t status, char const* call, char const* file, int line) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(fmt::format("{} failed at {}:{}: {} ({})", call, file, line,
                                       cudaGetErrorName(status), cudaGetErrorString(status)));
}

void check_cublas(cublasStatus_t status, char const* call, char const* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw CublasError(fmt::format("{} failed at {}:{}: {} ({})", call, file, line,
                                cublasLtGetStatusName(status), cublasLtGetStatusString(status)));
}

#define CUDA_CHECK(call) check_cuda((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) check_cublas((call), #call, __FILE__, __LINE__)

// ---------------------------------------------------------------------------------------------
// RAII owners for CUDA / cuBLASLt handles.
// ---------------------------------------------------------------------------------------------

template <class T, auto Destroy>
class Owned {
 public:
  Owned() = default;
  explicit Owned(T handle) : handle_(handle) {}
  Owned(Owned const&) = delete;
  Owned& operator=(Owned const&) = delete;
  Owned(Owned&& other) noexcept : handle_(std::exchange(other.handle_, T{})) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, T{});
    }
    return *this;
  }
  ~Owned() { reset(); }

  void reset() noexcept {
    if (handle_) (void)Destroy(handle_);  // errors in teardown cannot be reported usefully
    handle_ = T{};
  }
  T get() const { return handle_; }
  T* out() {
    reset();
    return &handle_;
  }

 private:
  T handle_{};
};

using DeviceBuffer = Owned<void*, cudaFree>;
using Event = Owned<cudaEvent_t, cudaEventDestroy>;
using Stream = Owned<cudaStream_t, cudaStreamDestroy>;
using LtHandle = Owned<cublasLtHandle_t, cublasLtDestroy>;
using MatmulDesc = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using MatrixLayout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

DeviceBuffer device_alloc(std::size_t bytes) {
  DeviceBuffer buffer;
  CUDA_CHECK(cudaMalloc(buffer.out(), bytes));
  return buffer;
}

// ---------------------------------------------------------------------------------------------
// Timing.
// ---------------------------------------------------------------------------------------------

struct Stats {
  double median = 0, min = 0, max = 0;
};

Stats summarize(std::vector<double> values) {
  if (values.empty()) throw std::runtime_error("summarize: no samples");
  std::sort(values.begin(), values.end());
  std::size_t const n = values.size();
  double const median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  return {median, values.front(), values.back()};
}

/// Runs op(i) `warmup` times, then `runs` times back to back with an event between consecutive
/// runs (no host synchronization in between); returns each run's time in milliseconds.
template <class Op>
std::vector<double> time_runs(cudaStream_t stream, int warmup, int runs, Op&& op) {
  for (int i = 0; i < warmup; ++i) op(i);
  std::vector<Event> events(static_cast<std::size_t>(runs) + 1);
  for (Event& e : events) CUDA_CHECK(cudaEventCreate(e.out()));
  CUDA_CHECK(cudaEventRecord(events[0].get(), stream));
  for (int i = 0; i < runs; ++i) {
    op(warmup + i);
    CUDA_CHECK(cudaEventRecord(events[static_cast<std::size_t>(i) + 1].get(), stream));
  }
  CUDA_CHECK(cudaEventSynchronize(events.back().get()));
  std::vector<double> ms;
  for (std::size_t i = 0; i < static_cast<std::size_t>(runs); ++i) {
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, events[i].get(), events[i + 1].get()));
    ms.push_back(t);
  }
  return ms;
}

// ---------------------------------------------------------------------------------------------
// Input data: a periodic pattern of small integers in {-2..2}, encoded in the operand dtype.
// ---------------------------------------------------------------------------------------------

/// Period of the fill pattern in elements; odd, so rows of any power-of-two width do not repeat.
constexpr std::size_t kPatternElems = (std::size_t{3} << 22) + 1021;

std::size_t dtype_size(cudaDataType type) {
  switch (type) {
    case CUDA_R_8F_E4M3:
    case CUDA_R_8I: return 1;
    case CUDA_R_16BF:
    case CUDA_R_16F: return 2;
    case CUDA_R_32I:
    case CUDA_R_32F: return 4;
    default: throw std::runtime_error(fmt::format("dtype_size: unexpected cudaDataType {}",
                                                  static_cast<int>(type)));
  }
}

/// Bit pattern of the small integer v in {-2..2} in the given dtype.
std::uint32_t encode_small(int v, cudaDataType type) {
  static constexpr std::uint8_t kE4m3[] = {0xC0, 0xB8, 0x00, 0x38, 0x40};    // -2 -1 0 1 2
  static constexpr std::uint16_t kBf16[] = {0xC000, 0xBF80, 0x0000, 0x3F80, 0x4000};
  static constexpr std::uint16_t kFp16[] = {0xC000, 0xBC00, 0x0000, 0x3C00, 0x4000};
  auto const i = static_cast<std::size_t>(v + 2);
  switch (type) {
    case CUDA_R_8F_E4M3: return kE4m3[i];
    case CUDA_R_16BF: return kBf16[i];
    case CUDA_R_16F: return kFp16[i];
    case CUDA_R_8I: return static_cast<std::uint8_t>(static_cast<std::int8_t>(v));
    default: throw std::runtime_error("encode_small: unexpected dtype");
  }
}

float fp16_to_float(std::uint16_t h) {
  int const exponent = (h >> 10) & 0x1F;
  int const mantissa = h & 0x3FF;
  float value = 0;
  if (exponent == 0) value = std::ldexp(static_cast<float>(mantissa), -24);
  else if (exponent == 31) value = mantissa ? std::numeric_limits<float>::quiet_NaN()
                                            : std::numeric_limits<float>::infinity();
  else value = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  return (h & 0x8000) ? -value : value;
}

double decode_output(std::uint32_t bits, cudaDataType type) {
  switch (type) {
    case CUDA_R_16BF: return std::bit_cast<float>(bits << 16);
    case CUDA_R_16F: return fp16_to_float(static_cast<std::uint16_t>(bits));
    case CUDA_R_32I: return static_cast<std::int32_t>(bits);
    case CUDA_R_32F: return std::bit_cast<float>(bits);
    default: throw std::runtime_error("decode_output: unexpected dtype");
  }
}

class Pattern {
 public:
  Pattern() : values_(kPatternElems) {
    std::mt19937_64 rng(0x5eed5eedULL);
    std::uniform_int_distribution<int> dist(-2, 2);
    for (auto& v : values_) v = static_cast<std::int8_t>(dist(rng));
  }

  /// Value of element i of a buffer filled with `offset`.
  int at(std::int64_t i, std::size_t offset) const {
    return values_[(static_cast<std::size_t>(i) + offset) % kPatternElems];
  }

  /// Fills `elems` elements at dst: element i = value(i + offset), encoded as `type`. One
  /// host-to-device copy of a period, then device-to-device copies of it.
  void fill(void* dst, std::size_t elems, cudaDataType type, std::size_t offset,
            cudaStream_t stream) const {
    std::size_t const esize = dtype_size(type);
    std::size_t const period = std::min(elems, kPatternElems);
    std::vector<std::byte> host(period * esize);
    for (std::size_t i = 0; i < period; ++i) {
      std::uint32_t const bits = encode_small(at(static_cast<std::int64_t>(i), offset), type);
      std::memcpy(host.data() + i * esize, &bits, esize);  // little endian
    }
    auto* const base = static_cast<std::byte*>(dst);
    CUDA_CHECK(cudaMemcpyAsync(base, host.data(), host.size(), cudaMemcpyHostToDevice, stream));
    for (std::size_t done = period; done < elems;) {
      std::size_t const n = std::min(period, elems - done);
      CUDA_CHECK(cudaMemcpyAsync(base + done * esize, base, n * esize, cudaMemcpyDeviceToDevice,
                                 stream));
      done += n;
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` dies here
  }

 private:
  std::vector<std::int8_t> values_;
};

// ---------------------------------------------------------------------------------------------
// Device description.
// ---------------------------------------------------------------------------------------------

std::string version_string(long long v) {  // major*1000+minor*10 (CUDA) style
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}

std::string utc_now() {
  std::time_t const now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Device {
  int index = 0;
  cudaDeviceProp prop{};
  int sm_clock_khz = 0, mem_clock_khz = 0, bus_bits = 0;
  double dram_peak_gbs = 0;  ///< 2 (DDR) x memory clock x bus width
};

Device describe_device(int index, json& out) {
  Device d;
  d.index = index;
  CUDA_CHECK(cudaGetDeviceProperties(&d.prop, index));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.sm_clock_khz, cudaDevAttrClockRate, index));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.mem_clock_khz, cudaDevAttrMemoryClockRate, index));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.bus_bits, cudaDevAttrGlobalMemoryBusWidth, index));
  d.dram_peak_gbs = 2.0 * d.mem_clock_khz * 1e3 * (d.bus_bits / 8.0) / 1e9;
  int driver = 0, runtime = 0;
  CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  std::size_t const lt = cublasLtGetVersion();
  std::string const lt_version = fmt::format("{}.{}.{}", lt / 10000, lt / 100 % 100, lt % 100);

  fmt::print("# SlideSparse device ceilings\n\n");
  fmt::print("| date (UTC) | GPU | CC | SMs | SM clock (max) | memory clock | bus | L2 | memory | "
             "driver | runtime | cuBLASLt |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  fmt::print("| {} | {} (#{}) | {}.{} | {} | {} MHz | {} MHz | {} bit | {} MiB | {:.1f} GiB | {} | "
             "{} | {} |\n\n",
             utc_now(), d.prop.name, index, d.prop.major, d.prop.minor,
             d.prop.multiProcessorCount, d.sm_clock_khz / 1000, d.mem_clock_khz / 1000,
             d.bus_bits, d.prop.l2CacheSize / static_cast<int>(kMiB),
             static_cast<double>(d.prop.totalGlobalMem) / static_cast<double>(1 << 30),
             version_string(driver), version_string(runtime), lt_version);
  fmt::print("DRAM peak from clock x bus width (DDR): {:.0f} GB/s\n\n", d.dram_peak_gbs);

  out["date_utc"] = utc_now();
  out["device"] = {{"index", index},
                   {"name", d.prop.name},
                   {"compute_capability", fmt::format("{}.{}", d.prop.major, d.prop.minor)},
                   {"sm_count", d.prop.multiProcessorCount},
                   {"sm_clock_max_khz", d.sm_clock_khz},
                   {"memory_clock_khz", d.mem_clock_khz},
                   {"memory_bus_bits", d.bus_bits},
                   {"dram_peak_gbs", d.dram_peak_gbs},
                   {"l2_bytes", d.prop.l2CacheSize},
                   {"memory_bytes", d.prop.totalGlobalMem}};
  out["versions"] = {{"driver", driver},
                     {"runtime", runtime},
                     {"cublaslt", lt},
                     {"cublaslt_cudart", cublasLtGetCudartVersion()},
                     {"cublaslt_headers", CUBLAS_VERSION}};
  return d;
}

// ---------------------------------------------------------------------------------------------
// 1. Copy bandwidth.
// ---------------------------------------------------------------------------------------------

json bench_copy(std::size_t bytes, Device const& dev, Pattern const& pattern,
                cudaStream_t stream) {
  DeviceBuffer src = device_alloc(bytes);
  DeviceBuffer dst = device_alloc(bytes);
  pattern.fill(src.get(), bytes, CUDA_R_8I, 0, stream);
  std::vector<double> ms = time_runs(stream, kCopyWarmup, kCopyRuns, [&](int) {
    CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  Stats const t = summarize(ms);
  auto gbs = [&](double milliseconds) {
    return 2.0 * static_cast<double>(bytes) / milliseconds / 1e6;
  };
  json row = {{"bytes", bytes},
              {"bytes_moved_per_run", 2 * bytes},
              {"runs", kCopyRuns},
              {"ms_median", t.median},
              {"ms_min", t.min},
              {"ms_max", t.max},
              {"gbs_median", gbs(t.median)},
              {"gbs_best", gbs(t.min)},
              {"gbs_worst", gbs(t.max)},
              {"fraction_of_dram_peak", gbs(t.median) / dev.dram_peak_gbs}};
  fmt::print("| {} MiB | {:.0f} | {:.0f} | {:.0f} | {:.1f} % |\n", bytes / kMiB, gbs(t.median),
             gbs(t.max), gbs(t.min), 100.0 * gbs(t.median) / dev.dram_peak_gbs);
  return row;
}

// ---------------------------------------------------------------------------------------------
// 2. Dense GEMM through cuBLASLt.
// ---------------------------------------------------------------------------------------------

struct GemmDtype {
  std::string_view name;
  cudaDataType ab;  ///< A and B
  cudaDataType cd;  ///< C and D
  cublasComputeType_t compute;
  cudaDataType scale;
  bool fast_accum;
};

constexpr GemmDtype kGemmDtypes[] = {
    {"fp8_e4m3 -> bf16", CUDA_R_8F_E4M3, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F, false},
    {"fp8_e4m3 -> bf16 fast-accum", CUDA_R_8F_E4M3, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     true},
    {"bf16 -> bf16", CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F, false},
    {"fp16 -> fp16", CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F, false},
    {"int8 -> int32", CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, false},
    {"int8 -> bf16", CUDA_R_8I, CUDA_R_16BF, CUBLAS_COMPUTE_32I, CUDA_R_32F, false},
};

struct GemmShape {
  std::string_view name;
  std::int64_t m, n, k;  ///< M tokens, N output channels, K input channels
};

constexpr GemmShape kGemmShapes[] = {
    {"square 8192", 8192, 8192, 8192},
    {"square 16384", 16384, 16384, 16384},
    {"qwen2.5-7b gate_up", 4096, 37888, 3584},
};

struct Context {
  Device const& dev;
  Pattern const& pattern;
  cudaStream_t stream;
  cublasLtHandle_t lt;
  void* workspace;
};

template <class T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, T value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof value));
}

template <class T>
T algo_config(cublasLtMatmulAlgo_t const& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  T value{};
  std::size_t written = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &value, sizeof value, &written));
  return value;
}

/// Checks 64 outputs of D (buffer set 0) against an exact host reference.
json check_outputs(Context const& ctx, GemmDtype const& dt, GemmShape const& sh, void const* d,
                   std::size_t off_a, std::size_t off_b) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::int64_t> pick_m(0, sh.m - 1), pick_n(0, sh.n - 1);
  std::vector<std::pair<std::int64_t, std::int64_t>> points = {{0, 0}, {sh.m - 1, sh.n - 1}};
  while (points.size() < 64) points.emplace_back(pick_m(rng), pick_n(rng));
  // Tolerance relative to |reference|: the output type's rounding, plus the lower-precision
  // accumulation of FP8 fast-accum.
  double rel = 0, abs_tol = 0;
  if (dt.cd == CUDA_R_16BF) rel = 1.0 / 128;
  if (dt.cd == CUDA_R_16F) rel = 1.0 / 1024;
  if (dt.fast_accum) {
    rel += 1.0 / 256;
    abs_tol = 4;
  }
  std::size_t const esize = dtype_size(dt.cd);
  double max_err = 0;
  int bad = 0;
  std::string first_bad;
  for (auto const& [m, n] : points) {
    std::int64_t ref = 0;
    for (std::int64_t k = 0; k < sh.k; ++k) {
      ref += static_cast<std::int64_t>(ctx.pattern.at(n * sh.k + k, off_a)) *
             ctx.pattern.at(m * sh.k + k, off_b);
    }
    std::uint32_t bits = 0;
    auto const* src =
        static_cast<std::byte const*>(d) + static_cast<std::size_t>(m * sh.n + n) * esize;
    CUDA_CHECK(cudaMemcpy(&bits, src, esize, cudaMemcpyDeviceToHost));
    double const got = decode_output(bits, dt.cd);
    double const err = std::abs(got - static_cast<double>(ref));
    max_err = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(max_err, err);
    if (!(err <= rel * std::abs(static_cast<double>(ref)) + abs_tol)) {
      if (bad++ == 0) first_bad = fmt::format("D[m={}, n={}] = {} expected {}", m, n, got, ref);
    }
  }
  return {{"points", points.size()}, {"failed", bad}, {"max_abs_error", max_err},
          {"first_failure", first_bad}, {"ok", bad == 0}};
}

json bench_gemm(Context const& ctx, GemmDtype const& dt, GemmShape const& sh) {
  json row = {{"dtype", dt.name}, {"shape", sh.name}, {"m", sh.m}, {"n", sh.n}, {"k", sh.k},
              {"layout", "A=weight [N,K] row-major (col-major KxN, opA=T), B=act col-major KxM "
                         "(opB=N), D col-major NxM"}};
  auto const m = static_cast<std::uint64_t>(sh.m), n = static_cast<std::uint64_t>(sh.n),
             k = static_cast<std::uint64_t>(sh.k);

  // Descriptors and layouts: built once per (dtype, shape).
  MatmulDesc desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(desc.out(), dt.compute, dt.scale));
  set_desc<std::int32_t>(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_desc<std::int32_t>(desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  if (dt.fast_accum) set_desc<std::int8_t>(desc.get(), CUBLASLT_MATMUL_DESC_FAST_ACCUM, 1);
  MatrixLayout la, lb, lcd;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(la.out(), dt.ab, k, n, sh.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(lb.out(), dt.ab, k, m, sh.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(lcd.out(), dt.cd, n, m, sh.n));
  Preference pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(pref.out()));
  std::uint64_t const max_ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof max_ws));

  cublasLtMatmulHeuristicResult_t heuristics[kHeuristicAlgos] = {};
  int returned = 0;
  cublasStatus_t const hs =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt, desc.get(), la.get(), lb.get(), lcd.get(), lcd.get(),
                                     pref.get(), kHeuristicAlgos, heuristics, &returned);
  if (hs == CUBLAS_STATUS_NOT_SUPPORTED || (hs == CUBLAS_STATUS_SUCCESS && returned == 0)) {
    row["supported"] = false;
    row["reason"] = hs == CUBLAS_STATUS_SUCCESS ? "no algorithm returned by the heuristic"
                                                : cublasLtGetStatusString(hs);
    return row;
  }
  CUBLAS_CHECK(hs);
  row["supported"] = true;

  // Buffer sets: rotate among enough of them that the operands touched between two uses of the
  // same set exceed 2x L2 (at least 2 sets, as many as fit in free memory).
  std::size_t const a_elems = n * k, b_elems = k * m, d_elems = n * m;
  std::size_t const set_bytes = a_elems * dtype_size(dt.ab) + b_elems * dtype_size(dt.ab) +
                                d_elems * dtype_size(dt.cd);
  auto const l2 = static_cast<std::size_t>(ctx.dev.prop.l2CacheSize);
  std::size_t sets = std::max<std::size_t>(2, (2 * l2 + set_bytes - 1) / set_bytes);
  std::size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  std::size_t const usable = free_bytes > 1024 * kMiB ? free_bytes - 1024 * kMiB : 0;
  sets = std::min(sets, usable / set_bytes);
  if (sets == 0) {
    throw std::runtime_error(fmt::format("{} {}: one buffer set ({} MiB) does not fit in free "
                                         "memory ({} MiB)", dt.name, sh.name, set_bytes / kMiB,
                                         free_bytes / kMiB));
  }
  std::size_t const off_a = 0, off_b = kPatternElems / 2 + 17;
  std::vector<DeviceBuffer> a, b, d;
  for (std::size_t s = 0; s < sets; ++s) {
    a.push_back(device_alloc(a_elems * dtype_size(dt.ab)));
    b.push_back(device_alloc(b_elems * dtype_size(dt.ab)));
    d.push_back(device_alloc(d_elems * dtype_size(dt.cd)));
    ctx.pattern.fill(a.back().get(), a_elems, dt.ab, off_a, ctx.stream);
    ctx.pattern.fill(b.back().get(), b_elems, dt.ab, off_b, ctx.stream);
  }
  row["buffer_sets"] = sets;
  row["buffer_set_bytes"] = set_bytes;
  row["cold_l2"] = sets * set_bytes >= 2 * l2;

  float const alpha_f = 1, beta_f = 0;
  std::int32_t const alpha_i = 1, beta_i = 0;
  bool const int_scale = dt.scale == CUDA_R_32I;
  void const* alpha = int_scale ? static_cast<void const*>(&alpha_i) : &alpha_f;
  void const* beta = int_scale ? static_cast<void const*>(&beta_i) : &beta_f;
  auto matmul = [&](cublasLtMatmulAlgo_t const& algo, std::size_t s) {
    CUBLAS_CHECK(cublasLtMatmul(ctx.lt, desc.get(), alpha, a[s].get(), la.get(), b[s].get(),
                                lb.get(), beta, d[s].get(), lcd.get(), d[s].get(), lcd.get(), &algo,
                                ctx.workspace, kWorkspaceBytes, ctx.stream));
  };

  double const flop =
      2.0 * static_cast<double>(sh.m) * static_cast<double>(sh.n) * static_cast<double>(sh.k);
  json algos = json::array();
  int best = -1;
  Stats best_t;
  std::size_t rotation = 0;
  for (int i = 0; i < returned; ++i) {
    auto const& h = heuristics[i];
    json entry = {{"rank", i},
                  {"config_id", algo_config<std::int32_t>(h.algo, CUBLASLT_ALGO_CONFIG_ID)},
                  {"tile_id", algo_config<std::uint32_t>(h.algo, CUBLASLT_ALGO_CONFIG_TILE_ID)},
                  {"stages_id", algo_config<std::uint32_t>(h.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID)},
                  {"splitk", algo_config<std::int32_t>(h.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM)},
                  {"cluster_shape_id",
                   algo_config<std::uint16_t>(h.algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID)},
                  {"workspace_bytes", h.workspaceSize},
                  {"waves", h.wavesCount}};
    if (h.state != CUBLAS_STATUS_SUCCESS) {
      entry["error"] = cublasLtGetStatusString(h.state);
      algos.push_back(entry);
      continue;
    }
    try {
      std::vector<double> ms = time_runs(ctx.stream, kGemmWarmup, kGemmRuns, [&](int) {
        matmul(h.algo, rotation++ % sets);
      });
      Stats const t = summarize(ms);
      entry["ms_median"] = t.median;
      entry["tflops_median"] = flop / t.median / 1e9;
      if (best < 0 || t.median < best_t.median) {
        best = i;
        best_t = t;
      }
    } catch (CublasError const& e) {  // this algorithm refused; the others may still run
      entry["error"] = e.what();
    }
    algos.push_back(entry);
  }
  row["algorithms"] = algos;
  if (best < 0) {
    row["supported"] = false;
    row["reason"] = "every heuristic algorithm failed";
    return row;
  }

  // One more run of the best algorithm into a poisoned D of set 0, then check it.
  CUDA_CHECK(cudaMemsetAsync(d[0].get(), 0xFF, d_elems * dtype_size(dt.cd), ctx.stream));
  matmul(heuristics[best].algo, 0);
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  row["check"] = check_outputs(ctx, dt, sh, d[0].get(), off_a, off_b);

  row["best_rank"] = best;
  row["ms_median"] = best_t.median;
  row["ms_min"] = best_t.min;
  row["ms_max"] = best_t.max;
  row["tflops_median"] = flop / best_t.median / 1e9;
  row["tflops_best"] = flop / best_t.min / 1e9;
  return row;
}

void print_gemm_row(json const& row) {
  std::string const shape = fmt::format("{}x{}x{}", row["m"].get<std::int64_t>(),
                                        row["n"].get<std::int64_t>(),
                                        row["k"].get<std::int64_t>());
  std::string const dtype = row["dtype"].get<std::string>();
  if (!row.value("supported", false)) {
    fmt::print("| {} | {} | not supported: {} | | | | | |\n", dtype, shape,
               row.value("reason", std::string{"?"}));
    return;
  }
  json const& check = row["check"];
  std::string const verdict =
      check["ok"].get<bool>()
          ? "ok"
          : fmt::format("FAILED ({}/{}: {})", check["failed"].get<int>(),
                        check["points"].get<int>(), check["first_failure"].get<std::string>());
  int const best = row["best_rank"].get<int>();
  fmt::print("| {} | {} | {:.0f} | {:.3f} | {:.3f} | {:.3f} | #{} (id {}) | {} |\n", dtype, shape,
             row["tflops_median"].get<double>(), row["ms_median"].get<double>(),
             row["ms_min"].get<double>(), row["ms_max"].get<double>(), best,
             row["algorithms"][static_cast<std::size_t>(best)]["config_id"].get<int>(), verdict);
}

// ---------------------------------------------------------------------------------------------

void write_json(std::string const& path, json const& doc) {
  std::ofstream out(path, std::ios::trunc);
  out << doc.dump(2) << '\n';
  out.close();
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path));
}

int usage(char const* prog) {
  fmt::print(stderr, "usage: {} [--json PATH] [--device N]\n", prog);
  return 2;
}

int run(int device_index, json& doc) {
  int count = 0;
  cudaError_t const status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    fmt::print("no GPU: {}\n", status != cudaSuccess ? cudaGetErrorString(status)
                                                     : "no CUDA device found");
    return 0;
  }
  if (device_index < 0 || device_index >= count) {
    throw std::runtime_error(fmt::format("--device {}: {} device(s) present", device_index, count));
  }
  CUDA_CHECK(cudaSetDevice(device_index));
  Device const dev = describe_device(device_index, doc);
  Stream stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(stream.out(), cudaStreamNonBlocking));
  Pattern const pattern;

  fmt::print("## Device-to-device copy (cudaMemcpyAsync; GB/s counts bytes read + written)\n\n");
  fmt::print("| size | median GB/s | worst | best | of DRAM peak |\n|---|---|---|---|---|\n");
  doc["copy"] = json::array();
  for (std::size_t bytes : {256 * kMiB, 1024 * kMiB}) {
    doc["copy"].push_back(bench_copy(bytes, dev, pattern, stream.get()));
  }

  fmt::print("\n## Dense GEMM, cuBLASLt (best of top-{} heuristics, {} timed runs each, cold L2; "
             "TFLOP/s = 2MNK / median time)\n\n", kHeuristicAlgos, kGemmRuns);
  fmt::print("| dtype | MxNxK | TFLOP/s | median ms | min ms | max ms | best algo | check |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  LtHandle lt;
  CUBLAS_CHECK(cublasLtCreate(lt.out()));
  DeviceBuffer workspace = device_alloc(kWorkspaceBytes);
  Context const ctx{dev, pattern, stream.get(), lt.get(), workspace.get()};
  doc["gemm"] = json::array();
  bool all_ok = true;
  for (GemmShape const& shape : kGemmShapes) {
    for (GemmDtype const& dtype : kGemmDtypes) {
      json row;
      try {
        row = bench_gemm(ctx, dtype, shape);
      } catch (CublasError const& e) {  // e.g. a descriptor attribute this dtype refuses
        row = {{"dtype", dtype.name}, {"shape", shape.name}, {"m", shape.m}, {"n", shape.n},
               {"k", shape.k}, {"supported", false}, {"reason", e.what()}};
      }
      print_gemm_row(row);
      std::fflush(stdout);
      if (row.contains("check") && !row["check"]["ok"].get<bool>()) all_ok = false;
      doc["gemm"].push_back(std::move(row));
    }
  }
  if (!all_ok) {
    fmt::print(stderr, "bench_ceilings: some GEMM outputs did not match the host reference\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int device_index = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view const arg = argv[i];
    if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "-h" || arg == "--help") {
      usage(argv[0]);
      return 0;
    } else if (arg == "--device" && i + 1 < argc) {
      try {
        device_index = std::stoi(argv[++i]);
      } catch (std::exception const&) {
        return usage(argv[0]);
      }
    } else {
      return usage(argv[0]);
    }
  }
  json doc = {{"tool", "bench_ceilings"}};
  int code = 0;
  try {
    code = run(device_index, doc);
  } catch (std::exception const& e) {
    fmt::print(stderr, "bench_ceilings: error: {}\n", e.what());
    doc["error"] = e.what();
    code = 1;
  }
  if (!json_path.empty() && doc.contains("device")) {  // nothing measured without a GPU
    try {
      write_json(json_path, doc);
    } catch (std::exception const& e) {
      fmt::print(stderr, "bench_ceilings: error: {}\n", e.what());
      return 1;
    }
  }
  return code;
}
