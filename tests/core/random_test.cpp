// fill_random (core/random.hpp): the synthetic values benchmarks and presets run on.
#include "slidesparse/core/random.hpp"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"

namespace slidesparse {
namespace {

TEST(FillRandom, NonzeroFiniteInRangeAndDeterministic) {
  std::int64_t const n = 100003;  // odd: the parallel chunks do not line up with anything
  for (DType dtype : {DType::kF8E4M3, DType::kI8, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    std::vector<std::byte> a(static_cast<std::size_t>(n) * dtype_size(dtype)), b(a.size()), c(a.size());
    fill_random(dtype, a.data(), n, 42);
    fill_random(dtype, b.data(), n, 42);
    fill_random(dtype, c.data(), n, 43);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      std::byte const* p = a.data() + static_cast<std::size_t>(i) * dtype_size(dtype);
      float v = 0;
      switch (dtype) {
        case DType::kF8E4M3: v = e4m3_to_float(e4m3_t{load<std::uint8_t>(p)}); break;
        case DType::kI8: v = static_cast<float>(load<std::int8_t>(p)); break;
        case DType::kBF16: v = bf16_to_float(bf16_t{load<std::uint16_t>(p)}); break;
        default: v = fp16_to_float(fp16_t{load<std::uint16_t>(p)}); break;
      }
      ASSERT_TRUE(std::isfinite(v)) << i;
      ASSERT_NE(v, 0.0f) << i;
      float const lo = dtype == DType::kF8E4M3 ? 0.5f : dtype == DType::kI8 ? 1.0f : 0.0625f;
      float const hi = dtype == DType::kF8E4M3 ? 7.5f : dtype == DType::kI8 ? 127.0f : 2.0f;
      ASSERT_GE(std::abs(v), lo) << i;
      ASSERT_LE(std::abs(v), hi) << i;
      sum += v;
    }
    EXPECT_LT(std::abs(sum / static_cast<double>(n)), 0.1 * (dtype == DType::kI8 ? 64 : 1)) << "signs balanced";
  }
  std::vector<std::byte> f32(16);
  EXPECT_THROW(fill_random(DType::kF32, f32.data(), 4, 1), Error);
}

}  // namespace
}  // namespace slidesparse
