#include "slidesparse/core/quantize.hpp"

#include <cmath>

#include "common/test_util.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

TEST(QuantizeWeight, PerChannelScalesAndCodesFollowTheContract) {
  test::Rng rng(4242);
  SCOPED_TRACE(rng.describe());
  for (DType in : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (DType q : {DType::kI8, DType::kF8E4M3}) {
      std::int64_t const n = 19, k = 37;
      OwnedMatrix w(in, n, k);
      for (std::int64_t r = 0; r < n; ++r) {
        float const row_scale = r == 3 ? 0.0f : std::ldexp(1.0f, rng.uniform_int(-10, 4));
        for (std::int64_t c = 0; c < k; ++c) test::set_float(w, r, c, rng.normal() * row_scale);
      }
      OwnedMatrix out(q, n, k, std::byte{0x11});
      std::vector<float> scales(static_cast<std::size_t>(n));
      quantize_weight_per_channel(w.cview(), out.view(), scales);
      float const qmax = quant_max(q);
      for (std::int64_t r = 0; r < n; ++r) {
        float absmax = 0.0f;
        for (std::int64_t c = 0; c < k; ++c) absmax = std::max(absmax, std::fabs(test::get_float(w, r, c)));
        ASSERT_EQ(scales[static_cast<std::size_t>(r)], std::max(absmax, kScaleFloor) / qmax);
        float const inv = 1.0f / scales[static_cast<std::size_t>(r)];
        for (std::int64_t c = 0; c < k; ++c) {
          float const x = test::get_float(w, r, c);
          std::uint8_t expected = q == DType::kI8
              ? static_cast<std::uint8_t>(static_cast<std::int8_t>(std::clamp(std::nearbyint(x * inv), -127.0f, 127.0f)))
              : float_to_e4m3_satfinite(x * inv).bits;
          if (expected == 0x80 && q == DType::kF8E4M3) expected = 0;  // -0 canonicalized
          ASSERT_EQ(out.get<std::uint8_t>(r, c), expected) << dtype_name(in) << "->" << dtype_name(q)
                                                           << " row " << r << " col " << c;
        }
      }
      // The largest value of each row maps to +-QMAX exactly.
      for (std::int64_t r = 0; r < n; ++r) {
        if (r == 3) continue;
        float best = 0.0f;
        for (std::int64_t c = 0; c < k; ++c) {
          float const v = q == DType::kI8 ? std::fabs(static_cast<float>(out.get<std::int8_t>(r, c)))
                                          : std::fabs(e4m3_to_float(e4m3_t{out.get<std::uint8_t>(r, c)}));
          best = std::max(best, v);
        }
        EXPECT_EQ(best, qmax) << "row " << r;
      }
    }
  }
}

TEST(QuantizeWeight, DequantizedWeightIsCloseAndZerosStayZero) {
  OwnedMatrix w(DType::kF32, 2, 6);
  float const values[] = {0.0f, -0.0f, 1.0f, -3.0f, 1e-9f, 2.0f};
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 6; ++c) w.set<float>(r, c, values[c] * static_cast<float>(r + 1));
  }
  for (DType q : {DType::kI8, DType::kF8E4M3}) {
    OwnedMatrix out(q, 2, 6);
    std::vector<float> scales(2);
    quantize_weight_per_channel(w.cview(), out.view(), scales);
    EXPECT_EQ(out.get<std::uint8_t>(0, 0), 0);
    EXPECT_EQ(out.get<std::uint8_t>(0, 1), 0);  // -0.0 written as the zero bit pattern
    EXPECT_EQ(out.get<std::uint8_t>(0, 4), 0);  // 1e-9 underflows to +0, not -0 or garbage
    OwnedMatrix back(DType::kF32, 2, 6);
    dequantize_weight_per_channel(out.cview(), scales, back.view());
    for (int r = 0; r < 2; ++r) {
      for (int c = 0; c < 6; ++c) {
        float const x = w.get<float>(r, c);
        // INT8: half a step; E4M3: 3 mantissa bits -> relative 2^-4 (plus the subnormal step).
        float const bound = q == DType::kI8 ? scales[r] * 0.5f
                                            : std::fabs(x) * 0.0625f + scales[r] * std::ldexp(1.0f, -10);
        EXPECT_LE(std::fabs(back.get<float>(r, c) - x), bound) << r << "," << c;
      }
    }
  }
}

TEST(QuantizeWeight, RejectsNonQuantizedTargetTypes) {
  OwnedMatrix w(DType::kF32, 1, 4);
  OwnedMatrix out(DType::kBF16, 1, 4);
  std::vector<float> scales(1);
  EXPECT_THROW(quantize_weight_per_channel(w.cview(), out.view(), scales), Error);
  OwnedMatrix i8(DType::kI8, 1, 4);
  OwnedMatrix out2(DType::kI8, 1, 4);
  EXPECT_THROW(quantize_weight_per_channel(i8.cview(), out2.view(), scales), Error);
}

}  // namespace
}  // namespace slidesparse
