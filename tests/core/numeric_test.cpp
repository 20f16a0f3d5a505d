// Bit-exactness of the scalar conversions: exhaustive over every 8/16-bit pattern for the
// decoders, and against a brute-force nearest-value search (in double) for the encoders.
#include "slidesparse/core/numeric.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/test_util.hpp"

namespace slidesparse {
namespace {

struct Representable {
  double value;
  std::uint32_t code;
};

// All finite non-negative values of a format, ascending.
template <typename Decode>
std::vector<Representable> finite_non_negative(int bits, Decode decode) {
  std::vector<Representable> out;
  std::uint32_t const sign_bit = 1u << (bits - 1);
  for (std::uint32_t code = 0; code < sign_bit; ++code) {
    double const v = decode(code);
    if (std::isfinite(v)) out.push_back({v, code});
  }
  std::sort(out.begin(), out.end(), [](auto a, auto b) { return a.value < b.value; });
  return out;
}

// Reference round-to-nearest-even onto a value table. Returns the code, or `overflow_code`
// when the value rounds past the largest finite value (IEEE: to infinity; satfinite: to max).
std::uint32_t round_reference(std::vector<Representable> const& table, double a,
                              std::uint32_t overflow_code, double overflow_threshold) {
  if (a >= overflow_threshold) return overflow_code;
  auto upper = std::lower_bound(table.begin(), table.end(), a,
                                [](Representable const& r, double v) { return r.value < v; });
  if (upper == table.end()) return table.back().code;
  if (upper->value == a || upper == table.begin()) return upper->code;
  auto lower = upper - 1;
  double const dl = a - lower->value;
  double const du = upper->value - a;
  if (dl < du) return lower->code;
  if (du < dl) return upper->code;
  return (lower->code & 1u) == 0 ? lower->code : upper->code;  // tie: even mantissa
}

// Probes: every midpoint between neighbours, one float ulp either side, plus random values.
std::vector<float> probes(std::vector<Representable> const& table, test::Rng& rng, float hi) {
  std::vector<float> out;
  for (std::size_t i = 0; i + 1 < table.size(); ++i) {
    float const mid = static_cast<float>((table[i].value + table[i + 1].value) / 2);
    out.push_back(mid);
    out.push_back(std::nextafter(mid, 0.0f));
    out.push_back(std::nextafter(mid, hi * 4));
    out.push_back(static_cast<float>(table[i].value));
  }
  for (int i = 0; i < 200000; ++i) {
    out.push_back(std::ldexp(rng.uniform(0.5f, 1.0f), rng.uniform_int(-30, 20)));
  }
  out.push_back(std::numeric_limits<float>::infinity());
  out.push_back(std::numeric_limits<float>::max());
  out.push_back(std::numeric_limits<float>::denorm_min());
  return out;
}

TEST(Numeric, Bf16DecodeEncodeRoundTripsEveryPattern) {
  for (std::uint32_t code = 0; code < 65536; ++code) {
    bf16_t const x{static_cast<std::uint16_t>(code)};
    float const f = bf16_to_float(x);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << code;
    } else {
      EXPECT_EQ(float_to_bf16(f).bits, code) << code;
    }
  }
}

TEST(Numeric, Bf16RoundsToNearestEven) {
  test::Rng rng(20261125);
  SCOPED_TRACE(rng.describe());
  auto const table = finite_non_negative(16, [](std::uint32_t c) {
    return static_cast<double>(bf16_to_float(bf16_t{static_cast<std::uint16_t>(c)}));
  });
  double const max = table.back().value;
  double const threshold = max + std::ldexp(1.0, 127 - 8);  // half an ulp above the max
  for (float f : probes(table, rng, static_cast<float>(max))) {
    std::uint32_t const expected = round_reference(table, f, 0x7F80u, threshold);
    ASSERT_EQ(float_to_bf16(f).bits, expected) << "f = " << f;
    ASSERT_EQ(float_to_bf16(-f).bits, expected | 0x8000u) << "f = " << -f;
  }
}

TEST(Numeric, Fp16DecodeEncodeRoundTripsEveryPattern) {
  for (std::uint32_t code = 0; code < 65536; ++code) {
    fp16_t const x{static_cast<std::uint16_t>(code)};
    float const f = fp16_to_float(x);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(f)))) << code;
    } else {
      EXPECT_EQ(float_to_fp16(f).bits, code) << code;
    }
  }
  EXPECT_EQ(fp16_to_float(fp16_t{0x3C00}), 1.0f);
  EXPECT_EQ(fp16_to_float(fp16_t{0x7BFF}), 65504.0f);
  EXPECT_EQ(fp16_to_float(fp16_t{0x0001}), std::ldexp(1.0f, -24));
}

TEST(Numeric, Fp16RoundsToNearestEvenAndOverflowsToInfinity) {
  test::Rng rng(7);
  SCOPED_TRACE(rng.describe());
  auto const table = finite_non_negative(16, [](std::uint32_t c) {
    return static_cast<double>(fp16_to_float(fp16_t{static_cast<std::uint16_t>(c)}));
  });
  // 65520 is the midpoint between 65504 and the first unrepresentable 65536: ties go to the
  // even side, which is infinity.
  for (float f : probes(table, rng, 65504.0f)) {
    std::uint32_t const expected = round_reference(table, f, 0x7C00u, 65520.0);
    ASSERT_EQ(float_to_fp16(f).bits, expected) << "f = " << f;
    ASSERT_EQ(float_to_fp16(-f).bits, expected | 0x8000u) << "f = " << -f;
  }
}

TEST(Numeric, E4M3DecodesEveryPatternToTheOcpValue) {
  EXPECT_EQ(e4m3_to_float(e4m3_t{0x7E}), 448.0f);
  EXPECT_EQ(e4m3_to_float(e4m3_t{0x08}), std::ldexp(1.0f, -6));   // smallest normal
  EXPECT_EQ(e4m3_to_float(e4m3_t{0x01}), std::ldexp(1.0f, -9));   // smallest subnormal
  EXPECT_EQ(e4m3_to_float(e4m3_t{0x38}), 1.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_float(e4m3_t{0x7F})));
  EXPECT_TRUE(std::isnan(e4m3_to_float(e4m3_t{0xFF})));
  for (std::uint32_t code = 0; code < 256; ++code) {
    float const f = e4m3_to_float(e4m3_t{static_cast<std::uint8_t>(code)});
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_e4m3_satfinite(f).bits, code) << code;
    // Independent decode: (-1)^s * 2^(e-7) * (1 + m/8), subnormal 2^-6 * m/8.
    int const e = static_cast<int>((code >> 3) & 0xF);
    int const m = static_cast<int>(code & 7);
    double const magnitude = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
    EXPECT_EQ(static_cast<double>(f), (code & 0x80) ? -magnitude : magnitude) << code;
  }
}

TEST(Numeric, E4M3RoundsToNearestEvenAndSaturates) {
  test::Rng rng(448);
  SCOPED_TRACE(rng.describe());
  auto const table = finite_non_negative(8, [](std::uint32_t c) {
    return static_cast<double>(e4m3_to_float(e4m3_t{static_cast<std::uint8_t>(c)}));
  });
  ASSERT_EQ(table.back().value, 448.0);
  for (float f : probes(table, rng, 448.0f)) {
    // satfinite: anything at or beyond 448 (infinity included) becomes 448.
    std::uint32_t const expected = round_reference(table, f, 0x7Eu, 448.0);
    ASSERT_EQ(float_to_e4m3_satfinite(f).bits, expected) << "f = " << f;
    ASSERT_EQ(float_to_e4m3_satfinite(-f).bits, expected | 0x80u) << "f = " << -f;
  }
  // NaN -> 0x7F regardless of sign (cvt.rn.satfinite.e4m3x2.f32 returns the canonical NaN).
  EXPECT_EQ(float_to_e4m3_satfinite(std::numeric_limits<float>::quiet_NaN()).bits, 0x7F);
  EXPECT_EQ(float_to_e4m3_satfinite(-std::numeric_limits<float>::quiet_NaN()).bits, 0x7F);
  EXPECT_EQ(float_to_e4m3_satfinite(-0.0f).bits, 0x80);
}

}  // namespace
}  // namespace slidesparse
