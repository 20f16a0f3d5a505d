/// \file error.hpp
/// \brief The one exception type of the library. The CLI maps its kind to an exit code.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace slidesparse {

/// Why an operation failed. The CLI maps kCheckFailed to exit code 1, everything else to 2.
enum class ErrorKind {
  kInvalidInput,  ///< malformed file, tensor that breaks a pattern, shape mismatch
  kUsage,         ///< bad option or argument
  kCheckFailed,   ///< a verification found a violation (not a malformed input)
  kIo,            ///< the operating system refused a read or write
  kInternal,      ///< a broken invariant of ours
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string const& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

/// Throw Error(kind, fmt::format(...)). Messages name what was wrong and where.
template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace slidesparse
