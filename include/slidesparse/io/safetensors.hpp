/// \file safetensors.hpp
/// \brief Strict, memory-mapped safetensors reader and atomic writer.
///
/// Format: 8-byte little-endian header length H, then H bytes of JSON
///   {"name": {"dtype": "BF16", "shape": [N, K], "data_offsets": [begin, end]}, ...,
///    "__metadata__": {"key": "value", ...}}
/// then the data section; offsets are relative to the data section's start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::io {

/// One tensor's header entry, validated.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  ///< byte offset in the data section
  std::uint64_t end = 0;    ///< one past the last byte
  std::uint64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
};

using Metadata = std::map<std::string, std::string>;

/// A read-only view of a safetensors file through mmap. Every tensor, its dtype, shape and
/// offsets are validated at open; errors name the file, the tensor and the byte offset.
class SafetensorsFile {
 public:
  static SafetensorsFile open(std::filesystem::path const& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  std::filesystem::path const& path() const noexcept;
  /// Tensors in data-offset order.
  std::vector<TensorInfo> const& tensors() const noexcept;
  /// nullptr if absent.
  TensorInfo const* find(std::string_view name) const noexcept;
  /// Throws Error(kInvalidInput) naming the file if absent.
  TensorInfo const& at(std::string_view name) const;
  /// The bytes of one tensor (not necessarily aligned for its dtype).
  std::span<std::byte const> bytes(TensorInfo const& info) const noexcept;
  Metadata const& metadata() const noexcept;
  std::uint64_t header_size() const noexcept;  ///< H, the JSON header's length in bytes
  std::uint64_t file_size() const noexcept;

 private:
  struct Impl;
  explicit SafetensorsFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// What a writer is told about a tensor before any data is written.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<std::int64_t> shape;
};

/// Writes a safetensors file atomically: the header is laid out from the specs (tensors packed
/// in the order given, header padded with spaces so the data section starts 8-byte aligned),
/// the file is created as '<path>.tmp-<random>' in the same folder and memory-mapped so that
/// several threads can fill tensors at once, and commit() flushes it and renames it over
/// <path>. Destroying a writer without commit() removes the temporary file: a failed run never
/// leaves a partial output behind.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path path, std::vector<TensorSpec> specs,
                    Metadata metadata = {});
  SafetensorsWriter(SafetensorsWriter&&) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) noexcept;
  ~SafetensorsWriter();

  std::size_t size() const noexcept;  ///< number of tensors
  TensorSpec const& spec(std::size_t index) const;
  /// Writable bytes of tensor `index`, numel*dtype_size of them. The data section starts 8-byte
  /// aligned; a tensor is aligned only as far as the sizes of the tensors before it allow (the
  /// format forbids holes). Throws Error(kUsage) for a bad index or name, or after commit().
  std::span<std::byte> bytes(std::size_t index);
  std::span<std::byte> bytes(std::string_view name);
  /// Flush, fsync, rename. Throws Error(kIo) on failure (the temporary file is then removed).
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A tensor held in memory, for small files and tests.
struct OwnedTensor {
  TensorSpec spec;
  std::vector<std::byte> data;
};

/// Convenience: write a whole file from in-memory tensors (atomic, like SafetensorsWriter).
void write_safetensors(std::filesystem::path const& path, std::vector<OwnedTensor> const& tensors,
                       Metadata const& metadata = {});

}  // namespace slidesparse::io
