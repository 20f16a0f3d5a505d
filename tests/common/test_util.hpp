/// \file test_util.hpp
/// \brief Seeded randomness and small matrix helpers shared by the test suites.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "slidesparse/core/matrix.hpp"

namespace slidesparse::test {

/// A fixed-seed generator; the seed is printed into every failure of the current scope via
/// SCOPED_TRACE by the caller (`SCOPED_TRACE(rng.describe())`).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : seed_(seed), engine_(seed) {}
  std::uint64_t seed() const { return seed_; }
  std::string describe() const { return "seed " + std::to_string(seed_); }
  std::mt19937_64& engine() { return engine_; }
  int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(engine_); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(engine_); }
  float normal(float stddev = 1.0f) { return std::normal_distribution<float>(0.0f, stddev)(engine_); }

 private:
  std::uint64_t seed_;
  std::mt19937_64 engine_;
};

/// A matrix that owns its bytes.
struct OwnedMatrix {
  DType dtype;
  std::int64_t rows;
  std::int64_t cols;
  std::vector<std::byte> bytes;

  OwnedMatrix(DType dt, std::int64_t r, std::int64_t c, std::byte fill = std::byte{0})
      : dtype(dt), rows(r), cols(c),
        bytes(static_cast<std::size_t>(r * c) * dtype_size(dt), fill) {}
  MatrixView view(std::string_view name = "test") {
    return {dtype, rows, cols, bytes.data(), name};
  }
  ConstMatrixView cview(std::string_view name = "test") const {
    return {dtype, rows, cols, bytes.data(), name};
  }
  template <typename T>
  T get(std::int64_t r, std::int64_t c) const {
    return load<T>(bytes.data() + static_cast<std::size_t>(r * cols + c) * sizeof(T));
  }
  template <typename T>
  void set(std::int64_t r, std::int64_t c, T v) {
    store<T>(bytes.data() + static_cast<std::size_t>(r * cols + c) * sizeof(T), v);
  }
};

/// Stores float value v into element (r, c) of a float-typed matrix, converting with RNE.
inline void set_float(OwnedMatrix& m, std::int64_t r, std::int64_t c, float v) {
  switch (m.dtype) {
    case DType::kBF16: m.set<std::uint16_t>(r, c, float_to_bf16(v).bits); break;
    case DType::kF16: m.set<std::uint16_t>(r, c, float_to_fp16(v).bits); break;
    case DType::kF32: m.set<float>(r, c, v); break;
    case DType::kF8E4M3: m.set<std::uint8_t>(r, c, float_to_e4m3_satfinite(v).bits); break;
    case DType::kI8: m.set<std::int8_t>(r, c, static_cast<std::int8_t>(v)); break;
    default: ADD_FAILURE() << "set_float: unsupported dtype";
  }
}

inline float get_float(OwnedMatrix const& m, std::int64_t r, std::int64_t c) {
  return dispatch_weight_dtype(m.dtype, "test", [&](auto elem) {
    using Elem = decltype(elem);
    return Elem::to_float(m.get<typename Elem::Bits>(r, c));
  });
}

}  // namespace slidesparse::test

#include <filesystem>
#include <unistd.h>

namespace slidesparse::test {

/// A fresh directory for one test, removed when the test ends.
class TempDir {
 public:
  TempDir() {
    auto const* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("slidesparse-test-" + std::to_string(::getpid()) + "-" + info->test_suite_name() + "-" + info->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::filesystem::path const& path() const { return path_; }
  std::filesystem::path operator/(std::string const& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Expects `call` to throw slidesparse::Error of `kind` whose message holds every one of
/// `parts` (e.g. the file, tensor and byte offset). Returns the message ("" if nothing threw).
template <typename F>
std::string expect_error(F&& call, ErrorKind kind, std::vector<std::string> const& parts) {
  try {
    call();
    ADD_FAILURE() << "no error thrown";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    std::string const message = e.what();
    for (auto const& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
    }
    return message;
  }
  return {};
}

}  // namespace slidesparse::test
