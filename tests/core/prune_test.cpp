#include "slidesparse/core/prune.hpp"

#include <algorithm>
#include <numeric>

#include "common/test_util.hpp"
#include "slidesparse/core/pattern_check.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

constexpr DType kWeightDTypes[] = {DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3,
                                   DType::kI8};

// Reference: indices of one block (length len) that survive, by sorting (score desc, index asc).
std::vector<int> reference_survivors(std::vector<float> const& scores, std::vector<bool> const& nz,
                                     int keep) {
  std::vector<int> idx;
  for (int i = 0; i < static_cast<int>(scores.size()); ++i) {
    if (nz[static_cast<std::size_t>(i)]) idx.push_back(i);
  }
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  if (static_cast<int>(idx.size()) > keep) idx.resize(static_cast<std::size_t>(keep));
  std::sort(idx.begin(), idx.end());
  return idx;
}

TEST(Prune, KeepsTheLargestMagnitudesAgainstASortingReference) {
  test::Rng rng(1234);
  SCOPED_TRACE(rng.describe());
  for (DType dtype : kWeightDTypes) {
    for (char const* pattern_text : {"2:4", "4:6", "6:8", "8:10", "14:16", "30:32"}) {
      auto const pattern = SparsityPattern::parse(pattern_text);
      for (std::int64_t k : {1, 7, 17, 33, 100}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + pattern_text + " K=" + std::to_string(k));
        OwnedMatrix w(dtype, 9, k);
        for (std::int64_t r = 0; r < w.rows; ++r) {
          for (std::int64_t c = 0; c < k; ++c) {
            // Small integers force many ties; every few values is an existing zero.
            int const v = rng.uniform_int(-6, 6);
            test::set_float(w, r, c, static_cast<float>(v));
          }
        }
        OwnedMatrix const before = w;
        PruneStats const stats = prune_in_place(w.view(), pattern);
        std::int64_t zeroed = 0;
        for (std::int64_t r = 0; r < w.rows; ++r) {
          for (std::int64_t start = 0; start < k; start += pattern.block()) {
            int const len = static_cast<int>(std::min<std::int64_t>(pattern.block(), k - start));
            std::vector<float> scores;
            std::vector<bool> nz;
            for (int i = 0; i < len; ++i) {
              float const v = test::get_float(before, r, start + i);
              scores.push_back(std::fabs(v));
              nz.push_back(v != 0.0f);
            }
            auto const keep = reference_survivors(scores, nz, pattern.max_nonzeros());
            for (int i = 0; i < len; ++i) {
              bool const kept = std::find(keep.begin(), keep.end(), i) != keep.end();
              float const after = test::get_float(w, r, start + i);
              if (kept) {
                ASSERT_EQ(after, test::get_float(before, r, start + i)) << "row " << r << " col " << start + i;
              } else {
                ASSERT_EQ(after, 0.0f) << "row " << r << " col " << start + i;
                if (nz[static_cast<std::size_t>(i)]) ++zeroed;
              }
            }
          }
        }
        EXPECT_EQ(stats.zeroed, zeroed);
        EXPECT_TRUE(check_pattern(w.cview(), pattern).ok());
      }
    }
  }
}

TEST(Prune, TieBreakKeepsTheLowerIndex) {
  OwnedMatrix w(DType::kF32, 1, 8);
  for (int c = 0; c < 8; ++c) w.set<float>(0, c, 1.0f);  // all equal
  prune_in_place(w.view(), SparsityPattern::parse("6:8"));
  for (int c = 0; c < 8; ++c) EXPECT_EQ(w.get<float>(0, c), c < 6 ? 1.0f : 0.0f) << c;
  // Equal magnitude, opposite signs: still a tie.
  OwnedMatrix v(DType::kF32, 1, 4);
  float const values[] = {-2.0f, 2.0f, -2.0f, 2.0f};
  for (int c = 0; c < 4; ++c) v.set<float>(0, c, values[c]);
  prune_in_place(v.view(), SparsityPattern::parse("2:4"));
  EXPECT_EQ(v.get<float>(0, 0), -2.0f);
  EXPECT_EQ(v.get<float>(0, 1), 2.0f);
  EXPECT_EQ(v.get<float>(0, 2), 0.0f);
  EXPECT_EQ(v.get<float>(0, 3), 0.0f);
}

TEST(Prune, ExistingZerosCountAndNoExtraPruning) {
  OwnedMatrix w(DType::kBF16, 1, 8);
  float const values[] = {0.1f, 0.0f, 5.0f, 0.2f, 0.0f, 0.3f, 7.0f, 0.01f};
  for (int c = 0; c < 8; ++c) test::set_float(w, 0, c, values[c]);
  OwnedMatrix const before = w;
  PruneStats const stats = prune_in_place(w.view(), SparsityPattern::parse("6:8"));
  EXPECT_EQ(stats.zeroed, 0);
  EXPECT_EQ(stats.blocks_pruned, 0);
  EXPECT_EQ(w.bytes, before.bytes);
}

TEST(Prune, PartialTailBlockIsPrunedWhenItHasTooManyNonzeros) {
  // K = 7 at 6:8: one partial block of 7 real columns (the 8th is an implicit zero) -> prune 1.
  OwnedMatrix w(DType::kF32, 1, 7);
  for (int c = 0; c < 7; ++c) w.set<float>(0, c, static_cast<float>(c + 1));
  PruneStats const stats = prune_in_place(w.view(), SparsityPattern::parse("6:8"));
  EXPECT_EQ(stats.zeroed, 1);
  EXPECT_EQ(w.get<float>(0, 0), 0.0f);
  // K = 6 at 6:8: the block has only 6 columns, nothing to prune.
  OwnedMatrix x(DType::kF32, 1, 6);
  for (int c = 0; c < 6; ++c) x.set<float>(0, c, 1.0f);
  EXPECT_EQ(prune_in_place(x.view(), SparsityPattern::parse("6:8")).zeroed, 0);
}

TEST(Prune, ImportanceChangesTheChoice) {
  OwnedMatrix w(DType::kF32, 2, 4);
  float const values[] = {1.0f, 2.0f, 3.0f, 4.0f};
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 4; ++c) w.set<float>(r, c, values[c]);
  }
  // Magnitude keeps columns 2, 3; with importance s = (10, 10, 1, 1), scores are 10, 20, 3, 4.
  std::vector<float> const importance = {10.0f, 10.0f, 1.0f, 1.0f};
  prune_in_place(w.view(), SparsityPattern::parse("2:4"), importance);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(w.get<float>(r, 0), 1.0f);
    EXPECT_EQ(w.get<float>(r, 1), 2.0f);
    EXPECT_EQ(w.get<float>(r, 2), 0.0f);
    EXPECT_EQ(w.get<float>(r, 3), 0.0f);
  }
}

TEST(Prune, CanonicalizesNegativeZeros) {
  OwnedMatrix w(DType::kBF16, 1, 4);
  w.set<std::uint16_t>(0, 0, 0x8000);  // -0.0
  test::set_float(w, 0, 1, 1.0f);
  test::set_float(w, 0, 2, -0.0f);
  test::set_float(w, 0, 3, 2.0f);
  PruneStats const stats = prune_in_place(w.view(), SparsityPattern::parse("2:4"));
  EXPECT_EQ(stats.negative_zeros, 2);
  EXPECT_EQ(w.get<std::uint16_t>(0, 0), 0);
  EXPECT_EQ(w.get<std::uint16_t>(0, 2), 0);
}

TEST(Prune, RejectsNaNAndBadImportanceWithLocation) {
  OwnedMatrix w(DType::kF32, 3, 8);
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 8; ++c) w.set<float>(r, c, 1.0f);
  }
  w.set<float>(2, 5, std::numeric_limits<float>::quiet_NaN());
  try {
    prune_in_place(w.view("layers.0.q_proj.weight"), SparsityPattern::parse("6:8"));
    FAIL() << "NaN accepted";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    std::string const m = e.what();
    EXPECT_NE(m.find("layers.0.q_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("row 2"), std::string::npos) << m;
    EXPECT_NE(m.find("column 5"), std::string::npos) << m;
  }
  OwnedMatrix ok(DType::kF32, 1, 8);
  std::vector<float> short_importance(7, 1.0f);
  EXPECT_THROW(prune_in_place(ok.view(), SparsityPattern::parse("6:8"), short_importance), Error);
  std::vector<float> negative(8, 1.0f);
  negative[3] = -1.0f;
  EXPECT_THROW(prune_in_place(ok.view(), SparsityPattern::parse("6:8"), negative), Error);
  OwnedMatrix u8(DType::kU8, 1, 8);
  EXPECT_THROW(prune_in_place(u8.view(), SparsityPattern::parse("6:8")), Error);
}

}  // namespace
}  // namespace slidesparse
