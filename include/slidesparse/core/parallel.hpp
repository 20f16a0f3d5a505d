/// \file parallel.hpp
/// \brief A minimal deterministic parallel-for over row ranges.
#pragma once

#include <cstdint>
#include <functional>

namespace slidesparse {

/// Number of worker threads transforms use (default: hardware concurrency; >= 1).
int worker_threads() noexcept;
void set_worker_threads(int threads) noexcept;

/// Runs body(begin, end) over contiguous chunks of [0, count), in parallel when the work is
/// large enough (`cost_per_item` is a rough byte count used to skip threading for tiny work).
/// Nested calls (from inside a body) run inline on the calling thread.
/// If chunks throw, the exception of the lowest chunk is rethrown after all chunks finished, so
/// an error report names the first offending row regardless of scheduling.
void parallel_for(std::int64_t count, std::int64_t cost_per_item,
                  std::function<void(std::int64_t begin, std::int64_t end)> const& body);

}  // namespace slidesparse
