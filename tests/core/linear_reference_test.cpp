// The CPU reference of the whole linear layer on small cases computed here independently.
#include "slidesparse/core/linear_reference.hpp"

#include <cmath>
#include <vector>

#include "common/test_util.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

TEST(LinearReference, Int8WithExactlyRepresentableCodes) {
  // Rows with absmax 127: scale = 127 / 127 = 1, so the codes are the inputs themselves and the
  // accumulator is the plain integer dot product.
  OwnedMatrix x(DType::kBF16, 2, 5), w(DType::kI8, 3, 5), y(DType::kBF16, 2, 3);
  int const xs[2][5] = {{127, -3, 5, 0, 1}, {-127, 64, -1, 2, 7}};
  int const ws[3][5] = {{1, 2, 3, 4, 5}, {-7, 0, 9, -1, 2}, {127, -127, 1, 1, -1}};
  for (int i = 0; i < 2; ++i) for (int c = 0; c < 5; ++c) test::set_float(x, i, c, static_cast<float>(xs[i][c]));
  for (int j = 0; j < 3; ++j) for (int c = 0; c < 5; ++c) w.set<std::int8_t>(j, c, static_cast<std::int8_t>(ws[j][c]));
  std::vector<float> const sw = {0.5f, 0.25f, 2.0f}, bias = {1.0f, -1.0f, 0.0f};
  LinearReferenceResult const r = linear_reference(x.cview(), w.cview(), sw, bias, y.view());
  ASSERT_EQ(r.scale_x, (std::vector<float>{1.0f, 1.0f}));
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      long acc = 0, abs_acc = 0;
      for (int c = 0; c < 5; ++c) acc += xs[i][c] * ws[j][c], abs_acc += std::abs(xs[i][c] * ws[j][c]);
      double const expected = static_cast<double>(acc) * sw[static_cast<std::size_t>(j)] + bias[static_cast<std::size_t>(j)];
      EXPECT_EQ(r.exact[static_cast<std::size_t>(i * 3 + j)], expected);
      EXPECT_EQ(r.abs_products[static_cast<std::size_t>(i * 3 + j)], static_cast<double>(abs_acc) * sw[static_cast<std::size_t>(j)]);
      EXPECT_EQ(test::get_float(y, i, j), bf16_to_float(float_to_bf16(static_cast<float>(expected))));
    }
  }
}

TEST(LinearReference, SixteenBitIsTheDoubleDotProductRoundedOnce) {
  test::Rng rng(12);
  SCOPED_TRACE(rng.describe());
  OwnedMatrix x(DType::kF16, 3, 9), w(DType::kF16, 4, 9), y(DType::kF16, 3, 4);
  for (int i = 0; i < 3; ++i) for (int c = 0; c < 9; ++c) test::set_float(x, i, c, rng.normal());
  for (int j = 0; j < 4; ++j) for (int c = 0; c < 9; ++c) test::set_float(w, j, c, rng.normal());
  LinearReferenceResult const r = linear_reference(x.cview(), w.cview(), {}, {}, y.view());
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) {
      double s = 0;
      for (int c = 0; c < 9; ++c) s += static_cast<double>(test::get_float(x, i, c)) * test::get_float(w, j, c);
      EXPECT_EQ(r.exact[static_cast<std::size_t>(i * 4 + j)], s);
      EXPECT_EQ(test::get_float(y, i, j), fp16_to_float(float_to_fp16(static_cast<float>(s))));
    }
  }
  EXPECT_THROW(linear_reference(x.cview(), w.cview(), std::vector<float>(4, 1.0f), {}, y.view()), Error);
}

}  // namespace
}  // namespace slidesparse
