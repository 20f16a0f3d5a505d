#include "file_util.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace slidesparse::io::detail {

std::string errno_text(int err) { return std::generic_category().message(err); }

FdGuard::~FdGuard() {
  if (fd_ >= 0) ::close(fd_);
}

MappedFile map_file_read_only(std::string const& file, std::uint64_t min_size, std::string_view too_small) {
  FdGuard fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail(ErrorKind::kIo, "{}: cannot open for reading: {}", file, errno_text(errno));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) fail(ErrorKind::kIo, "{}: cannot stat: {}", file, errno_text(errno));
  if (!S_ISREG(st.st_mode)) invalid(file, "not a regular file");
  auto const size = static_cast<std::uint64_t>(st.st_size);
  if (size < min_size) invalid(file, "file has {} bytes; {}", size, too_small);
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (mapped == MAP_FAILED) fail(ErrorKind::kIo, "{}: cannot mmap {} bytes: {}", file, size, errno_text(errno));
  return {static_cast<std::byte const*>(mapped), size};
}

void unmap_file(std::byte const* base, std::uint64_t size) noexcept {
  if (base != nullptr) ::munmap(const_cast<std::byte*>(base), size);
}

}  // namespace slidesparse::io::detail
