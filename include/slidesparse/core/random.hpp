/// \file random.hpp
/// \brief Counter-based pseudo-random numbers for synthetic data: element i of a stream is
/// splitmix64(stream ^ f(i)), so any range can be generated independently, in parallel, with the
/// same result.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse {

/// SplitMix64's output function: a bijective 64-bit mix with good avalanche.
constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Random nonzero, finite values of `dtype` for synthetic weights and activations: FP8 E4M3
/// codes with magnitudes 0.5 .. 7.5 (biased exponents 6..9), INT8 in [-127, 127] without 0, BF16/F16
/// values +-[2^-4, 2) (random sign, exponent, mantissa). Element i comes from
/// splitmix64(seed ^ f(i)), filled in parallel: the result does not depend on the thread count.
/// Throws Error(kUsage) for other dtypes.
void fill_random(DType dtype, std::byte* data, std::int64_t count, std::uint64_t seed);

}  // namespace slidesparse
