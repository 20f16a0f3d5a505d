// Every compiled CUTLASS configuration (src/cuda/cutlass/kernels.txt), against the CPU:
//   - the 2:4 compression, by an identity GEMM: y = W' . I^T must give W' back exactly (every
//     INT8 code and FP8 value is exact in BF16, and each output is one product with 1);
//   - the fused epilogue on awkward shapes: y must equal core's dequantize_output of the exact
//     accumulator bit for bit. INT8 accumulates exactly in INT32; the FP8 inputs are integers
//     in [-2, 2], so every partial sum is an integer below 2^13 and exact even in the tensor
//     core's reduced-precision (fast) accumulation.
#include <cstring>

#include "common/test_util.hpp"
#include "cutlass/cutlass_kernel.hpp"
#include "gpu/gpu_test_util.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/cuda/cutlass_gemm.hpp"

namespace slidesparse {
namespace {

using cuda::detail::cutlass_kernels;
using cuda::detail::CutlassKernel;
using cuda::detail::CutlassProblem;
using cuda::detail::CutlassRunOptions;
using test::DeviceBuffer;
using test::OwnedMatrix;

class CutlassGemmGpu : public test::GpuTest {
 protected:
  void SetUp() override {
    test::GpuTest::SetUp();
    if (IsSkipped()) return;
    std::string const why = cuda::CutlassGemm::unsupported(DType::kI8, DType::kBF16, 64, 128);
    if (!why.empty()) GTEST_SKIP() << "CUTLASS kernels cannot run here: " << why;
  }
};


// The compressed operand of a sparse kernel, or the dense weight as is.
struct DeviceWeight {
  DeviceBuffer dense, values, metadata;
  DeviceWeight(OwnedMatrix const& w, bool sparse)
      : dense(w.bytes.size()),
        values(sparse ? cuda::detail::cutlass_sparse_sizes_launch(w.dtype, w.rows, w.cols).values : 1),
        metadata(sparse ? cuda::detail::cutlass_sparse_sizes_launch(w.dtype, w.rows, w.cols).metadata : 1) {
    dense.upload(w.bytes.data());
    if (sparse) {
      std::string const why =
          cuda::detail::cutlass_compress_launch(w.dtype, dense.get(), w.rows, w.cols, values.get(), metadata.get(), nullptr);
      if (!why.empty()) throw std::runtime_error("compression failed: " + why);
      SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
      dense.fill(0);  // the kernel must read the compressed copy only
    }
  }
};

std::vector<CutlassKernel const*> kernels_of(bool sparse) {
  std::vector<CutlassKernel const*> out;
  for (auto const& k : cutlass_kernels()) {
    if (k->spec().sparse == sparse) out.push_back(k.get());
  }
  return out;
}

std::vector<std::byte> run_kernel(CutlassKernel const& kernel, CutlassProblem problem, CutlassRunOptions const& o,
                                  std::size_t y_bytes) {
  DeviceBuffer y(y_bytes);
  y.fill(0xFF);  // BF16 NaN: an output never written cannot pass
  problem.y = y.get();
  std::string const why = kernel.check(problem, o);
  if (!why.empty()) throw std::runtime_error(kernel.spec().name + " cannot run: " + why);
  DeviceBuffer workspace(std::max<std::size_t>(1, kernel.workspace_bytes(problem, o)));
  SLIDESPARSE_CUDA_CHECK(kernel.run(problem, o, workspace.get(), nullptr));
  SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  return y.download();
}

TEST_F(CutlassGemmGpu, BuildHasSparseAndDenseConfigurationsOfBothDtypes) {
  for (bool const sparse : {true, false}) {
    for (DType const d : {DType::kF8E4M3, DType::kI8}) {
      bool found = false;
      for (auto const* k : kernels_of(sparse)) found = found || k->spec().dtype == d;
      EXPECT_TRUE(found) << (sparse ? "sparse " : "dense ") << dtype_name(d);
    }
  }
}

TEST_F(CutlassGemmGpu, CompressionRoundTripsThroughAnIdentityGemm) {
  test::Rng rng(90210);
  SCOPED_TRACE(rng.describe());
  for (DType const dtype : {DType::kI8, DType::kF8E4M3}) {
    // N = 72 (not a tile multiple), K' = 160 / 1056 (not multiples of the 128-wide K tile).
    for (auto const& [n, k] : {std::pair<std::int64_t, std::int64_t>{72, 160}, {256, 1056}}) {
      SCOPED_TRACE(fmt::format("{} N={} K'={}", dtype_name(dtype), n, k));
      OwnedMatrix w(dtype, n, k);
      test::fill_sparse_weight(rng, w, dtype == DType::kI8 ? 127 : 448);
      // x' = I [K', K']: output row i (token i) = column i of W' = W'^T.
      OwnedMatrix x(dtype, k, k);
      for (std::int64_t i = 0; i < k; ++i) test::set_float(x, i, i, 1.0f);
      DeviceWeight dw(w, true);
      DeviceBuffer dx(x.bytes.size());
      dx.upload(x.bytes.data());
      std::vector<float> const ones(static_cast<std::size_t>(std::max(n, k)), 1.0f);
      DeviceBuffer dones(ones.size() * 4);
      dones.upload(ones.data());
      OwnedMatrix expected(DType::kBF16, k, n);
      for (std::int64_t i = 0; i < k; ++i) {
        for (std::int64_t c = 0; c < n; ++c) test::set_float(expected, i, c, test::get_float(w, c, i));
      }
      for (CutlassKernel const* kernel : kernels_of(true)) {
        if (kernel->spec().dtype != dtype) continue;
        SCOPED_TRACE(kernel->spec().name);
        CutlassProblem const p{n, k, k, dw.values.get(), dw.metadata.get(), dx.get(), dones.as<float>(),
                               dones.as<float>(), nullptr, nullptr};
        ASSERT_EQ(run_kernel(*kernel, p, {}, expected.bytes.size()), expected.bytes);
      }
    }
  }
}

TEST_F(CutlassGemmGpu, EveryConfigurationEqualsTheEpilogueReferenceBitForBit) {
  test::Rng rng(1234);
  SCOPED_TRACE(rng.describe());
  struct Shape {
    std::int64_t n, m, k;
  };
  // M (tokens) = 1, 7, 17, 1025; N not a multiple of the tile; K' not a multiple of 128.
  std::vector<Shape> const shapes = {{64, 1, 128}, {136, 7, 1056}, {256, 17, 4096}, {72, 1025, 512}};
  for (bool const sparse : {true, false}) {
    for (DType const dtype : {DType::kI8, DType::kF8E4M3}) {
      int const max_abs = dtype == DType::kI8 ? 127 : 2;
      for (Shape const& s : shapes) {
        for (bool const with_bias : {false, true}) {
          SCOPED_TRACE(fmt::format("{} {} N={} M={} K'={} bias={}", sparse ? "sparse" : "dense", dtype_name(dtype), s.n,
                                   s.m, s.k, with_bias));
          OwnedMatrix w(dtype, s.n, s.k), x(dtype, s.m, s.k);
          if (sparse) {
            test::fill_sparse_weight(rng, w, max_abs);
          } else {
            test::fill_small_integers(rng, w, max_abs);
          }
          test::fill_small_integers(rng, x, max_abs);
          auto const [sx, sw, bias, expected] = test::w8a8_expected(rng, w, x, with_bias);

          DeviceWeight dw(w, sparse);
          DeviceBuffer dx(x.bytes.size()), dsx(sx.size() * 4), dsw(sw.size() * 4), db(std::max<std::size_t>(4, bias.size() * 4));
          dx.upload(x.bytes.data());
          dsx.upload(sx.data());
          dsw.upload(sw.data());
          if (with_bias) db.upload(bias.data());
          CutlassProblem const p{s.n, s.m, s.k, sparse ? dw.values.get() : dw.dense.get(), dw.metadata.get(), dx.get(),
                                 dsx.as<float>(), dsw.as<float>(), with_bias ? db.as<float>() : nullptr, nullptr};
          for (CutlassKernel const* kernel : kernels_of(sparse)) {
            if (kernel->spec().dtype != dtype) continue;
            // Both rasterization orders and a swizzle; stream-K also with forced K splits.
            std::vector<CutlassRunOptions> options = {{CutlassRunOptions::Raster::kAlongM, 1, 1},
                                                      {CutlassRunOptions::Raster::kAlongN, 2, 1}};
            if (kernel->spec().schedule == cuda::detail::CutlassSchedule::kStreamK) {
              options.push_back({CutlassRunOptions::Raster::kHeuristic, 1, 3});
            }
            for (CutlassRunOptions const& o : options) {
              SCOPED_TRACE(fmt::format("{} raster={} swizzle={} splits={}", kernel->spec().name, static_cast<int>(o.raster),
                                       o.swizzle, o.splits));
              auto const got = run_kernel(*kernel, p, o, expected.bytes.size());
              for (std::size_t i = 0; i < got.size(); i += 2) {
                ASSERT_TRUE(std::memcmp(got.data() + i, expected.bytes.data() + i, 2) == 0)
                    << "output [" << (i / 2) / static_cast<std::size_t>(s.n) << ", " << (i / 2) % static_cast<std::size_t>(s.n)
                    << "]";
              }
            }
          }
        }
      }
    }
  }
}

TEST_F(CutlassGemmGpu, BackendRejectsWhatItCannotRunNamingTheReason) {
  EXPECT_NE(cuda::CutlassGemm::unsupported(DType::kI8, DType::kBF16, 100, 128).find("N = 100"), std::string::npos);
  EXPECT_NE(cuda::CutlassGemm::unsupported(DType::kI8, DType::kF16, 64, 128).find("F16"), std::string::npos);
  EXPECT_NE(cuda::CutlassGemm::unsupported(DType::kBF16, DType::kBF16, 64, 128).find("BF16"), std::string::npos);
  EXPECT_NE(cuda::CutlassGemm::unsupported(DType::kI8, DType::kBF16, 64, 40).find("K' = 40"), std::string::npos);
  DeviceBuffer w(64 * 128);
  EXPECT_THROW(cuda::CutlassGemm(w.get(), DType::kI8, true, 100, 128, nullptr), Error);
}

}  // namespace
}  // namespace slidesparse
