// The GPU quant+lift kernel against the CPU reference (core::quantize_lift, core::lift): equal
// bytes, every pattern, both input types, awkward shapes, poisoned outputs.
#include "slidesparse/cuda/quant_lift.hpp"

#include <cmath>

#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"

namespace slidesparse {
namespace {

using test::DeviceBuffer;
using test::OwnedMatrix;

// Rows of very different magnitudes (row 0 zeros, row 1 tiny, others spread over 2^-14..2^10,
// so F16 inputs stay finite),
// some exact ties for rounding (values k + 0.5 after scaling are likely with integer inputs).
OwnedMatrix random_activations(DType dtype, std::int64_t m, std::int64_t k, test::Rng& rng) {
  OwnedMatrix x(dtype, m, k);
  for (std::int64_t r = 0; r < m; ++r) {
    float const scale = r == 0 ? 0.0f : (r == 1 ? 1e-6f : std::ldexp(1.0f, rng.uniform_int(-14, 10)));
    bool const integers = r % 5 == 4;
    for (std::int64_t c = 0; c < k; ++c) {
      float const v = integers ? static_cast<float>(rng.uniform_int(-300, 300)) : rng.normal() * scale;
      test::set_float(x, r, c, v);
    }
  }
  return x;
}

struct Case {
  char const* pattern;  // nullptr = dense (identity) layout
  std::int64_t m;
  std::int64_t k;
};

class QuantLiftGpu : public test::GpuTest {};

TEST_F(QuantLiftGpu, MatchesTheCpuReferenceBitForBit) {
  test::Rng rng(20261125);
  SCOPED_TRACE(rng.describe());
  std::vector<Case> cases;
  for (char const* p : {"2:4", "4:6", "6:8", "8:10", "10:12", "12:14", "14:16", "30:32"}) {
    for (std::int64_t k : {1, 7, 17, 64, 1025, 3584}) cases.push_back({p, 7, k});
  }
  for (std::int64_t k : {1, 7, 17, 64, 1025, 3584}) cases.push_back({nullptr, 7, k});
  for (char const* p : {"6:8", "4:6", static_cast<char const*>(nullptr)}) {
    cases.push_back({p, 1, 3584});
    cases.push_back({p, 17, 18944});
    cases.push_back({p, 1025, 3584});
    cases.push_back({p, 4097, 256});
  }
  for (DType in : {DType::kBF16, DType::kF16}) {
    for (DType q : {DType::kI8, DType::kF8E4M3, in}) {
      for (Case const& c : cases) {
        std::string const what = fmt::format("{} -> {} {} M={} K={}", dtype_name(in), dtype_name(q),
                                             c.pattern ? c.pattern : "dense", c.m, c.k);
        SCOPED_TRACE(what);
        ActivationLayout const layout = c.pattern
            ? ActivationLayout::slid(SparsityPattern::parse(c.pattern), c.k)
            : ActivationLayout::dense(c.k);
        OwnedMatrix const x = random_activations(in, c.m, c.k, rng);
        OwnedMatrix expected(q, c.m, layout.k_lifted());
        std::vector<float> expected_scales(static_cast<std::size_t>(c.m));
        bool const quantized = q != in;
        if (quantized) {
          quantize_lift(x.cview(), layout, expected.view(), expected_scales);
        } else {
          lift(x.cview(), layout, expected.view());
        }
        DeviceBuffer dx(x.bytes.size()), dout(expected.bytes.size()), dscales(4 * static_cast<std::size_t>(c.m));
        dx.upload(x.bytes.data());
        dout.fill(0xAB);  // poison: every byte must be written
        dscales.fill(0xAB);
        cuda::quant_lift(dx.get(), in, c.m, c.k, layout, dout.get(), q, dscales.as<float>(), nullptr);
        SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
        auto const got = dout.download();
        ASSERT_EQ(got.size(), expected.bytes.size());
        std::size_t const elem = dtype_size(q);
        for (std::size_t i = 0; i < got.size(); ++i) {
          if (got[i] != expected.bytes[i]) {
            std::int64_t const e = static_cast<std::int64_t>(i / elem);
            FAIL() << "first mismatch at row " << e / layout.k_lifted() << ", lifted column "
                   << e % layout.k_lifted() << ": got byte " << std::to_integer<int>(got[i])
                   << ", expected " << std::to_integer<int>(expected.bytes[i]);
          }
        }
        if (quantized) {
          auto const scales = dscales.download();
          ASSERT_EQ(std::memcmp(scales.data(), expected_scales.data(), scales.size()), 0);
        }
      }
    }
  }
}

TEST_F(QuantLiftGpu, HonoursARowStrideLargerThanK) {
  // x is a [M, 40] buffer of which the first K = 33 columns are the activations (a view of a
  // wider tensor); the misaligned rows take the scalar path.
  test::Rng rng(3);
  SCOPED_TRACE(rng.describe());
  std::int64_t const m = 9, k = 33, ldx = 40;
  OwnedMatrix wide = random_activations(DType::kBF16, m, ldx, rng);
  OwnedMatrix x(DType::kBF16, m, k);
  for (std::int64_t r = 0; r < m; ++r) {
    for (std::int64_t c = 0; c < k; ++c) x.set<std::uint16_t>(r, c, wide.get<std::uint16_t>(r, c));
  }
  ActivationLayout const layout = ActivationLayout::slid(SparsityPattern::parse("6:8"), k);
  OwnedMatrix expected(DType::kF8E4M3, m, layout.k_lifted());
  std::vector<float> scales(static_cast<std::size_t>(m));
  quantize_lift(x.cview(), layout, expected.view(), scales);
  DeviceBuffer dx(wide.bytes.size()), dout(expected.bytes.size()), dscales(4 * m);
  dx.upload(wide.bytes.data());
  dout.fill(0xAB);
  cuda::quant_lift(dx.get(), DType::kBF16, m, ldx, layout, dout.get(), DType::kF8E4M3, dscales.as<float>(), nullptr);
  SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(dout.download(), expected.bytes);
}

// No allocation, synchronization or host-side device work inside: the launch can be captured
// in a CUDA graph, and the replay computes the same bytes.
TEST_F(QuantLiftGpu, IsCapturableInACudaGraph) {
  test::Rng rng(11);
  SCOPED_TRACE(rng.describe());
  std::int64_t const m = 5, k = 18944;
  OwnedMatrix const x = random_activations(DType::kBF16, m, k, rng);
  ActivationLayout const layout = ActivationLayout::slid(SparsityPattern::parse("6:8"), k);
  OwnedMatrix expected(DType::kF8E4M3, m, layout.k_lifted());
  std::vector<float> scales(static_cast<std::size_t>(m));
  quantize_lift(x.cview(), layout, expected.view(), scales);
  DeviceBuffer dx(x.bytes.size()), dout(expected.bytes.size()), dscales(4 * m);
  dx.upload(x.bytes.data());
  dout.fill(0xAB);
  cudaStream_t stream = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  cuda::quant_lift(dx.get(), DType::kBF16, m, k, layout, dout.get(), DType::kF8E4M3, dscales.as<float>(), stream);
  SLIDESPARSE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  SLIDESPARSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  EXPECT_EQ(dout.download()[0], std::byte{0xAB}) << "capture must not execute the kernel";
  SLIDESPARSE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(dout.download(), expected.bytes);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(QuantLiftArguments, AreValidatedBeforeAnyLaunch) {
  ActivationLayout const odd = ActivationLayout::slid(SparsityPattern::parse("6:8"), 8, 4);  // K' = 12
  EXPECT_THROW(cuda::quant_lift(nullptr, DType::kBF16, 1, 8, odd, nullptr, DType::kI8, nullptr, nullptr), Error);
  ActivationLayout const ok = ActivationLayout::dense(64);
  EXPECT_THROW(cuda::quant_lift(nullptr, DType::kF32, 1, 64, ok, nullptr, DType::kI8, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::quant_lift(nullptr, DType::kBF16, 1, 64, ok, nullptr, DType::kF16, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::quant_lift(nullptr, DType::kBF16, 1, 63, ok, nullptr, DType::kI8, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::quant_lift(nullptr, DType::kBF16, 1, 64, ok, nullptr, DType::kI8, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace slidesparse
