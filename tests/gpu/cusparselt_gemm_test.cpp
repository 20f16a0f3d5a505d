// The whole SlideSparse identity on the sparse tensor cores: prune W to (2N-2):2N, slide it to
// W', lift X to X', run the 2:4 GEMM through cuSPARSELt, and compare with X * W^T of the pruned
// dense weight computed on the CPU. INT8 with INT32 accumulation is exact, so is FP8/BF16 with
// small-integer inputs (every product and partial sum is an exactly representable integer).
#include "slidesparse/cuda/cusparselt_gemm.hpp"
#include "slidesparse/cuda/cublaslt_gemm.hpp"

#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/slide.hpp"

namespace slidesparse {
namespace {

using test::DeviceBuffer;
using test::OwnedMatrix;

struct Case {
  char const* pattern;
  DType in;
  DType out;
  std::int64_t n, k, m;
  int max_abs;  ///< inputs are integers in [-max_abs, max_abs]
};

class CusparseltGemmGpu : public test::GpuTest {};

TEST_F(CusparseltGemmGpu, SlidSparseProductEqualsTheDensePrunedProductExactly) {
  test::Rng rng(2468);
  SCOPED_TRACE(rng.describe());
  std::vector<Case> cases;
  for (char const* p : {"2:4", "4:6", "6:8", "8:10", "14:16"}) {
    cases.push_back({p, DType::kI8, DType::kI32, 64, 3584, 32, 127});
    cases.push_back({p, DType::kI8, DType::kI32, 96, 1001, 64, 127});  // K not a multiple of 2N
  }
  cases.push_back({"6:8", DType::kI8, DType::kI32, 4608, 3584, 32, 127});  // searched plan (N >= 400)
  cases.push_back({"6:8", DType::kI8, DType::kI32, 512, 18944, 32, 127});
  cases.push_back({"6:8", DType::kF8E4M3, DType::kF32, 512, 3584, 64, 4});
  cases.push_back({"4:6", DType::kF8E4M3, DType::kF32, 64, 1001, 32, 4});
  cases.push_back({"6:8", DType::kBF16, DType::kBF16, 64, 100, 32, 1});  // |sums| <= 100: exact in BF16
  for (Case const& c : cases) {
    SCOPED_TRACE(fmt::format("{} {} -> {} N={} K={} M={}", c.pattern, dtype_name(c.in), dtype_name(c.out), c.n, c.k, c.m));
    SparsityPattern const pattern = SparsityPattern::parse(c.pattern);
    OwnedMatrix w(c.in, c.n, c.k), x(c.in, c.m, c.k);
    for (std::int64_t r = 0; r < c.n; ++r) {
      for (std::int64_t j = 0; j < c.k; ++j) test::set_float(w, r, j, static_cast<float>(rng.uniform_int(-c.max_abs, c.max_abs)));
    }
    for (std::int64_t r = 0; r < c.m; ++r) {
      for (std::int64_t j = 0; j < c.k; ++j) test::set_float(x, r, j, static_cast<float>(rng.uniform_int(-c.max_abs, c.max_abs)));
    }
    prune_in_place(w.view(), pattern);
    ActivationLayout const layout = ActivationLayout::slid(pattern, c.k);
    OwnedMatrix ws(c.in, c.n, layout.k_lifted()), xs(c.in, c.m, layout.k_lifted());
    slide(w.cview(), pattern, layout.shape(), ws.view());
    lift(x.cview(), layout, xs.view());

    DeviceBuffer dw(ws.bytes.size()), dx(xs.bytes.size()), dy(static_cast<std::size_t>(c.m * c.n) * dtype_size(c.out));
    dw.upload(ws.bytes.data());
    dx.upload(xs.bytes.data());
    dy.fill(0xAB);
    cuda::CusparseltGemm gemm(dw.get(), c.in, c.out, c.n, layout.k_lifted(), nullptr);
    dw.fill(0);  // the GEMM must use its own compressed copy, not the caller's buffer
    gemm.run(dx.get(), dy.get(), c.m, 1.0f, nullptr);
    gemm.run(dx.get(), dy.get(), c.m, 1.0f, nullptr);  // second call: the cached plan
    SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_GT(gemm.device_bytes(), 0u);
    auto const got = dy.download();

    // The dense baseline on the same pruned weight (identity layout, K zero-padded to 32) must
    // produce the same bytes: same products, same output type.
    ActivationLayout const dense = ActivationLayout::dense(c.k);
    OwnedMatrix wd(c.in, c.n, dense.k_lifted()), xd(c.in, c.m, dense.k_lifted());
    lift(w.cview(), dense, wd.view());
    lift(x.cview(), dense, xd.view());
    DeviceBuffer dwd(wd.bytes.size()), dxd(xd.bytes.size()), dyd(dy.size());
    dwd.upload(wd.bytes.data());
    dxd.upload(xd.bytes.data());
    dyd.fill(0xCD);
    cuda::CublasltGemm dense_gemm(dwd.get(), c.in, c.out, c.n, dense.k_lifted());
    dense_gemm.run(dxd.get(), dyd.get(), c.m, 1.0f, nullptr);
    SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(dyd.download(), got) << "SlideSparse and dense outputs differ";

    int mismatches = 0;
    for (std::int64_t i = 0; i < c.m && mismatches < 5; ++i) {
      for (std::int64_t j = 0; j < c.n && mismatches < 5; ++j) {
        double expected = 0;  // the dense pruned product, on the original K columns
        for (std::int64_t t = 0; t < c.k; ++t) expected += static_cast<double>(test::get_float(x, i, t)) * test::get_float(w, j, t);
        std::size_t const at = static_cast<std::size_t>(i * c.n + j);
        double value = 0;
        switch (c.out) {
          case DType::kI32: value = load<std::int32_t>(got.data() + 4 * at); break;
          case DType::kF32: value = load<float>(got.data() + 4 * at); break;
          case DType::kBF16: value = bf16_to_float(bf16_t{load<std::uint16_t>(got.data() + 2 * at)}); break;
          default: FAIL();
        }
        if (value != expected) {
          ++mismatches;
          ADD_FAILURE() << "token " << i << ", channel " << j << ": got " << value << ", expected " << expected;
        }
      }
    }
  }
}

TEST(CublasltGemmArguments, RejectsUnsupportedShapesAndTypes) {
  EXPECT_THROW(cuda::CublasltGemm(nullptr, DType::kI8, DType::kBF16, 64, 96), Error);  // refused by cuBLASLt 13
  EXPECT_THROW(cuda::CublasltGemm(nullptr, DType::kBF16, DType::kBF16, 64, 100), Error);
}

TEST(CusparseltGemmArguments, RejectsUnsupportedShapesAndTypes) {
  // Validation happens before any CUDA work, so this runs without a GPU too.
  EXPECT_THROW(cuda::CusparseltGemm(nullptr, DType::kI8, DType::kF32, 64, 96, nullptr), Error);
  EXPECT_THROW(cuda::CusparseltGemm(nullptr, DType::kI8, DType::kI32, 60, 96, nullptr), Error);
  EXPECT_THROW(cuda::CusparseltGemm(nullptr, DType::kF8E4M3, DType::kF32, 64, 80, nullptr), Error);
  EXPECT_THROW(cuda::CusparseltGemm(nullptr, DType::kF32, DType::kF32, 64, 96, nullptr), Error);
}

}  // namespace
}  // namespace slidesparse
