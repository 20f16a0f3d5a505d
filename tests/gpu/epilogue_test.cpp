// The GPU dequantization epilogue against core::dequantize_output: equal bits.
#include "slidesparse/cuda/epilogue.hpp"

#include <cstring>

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
  for (DType acc_dtype : {DType::kI32, DType::kF32, DType::kBF16, DType::kF16}) {
    bool const quantized = acc_dtype == DType::kI32 || acc_dtype == DType::kF32;
    for (DType out : {DType::kBF16, DType::kF16}) {
      for (auto [m, n] : {std::pair<std::int64_t, std::int64_t>{1, 8}, {7, 17}, {17, 4104}, {1025, 64}, {3, 37888}}) {
        for (bool with_bias : {false, true}) {
          // The accumulator rows may be longer than N (the GEMM's padded N): ld_acc = N + pad.
          std::int64_t const pad = with_bias ? 8 : (m % 2 == 0 ? 0 : 3);
          std::int64_t const ld = n + pad;
          SCOPED_TRACE(fmt::format("{} -> {} M={} N={} ld={} bias={}", dtype_name(acc_dtype), dtype_name(out), m, n, ld, with_bias));
          OwnedMatrix acc(acc_dtype, m, n), acc_padded(acc_dtype, m, ld);
          for (std::int64_t i = 0; i < m; ++i) {
            for (std::int64_t j = 0; j < ld; ++j) {
              switch (acc_dtype) {
                // Beyond 2^24 the int -> float conversion itself rounds.
                case DType::kI32: acc_padded.set<std::int32_t>(i, j, rng.uniform_int(-(1 << 26), 1 << 26)); break;
                case DType::kF32: acc_padded.set<float>(i, j, rng.normal(1000.0f)); break;
                default: test::set_float(acc_padded, i, j, rng.normal(100.0f)); break;
              }
            }
            std::memcpy(acc.view().row(i), acc_padded.view().row(i), static_cast<std::size_t>(n) * dtype_size(acc_dtype));
          }
          std::vector<float> sx(quantized ? static_cast<std::size_t>(m) : 0), sw(quantized ? static_cast<std::size_t>(n) : 0), bias;
          for (auto& v : sx) v = std::ldexp(rng.uniform(1.0f, 2.0f), rng.uniform_int(-20, -5));
          for (auto& v : sw) v = std::ldexp(rng.uniform(1.0f, 2.0f), rng.uniform_int(-12, -4));
          if (with_bias) {
            bias.resize(static_cast<std::size_t>(n));
            for (auto& v : bias) v = rng.normal();
          }
          OwnedMatrix expected(out, m, n);
          dequantize_output(acc.cview(), sx, sw, bias, expected.view());
          DeviceBuffer dacc(acc_padded.bytes.size()), dsx(4 * sx.size()), dsw(4 * sw.size()),
              dbias(4 * bias.size()), dy(expected.bytes.size());
          dacc.upload(acc_padded.bytes.data());
          if (quantized) dsx.upload(sx.data()), dsw.upload(sw.data());
          if (with_bias) dbias.upload(bias.data());
          dy.fill(0xAB);
          cuda::dequantize_output(dacc.get(), acc_dtype, ld, m, n, quantized ? dsx.as<float>() : nullptr,
                                  quantized ? dsw.as<float>() : nullptr,
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

namespace slidesparse {
namespace {

TEST_F(EpilogueGpu, SixteenBitInPlaceBiasAdd) {
  // The 16-bit layers add the bias in place on the GEMM output (y aliases acc).
  test::Rng rng(7);
  SCOPED_TRACE(rng.describe());
  std::int64_t const m = 33, n = 4104;
  OwnedMatrix acc(DType::kBF16, m, n);
  for (std::int64_t i = 0; i < m; ++i) for (std::int64_t j = 0; j < n; ++j) test::set_float(acc, i, j, rng.normal(10.0f));
  std::vector<float> bias(static_cast<std::size_t>(n));
  for (auto& v : bias) v = rng.normal();
  OwnedMatrix expected(DType::kBF16, m, n);
  dequantize_output(acc.cview(), {}, {}, bias, expected.view());
  DeviceBuffer d(acc.bytes.size()), dbias(4 * bias.size());
  d.upload(acc.bytes.data());
  dbias.upload(bias.data());
  cuda::dequantize_output(d.get(), DType::kBF16, m, n, nullptr, nullptr, dbias.as<float>(), d.get(), DType::kBF16, nullptr);
  SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  ASSERT_EQ(d.download(), expected.bytes);
}

TEST_F(EpilogueGpu, RejectsScalesForSixteenBitAndMissingScalesForW8A8) {
  DeviceBuffer d(64 * 4);
  EXPECT_THROW(cuda::dequantize_output(d.get(), DType::kBF16, 1, 8, d.as<float>(), d.as<float>(), nullptr, d.get(), DType::kBF16, nullptr), Error);
  EXPECT_THROW(cuda::dequantize_output(d.get(), DType::kI32, 1, 8, nullptr, d.as<float>(), nullptr, d.get(), DType::kBF16, nullptr), Error);
  EXPECT_THROW(cuda::dequantize_output(d.get(), DType::kI32, 4, 1, 8, d.as<float>(), d.as<float>(), nullptr, d.get(), DType::kBF16, nullptr), Error);
}

}  // namespace
}  // namespace slidesparse
