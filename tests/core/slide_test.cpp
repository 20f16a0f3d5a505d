#include "slidesparse/core/slide.hpp"

#include <bit>

#include "common/test_util.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/pattern_check.hpp"
#include "slidesparse/core/prune.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

// Checks that W' is a faithful slide of W: every group of 4 is 2:4, every lifted nonzero equals
// the source value it maps to (independent index formula), every source nonzero appears once.
void expect_faithful_slide(OwnedMatrix const& w, OwnedMatrix const& slid, SparsityPattern p) {
  int const n = p.half_block();
  std::size_t const elem = dtype_size(w.dtype);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    std::vector<int> hits(static_cast<std::size_t>(w.cols), 0);
    for (std::int64_t c = 0; c < slid.cols; c += 4) {
      int in_group = 0;
      for (std::int64_t j = 0; j < 4; ++j) {
        std::byte const* v = slid.bytes.data() + static_cast<std::size_t>(r * slid.cols + c + j) * elem;
        bool const zero = std::all_of(v, v + elem, [](std::byte b) { return b == std::byte{0}; });
        if (zero) continue;
        ++in_group;
        std::int64_t const lc = c + j;
        std::int64_t const g = lc / (4 * (n - 1)), win = (lc % (4 * (n - 1))) / 4;
        std::int64_t const src = g * 2 * n + 2 * win + j;
        ASSERT_LT(src, w.cols) << "row " << r << ": nonzero in padding at lifted column " << lc;
        std::byte const* s = w.bytes.data() + static_cast<std::size_t>(r * w.cols + src) * elem;
        ASSERT_TRUE(std::equal(s, s + elem, v)) << "row " << r << " lifted column " << lc;
        ++hits[static_cast<std::size_t>(src)];
      }
      ASSERT_LE(in_group, 2) << "row " << r << " lifted group at " << c << " is not 2:4";
    }
    for (std::int64_t c = 0; c < w.cols; ++c) {
      bool const nonzero = test::get_float(w, r, c) != 0.0f;
      ASSERT_EQ(hits[static_cast<std::size_t>(c)], nonzero ? 1 : 0) << "row " << r << " col " << c;
    }
  }
}

// Exhaustive: for N = 2..8, every nonzero mask of one block with <= 2N-2 nonzeros is placed
// completely. Each mask is one row of a matrix; values are distinct (column + 1).
TEST(Slide, EveryValidBlockMaskIsPlacedCompletely) {
  for (int n = 2; n <= 8; ++n) {
    auto const p = SparsityPattern::from_half_block(n);
    int const block = 2 * n;
    std::vector<std::uint32_t> masks;
    for (std::uint32_t mask = 0; mask < (1u << block); ++mask) {
      if (std::popcount(mask) <= block - 2) masks.push_back(mask);
    }
    OwnedMatrix w(DType::kF32, static_cast<std::int64_t>(masks.size()), block);
    for (std::size_t r = 0; r < masks.size(); ++r) {
      for (int c = 0; c < block; ++c) {
        if (masks[r] >> c & 1u) w.set<float>(static_cast<std::int64_t>(r), c, static_cast<float>(c + 1));
      }
    }
    LiftedShape const shape = lifted_shape(p, block);
    OwnedMatrix slid(DType::kF32, w.rows, shape.k_lifted, std::byte{0xAB});  // poisoned
    slide(w.cview(), p, shape, slid.view());
    SCOPED_TRACE("N = " + std::to_string(n) + ", masks = " + std::to_string(masks.size()));
    expect_faithful_slide(w, slid, p);
    OwnedMatrix back(DType::kF32, w.rows, block, std::byte{0xCD});
    unslide(slid.cview(), p, shape, back.view());
    EXPECT_EQ(back.bytes, w.bytes);
  }
}

TEST(Slide, EveryOverfullBlockMaskIsRejectedWithItsLocation) {
  for (int n = 2; n <= 8; ++n) {
    auto const p = SparsityPattern::from_half_block(n);
    int const block = 2 * n;
    for (std::uint32_t mask = 0; mask < (1u << block); ++mask) {
      if (std::popcount(mask) <= block - 2) continue;
      // Row 0 is valid, row 1 holds the overfull block in its second block.
      OwnedMatrix w(DType::kI8, 2, 2 * block);
      for (int c = 0; c < block; ++c) {
        if (mask >> c & 1u) w.set<std::int8_t>(1, block + c, static_cast<std::int8_t>(c + 1));
      }
      LiftedShape const shape = lifted_shape(p, 2 * block);
      OwnedMatrix slid(DType::kI8, 2, shape.k_lifted);
      try {
        slide(w.cview("model.layers.3.mlp.down_proj.weight"), p, shape, slid.view());
        FAIL() << "mask " << mask << " accepted for N = " << n;
      } catch (Error const& e) {
        ASSERT_EQ(e.kind(), ErrorKind::kInvalidInput);
        std::string const m = e.what();
        ASSERT_NE(m.find("model.layers.3.mlp.down_proj.weight"), std::string::npos) << m;
        ASSERT_NE(m.find("row 1, block 1"), std::string::npos) << m;
      }
    }
  }
}

std::int64_t dot_i8(OwnedMatrix const& a, std::int64_t ra, OwnedMatrix const& b, std::int64_t rb) {
  std::int64_t sum = 0;
  for (std::int64_t c = 0; c < a.cols; ++c) {
    sum += static_cast<std::int64_t>(a.get<std::int8_t>(ra, c)) * b.get<std::int8_t>(rb, c);
  }
  return sum;
}

// The central identity: X * W^T == lift(X) * W'^T exactly, in integer arithmetic.
TEST(Slide, ProductWithLiftedActivationsIsExact) {
  test::Rng rng(31337);
  SCOPED_TRACE(rng.describe());
  for (char const* pattern_text : {"2:4", "4:6", "6:8", "8:10", "14:16", "30:32"}) {
    auto const p = SparsityPattern::parse(pattern_text);
    for (std::int64_t k : {1, 7, 33, 3584, 18944, 1025}) {
      SCOPED_TRACE(std::string(pattern_text) + " K=" + std::to_string(k));
      std::int64_t const n_out = 5, m = 3;
      OwnedMatrix w(DType::kI8, n_out, k);
      OwnedMatrix x(DType::kI8, m, k);
      for (auto& b : w.bytes) b = static_cast<std::byte>(rng.uniform_int(-127, 127));
      for (auto& b : x.bytes) b = static_cast<std::byte>(rng.uniform_int(-127, 127));
      prune_in_place(w.view(), p);
      ActivationLayout const layout = ActivationLayout::slid(p, k);
      OwnedMatrix ws(DType::kI8, n_out, layout.k_lifted(), std::byte{0x5A});
      OwnedMatrix xs(DType::kI8, m, layout.k_lifted(), std::byte{0x5A});
      slide(w.cview(), p, layout.shape(), ws.view());
      lift(x.cview(), layout, xs.view());
      for (std::int64_t i = 0; i < m; ++i) {
        for (std::int64_t j = 0; j < n_out; ++j) {
          ASSERT_EQ(dot_i8(ws, j, xs, i), dot_i8(w, j, x, i)) << "token " << i << " channel " << j;
        }
      }
    }
  }
}

TEST(Slide, RoundTripIsIdentityForEveryDTypeAndCanonicalizesNegativeZero) {
  test::Rng rng(99);
  SCOPED_TRACE(rng.describe());
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3, DType::kI8}) {
    for (char const* pattern_text : {"2:4", "4:6", "6:8", "14:16"}) {
      auto const p = SparsityPattern::parse(pattern_text);
      std::int64_t const k = 77;
      OwnedMatrix w(dtype, 13, k);
      for (std::int64_t r = 0; r < w.rows; ++r) {
        for (std::int64_t c = 0; c < k; ++c) test::set_float(w, r, c, static_cast<float>(rng.uniform_int(-20, 20)));
      }
      prune_in_place(w.view(), p);
      OwnedMatrix const pruned = w;
      // Put a -0.0 in place of some zeros (I8 has none).
      if (dtype != DType::kI8) {
        for (std::int64_t c = 0; c < k; ++c) {
          if (test::get_float(w, 0, c) == 0.0f) test::set_float(w, 0, c, -0.0f);
        }
      }
      LiftedShape const shape = lifted_shape(p, k);
      OwnedMatrix slid(dtype, w.rows, shape.k_lifted, std::byte{0xEE});
      slide(w.cview(), p, shape, slid.view());
      OwnedMatrix back(dtype, w.rows, k, std::byte{0xEE});
      unslide(slid.cview(), p, shape, back.view());
      EXPECT_EQ(back.bytes, pruned.bytes) << dtype_name(dtype) << " " << pattern_text;
      // No negative zero survives in W'.
      std::size_t const elem = dtype_size(dtype);
      for (std::size_t i = 0; i < slid.bytes.size(); i += elem) {
        bool const zero_magnitude = test::get_float(slid, static_cast<std::int64_t>(i / elem) / slid.cols,
                                                    static_cast<std::int64_t>(i / elem) % slid.cols) == 0.0f;
        if (zero_magnitude) {
          ASSERT_TRUE(std::all_of(slid.bytes.begin() + static_cast<std::ptrdiff_t>(i),
                                  slid.bytes.begin() + static_cast<std::ptrdiff_t>(i + elem),
                                  [](std::byte b) { return b == std::byte{0}; }))
              << dtype_name(dtype) << " element " << i / elem;
        }
      }
    }
  }
}

TEST(Slide, UnslideRejectsInvalidSlidTensors) {
  auto const p = SparsityPattern::parse("6:8");
  LiftedShape const shape = lifted_shape(p, 7);  // K'_raw = 12: lifted columns >= 10 map past K
  auto expect_error = [&](OwnedMatrix const& slid, std::string const& needle) {
    OwnedMatrix out(DType::kF32, slid.rows, shape.k);
    try {
      unslide(slid.cview("t"), p, shape, out.view());
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (Error const& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  OwnedMatrix three(DType::kF32, 1, shape.k_lifted);
  for (int c = 0; c < 3; ++c) three.set<float>(0, c, 1.0f);
  expect_error(three, "not 2:4");
  OwnedMatrix padding(DType::kF32, 1, shape.k_lifted);
  padding.set<float>(0, 11, 1.0f);  // lifted 11 -> source 2*2+3 = 7 >= K
  expect_error(padding, "padding");
  OwnedMatrix tail(DType::kF32, 1, shape.k_lifted);
  tail.set<float>(0, 20, 1.0f);  // alignment tail
  expect_error(tail, "padding");
  OwnedMatrix twice(DType::kF32, 1, shape.k_lifted);
  twice.set<float>(0, 2, 1.0f);  // window 0 lane 2 -> source 2
  twice.set<float>(0, 4, 1.0f);  // window 1 lane 0 -> source 2 again
  expect_error(twice, "twice");
}

}  // namespace
}  // namespace slidesparse
