#include "slidesparse/convert/progress.hpp"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace slidesparse::convert {

Progress::Progress(std::uint64_t total, std::string label, bool enabled)
    : total_(total), label_(std::move(label)), enabled_(enabled && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() { finish(); }

void Progress::advance(std::uint64_t units) {
  done_ += units;
  if (!enabled_) return;
  auto const now = std::chrono::steady_clock::now();
  std::unique_lock lock(draw_mutex_, std::try_to_lock);
  if (!lock.owns_lock() || now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  std::lock_guard lock(draw_mutex_);
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  double const fraction = total_ ? std::min(1.0, static_cast<double>(done_.load()) / static_cast<double>(total_)) : 1.0;
  double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  constexpr int kWidth = 30;
  int const filled = static_cast<int>(fraction * kWidth);
  std::string const bar = std::string(static_cast<std::size_t>(filled), '#') +
                          std::string(static_cast<std::size_t>(kWidth - filled), '.');
  double const mb = static_cast<double>(done_.load()) / 1e6;
  fmt::print(stderr, "\r{} [{}] {:5.1f}%  {:.0f} MB  {:.0f} MB/s{}", label_, bar, 100 * fraction, mb,
             seconds > 0 ? mb / seconds : 0.0, final ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace slidesparse::convert
