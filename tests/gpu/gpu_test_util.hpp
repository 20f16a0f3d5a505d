/// \file gpu_test_util.hpp
/// \brief Device buffers, the skip-without-GPU fixture and the operand generators of the GPU suites.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/epilogue.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/device_info.hpp"

namespace slidesparse::test {

/// The CUDA layer's owned allocation plus synchronous whole-buffer copies for tests.
class DeviceBuffer : public cuda::DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : cuda::DeviceBuffer(bytes) {}
  void upload(void const* host) { SLIDESPARSE_CUDA_CHECK(cudaMemcpy(get(), host, size(), cudaMemcpyHostToDevice)); }
  void fill(unsigned char value) { SLIDESPARSE_CUDA_CHECK(cudaMemset(get(), value, size())); }
  std::vector<std::byte> download() const {
    std::vector<std::byte> host(size());
    SLIDESPARSE_CUDA_CHECK(cudaMemcpy(host.data(), get(), size(), cudaMemcpyDeviceToHost));
    return host;
  }
};

/// Base fixture: skips the test, saying why, on a machine without a usable GPU.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static cuda::CudaEnvironment const env = cuda::query_cuda_environment();
    if (!env.problem.empty()) GTEST_SKIP() << "no GPU on this machine: " << env.problem;
  }
};

// Weights obeying 2:4 along K with every kind of group: two nonzeros at random positions,
// one, none (so the compressor's choice of padding positions is exercised).
inline void fill_sparse_weight(Rng& rng, OwnedMatrix& w, int max_abs) {
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g + 4 <= w.cols; g += 4) {
      int const kept = rng.uniform_int(0, 5) == 0 ? rng.uniform_int(0, 1) : 2;
      int const first = rng.uniform_int(0, 3);
      int const second = (first + rng.uniform_int(1, 3)) % 4;
      for (int j = 0; j < 4; ++j) set_float(w, r, g + j, 0.0f);
      for (int j = 0; j < kept; ++j) {
        int v = 0;
        while (v == 0) v = rng.uniform_int(-max_abs, max_abs);
        set_float(w, r, g + (j == 0 ? first : second), static_cast<float>(v));
      }
    }
  }
}

// Every element a random integer in [-max_abs, max_abs] (exact in every operand type used).
inline void fill_small_integers(Rng& rng, OwnedMatrix& a, int max_abs) {
  for (std::int64_t r = 0; r < a.rows; ++r) {
    for (std::int64_t c = 0; c < a.cols; ++c) set_float(a, r, c, static_cast<float>(rng.uniform_int(-max_abs, max_abs)));
  }
}

// A W8A8 GEMM problem's vectors and its exact result: power-of-two-spread scales (sx [M] in
// [2^-14, 2^-3), sw [N] in [2^-10, 2^-5)), a bias [N] (or none), and y = core's dequantize_output
// of the exact accumulator acc [M, N] = x [M, K] . w [N, K]^T — I32 for INT8; F32 for FP8, which
// holds the sums of small-integer operands exactly. What a fused-epilogue GEMM must equal bit for bit.
struct W8A8Expected {
  std::vector<float> scale_x, scale_w, bias;
  OwnedMatrix y;
};

inline W8A8Expected w8a8_expected(Rng& rng, OwnedMatrix const& w, OwnedMatrix const& x, bool with_bias) {
  W8A8Expected out{std::vector<float>(static_cast<std::size_t>(x.rows)), std::vector<float>(static_cast<std::size_t>(w.rows)),
                   {}, OwnedMatrix(DType::kBF16, x.rows, w.rows)};
  for (float& v : out.scale_x) v = std::ldexp(rng.uniform(1.0f, 2.0f), rng.uniform_int(-14, -4));
  for (float& v : out.scale_w) v = std::ldexp(rng.uniform(1.0f, 2.0f), rng.uniform_int(-10, -6));
  if (with_bias) {
    out.bias.resize(static_cast<std::size_t>(w.rows));
    for (float& v : out.bias) v = rng.normal(0.5f);
  }
  DType const acc_dtype = w.dtype == DType::kI8 ? DType::kI32 : DType::kF32;
  OwnedMatrix acc(acc_dtype, x.rows, w.rows);
  for (std::int64_t t = 0; t < x.rows; ++t) {
    for (std::int64_t c = 0; c < w.rows; ++c) {
      std::int64_t sum = 0;
      for (std::int64_t j = 0; j < x.cols; ++j) {
        sum += static_cast<std::int64_t>(get_float(x, t, j)) * static_cast<std::int64_t>(get_float(w, c, j));
      }
      if (acc_dtype == DType::kI32) {
        acc.set<std::int32_t>(t, c, static_cast<std::int32_t>(sum));
      } else {
        acc.set<float>(t, c, static_cast<float>(sum));
      }
    }
  }
  dequantize_output(acc.cview(), out.scale_x, out.scale_w, out.bias, out.y.view());
  return out;
}

}  // namespace slidesparse::test
