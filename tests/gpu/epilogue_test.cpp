// The GPU dequantization epilogue against core::dequantize_output: equal bits.
#include "slidesparse/cuda/epilogue.hpp"

#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"
#include "slidesparse/core/epilogue.hpp"

namespace slidesparse {
namespace {

using test::DeviceBuffer;
using test::OwnedMatrix;

class EpilogueGpu : public test::GpuTest {};

TEST_F(EpilogueGpu, MatchesTheCpuReferenceBitForBit) {
  test::Rng rng(99);
  SCOPED_TRACE(rng.describe());
  for (DType acc_dtype : {DType::kI32, DType::kF32}) {
    for (DType out : {DType::kBF16, DType::kF16}) {
      for (auto [m, n] : {std::pair<std::int64_t, std::int64_t>{1, 8}, {7, 17}, {17, 4104}, {1025, 64}, {3, 37888}}) {
        for (bool with_bias : {false, true}) {
          SCOPED_TRACE(fmt::format("{} -> {} M={} N={} bias={}", dtype_name(acc_dtype), dtype_name(out), m, n, with_bias));
          OwnedMatrix acc(acc_dtype, m, n);
          for (std::int64_t i = 0; i < m; ++i) {
            for (std::int64_t j = 0; j < n; ++j) {
              if (acc_dtype == DType::kI32) {
                // Beyond 2^24 the int -> float conversion itself rounds.
                acc.set<std::int32_t>(i, j, rng.uniform_int(-(1 << 26), 1 << 26));
              } else {
                acc.set<float>(i, j, rng.normal(1000.0f));
              }
            }
          }
          std::vector<float> sx(static_cast<std::size_t>(m)), sw(static_cast<std::size_t>(n)), bias;
          for (auto& v : sx) v = std::ldexp(rng.uniform(1.0f, 2.0f), rng.uniform_int(-20, -5));
          for (auto& v : sw) v = std::ldexp(rng.uniform(1.0f, 2.0f), rng.uniform_int(-12, -4));
          if (with_bias) {
            bias.resize(static_cast<std::size_t>(n));
            for (auto& v : bias) v = rng.normal();
          }
          OwnedMatrix expected(out, m, n);
          dequantize_output(acc.cview(), sx, sw, bias, expected.view());
          DeviceBuffer dacc(acc.bytes.size()), dsx(4 * sx.size()), dsw(4 * sw.size()),
              dbias(4 * bias.size()), dy(expected.bytes.size());
          dacc.upload(acc.bytes.data());
          dsx.upload(sx.data());
          dsw.upload(sw.data());
          if (with_bias) dbias.upload(bias.data());
          dy.fill(0xAB);
          cuda::dequantize_output(dacc.get(), acc_dtype, m, n, dsx.as<float>(), dsw.as<float>(),
                                  with_bias ? dbias.as<float>() : nullptr, dy.get(), out, nullptr);
          SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
          ASSERT_EQ(dy.download(), expected.bytes);
        }
      }
    }
  }
}

}  // namespace
}  // namespace slidesparse
