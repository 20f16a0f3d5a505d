/// \file file_util.hpp
/// \brief Internal helpers shared by the io readers (safetensors, GGUF): error messages that
/// start with the file, a descriptor guard, and a read-only whole-file mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::io::detail {

std::string errno_text(int err);

/// Throw Error(kInvalidInput) with the file's path in front of the message.
template <typename... Args>
[[noreturn]] void invalid(std::string const& file, fmt::format_string<Args...> format, Args&&... args) {
  fail(ErrorKind::kInvalidInput, "{}: {}", file, fmt::format(format, std::forward<Args>(args)...));
}

/// Closes a file descriptor when it goes out of scope.
class FdGuard {
 public:
  explicit FdGuard(int fd) noexcept : fd_(fd) {}
  FdGuard(FdGuard const&) = delete;
  FdGuard& operator=(FdGuard const&) = delete;
  ~FdGuard();
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

/// A whole regular file mapped read-only (MAP_PRIVATE); the caller unmaps it with
/// unmap_file(base, size). Errors: kIo when the file cannot be opened, stat'ed or mapped;
/// kInvalidInput "not a regular file", or "file has N bytes; <too_small>" below min_size.
struct MappedFile {
  std::byte const* base = nullptr;
  std::uint64_t size = 0;
};
MappedFile map_file_read_only(std::string const& file, std::uint64_t min_size, std::string_view too_small);
void unmap_file(std::byte const* base, std::uint64_t size) noexcept;

}  // namespace slidesparse::io::detail
