/// \file progress.hpp
/// \brief A one-line progress bar on stderr, shown only when stderr is a terminal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace slidesparse::convert {

class Progress {
 public:
  /// total: units of work (bytes); label printed before the bar. Disabled when stderr is not a
  /// terminal or `enabled` is false, so logs and CI output stay clean.
  Progress(std::uint64_t total, std::string label, bool enabled = true);
  ~Progress();
  void advance(std::uint64_t units);
  void finish();

 private:
  void draw(bool final);
  std::uint64_t total_;
  std::string label_;
  bool enabled_;
  std::atomic<std::uint64_t> done_{0};
  std::mutex draw_mutex_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  bool finished_ = false;
};

}  // namespace slidesparse::convert
