/// \file random.hpp
/// \brief Counter-based pseudo-random numbers for synthetic data: element i of a stream is
/// splitmix64(stream ^ f(i)), so any range can be generated independently, in parallel, with the
/// same result.
#pragma once

#include <cstdint>

namespace slidesparse {

/// SplitMix64's output function: a bijective 64-bit mix with good avalanche.
constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace slidesparse
