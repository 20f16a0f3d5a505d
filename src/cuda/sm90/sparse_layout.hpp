/// \file sparse_layout.hpp
/// \brief The data layouts of SlideSparse's hand-written Hopper 2:4 GEMM (sparse_gemm_kernel.cuh),
/// shared by the kernel, the load-time weight tiling (sparse_tiles.hpp) and the experiments in
/// bench/: CTA tile and stage sizes, byte offsets of K-major operand tiles under the 64- and
/// 128-byte swizzles, the owner (thread, nibble) of each 2:4 group's metadata in the sparse wgmma
/// (wgmma.mma_async.sp ... k64, 8-bit operands, sparsity selector 0), and the mainloop schedules.
/// Plain C++ (the host compiler builds the tiling); the kernel includes it through nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SLIDESPARSE_HOST_DEVICE __host__ __device__
#else
#define SLIDESPARSE_HOST_DEVICE
#endif

namespace slidesparse::cuda::sm90 {

constexpr int kTileN = 256;   // weight rows per CTA
constexpr int kTileM = 128;   // tokens per CTA
constexpr int kStageK = 128;  // dense K per stage
constexpr int kABytes = kTileN * kStageK / 2;  // 16384: compressed A
constexpr int kBBytes = kTileM * kStageK;      // 16384
constexpr int kEBytes = 2 * 128 * 16;          // 4096: [consumer thread 256] x 4 words
constexpr int kStageBytes = kABytes + kBBytes + kEBytes;
constexpr int kThreads = 3 * 128;  // producer warpgroup + two consumer warpgroups
/// CTAs per cluster, side by side along the tokens: the cluster's CTAs take the same weight rows
/// (n tile) and consecutive token tiles, and each producer loads 1 / kCluster of every weight
/// stage (compressed A and metadata) and multicasts it to all of them, so the L2 serves each
/// weight stage once per cluster: 36 KB -> 16 + 20 / kCluster KB per stage per CTA.
constexpr int kCluster = 2;
/// The order in which the persistent clusters take cluster tiles (kCluster token tiles side by
/// side x one n tile of 256 weight rows): bands of kBandGroups cluster rows (kBandGroups x
/// kCluster x kTileM = 2048 tokens), each swept across all n tiles before the next band, tokens
/// fastest within a band. The clusters in flight (66 on an H100) then cover a block of about 8
/// cluster rows x 8 n tiles, and the band's slice of x' (2048 tokens x K', 7.3 MB for K' = 3584)
/// stays in the L2 while the band's n tiles stream past. Tokens fastest over all of M (the first
/// version) re-read the whole of x' from DRAM for every n tile once x' outgrew the L2: at
/// M = 16384 the kernel ran 1.1-1.5x CUTLASS's time (H100, 2026-12-06), against 1.0-1.06x at 4096.
constexpr int kBandGroups = 8;
struct ClusterTile {
  int m_group, n_tile;  // token tiles [kCluster m_group, +kCluster), weight rows [kTileN n_tile, +kTileN)
};
/// tile in [0, m_groups * n_tiles) -> its place; a bijection onto [0, m_groups) x [0, n_tiles)
/// (bands before the last are full: kBandGroups * n_tiles tiles each).
SLIDESPARSE_HOST_DEVICE inline ClusterTile cluster_tile(int tile, int m_groups, int n_tiles) {
  int const first = tile / (kBandGroups * n_tiles) * kBandGroups;  // the band's first cluster row
  int const rows = m_groups - first < kBandGroups ? m_groups - first : kBandGroups;
  int const r = tile - first * n_tiles;
  return {first + r % rows, r / rows};
}

/// Epilogue staging, apart from the ring (the producer already fills the ring with the next
/// tile's stages while the consumers write this one out): per consumer warpgroup a chunk of
/// kEpilogueTokens tokens x 128 rows of F32, stored [token][row] with each token's row padded by
/// 4 floats, so that the fragment stores (a warp's lanes: 8 rows x 4 tokens two apart,
/// 2 x 132 = 264 = 8 mod 32 words between those tokens) hit 32 different banks and every token's
/// outputs leave as one contiguous run of y. Four chunks per tile.
constexpr int kStagePitch = 128 + 4;  // floats per token row
constexpr int kEpilogueTokens = 32;
constexpr int kEpilogueBytes = 2 * kEpilogueTokens * kStagePitch * 4;  // 33792

/// How the consumers walk the stages. Every schedule loads a group's metadata before its first
/// wgmma starts, because a metadata register written while a batch is in flight makes ptxas
/// serialize every wgmma (C7513; SASS: one WARPGROUP.DEPBAR after each QGMMA; see
/// sparse_gemm_kernel.cuh).
///   stages: depth of the shared-memory ring (36 KB each; 5 at most in 227 KB beside the
///           epilogue's 33 KB). The kernel is persistent, so the ring also carries the next
///           tile's first stages while the consumers write the current one out;
///   group:  stages whose batches run back to back between two drains of the tensor pipe
///           (1 = CUTLASS's schedule, a drain per stage; G holds 4 G metadata registers). A stage
///           goes back to the producer as soon as its own batch retires (wgmma.wait_group
///           G-1-j), so the producer refills while the group's later batches run;
///   stagger: the second consumer warpgroup starts with a one-stage group, so the two
///           warpgroups drain at different times and one keeps the tensor cores busy while the
///           other waits (both still read every stage).
struct Schedule {
  int stages, group;
  bool stagger;
  /// Ring, epilogue staging, 1 KB for aligning the ring to the 128-byte swizzle's atom, barriers.
  SLIDESPARSE_HOST_DEVICE constexpr int smem_bytes() const {
    return stages * kStageBytes + kEpilogueBytes + 1024 + 2 * stages * 8;
  }
};

/// The schedules compiled (the library's launcher and bench_sparse_gemm_proto): CUTLASS's
/// (a drain per stage) first, then longer groups, with and without the staggered second
/// warpgroup. Which is fastest is measured (docs/PERFORMANCE.md), not assumed: on an H100
/// (2026-12-06, the non-persistent kernel) the group length moved the gate_up time by under 3 %,
/// and six-stage rings no longer fit beside the epilogue's staging.
inline constexpr Schedule kSchedules[] = {{4, 1, false}, {4, 2, false}, {4, 2, true},
                                          {5, 1, false}, {5, 2, true},  {5, 3, false}};
inline constexpr int kScheduleCount = sizeof(kSchedules) / sizeof(kSchedules[0]);

/// Byte offset of (row, byte) in a tile of 64-byte rows with the 64-byte swizzle: 8-row atoms of
/// 512 bytes, the 16-byte chunk c of row r stored at chunk c ^ ((r / 2) % 4) (address bits [4,6)
/// XOR bits [7,9)). The compressed A of one K = 128 stage (64 bytes per row).
inline int offset_sw64(int row, int byte) {
  int const r = row % 8, c = byte / 16;
  return (row / 8) * 512 + r * 64 + ((c ^ ((r >> 1) & 3)) * 16) + byte % 16;
}

/// Byte offset of (row, byte) in a tile of 128-byte rows with the 128-byte swizzle: 8-row atoms
/// of 1024 bytes, chunk c of row r stored at chunk c ^ (r % 8). B (tokens x K = 128 bytes).
SLIDESPARSE_HOST_DEVICE inline int offset_sw128(int row, int byte) {
  int const r = row % 8, c = byte / 16;
  return (row / 8) * 1024 + r * 128 + ((c ^ r) * 16) + byte % 16;
}

/// The TMA epilogue (BF16 y): a consumer warp's stmatrix.x4.trans number p (0, 1) of a 32-token
/// chunk and a row block stores the four 8 x 8 accumulator matrices (qq, h) = (2 p, 0), (2 p, 1),
/// (2 p + 1, 0), (2 p + 1, 1): fragment rows = weight rows 16 warp + 8 h + 0..7 of the row block,
/// fragment columns = chunk tokens 8 qq + 0..7 (the thread's d[i], i = 4 (4 c + qq) + 2 h + e, is
/// (row lane / 4, column 2 (lane % 4) + e)). Stored transposed, row r of matrix mi is the chunk's
/// token 8 qq + r with those 8 weight rows, 16 bytes: 16-byte chunk `chunk` of token row `token` of
/// the row block's [32 tokens][64 rows] BF16 box, which lane 8 mi + r addresses (at
/// offset_sw128(token, 16 chunk), the box's 128-byte swizzle).
struct StagingRow {
  int token, chunk;
};
SLIDESPARSE_HOST_DEVICE inline StagingRow epilogue_stmatrix_row(int lane, int warp, int p) {
  int const mi = lane / 8;
  return {8 * (2 * p + mi / 2) + lane % 8, 2 * warp + mi % 2};
}

/// Which of the warpgroup's 128 threads holds the metadata of (row m in 0..63, group of four g
/// in 0..15) of one m64 x k64 sparse instruction, and in which 4-bit nibble of its word (the two
/// kept indices: the first in bits 0-1, the second in bits 2-3). Formula "C0", read off
/// CUTLASS's E (metadata) layout for the 64 x 64 sparse FP8 GMMA atom
/// (cute/atom/mma_traits_sm90_gmma_sparse.hpp, ELayout_64x64): thread t = 32 w + l holds one row,
/// 16 w + l / 4 + 8 (l % 2), and one K half, the eight groups 8 ((l / 2) % 2) .. +7, group g in
/// nibble g % 8. (An earlier reading of the PTX figures, "H0": rows m and m + 8 in one thread,
/// four groups each — bench_wgmma_sp_layout still tests it as a candidate.) Unverified until that
/// program passes on a GPU.
struct MetaSlot {
  int thread, nibble;
};
inline MetaSlot meta_slot(int m, int g) {
  return {32 * (m / 16) + 4 * (m % 8) + (m % 16) / 8 + 2 * (g / 8), g % 8};
}

}  // namespace slidesparse::cuda::sm90
