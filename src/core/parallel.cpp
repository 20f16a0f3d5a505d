#include "slidesparse/core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <vector>

namespace slidesparse {
namespace {

std::atomic<int>& thread_setting() {
  static std::atomic<int> threads{std::max(1, static_cast<int>(std::thread::hardware_concurrency()))};
  return threads;
}

// Set inside workers: a parallel_for nested in another runs inline instead of oversubscribing.
thread_local bool inside_parallel_region = false;

// Below this much work per call, thread start-up (~20 us) costs more than it saves.
constexpr std::int64_t kMinBytesPerThread = 1 << 18;

}  // namespace

int worker_threads() noexcept { return thread_setting().load(); }

void set_worker_threads(int threads) noexcept { thread_setting().store(std::max(1, threads)); }

void parallel_for(std::int64_t count, std::int64_t cost_per_item,
                  std::function<void(std::int64_t, std::int64_t)> const& body) {
  if (count <= 0) return;
  std::int64_t const total_cost = count * std::max<std::int64_t>(cost_per_item, 1);
  std::int64_t const by_cost = std::max<std::int64_t>(1, total_cost / kMinBytesPerThread);
  std::int64_t const chunks = std::min<std::int64_t>({worker_threads(), count, by_cost});
  if (chunks <= 1 || inside_parallel_region) {
    body(0, count);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(chunks));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(chunks - 1));
  auto run_chunk = [&](std::int64_t chunk) {
    std::int64_t const begin = count * chunk / chunks;
    std::int64_t const end = count * (chunk + 1) / chunks;
    bool const was_inside = inside_parallel_region;
    inside_parallel_region = true;
    try {
      body(begin, end);
    } catch (...) {
      errors[static_cast<std::size_t>(chunk)] = std::current_exception();
    }
    inside_parallel_region = was_inside;
  };
  for (std::int64_t chunk = 1; chunk < chunks; ++chunk) threads.emplace_back(run_chunk, chunk);
  run_chunk(0);
  for (auto& t : threads) t.join();
  for (auto const& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace slidesparse
