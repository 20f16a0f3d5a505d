/// \file sparse_tiles.hpp
/// \brief The load-time form of a 2:4 weight for the hand-written sm90 GEMM
/// (sparse_gemm_kernel.cuh): W' [n, K'] (8-bit codes, every aligned group of four along K' with
/// at most two nonzeros) cut into 256-row x 128-column tiles, each tile's kept values compressed
/// into the shared-memory image the sparse wgmma reads (64-byte rows, 64-byte swizzle) and its
/// 2:4 indices into the metadata words in the order the consumer threads load them. Host code
/// (plain C++; no CUDA, no fmt in this header, so .cu files may include it).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace slidesparse::cuda::sm90 {

/// Which codes count as zero: FP8 E4M3 (+0 and -0) or INT8 (0).
enum class WeightCodes { kE4M3, kI8 };

struct SparseTiles {
  std::int64_t n = 0;        ///< weight rows (output channels)
  std::int64_t k = 0;        ///< K' (codes per row)
  std::int64_t n_tiles = 0;  ///< ceil(n / kTileN)
  std::int64_t k_tiles = 0;  ///< ceil(K' / kStageK)
  /// [n_tile][k_tile] images of kABytes: row r of the tile, compressed byte j (0..63) of the
  /// stage at offset_sw64(r, j); compressed byte 32 h + 2 g + e holds the e-th kept value of
  /// group of four g (0..15) of K half h, i.e. of columns 128 kt + 64 h + 4 g .. +3.
  std::vector<std::uint8_t> values;
  /// [n_tile][k_tile] x [consumer thread 0..255] x 4 words (word = row block * 2 + K half); the
  /// (row, group) nibble per meta_slot: the two kept positions within the group, ascending, the
  /// first in bits 0-1. Rows past n and columns past K' hold zeros kept at {0, 1}.
  std::vector<std::uint32_t> metadata;
};

/// Tiles W' (`weight`: n rows of k codes, row-major). A group of four with more than two nonzero
/// codes is an Error (kInvalidInput) naming `name`, the row and the columns. A single nonzero is
/// paired with a zero position (indices stay ascending).
SparseTiles tile_sparse_weight(std::uint8_t const* weight, std::int64_t n, std::int64_t k, WeightCodes codes,
                               std::string_view name);

/// The inverse: W' [n, K'] row-major from the tiles (tests and diagnostics). Zeros come back as
/// +0 codes (a -0 E4M3 weight code reads back as 0x00).
std::vector<std::uint8_t> untile_sparse_weight(SparseTiles const& tiles);

}  // namespace slidesparse::cuda::sm90
