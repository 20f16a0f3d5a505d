#include "slidesparse/core/lift.hpp"

#include <cmath>

#include "common/test_util.hpp"
#include "slidesparse/core/quantize.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

// Iota input makes every moved element identify its source: x[r][c] = r * K + c (as I32 codes).
TEST(Lift, MovesEveryElementToItsLiftedColumns) {
  for (int n = 2; n <= 16; ++n) {
    auto const p = SparsityPattern::from_half_block(n);
    for (std::int64_t k : {1, 7, 17, 2 * n + 1, 1025}) {
      for (std::int64_t m : {1, 7}) {
        OwnedMatrix x(DType::kI32, m, k);
        for (std::int64_t r = 0; r < m; ++r) {
          for (std::int64_t c = 0; c < k; ++c) x.set<std::int32_t>(r, c, static_cast<std::int32_t>(r * k + c + 1));
        }
        ActivationLayout const layout = ActivationLayout::slid(p, k);
        OwnedMatrix out(DType::kI32, m, layout.k_lifted(), std::byte{0x77});  // poisoned
        lift(x.cview(), layout, out.view());
        for (std::int64_t r = 0; r < m; ++r) {
          for (std::int64_t c = 0; c < layout.k_lifted(); ++c) {
            std::int64_t const g = c / (4 * (n - 1)), w = (c % (4 * (n - 1))) / 4, j = c % 4;
            std::int64_t const src = g * 2 * n + 2 * w + j;
            std::int32_t const expected =
                (c < layout.shape().k_raw && src < k) ? static_cast<std::int32_t>(r * k + src + 1) : 0;
            ASSERT_EQ(out.get<std::int32_t>(r, c), expected)
                << "N=" << n << " K=" << k << " row " << r << " lifted column " << c;
          }
        }
      }
    }
  }
}

TEST(Lift, DenseLayoutIsIdentityWithZeroTail) {
  for (std::int64_t k : {1, 31, 32, 33}) {
    ActivationLayout const layout = ActivationLayout::dense(k);
    EXPECT_EQ(layout.k_lifted(), (k + 31) / 32 * 32);
    EXPECT_FALSE(layout.pattern().has_value());
    OwnedMatrix x(DType::kBF16, 2, k);
    for (std::int64_t c = 0; c < k; ++c) {
      x.set<std::uint16_t>(0, c, static_cast<std::uint16_t>(c + 1));
      x.set<std::uint16_t>(1, c, static_cast<std::uint16_t>(1000 + c));
    }
    OwnedMatrix out(DType::kBF16, 2, layout.k_lifted(), std::byte{0xFF});
    lift(x.cview(), layout, out.view());
    for (std::int64_t c = 0; c < layout.k_lifted(); ++c) {
      EXPECT_EQ(out.get<std::uint16_t>(0, c), c < k ? c + 1 : 0);
      EXPECT_EQ(out.get<std::uint16_t>(1, c), c < k ? 1000 + c : 0);
    }
  }
}

// Reference of one quantized element, computed from first principles (double where exact).
std::uint8_t reference_code(float x, float scale, DType qtype) {
  float const inv = 1.0f / scale;
  float const v = x * inv;
  if (qtype == DType::kI8) {
    double r = std::nearbyint(static_cast<double>(v));
    r = std::clamp(r, -127.0, 127.0);
    return static_cast<std::uint8_t>(static_cast<std::int8_t>(r));
  }
  return float_to_e4m3_satfinite(v).bits;
}

TEST(QuantizeLift, MatchesTheNumericContractBitForBit) {
  test::Rng rng(2718);
  SCOPED_TRACE(rng.describe());
  for (DType in : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (DType q : {DType::kI8, DType::kF8E4M3}) {
      for (char const* pattern_text : {"2:4", "6:8", "14:16"}) {
        auto const p = SparsityPattern::parse(pattern_text);
        for (std::int64_t k : {1, 7, 17, 1025}) {
          std::int64_t const m = 17;
          OwnedMatrix x(in, m, k);
          for (std::int64_t r = 0; r < m; ++r) {
            // Row magnitudes spread over many octaves; row 0 all zeros; row 1 tiny.
            float const row_scale = r == 0 ? 0.0f : (r == 1 ? 1e-30f : std::ldexp(1.0f, rng.uniform_int(-12, 12)));
            for (std::int64_t c = 0; c < k; ++c) test::set_float(x, r, c, rng.normal() * row_scale);
          }
          ActivationLayout const layout = ActivationLayout::slid(p, k);
          OwnedMatrix out(q, m, layout.k_lifted(), std::byte{0x3C});  // poisoned
          std::vector<float> scales(static_cast<std::size_t>(m), -1.0f);
          quantize_lift(x.cview(), layout, out.view(), scales);
          for (std::int64_t r = 0; r < m; ++r) {
            float absmax = 0.0f;
            for (std::int64_t c = 0; c < k; ++c) absmax = std::max(absmax, std::fabs(test::get_float(x, r, c)));
            float const qmax = q == DType::kI8 ? 127.0f : 448.0f;
            float const expected_scale = std::max(absmax, kScaleFloor) / qmax;
            ASSERT_EQ(scales[static_cast<std::size_t>(r)], expected_scale) << "row " << r;
            for (std::int64_t c = 0; c < layout.k_lifted(); ++c) {
              std::int64_t const src = layout.gather()[static_cast<std::size_t>(c)];
              std::uint8_t const expected =
                  src < 0 ? 0 : reference_code(test::get_float(x, r, src), expected_scale, q);
              ASSERT_EQ(out.get<std::uint8_t>(r, c), expected) << "row " << r << " lifted " << c;
            }
          }
        }
      }
    }
  }
}

// The trap of the reference implementation: a clamped stored scale with an unclamped inverse
// dequantizes tiny rows wrongly. With one source of truth, q * scale reproduces x to within the
// quantization step for every magnitude.
TEST(QuantizeLift, DequantizesCorrectlyAtEveryMagnitude) {
  auto const p = SparsityPattern::parse("6:8");
  for (int e = -40; e <= 30; e += 2) {
    float const magnitude = std::ldexp(1.0f, e);
    std::int64_t const k = 24;
    OwnedMatrix x(DType::kF32, 1, k);
    for (std::int64_t c = 0; c < k; ++c) x.set<float>(0, c, magnitude * static_cast<float>(c - 11) / 12.0f);
    ActivationLayout const layout = ActivationLayout::slid(p, k);
    OwnedMatrix out(DType::kI8, 1, layout.k_lifted());
    std::vector<float> scale(1);
    quantize_lift(x.cview(), layout, out.view(), scale);
    for (std::int64_t c = 0; c < layout.k_lifted(); ++c) {
      std::int64_t const src = layout.gather()[static_cast<std::size_t>(c)];
      if (src < 0) continue;
      float const deq = static_cast<float>(out.get<std::int8_t>(0, c)) * scale[0];
      float const x_value = x.get<float>(0, src);
      // Rounding to the nearest integer step: error <= scale / 2, with 1e-4 relative slack for
      // the float32 rounding of x * inv_scale and q * scale. Below the floor the step is fixed
      // at kScaleFloor / 127, and the same bound holds.
      float const bound = scale[0] * 0.5f * 1.0001f;
      ASSERT_LE(std::fabs(deq - x_value), bound) << "magnitude 2^" << e << " column " << src;
    }
  }
}

TEST(QuantizeLift, RoundsHalfToEvenAndSaturates) {
  // absmax 127 -> scale 1 exactly, inverse 1: codes are rint(x) with ties to even.
  OwnedMatrix x(DType::kF32, 1, 8);
  float const values[] = {127.0f, 2.5f, 3.5f, -2.5f, 0.5f, -0.5f, 1.5f, -127.0f};
  for (int c = 0; c < 8; ++c) x.set<float>(0, c, values[c]);
  ActivationLayout const layout = ActivationLayout::dense(8);
  OwnedMatrix out(DType::kI8, 1, layout.k_lifted());
  std::vector<float> scale(1);
  quantize_lift(x.cview(), layout, out.view(), scale);
  EXPECT_EQ(scale[0], 1.0f);
  std::int8_t const expected[] = {127, 2, 4, -2, 0, 0, 2, -127};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(out.get<std::int8_t>(0, c), expected[c]) << c;
}

}  // namespace
}  // namespace slidesparse
