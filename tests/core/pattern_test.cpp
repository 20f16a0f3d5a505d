#include "slidesparse/core/pattern.hpp"

#include <map>

#include "common/test_util.hpp"

namespace slidesparse {
namespace {

TEST(Pattern, ParsesEveryMemberOfTheFamily) {
  for (int n = 2; n <= 16; ++n) {
    std::string const text = std::to_string(2 * n - 2) + ":" + std::to_string(2 * n);
    SparsityPattern const p = SparsityPattern::parse(text);
    EXPECT_EQ(p.half_block(), n);
    EXPECT_EQ(p.block(), 2 * n);
    EXPECT_EQ(p.max_nonzeros(), 2 * n - 2);
    EXPECT_EQ(p.windows(), n - 1);
    EXPECT_EQ(p.lifted_block(), 4 * (n - 1));
    EXPECT_EQ(p.to_string(), text);
  }
  EXPECT_DOUBLE_EQ(SparsityPattern::parse("6:8").ideal_speedup(), 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(SparsityPattern::parse("2:4").ideal_speedup(), 2.0);
}

std::string parse_error(std::string const& text) {
  try {
    SparsityPattern::parse(text);
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    return e.what();
  }
  ADD_FAILURE() << "'" << text << "' was accepted";
  return {};
}

TEST(Pattern, RejectsOutsideTheFamilyAndNamesIt) {
  for (char const* bad : {"3:8", "1:4", "4:4", "0:2", "2:2", "32:34", "30:33", "6:8:10", "6-8",
                          "", ":", "6:", ":8", "a:b", " 6:8", "6:8 ", "-6:8", "6:08x"}) {
    std::string const message = parse_error(bad);
    EXPECT_NE(message.find("(2N-2):2N"), std::string::npos) << bad << ": " << message;
  }
}

TEST(Pattern, ZerosBlockSpellingGetsTheLikelyMeaning) {
  std::string const message = parse_error("2:8");
  EXPECT_NE(message.find("6:8"), std::string::npos) << message;
  EXPECT_NE(message.find("zeros:block"), std::string::npos) << message;
  EXPECT_NE(parse_error("2:16").find("14:16"), std::string::npos);
  EXPECT_NE(parse_error("2:6").find("4:6"), std::string::npos);
}

TEST(Pattern, LiftedShapeMatchesTheFormula) {
  // K' for Qwen2.5-7B shapes at 6:8: 3584 = 448 blocks of 8 -> 448 * 12 = 5376.
  auto const p68 = SparsityPattern::parse("6:8");
  EXPECT_EQ(lifted_shape(p68, 3584).k_lifted, 5376);
  EXPECT_EQ(lifted_shape(p68, 18944).k_lifted, 28416);
  // K = 1: one partial block -> 12 lifted columns -> aligned to 32.
  LiftedShape const one = lifted_shape(p68, 1);
  EXPECT_EQ(one.blocks, 1);
  EXPECT_EQ(one.k_raw, 12);
  EXPECT_EQ(one.k_lifted, 32);
  EXPECT_EQ(lifted_shape(p68, 1, 4).k_lifted, 12);
  EXPECT_EQ(lifted_shape(p68, 1, 16).k_lifted, 16);
  for (int n = 2; n <= 16; ++n) {
    auto const p = SparsityPattern::from_half_block(n);
    for (std::int64_t k : {1, 2, 7, 17, 33, 1025, 3584, 18944}) {
      for (std::int64_t alignment : {4, 32, 64}) {
        LiftedShape const s = lifted_shape(p, k, alignment);
        std::int64_t const blocks = (k + 2 * n - 1) / (2 * n);
        EXPECT_EQ(s.blocks, blocks);
        EXPECT_EQ(s.k_raw, blocks * 4 * (n - 1));
        EXPECT_EQ(s.k_lifted % alignment, 0);
        EXPECT_GE(s.k_lifted, s.k_raw);
        EXPECT_LT(s.k_lifted - s.k_raw, alignment);
        EXPECT_EQ(s.alignment, alignment);
      }
    }
  }
  EXPECT_THROW(lifted_shape(p68, 0), Error);
  EXPECT_THROW(lifted_shape(p68, 8, 6), Error);
  EXPECT_THROW(lifted_shape(p68, 8, 0), Error);
}

TEST(Pattern, LiftedColumnsCoverEverySourceColumnWithTheWindowMultiplicity) {
  // Interior block positions 2..2N-3 sit in two windows; positions 0, 1, 2N-2, 2N-1 in one.
  for (int n = 2; n <= 16; ++n) {
    auto const p = SparsityPattern::from_half_block(n);
    for (std::int64_t k : {1, 5, 2 * n, 2 * n * 3 + 3, 1025}) {
      LiftedShape const s = lifted_shape(p, k);
      std::map<std::int64_t, int> seen;
      for (std::int64_t c = 0; c < s.k_lifted; ++c) {
        std::int64_t const source = lifted_source_column(p, s, c);
        if (c >= s.k_raw) {
          EXPECT_EQ(source, -1) << "alignment tail must be padding";
        }
        if (source >= 0) {
          // Independent formula: c = g*(4N-4) + 4w + j  <-  g*2N + 2w + j.
          std::int64_t const g = c / (4 * (n - 1)), w = (c % (4 * (n - 1))) / 4, j = c % 4;
          EXPECT_EQ(source, g * 2 * n + 2 * w + j);
          ++seen[source];
        }
      }
      for (std::int64_t src = 0; src < k; ++src) {
        std::int64_t const pos = src % (2 * n);
        int const expected = (pos < 2 || pos >= 2 * n - 2) ? 1 : 2;
        EXPECT_EQ(seen[src], expected) << "N=" << n << " K=" << k << " source " << src;
      }
      EXPECT_EQ(static_cast<std::int64_t>(seen.size()), k);
    }
  }
}

}  // namespace
}  // namespace slidesparse
