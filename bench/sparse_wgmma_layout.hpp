/// \file sparse_wgmma_layout.hpp
/// \brief Host-side layout functions (and an error-check macro) shared by the sparse-wgmma experiments (wgmma_sp_layout.cu,
/// sparse_gemm_proto.cu): E4M3 codes of small integers, byte offsets of K-major operand tiles in
/// shared memory with the 64- and 128-byte swizzles, and the assumed owner (thread, nibble) of
/// each 2:4 group's metadata in the FP8 sparse wgmma (wgmma.mma_async.sp ... k64 .e4m3, sparsity
/// selector 0). bench_wgmma_sp_layout checks all of them on the GPU.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

/// Exits with the CUDA error's text (the experiments have nothing to recover).
#define SPARSE_WGMMA_CHECK(call)                                                                     \
  do {                                                                                               \
    cudaError_t err_ = (call);                                                                       \
    if (err_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(2);                                                                                  \
    }                                                                                                \
  } while (0)

namespace slidesparse::bench::sparse_wgmma {

/// The experiments' one option: no argument (the GPU) or `--emulate` (the host model). False,
/// after printing the usage, for anything else.
inline bool parse_emulate(int argc, char** argv, bool& emulate) {
  emulate = argc == 2 && std::strcmp(argv[1], "--emulate") == 0;
  if (argc == 1 || emulate) return true;
  std::fprintf(stderr, "usage: %s [--emulate]\n", argv[0]);
  return false;
}

/// Whether this process sees an sm_90 GPU; prints "<program> on <GPU>" or why it skips.
inline bool have_sm90(char const* program) {
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    std::printf("%s: no usable GPU; skipped\n", program);
    return false;
  }
  if (prop.major != 9 || prop.minor != 0) {
    std::printf("%s: needs sm_90 (Hopper), found %s (sm_%d%d); skipped\n", program, prop.name, prop.major, prop.minor);
    return false;
  }
  std::printf("%s on %s\n", program, prop.name);
  return true;
}

/// E4M3 code of an integer with |v| <= 16 (all exact).
inline uint8_t e4m3(int v) {
  if (v == 0) return 0;
  uint8_t const sign = v < 0 ? 0x80 : 0;
  int const a = v < 0 ? -v : v;
  int p = 0;
  while ((a >> (p + 1)) != 0) ++p;           // 2^p <= a < 2^(p+1)
  int const mantissa = ((a << 3) >> p) - 8;  // a = 2^p (1 + m / 8)
  return static_cast<uint8_t>(sign | ((p + 7) << 3) | mantissa);
}

/// Value of an E4M3 code (NaN codes 0x7F / 0xFF are not produced by this file's users).
inline float from_e4m3(uint8_t code) {
  int const e = (code >> 3) & 0xF, mantissa = code & 7;
  float const magnitude = e == 0 ? std::ldexp(float(mantissa), -9) : std::ldexp(1.0f + mantissa / 8.0f, e - 7);
  return (code & 0x80) ? -magnitude : magnitude;
}

/// Byte offset of (row, byte) in a tile of 64-byte rows with the 64-byte swizzle: 8-row atoms of
/// 512 bytes, the 16-byte chunk c of row r stored at chunk c ^ ((r / 2) % 4) (address bits [4,6)
/// XOR bits [7,9)). The compressed A of one K = 128 stage (64 bytes per row).
inline int offset_sw64(int row, int byte) {
  int const r = row % 8, c = byte / 16;
  return (row / 8) * 512 + r * 64 + ((c ^ ((r >> 1) & 3)) * 16) + byte % 16;
}

/// Byte offset of (row, byte) in a tile of 128-byte rows with the 128-byte swizzle: 8-row atoms
/// of 1024 bytes, chunk c of row r stored at chunk c ^ (r % 8). B (tokens x K = 128 bytes).
inline int offset_sw128(int row, int byte) {
  int const r = row % 8, c = byte / 16;
  return (row / 8) * 1024 + r * 128 + ((c ^ r) * 16) + byte % 16;
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

}  // namespace slidesparse::bench::sparse_wgmma
