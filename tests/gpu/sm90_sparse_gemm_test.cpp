// The hand-written sm90 sparse GEMM (slidesparse/cuda/sm90_sparse_gemm.hpp).
// On the CPU (no GPU needed), its load-time tiling (src/cuda/sm90/sparse_tiles.hpp): round trips
// on awkward shapes, the exact place of single values and metadata nibbles (pinning the layout
// formulas the kernel and bench_wgmma_sp_layout rely on), the metadata owners forming a
// bijection, and the error for a group that is not 2:4.
// On an sm_90 GPU, every compiled schedule against core's dequantize_output of the exact
// accumulator, bit for bit (the contract of cutlass_gemm.hpp): INT8 accumulates exactly in INT32;
// the FP8 inputs are integers in [-2, 2], so every partial sum is an exact F32 integer. Awkward
// shapes (N a multiple of 8 off the 256-row tile, M = 1, 7, 130, 1025, K' not a multiple of
// the 128-column stage), outputs poisoned with NaN, rows beyond M left untouched.
#include <cstring>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"
#include "sm90/sparse_layout.hpp"
#include "sm90/sparse_tiles.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/cuda/sm90_sparse_gemm.hpp"

namespace slidesparse {
namespace {

using cuda::sm90::kABytes;
using cuda::sm90::kEBytes;
using cuda::sm90::kStageK;
using cuda::sm90::kTileN;
using cuda::sm90::cluster_tile;
using cuda::sm90::epilogue_stmatrix_row;
using cuda::sm90::meta_slot;
using cuda::sm90::offset_sw128;
using cuda::sm90::offset_sw64;
using cuda::sm90::SparseTiles;
using cuda::sm90::tile_sparse_weight;
using cuda::sm90::untile_sparse_weight;
using cuda::sm90::WeightCodes;

// A 2:4 weight of random nonzero codes with every kind of group (two, one or no nonzeros).
std::vector<std::uint8_t> random_sparse(test::Rng& rng, std::int64_t n, std::int64_t k, WeightCodes codes) {
  std::vector<std::uint8_t> w(static_cast<std::size_t>(n * k), 0);
  auto code = [&] {
    for (;;) {
      auto const c = static_cast<std::uint8_t>(rng.uniform_int(0, 255));
      bool const zero = codes == WeightCodes::kE4M3 ? (c & 0x7F) == 0 : c == 0;
      bool const nan = codes == WeightCodes::kE4M3 && (c & 0x7F) == 0x7F;
      if (!zero && !nan) return c;
    }
  };
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t g = 0; g < k; g += 4) {
      int const kind = rng.uniform_int(0, 5);  // 0: none, 1: one, else two
      int const a = rng.uniform_int(0, 3);
      int b = rng.uniform_int(0, 2);
      if (b >= a) ++b;
      if (kind >= 1) w[static_cast<std::size_t>(r * k + g + a)] = code();
      if (kind >= 2) w[static_cast<std::size_t>(r * k + g + b)] = code();
    }
  }
  return w;
}

TEST(Sm90SparseTiles, RoundTripsAwkwardShapes) {
  test::Rng rng(20261205);
  SCOPED_TRACE(rng.describe());
  // Rows: 1, 7, a partial second tile (257), 517; K': 16 (one partial stage), 400 (not a multiple
  // of the 128-column stage), 1024.
  for (WeightCodes codes : {WeightCodes::kE4M3, WeightCodes::kI8}) {
    for (auto [n, k] : {std::pair<std::int64_t, std::int64_t>{1, 16}, {7, 400}, {257, 128}, {517, 1024}}) {
      SCOPED_TRACE(testing::Message() << "n " << n << " k " << k << " fp8 " << (codes == WeightCodes::kE4M3));
      std::vector<std::uint8_t> const w = random_sparse(rng, n, k, codes);
      SparseTiles const t = tile_sparse_weight(w.data(), n, k, codes, "w");
      EXPECT_EQ(t.n_tiles, (n + kTileN - 1) / kTileN);
      EXPECT_EQ(t.k_tiles, (k + kStageK - 1) / kStageK);
      EXPECT_EQ(t.values.size(), static_cast<std::size_t>(t.n_tiles * t.k_tiles) * kABytes);
      EXPECT_EQ(t.metadata.size() * 4, static_cast<std::size_t>(t.n_tiles * t.k_tiles) * kEBytes);
      EXPECT_EQ(untile_sparse_weight(t), w);
    }
  }
}

// One nonzero code at (row, column) lands at exactly one compressed byte and one nibble, where
// the layout formulas say: compressed byte 32 h + 2 g + e of the row, swizzled by offset_sw64;
// nibble meta_slot(row % 64, g) of word (warpgroup thread) * 4 + row block * 2 + h.
TEST(Sm90SparseTiles, SingleValuesLandWhereTheLayoutSays) {
  std::int64_t const n = 300, k = 272;  // two row tiles, three k-tiles (the last partial)
  for (auto [row, col] : {std::pair<std::int64_t, std::int64_t>{0, 0}, {9, 67}, {70, 130}, {200, 3}, {299, 271}}) {
    SCOPED_TRACE(testing::Message() << "row " << row << " column " << col);
    std::vector<std::uint8_t> w(static_cast<std::size_t>(n * k), 0);
    w[static_cast<std::size_t>(row * k + col)] = 0x5A;
    SparseTiles const t = tile_sparse_weight(w.data(), n, k, WeightCodes::kI8, "w");
    std::int64_t const nt = row / kTileN, kt = col / kStageK;
    int const r = static_cast<int>(row % kTileN), in_stage = static_cast<int>(col % kStageK);
    int const half = in_stage / 64, g = (in_stage % 64) / 4, j = in_stage % 4;
    // Kept pair for a single value at j: {j, j + 1}, or {2, 3} with the value second when j = 3.
    int const slot_in_pair = j == 3 ? 1 : 0;
    int const idx0 = j == 3 ? 2 : j, idx1 = idx0 + 1;
    std::size_t const image = static_cast<std::size_t>(nt * t.k_tiles + kt) * kABytes;
    std::size_t nonzero_bytes = 0;
    for (std::size_t i = 0; i < t.values.size(); ++i) nonzero_bytes += t.values[i] != 0;
    EXPECT_EQ(nonzero_bytes, 1u);
    EXPECT_EQ(t.values[image + offset_sw64(r, half * 32 + 2 * g + slot_in_pair)], 0x5A);
    auto const slot = meta_slot(r % 64, g);
    std::size_t const word = static_cast<std::size_t>(nt * t.k_tiles + kt) * (kEBytes / 4) +
                             static_cast<std::size_t>(((r / 128) * 128 + slot.thread) * 4 + ((r % 128) / 64) * 2 + half);
    EXPECT_EQ((t.metadata[word] >> (4 * slot.nibble)) & 0xF, static_cast<std::uint32_t>(idx0 | (idx1 << 2)));
  }
}

// Formula C0 (CUTLASS's E layout): one row and one K half per thread, eight groups per word.
TEST(Sm90SparseTiles, MetadataOwnersAreABijectionOntoThreadsAndNibbles) {
  std::set<std::pair<int, int>> seen;
  for (int m = 0; m < 64; ++m) {
    for (int g = 0; g < 16; ++g) {
      auto const s = meta_slot(m, g);
      ASSERT_GE(s.thread, 0);
      ASSERT_LT(s.thread, 128);
      ASSERT_GE(s.nibble, 0);
      ASSERT_LT(s.nibble, 8);
      EXPECT_TRUE(seen.insert({s.thread, s.nibble}).second) << "row " << m << " group " << g;
      // The thread's rows are its accumulator rows: warp m / 16, lane / 4 == m % 8.
      EXPECT_EQ(s.thread / 32, m / 16);
      EXPECT_EQ((s.thread % 32) / 4, m % 8);
    }
  }
  EXPECT_EQ(seen.size(), 128u * 8u);
  // Pinned: rows m and m + 8 in neighbouring lanes, K halves two lanes apart (an earlier reading,
  // H0, put rows m and m + 8 in one thread: meta_slot(8, 0) would be {0, 4}).
  EXPECT_EQ(meta_slot(8, 0).thread, 1);
  EXPECT_EQ(meta_slot(8, 0).nibble, 0);
  EXPECT_EQ(meta_slot(0, 8).thread, 2);
  EXPECT_EQ(meta_slot(9, 15).thread, 7);
  EXPECT_EQ(meta_slot(9, 15).nibble, 7);
  EXPECT_EQ(meta_slot(63, 5).thread, 32 * 3 + 4 * 7 + 1);
}

// The TMA epilogue's data movement, simulated on the CPU: each accumulator d[i] of each thread
// (the m64nNk D fragment: warpgroup row 64 rb + 16 warp + lane / 4 + 8 ((i / 2) % 2), tile token
// 8 (i / 4) + 2 (lane % 4) + i % 2), packed as the kernel packs it for stmatrix.x4.trans number p
// (matrices (qq, h) = (2 p + mi / 2, mi % 2), register mi holding d[4 (4 c + qq) + 2 h + e]) and
// stored where stmatrix puts a transposed fragment (element (lane / 4, 2 (lane % 4) + e) of matrix
// mi into stored row 2 (lane % 4) + e, at the address lane 8 mi + that row gives), must land in the
// row block's [32 tokens][64 rows] box where TMA, undoing the 128-byte swizzle, reads (token, row):
// every element exactly once, for every chunk c.
TEST(Sm90SparseTiles, TmaEpilogueStagingHoldsEveryTokenAndRowOnce) {
  for (int c = 0; c < 4; ++c) {
    for (int rb = 0; rb < 2; ++rb) {
      std::vector<int> box(32 * 64, -1);  // BF16 slot (byte offset / 2) -> chunk token * 128 + warpgroup row
      for (int warp = 0; warp < 4; ++warp) {
        for (int p = 0; p < 2; ++p) {
          for (int lane = 0; lane < 32; ++lane) {
            for (int mi = 0; mi < 4; ++mi) {
              int const qq = 2 * p + mi / 2, h = mi % 2;
              for (int e = 0; e < 2; ++e) {
                int const i = 4 * (4 * c + qq) + 2 * h + e;
                int const row = 64 * rb + 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
                int const token = 8 * (i / 4) + 2 * (lane % 4) + i % 2 - 32 * c;  // within the chunk
                ASSERT_GE(token, 0);
                ASSERT_LT(token, 32);
                int const stored_row = 2 * (lane % 4) + e;
                auto const at = epilogue_stmatrix_row(8 * mi + stored_row, warp, p);
                int const slot = (offset_sw128(at.token, 16 * at.chunk) + 2 * (lane / 4)) / 2;
                ASSERT_EQ(box[static_cast<std::size_t>(slot)], -1) << "slot " << slot << " written twice";
                box[static_cast<std::size_t>(slot)] = token * 128 + row;
              }
            }
          }
        }
      }
      for (int token = 0; token < 32; ++token) {
        for (int r = 0; r < 64; ++r) {
          EXPECT_EQ(box[static_cast<std::size_t>(offset_sw128(token, 2 * r) / 2)], token * 128 + 64 * rb + r)
              << "chunk " << c << " block " << rb << " token " << token << " row " << r;
        }
      }
    }
  }
}

TEST(Sm90SparseTiles, ClusterTileOrderVisitsEveryTileOnceInBands) {
  // Awkward grids: one row or column, a band and a half, bands that are exactly full, 16384 tokens.
  for (auto const [m_groups, n_tiles] : {std::pair{1, 1}, {1, 7}, {7, 1}, {8, 3}, {12, 5}, {17, 18}, {64, 148}}) {
    SCOPED_TRACE(fmt::format("{} cluster rows x {} n tiles", m_groups, n_tiles));
    std::vector<int> seen(static_cast<std::size_t>(m_groups * n_tiles), -1);
    for (int tile = 0; tile < m_groups * n_tiles; ++tile) {
      auto const at = cluster_tile(tile, m_groups, n_tiles);
      ASSERT_GE(at.m_group, 0);
      ASSERT_LT(at.m_group, m_groups);
      ASSERT_GE(at.n_tile, 0);
      ASSERT_LT(at.n_tile, n_tiles);
      int& slot = seen[static_cast<std::size_t>(at.m_group * n_tiles + at.n_tile)];
      ASSERT_EQ(slot, -1) << "tile " << tile << " and tile " << slot << " both map to (" << at.m_group << ", " << at.n_tile << ")";
      slot = tile;
      // Bands: every tile of band b comes before every tile of band b + 1, tokens fastest inside.
      EXPECT_EQ(at.m_group / cuda::sm90::kBandGroups, tile / (cuda::sm90::kBandGroups * n_tiles)) << "tile " << tile;
      if (tile > 0) {
        auto const before = cluster_tile(tile - 1, m_groups, n_tiles);
        if (before.m_group / cuda::sm90::kBandGroups == at.m_group / cuda::sm90::kBandGroups && before.n_tile == at.n_tile) {
          EXPECT_EQ(at.m_group, before.m_group + 1) << "tile " << tile;
        }
      }
    }
  }
}

TEST(Sm90SparseTiles, AGroupThatIsNot24IsAnErrorNamingTensorRowAndColumns) {
  std::int64_t const n = 3, k = 32;
  std::vector<std::uint8_t> w(static_cast<std::size_t>(n * k), 0);
  w[2 * k + 20] = w[2 * k + 21] = w[2 * k + 23] = 0x38;  // row 2, columns 20..23: three nonzeros
  try {
    tile_sparse_weight(w.data(), n, k, WeightCodes::kE4M3, "model.layers.0.mlp.down_proj.weight");
    FAIL() << "no error";
  } catch (Error const& e) {
    std::string const what = e.what();
    EXPECT_NE(what.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("row 2"), std::string::npos) << what;
    EXPECT_NE(what.find("columns 20..23"), std::string::npos) << what;
  }
  // -0 (0x80) is a zero code for FP8 and a nonzero one (-128) for INT8.
  std::vector<std::uint8_t> v(static_cast<std::size_t>(k), 0);
  v[0] = v[1] = 0x38;
  v[2] = 0x80;
  EXPECT_NO_THROW(tile_sparse_weight(v.data(), 1, k, WeightCodes::kE4M3, "v"));
  EXPECT_THROW(tile_sparse_weight(v.data(), 1, k, WeightCodes::kI8, "v"), Error);
}

class Sm90SparseGemmGpu : public test::GpuTest {
 protected:
  void SetUp() override {
    test::GpuTest::SetUp();
    if (IsSkipped()) return;
    std::string const why = cuda::Sm90SparseGemm::unsupported(DType::kI8, DType::kBF16, 64, 128);
    if (!why.empty()) GTEST_SKIP() << "the sm90 sparse kernel cannot run here: " << why;
  }
};

TEST_F(Sm90SparseGemmGpu, EveryScheduleEqualsTheCpuEpilogueBitForBit) {
  test::Rng rng(20261206);
  SCOPED_TRACE(rng.describe());
  struct Shape {
    std::int64_t n, m, k;
  };
  std::vector<Shape> const shapes = {{8, 1, 16}, {264, 7, 400}, {520, 130, 1024}, {256, 1025, 384}};
  for (DType const dtype : {DType::kI8, DType::kF8E4M3}) {
    int const max_abs = dtype == DType::kI8 ? 127 : 2;
    for (Shape const& s : shapes) {
      for (bool const with_bias : {false, true}) {
        SCOPED_TRACE(fmt::format("{} N={} M={} K'={} bias={}", dtype_name(dtype), s.n, s.m, s.k, with_bias));
        test::OwnedMatrix w(dtype, s.n, s.k), x(dtype, s.m, s.k);
        test::fill_sparse_weight(rng, w, max_abs);
        test::fill_small_integers(rng, x, max_abs);
        auto const [sx, sw, bias, expected] = test::w8a8_expected(rng, w, x, with_bias);

        cuda::Sm90SparseGemm const gemm(w.bytes.data(), dtype, s.n, s.k, nullptr, "w");
        test::DeviceBuffer dx(x.bytes.size()), dsx(sx.size() * 4), dsw(sw.size() * 4),
            db(std::max<std::size_t>(4, bias.size() * 4));
        dx.upload(x.bytes.data());
        dsx.upload(sx.data());
        dsw.upload(sw.data());
        if (with_bias) db.upload(bias.data());
        // One row more than M: the kernel must not write past M.
        test::DeviceBuffer y(expected.bytes.size() + static_cast<std::size_t>(s.n) * 2);
        for (int schedule = 0; schedule < cuda::Sm90SparseGemm::schedule_count(); ++schedule) {
          SCOPED_TRACE(cuda::Sm90SparseGemm::schedule_name(schedule));
          y.fill(0xFF);  // NaN
          gemm.run(dx.get(), y.get(), s.m, dsx.as<float>(), dsw.as<float>(), with_bias ? db.as<float>() : nullptr,
                   nullptr, schedule);
          SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
          std::vector<std::byte> const got = y.download();
          for (std::size_t i = 0; i < expected.bytes.size(); i += 2) {
            ASSERT_TRUE(std::memcmp(got.data() + i, expected.bytes.data() + i, 2) == 0)
                << "output [" << (i / 2) / static_cast<std::size_t>(s.n) << ", " << (i / 2) % static_cast<std::size_t>(s.n)
                << "]";
          }
          for (std::size_t i = expected.bytes.size(); i < got.size(); ++i) {
            ASSERT_EQ(got[i], std::byte{0xFF}) << "byte " << i << " past the M rows was written";
          }
        }
      }
    }
  }
}

TEST_F(Sm90SparseGemmGpu, RunsInsideACudaGraph) {
  test::Rng rng(20261207);
  SCOPED_TRACE(rng.describe());
  std::int64_t const n = 256, m = 64, k = 256;
  test::OwnedMatrix w(DType::kI8, n, k), x(DType::kI8, m, k);
  test::fill_sparse_weight(rng, w, 127);
  test::fill_small_integers(rng, x, 127);
  std::vector<float> sx(static_cast<std::size_t>(m), 1.0f / 64), sw(static_cast<std::size_t>(n), 1.0f / 128);
  cudaStream_t stream = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cuda::Sm90SparseGemm const gemm(w.bytes.data(), DType::kI8, n, k, stream, "w");
  test::DeviceBuffer dx(x.bytes.size()), dsx(sx.size() * 4), dsw(sw.size() * 4), direct(m * n * 2), graphed(m * n * 2);
  dx.upload(x.bytes.data());
  dsx.upload(sx.data());
  dsw.upload(sw.data());
  int const schedule = gemm.choose_schedule(dx.get(), direct.get(), m, dsx.as<float>(), dsw.as<float>(), nullptr, stream);
  ASSERT_GE(schedule, 0);
  ASSERT_LT(schedule, cuda::Sm90SparseGemm::schedule_count());
  gemm.run(dx.get(), direct.get(), m, dsx.as<float>(), dsw.as<float>(), nullptr, stream, schedule);
  graphed.fill(0xFF);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  gemm.run(dx.get(), graphed.get(), m, dsx.as<float>(), dsw.as<float>(), nullptr, stream, schedule);
  SLIDESPARSE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  SLIDESPARSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  SLIDESPARSE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(graphed.download(), direct.download());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(Sm90SparseGemm, RejectsWhatItCannotRunNamingTheReason) {
  EXPECT_NE(cuda::Sm90SparseGemm::unsupported(DType::kI8, DType::kBF16, 100, 128).find("N = 100"), std::string::npos);
  EXPECT_NE(cuda::Sm90SparseGemm::unsupported(DType::kI8, DType::kBF16, 64, 40).find("K' = 40"), std::string::npos);
  EXPECT_NE(cuda::Sm90SparseGemm::unsupported(DType::kBF16, DType::kBF16, 64, 128).find("BF16"), std::string::npos);
  EXPECT_NE(cuda::Sm90SparseGemm::unsupported(DType::kI8, DType::kF16, 64, 128).find("write BF16, not F16"), std::string::npos);
  EXPECT_THROW(cuda::Sm90SparseGemm::schedule_name(cuda::Sm90SparseGemm::schedule_count()), Error);
}

}  // namespace
}  // namespace slidesparse
