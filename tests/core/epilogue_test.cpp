#include "slidesparse/core/epilogue.hpp"

#include <cmath>
#include <vector>

#include "common/test_util.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

TEST(Epilogue, AppliesTokenScaleChannelScaleAndBias) {
  // Powers of two and small integers: every step is exact, so the expected values are exact.
  OwnedMatrix acc(DType::kI32, 2, 3);
  std::int32_t const values[2][3] = {{1, -2, 300}, {7, 0, -5}};
  for (int m = 0; m < 2; ++m) {
    for (int n = 0; n < 3; ++n) acc.set<std::int32_t>(m, n, values[m][n]);
  }
  std::vector<float> const sx = {0.5f, 4.0f}, sw = {2.0f, 0.25f, 1.0f}, bias = {1.0f, -1.0f, 2.0f};
  for (DType out : {DType::kBF16, DType::kF16}) {
    OwnedMatrix y(out, 2, 3, std::byte{0xAA});
    dequantize_output(acc.cview(), sx, sw, bias, y.view());
    for (int m = 0; m < 2; ++m) {
      for (int n = 0; n < 3; ++n) {
        float const expected = static_cast<float>(values[m][n]) * sx[m] * sw[n] + bias[n];
        EXPECT_EQ(test::get_float(y, m, n), expected) << m << "," << n;
      }
    }
    OwnedMatrix no_bias(out, 2, 3);
    dequantize_output(acc.cview(), sx, sw, {}, no_bias.view());
    EXPECT_EQ(test::get_float(no_bias, 1, 2), -5.0f * 4.0f);
  }
}

TEST(Epilogue, RoundsEachStepOnceAndTheOutputToNearestEven) {
  // acc = 2^24 + 1 is not a float: it rounds (to even) to 2^24 before scaling.
  OwnedMatrix acc(DType::kI32, 1, 2);
  acc.set<std::int32_t>(0, 0, (1 << 24) + 1);
  acc.set<std::int32_t>(0, 1, 257);  // 257 in BF16 (8 bits of mantissa) is a tie: -> 256
  std::vector<float> const sx = {1.0f}, sw = {1.0f, 1.0f};
  OwnedMatrix y(DType::kBF16, 1, 2);
  dequantize_output(acc.cview(), sx, sw, {}, y.view());
  EXPECT_EQ(test::get_float(y, 0, 0), 16777216.0f);
  EXPECT_EQ(test::get_float(y, 0, 1), 256.0f);
  // F32 accumulators pass through the same arithmetic.
  OwnedMatrix facc(DType::kF32, 1, 2);
  facc.set<float>(0, 0, 1.5f);
  facc.set<float>(0, 1, -3.0f);
  OwnedMatrix fy(DType::kF16, 1, 2);
  std::vector<float> const sx2 = {2.0f};
  dequantize_output(facc.cview(), sx2, sw, {}, fy.view());
  EXPECT_EQ(test::get_float(fy, 0, 0), 3.0f);
  EXPECT_EQ(test::get_float(fy, 0, 1), -6.0f);
}

TEST(Epilogue, RejectsMismatchedShapes) {
  OwnedMatrix acc(DType::kI32, 2, 3);
  OwnedMatrix y(DType::kBF16, 2, 3);
  std::vector<float> const sx = {1.0f}, sw = {1.0f, 1.0f, 1.0f};
  EXPECT_THROW(dequantize_output(acc.cview(), sx, sw, {}, y.view()), Error);
  OwnedMatrix wrong(DType::kF32, 2, 3);
  std::vector<float> const sx2 = {1.0f, 1.0f};
  EXPECT_THROW(dequantize_output(acc.cview(), sx2, sw, {}, wrong.view()), Error);
}

}  // namespace
}  // namespace slidesparse

namespace slidesparse {
namespace {

TEST(Epilogue, SixteenBitOutputAddsBiasOnceRoundedAndTakesNoScales) {
  // 16-bit GEMM output 1.5 (exact in BF16) + bias 2^-9 = 1.501953125 in float, which is below
  // half a BF16 ulp above 1.5 (ulp in [1, 2) is 2^-7), so the output is 1.5: one rounding.
  test::OwnedMatrix acc(DType::kBF16, 1, 2), y(DType::kBF16, 1, 2);
  test::set_float(acc, 0, 0, 1.5f);
  test::set_float(acc, 0, 1, -3.0f);
  std::vector<float> const bias = {std::ldexp(1.0f, -9), 0.75f};
  dequantize_output(acc.cview(), {}, {}, bias, y.view());
  EXPECT_EQ(test::get_float(y, 0, 0), 1.5f);
  EXPECT_EQ(test::get_float(y, 0, 1), -2.25f);
  dequantize_output(acc.cview(), {}, {}, {}, y.view());
  EXPECT_EQ(test::get_float(y, 0, 1), -3.0f);
  std::vector<float> const one = {1.0f};
  EXPECT_THROW(dequantize_output(acc.cview(), one, {}, {}, y.view()), Error);
  test::OwnedMatrix acc32(DType::kI32, 1, 2);
  EXPECT_THROW(dequantize_output(acc32.cview(), {}, {}, {}, y.view()), Error);
}

}  // namespace
}  // namespace slidesparse
