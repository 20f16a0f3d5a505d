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

#include "../src/cuda/sm90/sparse_layout.hpp"

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

using cuda::sm90::meta_slot;
using cuda::sm90::MetaSlot;
using cuda::sm90::offset_sw128;
using cuda::sm90::offset_sw64;

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

}  // namespace slidesparse::bench::sparse_wgmma
