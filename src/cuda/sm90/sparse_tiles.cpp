#include "sparse_tiles.hpp"

#include "slidesparse/core/error.hpp"
#include "sparse_layout.hpp"

namespace slidesparse::cuda::sm90 {

namespace {

// Index of (n_tile, k_tile)'s image / metadata block.
std::size_t block(SparseTiles const& t, std::int64_t n_tile, std::int64_t k_tile) {
  return static_cast<std::size_t>(n_tile * t.k_tiles + k_tile);
}

// Word of (tile row r, K half h) for the thread that owns (row % 64, group g): the consumer
// warpgroup r / 128 holds rows [128 wg, +128), row block (r % 128) / 64 its two m64 slices.
std::size_t meta_word(int r, int half, MetaSlot slot) {
  int const wg = r / 128, rb = (r % 128) / 64;
  return static_cast<std::size_t>((wg * 128 + slot.thread) * 4 + rb * 2 + half);
}

}  // namespace

SparseTiles tile_sparse_weight(std::uint8_t const* weight, std::int64_t n, std::int64_t k, WeightCodes codes,
                               std::string_view name) {
  if (n <= 0 || k <= 0 || k % 4 != 0) {
    fail(ErrorKind::kUsage, "sm90 sparse tiles of '{}': [{}, {}] must be non-empty with K' a multiple of 4", name, n, k);
  }
  auto const nonzero = [codes](std::uint8_t c) { return codes == WeightCodes::kE4M3 ? (c & 0x7F) != 0 : c != 0; };
  SparseTiles t;
  t.n = n;
  t.k = k;
  t.n_tiles = (n + kTileN - 1) / kTileN;
  t.k_tiles = (k + kStageK - 1) / kStageK;
  t.values.assign(static_cast<std::size_t>(t.n_tiles * t.k_tiles) * kABytes, 0);
  t.metadata.assign(static_cast<std::size_t>(t.n_tiles * t.k_tiles) * (kEBytes / 4), 0);
  for (std::int64_t row = 0; row < t.n_tiles * kTileN; ++row) {
    std::int64_t const nt = row / kTileN;
    int const r = static_cast<int>(row % kTileN), m64 = r % 64;
    for (std::int64_t kt = 0; kt < t.k_tiles; ++kt) {
      std::uint8_t* a = &t.values[block(t, nt, kt) * kABytes];
      std::uint32_t* e = &t.metadata[block(t, nt, kt) * (kEBytes / 4)];
      for (int group = 0; group < kStageK / 4; ++group) {  // 32 groups of 4: two K halves of 16
        int idx[2] = {0, 1}, kept = 0;
        std::uint8_t val[2] = {0, 0};
        std::int64_t const k0 = kt * kStageK + 4 * group;
        if (row < n && k0 < k) {
          std::uint8_t const* src = weight + row * k + k0;
          for (int j = 0; j < 4; ++j) {
            if (!nonzero(src[j])) continue;
            if (kept == 2) {
              fail(ErrorKind::kInvalidInput, "weight '{}': row {}, columns {}..{} hold more than 2 nonzeros (not 2:4)",
                   name, row, k0, k0 + 3);
            }
            idx[kept] = j;
            val[kept++] = src[j];
          }
          // One nonzero at j: pair it with a zero neighbour, indices ascending ({j, j+1}, or
          // {2, 3} with the value second when j = 3). None: {0, 1} with zeros.
          if (kept == 1 && idx[0] == 3) {
            idx[0] = 2, idx[1] = 3, val[1] = val[0], val[0] = 0;
          } else if (kept == 1) {
            idx[1] = idx[0] + 1;
          }
        }
        int const half = group / 16, g = group % 16;
        for (int j = 0; j < 2; ++j) a[offset_sw64(r, half * 32 + 2 * g + j)] = val[j];
        MetaSlot const slot = meta_slot(m64, g);
        e[meta_word(r, half, slot)] |= static_cast<std::uint32_t>(idx[0] | (idx[1] << 2)) << (4 * slot.nibble);
      }
    }
  }
  return t;
}

std::vector<std::uint8_t> untile_sparse_weight(SparseTiles const& t) {
  std::vector<std::uint8_t> w(static_cast<std::size_t>(t.n * t.k), 0);
  for (std::int64_t row = 0; row < t.n; ++row) {
    std::int64_t const nt = row / kTileN;
    int const r = static_cast<int>(row % kTileN), m64 = r % 64;
    for (std::int64_t kt = 0; kt < t.k_tiles; ++kt) {
      std::uint8_t const* a = &t.values[block(t, nt, kt) * kABytes];
      std::uint32_t const* e = &t.metadata[block(t, nt, kt) * (kEBytes / 4)];
      for (int group = 0; group < kStageK / 4; ++group) {
        std::int64_t const k0 = kt * kStageK + 4 * group;
        int const half = group / 16, g = group % 16;
        MetaSlot const slot = meta_slot(m64, g);
        std::uint32_t const bits = (e[meta_word(r, half, slot)] >> (4 * slot.nibble)) & 0xF;
        int const idx[2] = {static_cast<int>(bits & 3), static_cast<int>(bits >> 2)};
        for (int j = 0; j < 2; ++j) {
          std::uint8_t const v = a[offset_sw64(r, half * 32 + 2 * g + j)];
          if (v == 0) continue;
          if (k0 >= t.k || idx[j] <= (j == 1 ? idx[0] : -1)) {
            fail(ErrorKind::kInternal, "sm90 sparse tiles: row {}, columns {}..{}: value in padding or indices "
                 "not ascending ({}, {})", row, k0, k0 + 3, idx[0], idx[1]);
          }
          w[static_cast<std::size_t>(row * t.k + k0 + idx[j])] = v;
        }
      }
    }
  }
  return w;
}

}  // namespace slidesparse::cuda::sm90
