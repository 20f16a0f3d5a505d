// The whole GPU linear layer (quant+lift -> GEMM -> epilogue) against the CPU reference of the
// whole layer (core/linear_reference.hpp):
//   INT8: bit for bit, SlideSparse for every pattern and dense alike (INT32 accumulation is
//         exact and every other step is bit-exact by construction);
//   FP8 / BF16 / F16: within a tolerance of the float64 result, and SlideSparse within the same
//         tolerance of dense (they differ only in the GEMM's accumulation order).
// Each on both GEMM backends: the libraries (cuSPARSELt / cuBLASLt + separate epilogue) and
// CUTLASS with the fused epilogue (GemmBackend::kAuto: CUTLASS wherever it can run the layer —
// W8A8, BF16, N % 8 == 0, Hopper — else the library, which the tests also check).
#include "slidesparse/cuda/linear.hpp"

#include "slidesparse/cuda/cutlass_gemm.hpp"
#include "slidesparse/cuda/dispatch_linear.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"
#include "slidesparse/core/linear_reference.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/quantize.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse {
namespace {

using cuda::GemmBackend;
using cuda::Linear;
using cuda::LinearConfig;
using cuda::LinearWeights;
using test::DeviceBuffer;
using test::OwnedMatrix;

// A layer's host data: weight of the compute dtype pruned to the pattern, scales, bias.
struct HostLayer {
  OwnedMatrix weight;
  std::vector<float> scale;
  std::vector<float> bias;
  LinearWeights view() const { return {weight.cview("w"), scale, bias}; }
};

HostLayer make_layer(test::Rng& rng, DType compute, std::int64_t n, std::int64_t k,
                     std::optional<SparsityPattern> pattern, bool with_bias) {
  bool const w8a8 = compute == DType::kI8 || compute == DType::kF8E4M3;
  OwnedMatrix f(DType::kF32, n, k);
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < k; ++c) f.set<float>(r, c, rng.normal(0.05f));
  }
  if (pattern) prune_in_place(f.view(), *pattern);
  HostLayer layer{OwnedMatrix(compute, n, k), {}, {}};
  if (w8a8) {
    layer.scale.resize(static_cast<std::size_t>(n));
    quantize_weight_per_channel(f.cview(), layer.weight.view(), layer.scale);
  } else {
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < k; ++c) test::set_float(layer.weight, r, c, f.get<float>(r, c));
    }
  }
  if (with_bias) {
    layer.bias.resize(static_cast<std::size_t>(n));
    for (auto& b : layer.bias) b = rng.normal(0.5f);
  }
  return layer;
}

// Activations with per-row magnitudes spread over 2^-12 .. 2^4, one all-zero row (its scale
// is the clamped minimum) and, for K > 3, one outlier per row.
OwnedMatrix make_input(test::Rng& rng, DType dtype, std::int64_t m, std::int64_t k) {
  OwnedMatrix x(dtype, m, k);
  for (std::int64_t r = 0; r < m; ++r) {
    if (m > 2 && r == m / 2) continue;
    float const magnitude = std::ldexp(1.0f, rng.uniform_int(-12, 4));
    for (std::int64_t c = 0; c < k; ++c) test::set_float(x, r, c, rng.normal(magnitude));
    if (k > 3) test::set_float(x, r, rng.uniform_int(0, static_cast<int>(k - 1)), 20.0f * magnitude);
  }
  return x;
}

// Runs the layer on x and returns y's bytes (y poisoned first).
std::vector<std::byte> run_layer(Linear& layer, OwnedMatrix const& x, std::int64_t n) {
  DeviceBuffer dx(x.bytes.size()), dy(static_cast<std::size_t>(x.rows * n) * dtype_size(x.dtype));
  dx.upload(x.bytes.data());
  dy.fill(0xFF);  // NaN in BF16/F16: a missed output cannot pass
  layer.forward(dx.get(), dy.get(), x.rows, nullptr);
  SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  return dy.download();
}

float output_value(std::vector<std::byte> const& y, DType dtype, std::size_t i) {
  std::uint16_t bits = 0;
  std::memcpy(&bits, y.data() + 2 * i, 2);
  return dtype == DType::kBF16 ? bf16_to_float(bf16_t{bits}) : fp16_to_float(fp16_t{bits});
}

// Tolerance of a non-INT8 layer output y against the float64 result from the same quantized
// operands, per element:
//   output rounding   2^-8 |exact| for BF16 (half an ulp of an 8-bit significand), 2^-11 for F16;
//   accumulation      2^-9 * sum_k |x_k w_k| (scaled). FP32 accumulation alone is far below
//                     this (K * 2^-24 <= 2^-12 for K <= 4096, and the error grows like sqrt(K)
//                     in practice). Hopper's FP8 tensor cores accumulate inside an MMA with
//                     about 14 significand bits before FP32 promotion (DeepSeek-V3 report),
//                     i.e. ~2^-13 per partial sum over short chains: 2^-9 leaves 16x margin.
//   epilogue          3 float roundings, 2^-22 |exact|, folded into the first term.
// Catches wrong scales, rows, columns, bias and dtype handling (errors of order |exact| or
// sum|x w|); a single lost product is below it — the INT8 tests are exact for that.
double tolerance(DType out, double exact, double abs_products) {
  double const rounding = out == DType::kBF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  return rounding * std::fabs(exact) + std::ldexp(1.0, -9) * abs_products + 1e-30;
}

class LinearGpu : public test::GpuTest {};

constexpr GemmBackend kBackends[] = {GemmBackend::kLibrary, GemmBackend::kAuto};

char const* backend_name(GemmBackend b) {
  return b == GemmBackend::kLibrary ? "library" : b == GemmBackend::kCutlass ? "cutlass" : "auto";
}

// Whether kAuto must pick CUTLASS for this layer on this machine.
bool expect_cutlass(GemmBackend backend, DType compute, DType act, std::int64_t n, std::int64_t k_lifted) {
  if (backend == GemmBackend::kLibrary || (compute != DType::kI8 && compute != DType::kF8E4M3)) return false;
  return cuda::CutlassGemm::unsupported(compute, act, n, k_lifted).empty();
}

LinearConfig config_of(DType compute, DType act, std::optional<SparsityPattern> pattern, GemmBackend backend) {
  LinearConfig config{compute, act, pattern};
  config.backend = backend;
  return config;
}

struct Shape {
  std::int64_t m, n, k;
};

TEST_F(LinearGpu, Int8LayerEqualsTheCpuReferenceBitForBitForEveryPattern) {
  test::Rng rng(31337);
  SCOPED_TRACE(rng.describe());
  // M = 1, 7, 4097 (padded to the 4608 bucket); K = 3584, 18944, and K not a multiple of 2N;
  // N not a multiple of 32.
  std::vector<Shape> const shapes = {{1, 64, 3584}, {7, 100, 1001}, {4097, 40, 3584}, {33, 72, 18944}, {17, 136, 1001}};
  std::vector<std::optional<SparsityPattern>> patterns = {std::nullopt};
  for (char const* p : {"2:4", "4:6", "6:8", "8:10", "14:16"}) patterns.push_back(SparsityPattern::parse(p));
  for (GemmBackend const backend : kBackends) {
    for (Shape const& s : shapes) {
      for (auto const& pattern : patterns) {
        for (bool const with_bias : {false, true}) {
          SCOPED_TRACE(fmt::format("{} {} M={} N={} K={} bias={}", backend_name(backend),
                                   pattern ? pattern->to_string() : "dense", s.m, s.n, s.k, with_bias));
          HostLayer const host = make_layer(rng, DType::kI8, s.n, s.k, pattern, with_bias);
          OwnedMatrix const x = make_input(rng, DType::kBF16, s.m, s.k);
          OwnedMatrix expected(DType::kBF16, s.m, s.n);
          linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, expected.view());
          Linear layer(config_of(DType::kI8, DType::kBF16, pattern, backend), host.view(), nullptr);
          EXPECT_EQ(layer.uses_cutlass(), expect_cutlass(backend, DType::kI8, DType::kBF16, s.n, layer.k_lifted()));
          ASSERT_EQ(run_layer(layer, x, s.n), expected.bytes);
        }
      }
    }
  }
}

TEST_F(LinearGpu, FloatLayersMatchTheFloat64ReferenceAndSparseMatchesDense) {
  test::Rng rng(4242);
  SCOPED_TRACE(rng.describe());
  struct FloatCase {
    DType compute, act;
    Shape shape;
    char const* pattern;
  };
  std::vector<FloatCase> const cases = {
      {DType::kF8E4M3, DType::kBF16, {1, 64, 3584}, "6:8"},   {DType::kF8E4M3, DType::kBF16, {7, 100, 1001}, "4:6"},
      {DType::kF8E4M3, DType::kF16, {300, 512, 3584}, "6:8"}, {DType::kF8E4M3, DType::kBF16, {64, 64, 18944}, "14:16"},
      {DType::kF8E4M3, DType::kBF16, {33, 96, 4096}, "2:4"},  {DType::kBF16, DType::kBF16, {7, 100, 1001}, "6:8"},
      {DType::kBF16, DType::kBF16, {64, 4608, 3584}, "6:8"},  {DType::kF16, DType::kF16, {17, 64, 3584}, "8:10"},
      {DType::kBF16, DType::kBF16, {32, 64, 4096}, "2:4"},
      {DType::kF16, DType::kF16, {1, 4608, 3584}, "2:4"},  // cuSPARSELt 0.8.0's search failed here once
      {DType::kF8E4M3, DType::kBF16, {1025, 136, 3584}, "6:8"},
  };
  // The W8A8 BF16 cases again on kAuto (CUTLASS where it can run them).
  std::vector<std::pair<FloatCase, GemmBackend>> cases_by_backend;
  for (FloatCase const& c : cases) cases_by_backend.emplace_back(c, GemmBackend::kLibrary);
  for (FloatCase const& c : cases) {
    if (c.compute == DType::kF8E4M3 && c.act == DType::kBF16) cases_by_backend.emplace_back(c, GemmBackend::kAuto);
  }
  for (auto const& [c, backend] : cases_by_backend) {
    Shape const& s = c.shape;
    SparsityPattern const pattern = SparsityPattern::parse(c.pattern);
    for (bool const with_bias : {false, true}) {
      SCOPED_TRACE(fmt::format("{} {} {} {} M={} N={} K={} bias={}", backend_name(backend), dtype_name(c.compute),
                               dtype_name(c.act), c.pattern, s.m, s.n, s.k, with_bias));
      HostLayer const host = make_layer(rng, c.compute, s.n, s.k, pattern, with_bias);
      OwnedMatrix const x = make_input(rng, c.act, s.m, s.k);
      OwnedMatrix rounded(c.act, s.m, s.n);
      LinearReferenceResult const ref = linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, rounded.view());
      Linear sparse(config_of(c.compute, c.act, pattern, backend), host.view(), nullptr);
      Linear dense(config_of(c.compute, c.act, std::nullopt, backend), host.view(), nullptr);
      EXPECT_EQ(sparse.uses_cutlass(), expect_cutlass(backend, c.compute, c.act, s.n, sparse.k_lifted()));
      EXPECT_EQ(dense.uses_cutlass(), expect_cutlass(backend, c.compute, c.act, s.n, dense.k_lifted()));
      auto const ys = run_layer(sparse, x, s.n);
      auto const yd = run_layer(dense, x, s.n);
      double worst = 0;  // largest error as a fraction of the tolerance, printed for the record
      for (std::size_t i = 0; i < ref.exact.size(); ++i) {
        double const tol = tolerance(c.act, ref.exact[i], ref.abs_products[i]);
        double const es = std::fabs(output_value(ys, c.act, i) - ref.exact[i]);
        double const ed = std::fabs(output_value(yd, c.act, i) - ref.exact[i]);
        double const esd = std::fabs(double{output_value(ys, c.act, i)} - output_value(yd, c.act, i));
        worst = std::max({worst, es / tol, ed / tol, esd / (2 * tol)});
        ASSERT_LE(es, tol) << "sparse, element " << i << " (row " << i / static_cast<std::size_t>(s.n) << ")";
        ASSERT_LE(ed, tol) << "dense, element " << i;
        ASSERT_LE(esd, 2 * tol) << "sparse vs dense, element " << i;
      }
      std::printf("  %s %s %s %s M=%lld N=%lld K=%lld bias=%d dense_fused=%d: worst error = %.3f of the tolerance\n",
                  backend_name(backend), std::string(dtype_name(c.compute)).c_str(), std::string(dtype_name(c.act)).c_str(), c.pattern,
                  static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k), with_bias,
                  dense.dense_scales_fused() ? 1 : 0, worst);
    }
  }
}

TEST_F(LinearGpu, Sm90SparseBackendEqualsTheReferenceAndRemembersItsSchedule) {
  // SlideSparse's own sm90 kernel as a layer backend: quant+lift, then the kernel with the fused
  // epilogue. INT8: bit for bit the CPU reference (integer accumulation, the same epilogue
  // order). FP8: within tolerance() (the float64 reference; see above). Awkward M (1, 7, 17,
  // 4097), N a multiple of 8 but not of the 128-row tile, K not a multiple of 2N, every pattern.
  LinearConfig const probe = config_of(DType::kI8, DType::kBF16, SparsityPattern::parse("2:4"), GemmBackend::kSm90Sparse);
  if (std::string const why = Linear::sm90_sparse_unsupported(probe, 64, 3584); !why.empty()) {
    GTEST_SKIP() << "the sm90 sparse backend cannot run here: " << why;
  }
  test::Rng rng(9090);
  SCOPED_TRACE(rng.describe());
  std::vector<Shape> const shapes = {{1, 64, 3584}, {7, 104, 1001}, {4097, 40, 3584}, {17, 136, 1001}, {33, 72, 18944}};
  for (Shape const& s : shapes) {
    for (char const* p : {"2:4", "4:6", "6:8", "14:16"}) {
      SparsityPattern const pattern = SparsityPattern::parse(p);
      bool const with_bias = s.n % 16 == 0;
      SCOPED_TRACE(fmt::format("INT8 {} M={} N={} K={} bias={}", p, s.m, s.n, s.k, with_bias));
      HostLayer const host = make_layer(rng, DType::kI8, s.n, s.k, pattern, with_bias);
      OwnedMatrix const x = make_input(rng, DType::kBF16, s.m, s.k);
      OwnedMatrix expected(DType::kBF16, s.m, s.n);
      linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, expected.view());
      Linear layer(config_of(DType::kI8, DType::kBF16, pattern, GemmBackend::kSm90Sparse), host.view(), nullptr);
      EXPECT_EQ(layer.backend(), GemmBackend::kSm90Sparse);
      EXPECT_FALSE(layer.uses_cutlass());
      ASSERT_EQ(run_layer(layer, x, s.n), expected.bytes);
      EXPECT_EQ(layer.gemm_description(s.m).rfind("sm90-sparse schedule ", 0), 0u) << layer.gemm_description(s.m);
    }
  }
  for (auto const& [s, p] : {std::pair{Shape{1025, 136, 3584}, "6:8"}, {Shape{33, 96, 4096}, "2:4"}, {Shape{1, 64, 1001}, "4:6"}}) {
    SCOPED_TRACE(fmt::format("FP8 {} M={} N={} K={}", p, s.m, s.n, s.k));
    SparsityPattern const pattern = SparsityPattern::parse(p);
    HostLayer const host = make_layer(rng, DType::kF8E4M3, s.n, s.k, pattern, true);
    OwnedMatrix const x = make_input(rng, DType::kBF16, s.m, s.k);
    OwnedMatrix rounded(DType::kBF16, s.m, s.n);
    LinearReferenceResult const ref = linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, rounded.view());
    Linear layer(config_of(DType::kF8E4M3, DType::kBF16, pattern, GemmBackend::kSm90Sparse), host.view(), nullptr);
    auto const y = run_layer(layer, x, s.n);
    for (std::size_t i = 0; i < ref.exact.size(); ++i) {
      ASSERT_LE(std::fabs(output_value(y, DType::kBF16, i) - ref.exact[i]),
                tolerance(DType::kBF16, ref.exact[i], ref.abs_products[i]))
          << "element " << i << " (row " << i / static_cast<std::size_t>(s.n) << ")";
    }
  }
  // The schedule chosen per M bucket is kept in the tuning cache and taken from it later.
  test::TempDir dir;
  auto const file = dir.path() / "tuning.json";
  HostLayer const host = make_layer(rng, DType::kI8, 256, 3584, SparsityPattern::parse("6:8"), true);
  LinearConfig const config = config_of(DType::kI8, DType::kBF16, SparsityPattern::parse("6:8"), GemmBackend::kSm90Sparse);
  std::string described;
  {
    io::TuningCache cache(file);
    Linear layer(config, host.view(), nullptr, &cache);
    layer.prepare(300, nullptr);
    EXPECT_FALSE(layer.tuned_from_cache(300));
    described = layer.gemm_description(300);
    cache.save();
  }
  io::TuningCache reloaded(file);
  Linear again(config, host.view(), nullptr, &reloaded);
  again.prepare(300, nullptr);
  EXPECT_TRUE(again.tuned_from_cache(300));
  EXPECT_EQ(again.gemm_description(300), described);
  // What it cannot run is an Error naming the reason, not a silent fallback.
  EXPECT_THROW(Linear(config_of(DType::kI8, DType::kBF16, std::nullopt, GemmBackend::kSm90Sparse), host.view(), nullptr),
               Error);
  HostLayer const odd = make_layer(rng, DType::kI8, 100, 256, SparsityPattern::parse("2:4"), false);
  try {
    Linear layer(config_of(DType::kI8, DType::kBF16, SparsityPattern::parse("2:4"), GemmBackend::kSm90Sparse), odd.view(),
                 nullptr, nullptr, "odd_proj");
    ADD_FAILURE() << "N = 100 accepted";
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("odd_proj"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("N = 100"), std::string::npos) << e.what();
  }
}

TEST_F(LinearGpu, ForwardIsCapturableInACudaGraphOnceItIsPrepared) {
  test::Rng rng(77);
  SCOPED_TRACE(rng.describe());
  for (auto const& [pattern, backend] :
       {std::pair{std::optional<SparsityPattern>(), GemmBackend::kLibrary},
        {std::optional(SparsityPattern::parse("6:8")), GemmBackend::kLibrary},
        {std::optional<SparsityPattern>(), GemmBackend::kAuto},
        {std::optional(SparsityPattern::parse("6:8")), GemmBackend::kAuto}}) {
    SCOPED_TRACE(fmt::format("{} {}", backend_name(backend), pattern ? pattern->to_string() : "dense"));
    std::int64_t const m = 96, n = 512, k = 3584;
    HostLayer const host = make_layer(rng, DType::kI8, n, k, pattern, true);
    OwnedMatrix const x = make_input(rng, DType::kBF16, m, k);
    OwnedMatrix expected(DType::kBF16, m, n);
    linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, expected.view());
    cudaStream_t stream = nullptr;
    SLIDESPARSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    Linear layer(config_of(DType::kI8, DType::kBF16, pattern, backend), host.view(), stream);
    layer.prepare(m, stream);
    ASSERT_TRUE(layer.is_prepared(m));
    DeviceBuffer dx(x.bytes.size()), dy(expected.bytes.size());
    dx.upload(x.bytes.data());
    // Global capture mode: any host synchronization or implicit sync inside forward fails
    // the capture.
    cudaGraph_t graph = nullptr;
    SLIDESPARSE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    layer.forward(dx.get(), dy.get(), m, stream);
    SLIDESPARSE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    SLIDESPARSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) {
      dy.fill(0xFF);
      SLIDESPARSE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
      ASSERT_EQ(dy.download(), expected.bytes) << "replay " << replay;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST_F(LinearGpu, TuningIsPersistedAndReusedByAFreshProcessState) {
  test::TempDir dir;
  auto const file = dir.path() / "tuning.json";
  test::Rng rng(5);
  SCOPED_TRACE(rng.describe());
  std::int64_t const m = 64, n = 512, k = 1024;  // N >= 400: cuSPARSELt searches
  HostLayer const host = make_layer(rng, DType::kF8E4M3, n, k, SparsityPattern::parse("6:8"), false);
  OwnedMatrix const x = make_input(rng, DType::kBF16, m, k);
  std::vector<std::byte> first;
  std::size_t entries = 0;
  for (auto const& [pattern, backend] :
       {std::pair{std::optional(SparsityPattern::parse("6:8")), GemmBackend::kLibrary},
        {std::optional<SparsityPattern>(), GemmBackend::kLibrary},
        {std::optional(SparsityPattern::parse("6:8")), GemmBackend::kAuto},
        {std::optional<SparsityPattern>(), GemmBackend::kAuto}}) {
    SCOPED_TRACE(fmt::format("{} {}", backend_name(backend), pattern ? "sparse" : "dense"));
    bool const cutlass = expect_cutlass(backend, DType::kF8E4M3, DType::kBF16, n, 1024);
    if (backend == GemmBackend::kAuto && !cutlass) continue;  // the library entries again
    ++entries;
    {
      io::TuningCache cache(file);
      Linear layer(config_of(DType::kF8E4M3, DType::kBF16, pattern, backend), host.view(), nullptr, &cache);
      EXPECT_EQ(layer.uses_cutlass(), cutlass);
      layer.prepare(m, nullptr);
      EXPECT_FALSE(layer.tuned_from_cache(m));
      first = run_layer(layer, x, n);
      cache.save();
    }
    io::TuningCache reloaded(file);  // what a new process sees
    Linear layer(config_of(DType::kF8E4M3, DType::kBF16, pattern, backend), host.view(), nullptr, &reloaded);
    layer.prepare(m, nullptr);
    EXPECT_TRUE(layer.tuned_from_cache(m));
    // Same configuration: same accumulation order, same bits.
    EXPECT_EQ(run_layer(layer, x, n), first);
  }
  EXPECT_EQ(io::TuningCache(file).size(), entries);
}

TEST_F(LinearGpu, LayersSharingOneScratchStayCorrect) {
  // Interleaved calls of layers with different dtypes, K' and N on one shared scratch (as the
  // layers of a model share it): each output still equals its reference.
  test::Rng rng(9);
  SCOPED_TRACE(rng.describe());
  auto scratch = std::make_shared<cuda::LinearScratch>();
  HostLayer const a = make_layer(rng, DType::kI8, 100, 3584, SparsityPattern::parse("6:8"), true);
  HostLayer const b = make_layer(rng, DType::kI8, 4608, 1001, std::nullopt, false);
  HostLayer const c = make_layer(rng, DType::kI8, 64, 18944, SparsityPattern::parse("14:16"), true);
  Linear la({DType::kI8, DType::kBF16, SparsityPattern::parse("6:8")}, a.view(), nullptr, nullptr, "a", scratch);
  Linear lb({DType::kI8, DType::kBF16, std::nullopt}, b.view(), nullptr, nullptr, "b", scratch);
  Linear lc({DType::kI8, DType::kBF16, SparsityPattern::parse("14:16")}, c.view(), nullptr, nullptr, "c", scratch);
  // A CUTLASS layer (where it can run) among them: it uses x' and the scales, not the accumulator.
  HostLayer const d = make_layer(rng, DType::kI8, 264, 3584, SparsityPattern::parse("6:8"), true);
  Linear ld(config_of(DType::kI8, DType::kBF16, SparsityPattern::parse("6:8"), GemmBackend::kAuto), d.view(), nullptr,
            nullptr, "d", scratch);
  for (std::int64_t m : {7, 300, 1}) {
    for (auto [layer, host] : {std::pair{&la, &a}, {&lb, &b}, {&lc, &c}, {&ld, &d}}) {
      SCOPED_TRACE(fmt::format("{} M={}", layer->name(), m));
      OwnedMatrix const x = make_input(rng, DType::kBF16, m, host->weight.cols);
      OwnedMatrix expected(DType::kBF16, m, host->weight.rows);
      linear_reference(x.cview(), host->weight.cview(), host->scale, host->bias, expected.view());
      ASSERT_EQ(run_layer(*layer, x, host->weight.rows), expected.bytes);
    }
  }
  EXPECT_EQ(la.memory().scratch, scratch->bytes());
  EXPECT_EQ(lb.memory().scratch, scratch->bytes());
}

TEST_F(LinearGpu, ReportsItsDeviceMemory) {
  test::Rng rng(6);
  HostLayer const host = make_layer(rng, DType::kI8, 4608, 3584, SparsityPattern::parse("6:8"), true);
  Linear layer({DType::kI8, DType::kBF16, SparsityPattern::parse("6:8")}, host.view(), nullptr);
  auto const before = layer.memory();
  // Compressed 2:4 INT8 weight: half the values plus metadata, about 0.56-0.63 bytes per
  // lifted element (library dependent); K' = 3584 / 8 * 12 = 5376.
  EXPECT_EQ(layer.k_lifted(), 5376);
  double const lifted = 4608.0 * 5376.0;
  EXPECT_GT(static_cast<double>(before.weight), 0.5 * lifted);
  EXPECT_LT(static_cast<double>(before.weight), 0.75 * lifted + (2 << 20));
  EXPECT_EQ(before.vectors, 2u * 4608 * 4);
  EXPECT_EQ(before.scratch, 0u);
  layer.prepare(100, nullptr);
  auto const after = layer.memory();
  // bucket(100) = 128 rows: x' 128 x 5376 INT8, 128 scales, acc 128 x 4608 INT32.
  EXPECT_EQ(after.scratch, 128u * 5376 + 128 * 4 + 128u * 4608 * 4);
  EXPECT_EQ(after.total(), after.weight + after.vectors + after.gemm + after.scratch);

  if (!expect_cutlass(GemmBackend::kAuto, DType::kI8, DType::kBF16, 4608, 5376)) return;
  Linear fused(config_of(DType::kI8, DType::kBF16, SparsityPattern::parse("6:8"), GemmBackend::kCutlass), host.view(),
               nullptr);
  EXPECT_TRUE(fused.uses_cutlass());
  EXPECT_GT(static_cast<double>(fused.memory().weight), 0.5 * lifted);
  EXPECT_LT(static_cast<double>(fused.memory().weight), 0.75 * lifted);
  fused.prepare(100, nullptr);
  // No accumulator scratch: the GEMM writes y.
  EXPECT_EQ(fused.memory().scratch, 128u * 5376 + 128 * 4);
  EXPECT_FALSE(fused.gemm_description(100).empty());
}

TEST_F(LinearGpu, RejectsBadWeightsNamingWhatIsWrong) {
  test::Rng rng(8);
  HostLayer host = make_layer(rng, DType::kI8, 64, 64, std::nullopt, false);  // dense: breaks 6:8
  try {
    Linear layer({DType::kI8, DType::kBF16, SparsityPattern::parse("6:8")}, host.view(), nullptr);
    FAIL() << "an unpruned weight was accepted";
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("row"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("block"), std::string::npos) << e.what();
  }
  std::vector<float> const short_scale(10, 1.0f);
  EXPECT_THROW(Linear({DType::kI8, DType::kBF16, std::nullopt}, {host.weight.cview(), short_scale, {}}, nullptr), Error);
  EXPECT_THROW(Linear({DType::kF8E4M3, DType::kBF16, std::nullopt}, host.view(), nullptr), Error);  // I8 weight
  EXPECT_THROW(Linear({DType::kBF16, DType::kF16, std::nullopt}, host.view(), nullptr), Error);
  // CUTLASS demanded for a layer it cannot run: the error says why (16-bit compute here).
  HostLayer const bf16 = make_layer(rng, DType::kBF16, 64, 64, std::nullopt, false);
  try {
    Linear layer(config_of(DType::kBF16, DType::kBF16, std::nullopt, GemmBackend::kCutlass), bf16.view(), nullptr);
    FAIL() << "a BF16 layer was accepted by the CUTLASS backend";
  } catch (Error const& e) {
    EXPECT_NE(std::string(e.what()).find("CUTLASS"), std::string::npos) << e.what();
  }
  Linear ok({DType::kI8, DType::kBF16, std::nullopt}, host.view(), nullptr);
  EXPECT_THROW(ok.forward(nullptr, nullptr, 1, nullptr), Error);
  DeviceBuffer d(64 * 64 * 2);
  EXPECT_THROW(ok.forward(d.get(), d.get(), 0, nullptr), Error);
}

TEST_F(LinearGpu, Fp8LayersWithoutFastAccumulationUseOnlyPromotingCutlassKernels) {
  test::Rng rng(4711);
  SCOPED_TRACE(rng.describe());
  std::int64_t const m = 64, n = 512, k = 3584;
  if (!expect_cutlass(GemmBackend::kAuto, DType::kF8E4M3, DType::kBF16, n, k)) GTEST_SKIP() << "no CUTLASS here";
  for (auto const& pattern : {std::optional(SparsityPattern::parse("6:8")), std::optional<SparsityPattern>()}) {
    SCOPED_TRACE(pattern ? "sparse" : "dense");
    HostLayer const host = make_layer(rng, DType::kF8E4M3, n, k, pattern, true);
    OwnedMatrix const x = make_input(rng, DType::kBF16, m, k);
    OwnedMatrix rounded(DType::kBF16, m, n);
    LinearReferenceResult const ref = linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, rounded.view());
    LinearConfig config = config_of(DType::kF8E4M3, DType::kBF16, pattern, GemmBackend::kCutlass);
    config.fast_accumulation = false;
    Linear layer(config, host.view(), nullptr);
    auto const y = run_layer(layer, x, n);
    EXPECT_NE(layer.gemm_description(m).find("_exact"), std::string::npos) << layer.gemm_description(m);
    for (std::size_t i = 0; i < ref.exact.size(); ++i) {
      ASSERT_LE(std::fabs(output_value(y, DType::kBF16, i) - ref.exact[i]),
                tolerance(DType::kBF16, ref.exact[i], ref.abs_products[i]))
          << "element " << i;
    }
  }
}

// A dispatch over every candidate there is: CUTLASS, sm90 (opt-in), cuSPARSELt and the dense
// fallback; BF16 activations.
cuda::DispatchConfig every_candidate(DType compute, SparsityPattern pattern) {
  cuda::DispatchConfig config;
  config.layer = {compute, DType::kBF16, pattern};
  config.dense_fallback = true;
  config.sm90 = true;
  return config;
}

// An INT8 dispatching layer's forward at M on fresh BF16 input, into a poisoned output: bit for
// bit the CPU reference (every candidate computes the same integers and the same epilogue).
void expect_dispatch_exact(cuda::DispatchLinear& layer, HostLayer const& host, test::Rng& rng, std::int64_t m) {
  std::int64_t const n = host.weight.rows, k = host.weight.cols;
  SCOPED_TRACE(fmt::format("M={} ({})", m, layer.description(m)));
  OwnedMatrix const x = make_input(rng, DType::kBF16, m, k);
  OwnedMatrix expected(DType::kBF16, m, n);
  linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, expected.view());
  DeviceBuffer dx(x.bytes.size()), dy(expected.bytes.size());
  dx.upload(x.bytes.data());
  dy.fill(0xFF);
  layer.forward(dx.get(), dy.get(), m, nullptr);
  SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  ASSERT_EQ(dy.download(), expected.bytes);
}

TEST_F(LinearGpu, DispatchingLayerIsExactWhicheverCandidateWinsAndRemembersItsChoice) {
  // INT8: every candidate (CUTLASS, sm90, cuSPARSELt, dense fallback) is bit-identical to the
  // reference, so the output must be too, whatever the timing picks.
  test::TempDir dir;
  auto const file = dir.path() / "tuning.json";
  test::Rng rng(606);
  SCOPED_TRACE(rng.describe());
  std::int64_t const n = 264, k = 3584;
  SparsityPattern const pattern = SparsityPattern::parse("6:8");
  HostLayer const host = make_layer(rng, DType::kI8, n, k, pattern, true);
  cuda::DispatchConfig config = every_candidate(DType::kI8, pattern);
  std::map<std::int64_t, std::string> chosen;
  {
    io::TuningCache cache(file);
    cuda::DispatchLinear layer(config, host.view(), nullptr, &cache, "d");
    auto const names = layer.candidates();
    bool const cutlass = expect_cutlass(GemmBackend::kAuto, DType::kI8, DType::kBF16, n, 5376);
    bool const sm90 = Linear::sm90_sparse_unsupported(config.layer, n, k).empty();
    // Where CUTLASS runs, the dense fallback is two candidates on one dense copy.
    std::vector<std::string> expected_names =
        cutlass ? std::vector<std::string>{"cutlass", "cusparselt", "dense-cutlass", "dense-cublaslt"}
                : std::vector<std::string>{"cusparselt", "dense"};
    if (sm90) expected_names.insert(expected_names.begin() + (cutlass ? 1 : 0), "sm90");
    EXPECT_EQ(names, expected_names);
    std::size_t weights = 0;
    for (auto const& c : names) weights += layer.memory_of(c).weight;
    EXPECT_EQ(layer.memory().weight, weights);
    if (cutlass) {
      EXPECT_EQ(layer.memory_of("dense-cutlass").weight, static_cast<std::size_t>(n * 3584));  // K' = K
      EXPECT_EQ(layer.memory_of("dense-cublaslt").weight, 0u);
    }
    for (std::int64_t const m : {1, 300}) {
      expect_dispatch_exact(layer, host, rng, m);
      if (HasFatalFailure()) return;
      chosen[m] = layer.choice(m);
      EXPECT_NE(std::find(names.begin(), names.end(), chosen[m]), names.end()) << chosen[m];
      EXPECT_FALSE(layer.chosen_from_cache(m));
      std::printf("  dispatch N=%lld K=%lld M=%lld chose %s\n", static_cast<long long>(n), static_cast<long long>(k),
                  static_cast<long long>(m), chosen[m].c_str());
    }
    cache.save();
  }
  io::TuningCache reloaded(file);
  cuda::DispatchLinear again(config, host.view(), nullptr, &reloaded, "d");
  for (auto const& [m, name] : chosen) {
    again.prepare(m, nullptr);
    EXPECT_TRUE(again.chosen_from_cache(m));
    EXPECT_EQ(again.choice(m), name);
  }
  // No sparse candidate: an error, not a silently dense layer.
  config.cutlass = false;
  config.cusparselt = false;
  config.sm90 = false;
  EXPECT_THROW(cuda::DispatchLinear(config, host.view(), nullptr), Error);
}

TEST_F(LinearGpu, EveryDispatchCandidateIsRightWhenForcedIncludingTheSharedDenseWeight) {
  // Each candidate forced in turn; the dense ones run on one device copy of the weight (cuBLASLt
  // reading the buffer CUTLASS owns). INT8 (with bias): bit for bit the reference. FP8 without
  // bias (so cuBLASLt can fuse the scales, and a third dense candidate runs them unfused): within
  // the tolerance of the float64 result that every FP8 layer test uses (tolerance() above).
  test::Rng rng(607);
  SCOPED_TRACE(rng.describe());
  std::int64_t const n = 200, k = 1030;  // K not a multiple of 8 (K' pads it)
  SparsityPattern const pattern = SparsityPattern::parse("4:6");
  for (DType const compute : {DType::kI8, DType::kF8E4M3}) {
    bool const exact = compute == DType::kI8;
    HostLayer const host = make_layer(rng, compute, n, k, pattern, exact);
    cuda::DispatchConfig const config = every_candidate(compute, pattern);
    cuda::DispatchLinear layer(config, host.view(), nullptr, nullptr, "forced");
    bool const cutlass = Linear::cutlass_unsupported(config.layer, n, k).empty();
    std::vector<std::string> expected_names = cutlass ? std::vector<std::string>{"cutlass", "cusparselt", "dense-cutlass",
                                                                                 "dense-cublaslt"}
                                                       : std::vector<std::string>{"cusparselt", "dense"};
    if (Linear::sm90_sparse_unsupported(config.layer, n, k).empty()) {
      expected_names.insert(expected_names.begin() + (cutlass ? 1 : 0), "sm90");
    }
    if (!exact) expected_names.push_back(expected_names.back() + "-unfused");
    EXPECT_EQ(layer.candidates(), expected_names);
    EXPECT_THROW(layer.force(1, "no-such-candidate", nullptr), Error);
    std::string const tag = exact ? "i8_" : "f8_";
    for (std::string const& name : layer.candidates()) {
      for (std::int64_t const m : {1, 17, 300}) {
        SCOPED_TRACE(fmt::format("{} {} M={}", dtype_name(compute), name, m));
        OwnedMatrix const x = make_input(rng, DType::kBF16, m, k);
        OwnedMatrix rounded(DType::kBF16, m, n);
        LinearReferenceResult const ref =
            linear_reference(x.cview(), host.weight.cview(), host.scale, host.bias, rounded.view());
        DeviceBuffer dx(x.bytes.size()), dy(rounded.bytes.size());
        dx.upload(x.bytes.data());
        dy.fill(0xFF);
        layer.force(m, name, nullptr);
        EXPECT_EQ(layer.choice(m), name);
        // The layer that runs is the named one: its GEMM says which backend it is.
        std::string const description = layer.description(m);
        std::string const backend = name == "cutlass"         ? ": sp_" + tag
                                    : name == "sm90"          ? ": sm90-sparse schedule "
                                    : name == "dense-cutlass" ? ": de_" + tag
                                    : name == "cusparselt"    ? ": cusparselt-"
                                                              : ": cublaslt-";
        EXPECT_EQ(description.rfind(name + backend, 0), 0u) << description;
        bool const fused = !exact && (name == "dense-cublaslt" || (!cutlass && name == "dense"));
        EXPECT_EQ(description.find("(scales fused)") != std::string::npos, fused) << description;
        layer.forward(dx.get(), dy.get(), m, nullptr);
        SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
        if (exact) {
          ASSERT_EQ(dy.download(), rounded.bytes);
          continue;
        }
        auto const y = dy.download();
        for (std::size_t i = 0; i < ref.exact.size(); ++i) {
          ASSERT_LE(std::fabs(output_value(y, DType::kBF16, i) - ref.exact[i]),
                    tolerance(DType::kBF16, ref.exact[i], ref.abs_products[i]))
              << "element " << i;
        }
      }
    }
  }
}

TEST_F(LinearGpu, ReleasingUnchosenCandidatesFreesExactlyTheirCopiesAndKeepsTheChosenExact) {
  // The memory policy: choices forced (timing would make the released set a coin toss), then
  // release_unchosen() must free exactly the unchosen candidates' bytes, keep the dense copy's
  // owner while a sharer of it is chosen, leave the chosen buckets bit-exact (INT8, poisoned
  // output), choose new buckets among the kept ones without recording them in the cache, and
  // refuse a released candidate by name.
  test::TempDir dir;
  test::Rng rng(609);
  SCOPED_TRACE(rng.describe());
  std::int64_t const n = 264, k = 3584;
  SparsityPattern const pattern = SparsityPattern::parse("6:8");
  HostLayer const host = make_layer(rng, DType::kI8, n, k, pattern, true);
  cuda::DispatchConfig const config = every_candidate(DType::kI8, pattern);
  auto bytes = [](cuda::LinearMemory const& m) { return m.weight + m.vectors + m.gemm; };
  // Two scenarios: (a) a dense sharer and a sparse candidate chosen, (b) one sparse candidate
  // chosen everywhere, so the dense copy goes too.
  for (bool const keep_dense : {true, false}) {
    SCOPED_TRACE(keep_dense ? "dense sharer and sparse chosen" : "one sparse candidate chosen");
    io::TuningCache cache(dir.path() / (keep_dense ? "a.json" : "b.json"));
    cuda::DispatchLinear layer(config, host.view(), nullptr, &cache, "r");
    EXPECT_THROW(layer.release_unchosen(nullptr), Error);  // nothing chosen yet
    std::vector<std::string> const all = layer.candidates();
    bool const cutlass = std::find(all.begin(), all.end(), "cutlass") != all.end();
    std::string const sparse = cutlass ? "cutlass" : "cusparselt";
    // With CUTLASS the dense forms are dense-cutlass (the owner) and dense-cublaslt (a sharer).
    std::string const dense = cutlass ? "dense-cublaslt" : "dense";
    std::set<std::string> kept = {sparse};
    if (keep_dense) {
      kept.insert(dense);
      if (cutlass) kept.insert("dense-cutlass");
    }
    layer.force(1, keep_dense ? dense : sparse, nullptr);
    layer.force(300, sparse, nullptr);
    std::size_t expected_freed = 0;
    std::vector<std::string> expected_released, expected_kept;
    for (auto const& c : all) {
      if (kept.contains(c)) {
        expected_kept.push_back(c);
      } else {
        expected_released.push_back(c);
        expected_freed += bytes(layer.memory_of(c));
      }
    }
    ASSERT_FALSE(expected_released.empty());
    if (!keep_dense) {
      EXPECT_GE(expected_freed, static_cast<std::size_t>(n * k));  // the dense INT8 copy at least
    }
    std::size_t const before = bytes(layer.memory());
    std::size_t const freed = layer.release_unchosen(nullptr);
    EXPECT_EQ(freed, expected_freed);
    EXPECT_EQ(bytes(layer.memory()), before - freed);
    EXPECT_EQ(layer.candidates(), expected_kept);
    EXPECT_EQ(layer.released(), expected_released);
    std::printf("  release_unchosen: kept %s, freed %zu bytes\n", fmt::format("{}", fmt::join(expected_kept, ", ")).c_str(),
                freed);
    try {
      layer.force(1, expected_released.front(), nullptr);
      ADD_FAILURE() << "forcing released '" << expected_released.front() << "' did not throw";
    } catch (Error const& e) {
      EXPECT_NE(std::string(e.what()).find("released"), std::string::npos) << e.what();
    }
    expect_dispatch_exact(layer, host, rng, 1);
    expect_dispatch_exact(layer, host, rng, 300);
    EXPECT_EQ(layer.choice(1), keep_dense ? dense : sparse);
    // A bucket not chosen before: timed among the kept ones (where more than one is kept), and
    // not written to the cache (the candidates' own GEMM tuning is; no "dispatch:" entry).
    expect_dispatch_exact(layer, host, rng, 17);
    EXPECT_TRUE(kept.contains(layer.choice(17))) << layer.choice(17);
    EXPECT_FALSE(layer.chosen_from_cache(17));
    // save() writes nothing when no entry was put (one kept candidate whose GEMM tuning put none):
    // then there is no file and no "dispatch:" entry either. Before the release, force() puts none.
    cache.save();
    if (std::filesystem::exists(cache.file())) {
      std::ifstream file(cache.file());
      nlohmann::json const saved = nlohmann::json::parse(file);
      for (auto const& [key, value] : saved.at("entries").items()) {
        EXPECT_EQ(key.find("dispatch:"), std::string::npos) << key;
      }
    }
  }
  // (c) Timed choices released with a tolerance (0.9: any candidate within 1.9x of a bucket's
  // fastest may take it): which ones stay is up to the timing, but every bucket still runs a kept,
  // prepared candidate, bit-exact, and at most as much is held as the plain release would keep.
  {
    cuda::DispatchLinear plain(config, host.view(), nullptr, nullptr, "p");
    cuda::DispatchLinear traded(config, host.view(), nullptr, nullptr, "t");
    for (std::int64_t const m : {1, 8, 300}) {
      plain.prepare(m, nullptr);
      traded.prepare(m, nullptr);
    }
    plain.release_unchosen(nullptr);
    std::size_t const before = bytes(traded.memory());
    std::size_t const freed = traded.release_unchosen(nullptr, 0.9);
    EXPECT_EQ(bytes(traded.memory()), before - freed);
    std::printf("  release_unchosen(0.9): kept %s (plain release kept %s)\n",
                fmt::format("{}", fmt::join(traded.candidates(), ", ")).c_str(),
                fmt::format("{}", fmt::join(plain.candidates(), ", ")).c_str());
    // Not compared with `plain`'s bytes: the two layers timed separately and may have chosen
    // differently. The plan never holds more than the choices it starts from (DispatchRelease).
    std::vector<std::string> const kept = traded.candidates();
    for (std::int64_t const m : {1, 8, 300}) {
      EXPECT_NE(std::find(kept.begin(), kept.end(), traded.choice(m)), kept.end()) << traded.choice(m);
      EXPECT_TRUE(traded.is_prepared(m)) << m;
      expect_dispatch_exact(traded, host, rng, m);
    }
    EXPECT_THROW(traded.release_unchosen(nullptr, -1.0), Error);
  }
}

TEST_F(LinearGpu, WeightSharingLayerRefusesWhatItCannotShare) {
  test::Rng rng(608);
  SCOPED_TRACE(rng.describe());
  HostLayer const dense = make_layer(rng, DType::kI8, 64, 256, std::nullopt, false);
  Linear owner(config_of(DType::kI8, DType::kBF16, std::nullopt, GemmBackend::kLibrary), dense.view(), nullptr);
  Linear sharer(config_of(DType::kI8, DType::kBF16, std::nullopt, GemmBackend::kLibrary), owner);
  EXPECT_EQ(sharer.memory().weight, 0u);
  EXPECT_EQ(owner.memory().weight, static_cast<std::size_t>(64 * 256));
  EXPECT_THROW(Linear(config_of(DType::kF8E4M3, DType::kBF16, std::nullopt, GemmBackend::kLibrary), owner), Error);
  EXPECT_THROW(Linear(config_of(DType::kI8, DType::kBF16, SparsityPattern::parse("2:4"), GemmBackend::kLibrary), owner),
               Error);
  EXPECT_THROW(Linear(config_of(DType::kI8, DType::kBF16, std::nullopt, GemmBackend::kLibrary), sharer), Error);
}

// No GPU needed: the bucket arithmetic.
TEST(LinearBuckets, PadAtMostAnEighthAboveTwoHundredFiftySix) {
  EXPECT_EQ(Linear::m_bucket(1), 32);
  EXPECT_EQ(Linear::m_bucket(32), 32);
  EXPECT_EQ(Linear::m_bucket(33), 64);
  EXPECT_EQ(Linear::m_bucket(256), 256);
  EXPECT_EQ(Linear::m_bucket(257), 288);
  EXPECT_EQ(Linear::m_bucket(4096), 4096);
  EXPECT_EQ(Linear::m_bucket(4097), 4608);
  EXPECT_EQ(Linear::m_bucket(32768), 32768);
  for (std::int64_t m = 1; m <= 70000; m += (m < 1000 ? 1 : 97)) {
    std::int64_t const b = Linear::m_bucket(m);
    ASSERT_GE(b, m);
    ASSERT_EQ(b % 32, 0) << m;
    if (m > 256) {
      ASSERT_LE(b - m, m / 8) << m;
    }
    ASSERT_EQ(Linear::m_bucket(b), b) << m;  // a bucket is its own bucket
  }
  EXPECT_THROW(Linear::m_bucket(0), Error);
}

TEST(LinearBuckets, DispatchSplitsTheFirstBucketByPowersOfTwo) {
  std::int64_t const expected[] = {0, 1, 2, 4, 4, 8, 8, 8, 8, 16};
  for (std::int64_t m = 1; m <= 9; ++m) EXPECT_EQ(cuda::DispatchLinear::m_bucket(m), expected[m]) << m;
  EXPECT_EQ(cuda::DispatchLinear::m_bucket(17), 32);
  EXPECT_EQ(cuda::DispatchLinear::m_bucket(32), 32);
  for (std::int64_t m = 33; m <= 5000; m += 7) ASSERT_EQ(cuda::DispatchLinear::m_bucket(m), Linear::m_bucket(m)) << m;
  EXPECT_THROW(cuda::DispatchLinear::m_bucket(0), Error);
}

TEST(LinearBuckets, DispatchBucketsUpToMaxMCoverEveryMOnce) {
  using cuda::DispatchLinear;
  EXPECT_EQ(DispatchLinear::buckets_up_to(1), std::vector<std::int64_t>{1});
  EXPECT_EQ(DispatchLinear::buckets_up_to(33), (std::vector<std::int64_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_THROW(DispatchLinear::buckets_up_to(0), Error);
  for (std::int64_t const max_m : {7, 17, 256, 257, 1025, 4096, 32768}) {
    std::vector<std::int64_t> const b = DispatchLinear::buckets_up_to(max_m);
    SCOPED_TRACE(max_m);
    ASSERT_TRUE(std::is_sorted(b.begin(), b.end()));
    EXPECT_EQ(b.back(), DispatchLinear::m_bucket(max_m));
    // Every M up to max_m falls in a listed bucket, and every listed bucket is some M's.
    std::set<std::int64_t> const listed(b.begin(), b.end());
    ASSERT_EQ(listed.size(), b.size());
    std::set<std::int64_t> seen;
    for (std::int64_t m = 1; m <= max_m; ++m) {
      ASSERT_TRUE(listed.contains(DispatchLinear::m_bucket(m))) << m;
      seen.insert(DispatchLinear::m_bucket(m));
    }
    EXPECT_EQ(seen, listed);
  }
  // 1..32768: 6 powers of two, 7 steps of 32 up to 256, 8 per octave above.
  EXPECT_EQ(DispatchLinear::buckets_up_to(32768).size(), 6u + 7u + 7u * 8u);
}


// plan_release on hand-made choices: the memory-aware half of the release, host only.
using Plan = std::map<std::int64_t, std::string>;
using cuda::DispatchLinear;

TEST(DispatchRelease, PlanMovesOnlyWinsWithinTheToleranceOfTheFastest) {
  // Four candidates as in an FP8 layer with CUTLASS: two sparse copies, the dense copy and a
  // cuBLASLt form reading it.
  std::map<std::string, DispatchLinear::ReleaseHolding> const holdings = {
      {"cutlass", {600, ""}}, {"cusparselt", {600, ""}}, {"dense-cutlass", {800, ""}}, {"dense-cublaslt", {10, "dense-cutlass"}}};
  auto bucket = [](std::string chosen, double cutlass, double cusparselt, double dense_cutlass, double dense_cublaslt) {
    return DispatchLinear::ReleaseBucket{
        std::move(chosen),
        {{"cutlass", cutlass}, {"cusparselt", cusparselt}, {"dense-cutlass", dense_cutlass}, {"dense-cublaslt", dense_cublaslt}}};
  };
  std::map<std::int64_t, DispatchLinear::ReleaseBucket> const buckets = {
      {1, bucket("dense-cublaslt", 1.3, 1.4, 1.05, 1.0)},
      {2, bucket("dense-cutlass", 1.2, 1.3, 1.0, 1.1)},
      {64, bucket("cusparselt", 1.01, 1.0, 1.015, 1.2)},
      {4096, bucket("cutlass", 1.0, 1.004, 1.3, 1.4)}};
  Plan const chosen = {{1, "dense-cublaslt"}, {2, "dense-cutlass"}, {64, "cusparselt"}, {4096, "cutlass"}};
  EXPECT_EQ(DispatchLinear::plan_release(buckets, holdings, 0.0), chosen);
  // 2 %: cuSPARSELt's one win (M = 64) moves to CUTLASS (1 % slower, the fastest within 2 %); then
  // CUTLASS cannot go (at 4096 only cuSPARSELt, no longer held, is within 2 %). The dense forms
  // stay: each wins by 5-10 %.
  EXPECT_EQ(DispatchLinear::plan_release(buckets, holdings, 0.02),
            (Plan{{1, "dense-cublaslt"}, {2, "dense-cutlass"}, {64, "cutlass"}, {4096, "cutlass"}}));
  // 0.5 %: only CUTLASS's win (0.4 %) moves.
  EXPECT_EQ(DispatchLinear::plan_release(buckets, holdings, 0.005),
            (Plan{{1, "dense-cublaslt"}, {2, "dense-cutlass"}, {64, "cusparselt"}, {4096, "cusparselt"}}));
  // 6 %: the cuBLASLt form goes too (its 5 % win at M = 1 moves to dense CUTLASS).
  EXPECT_EQ(DispatchLinear::plan_release(buckets, holdings, 0.06),
            (Plan{{1, "dense-cutlass"}, {2, "dense-cutlass"}, {64, "cutlass"}, {4096, "cutlass"}}));
  for (double const bad : {-0.01, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    EXPECT_THROW(DispatchLinear::plan_release(buckets, holdings, bad), Error) << bad;
  }
}

TEST(DispatchRelease, PlanBoundsEachBucketByItsFastestAndNeverMovesAForcedChoice) {
  std::map<std::string, DispatchLinear::ReleaseHolding> const holdings = {{"a", {100, ""}}, {"b", {100, ""}}, {"c", {100, ""}}};
  // a -> b is 1.5 % and b -> c another 1.5 %, but c is 3 % off bucket 8's fastest: with 2 %, bucket 8
  // may go to b, never to c, so b stays.
  std::map<std::int64_t, DispatchLinear::ReleaseBucket> const chain = {
      {8, {"a", {{"a", 1.0}, {"b", 1.015}, {"c", 1.03}}}}, {16, {"b", {{"b", 1.0}, {"c", 1.01}}}}, {32, {"c", {{"c", 1.0}}}}};
  EXPECT_EQ(DispatchLinear::plan_release(chain, holdings, 0.02), (Plan{{8, "b"}, {16, "b"}, {32, "c"}}));
  // A forced bucket (no times) pins its candidate; the other candidate's bucket moves onto it.
  std::map<std::string, DispatchLinear::ReleaseHolding> const big_small = {{"x", {1000, ""}}, {"y", {1, ""}}};
  std::map<std::int64_t, DispatchLinear::ReleaseBucket> const forced = {{1, {"x", {}}}, {2, {"y", {{"y", 1.0}, {"x", 1.001}}}}};
  EXPECT_EQ(DispatchLinear::plan_release(forced, big_small, 0.01), (Plan{{1, "x"}, {2, "x"}}));
}

TEST(DispatchRelease, PlanCountsTheDenseCopyOfAChosenSharerAsItsBytes) {
  // Either cuBLASLt (10 bytes of its own, but it holds dense CUTLASS's 800-byte copy) or the sparse
  // copy (600) can go, not both: dropping cuBLASLt frees 810 with its owner, so it goes.
  std::map<std::string, DispatchLinear::ReleaseHolding> const holdings = {
      {"sparse", {600, ""}}, {"dense-cutlass", {800, ""}}, {"dense-cublaslt", {10, "dense-cutlass"}}};
  std::map<std::int64_t, DispatchLinear::ReleaseBucket> const buckets = {
      {1, {"dense-cublaslt", {{"dense-cublaslt", 1.0}, {"sparse", 1.01}, {"dense-cutlass", 1.5}}}},
      {2, {"sparse", {{"sparse", 1.0}, {"dense-cublaslt", 1.01}, {"dense-cutlass", 1.5}}}}};
  EXPECT_EQ(DispatchLinear::plan_release(buckets, holdings, 0.02), (Plan{{1, "sparse"}, {2, "sparse"}}));
}

TEST(DispatchRelease, RandomPlansStayWithinToleranceAndNeverHoldMore) {
  test::Rng rng(610);
  SCOPED_TRACE(rng.describe());
  std::vector<std::string> const names = {"cutlass", "cusparselt", "dense-cutlass", "dense-cublaslt"};
  for (int trial = 0; trial < 200; ++trial) {
    std::map<std::string, DispatchLinear::ReleaseHolding> holdings;
    for (auto const& c : names) holdings[c] = {static_cast<std::size_t>(rng.uniform_int(1, 1000)), ""};
    holdings["dense-cublaslt"].owner = "dense-cutlass";
    std::map<std::int64_t, DispatchLinear::ReleaseBucket> buckets;
    for (std::int64_t const b : DispatchLinear::buckets_up_to(rng.uniform_int(1, 4096))) {
      DispatchLinear::ReleaseBucket rb;
      double fastest = 1e9;
      for (auto const& c : names) {
        double const t = 1.0 + 0.001 * static_cast<double>(rng.uniform_int(0, 80));  // ties happen
        rb.ms[c] = t;
        if (t < fastest) {
          fastest = t;
          rb.chosen = c;
        }
      }
      if (rng.uniform_int(0, 20) == 0) rb.ms.clear();  // now and then a forced bucket
      buckets[b] = std::move(rb);
    }
    auto held_bytes = [&](Plan const& plan) {
      std::set<std::string> held;
      for (auto const& [b, c] : plan) {
        held.insert(c);
        if (!holdings.at(c).owner.empty()) held.insert(holdings.at(c).owner);
      }
      std::size_t total = 0;
      for (auto const& c : held) total += holdings.at(c).bytes;
      return std::pair{held, total};
    };
    Plan chosen;
    for (auto const& [b, rb] : buckets) chosen[b] = rb.chosen;
    auto const [held_before, bytes_before] = held_bytes(chosen);
    for (double const tolerance : {0.01, 0.05, 0.5}) {
      SCOPED_TRACE(fmt::format("trial {} tolerance {}", trial, tolerance));
      Plan const plan = DispatchLinear::plan_release(buckets, holdings, tolerance);
      ASSERT_EQ(plan.size(), buckets.size());
      for (auto const& [b, c] : plan) {
        DispatchLinear::ReleaseBucket const& rb = buckets.at(b);
        ASSERT_TRUE(held_before.contains(c)) << c;  // only moves onto what was held anyway
        if (rb.ms.empty()) {
          ASSERT_EQ(c, rb.chosen);
          continue;
        }
        double fastest = 1e9;
        for (auto const& [name, t] : rb.ms) fastest = std::min(fastest, t);
        ASSERT_LE(rb.ms.at(c), fastest * (1 + tolerance)) << "bucket " << b << " -> " << c;
      }
      EXPECT_LE(held_bytes(plan).second, bytes_before);
    }
  }
}

}  // namespace
}  // namespace slidesparse
