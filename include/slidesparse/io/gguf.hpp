/// \file gguf.hpp
/// \brief Strict, memory-mapped GGUF (llama.cpp / ggml) reader: metadata, tensor infos, and
/// dequantization of F32, F16, BF16, Q4_0, Q4_1 and Q8_0 tensors to float32.
///
/// Format (versions 2 and 3, little endian; every field packed without alignment unless said):
///
///   offset 0   "GGUF"                     magic, the bytes 0x47 0x47 0x55 0x46
///          4   u32 version                2 or 3 (v3 only added big-endian files, refused here)
///          8   u64 tensor_count
///         16   u64 metadata_kv_count
///         24   metadata_kv_count × { string key; u32 value_type; value }
///              tensor_count × { string name; u32 n_dims; u64 ne[n_dims]; u32 ggml_type;
///                               u64 offset }
///              zero padding up to the next multiple of ALIGNMENT
///   data_offset  the data section; each tensor's `offset` is relative to it and a multiple of
///              ALIGNMENT = metadata `general.alignment` (UINT32), 32 when absent.
///
///   string = u64 byte length + that many bytes (no terminator)
///   value  = UINT8 INT8 UINT16 INT16 UINT32 INT32 FLOAT32 BOOL(1 byte, 0 or 1) STRING
///            UINT64 INT64 FLOAT64, or ARRAY = u32 element_type + u64 count + count values
///            (arrays may nest).
///
/// Tensor extents are ggml's `ne`: ne[0] is the innermost (contiguous) dimension. A weight
/// [N out, K in] in PyTorch's row-major terms has ne = {K, N}: N rows of K elements each, and
/// quantization blocks run along ne[0] (K). `GgufTensorInfo::shape()` gives the row-major view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace slidesparse::io {

// =============================================================================================
// Types
// =============================================================================================

/// Metadata value types (the u32 tag before every value).
enum class GgufType : std::uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

/// "UINT8", "STRING", "ARRAY", ...; "?" for a value outside the enum.
std::string_view gguf_type_name(GgufType type) noexcept;

/// Tensor element types (ggml_type). Ids the format has retired (4, 5, 31-33, 36-38) are absent.
enum class GgmlType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

/// What the reader knows about a ggml type. Elements are stored in blocks of `block_size`
/// along ne[0], each taking `block_bytes` bytes (1 and sizeof(element) for plain types), so a
/// row of ne[0] elements takes ne[0] / block_size * block_bytes bytes.
struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;      ///< "F32", "Q4_1", "Q6_K", ...
  std::uint32_t block_size;   ///< elements per block
  std::uint32_t block_bytes;  ///< bytes per block
  bool dequantizable;         ///< dequantize() supports it (F32 F16 BF16 Q4_0 Q4_1 Q8_0)
};

/// nullptr for an id that is not a known tensor type.
GgmlTypeInfo const* find_ggml_type(std::uint32_t id) noexcept;
/// The entry of a known type.
GgmlTypeInfo const& ggml_type_info(GgmlType type) noexcept;

// =============================================================================================
// Metadata and tensor infos
// =============================================================================================

/// One metadata value, validated at open: a view into the mapped file, valid while the
/// GgufFile that produced it lives. Read it through GgufFile's typed getters or
/// format_gguf_value().
struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType element_type = GgufType::kUint8;  ///< arrays only: the elements' type
  std::uint64_t count = 1;                   ///< arrays: number of elements; scalars: 1
  std::uint64_t offset = 0;  ///< absolute file offset of `bytes` (for error messages)
  /// The encoded value; for an array, its elements (after element type and count).
  std::span<std::byte const> bytes;
};

struct GgufMetadataEntry {
  std::string key;
  GgufValue value;
  std::uint64_t key_offset = 0;  ///< absolute file offset of the key's length field
};

/// The value as text: numbers, "true"/"false", quoted strings cut at 80 bytes, arrays as
/// "[a, b, ... (n elements)]" with at most `max_elements` shown. For logs and `inspect`.
std::string format_gguf_value(GgufValue const& value, std::size_t max_elements = 8);

/// One tensor's info record, validated.
struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  /// Extents, innermost first: ne[0] elements are contiguous (and hold whole quantization
  /// blocks). 1 to 4 entries, each >= 1. Element (i0, i1, i2, i3) is logical index
  /// i0 + ne0·(i1 + ne1·(i2 + ne2·i3)).
  std::vector<std::uint64_t> ne;
  std::uint64_t offset = 0;       ///< byte offset in the data section (a multiple of the alignment)
  std::uint64_t nbytes = 0;       ///< numel / block_size · block_bytes
  std::uint64_t info_offset = 0;  ///< absolute file offset of the info record (for messages)

  std::uint64_t numel() const noexcept;
  std::uint64_t row_length() const noexcept { return ne[0]; }  ///< elements per row (ne[0])
  std::uint64_t rows() const noexcept;                          ///< ne[1]·ne[2]·ne[3]
  std::uint64_t row_bytes() const noexcept;                     ///< bytes per row
  /// Row-major view, outermost first (ne reversed): a weight with ne = {K, N} is [N, K].
  std::vector<std::int64_t> shape() const;
};

// =============================================================================================
// The file
// =============================================================================================

/// A read-only view of a GGUF file through mmap. The header, every metadata value (types,
/// lengths, bools, nesting), every tensor info (name, extents, type, block divisibility,
/// alignment) and the data layout (inside the data section, no overlaps) are validated at open;
/// errors are Error(kInvalidInput) naming the file, the metadata key or tensor and the absolute
/// byte offset. Opening allocates in proportion to what the file really holds, never to a count
/// it claims. The mapping is read-only: every const member may run on several threads at once
/// (e.g. dequantize_rows over disjoint row ranges).
class GgufFile {
 public:
  static GgufFile open(std::filesystem::path const& path);

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  std::filesystem::path const& path() const noexcept;
  std::uint32_t version() const noexcept;       ///< 2 or 3
  std::uint64_t file_size() const noexcept;
  std::uint64_t alignment() const noexcept;     ///< general.alignment, or 32
  std::uint64_t data_offset() const noexcept;   ///< absolute offset of the data section

  // --- metadata ------------------------------------------------------------------------------
  /// Every entry, in file order.
  std::vector<GgufMetadataEntry> const& metadata() const noexcept;
  /// nullptr if absent.
  GgufMetadataEntry const* find_metadata(std::string_view key) const noexcept;
  bool has(std::string_view key) const noexcept { return find_metadata(key) != nullptr; }

  /// Typed getters: std::nullopt when the key is absent; Error(kInvalidInput) naming the file,
  /// key, offset and actual type when it holds another type.
  ///  - get_int: any of the eight integer types, widened (a UINT64 above INT64_MAX is an error);
  ///  - get_float: FLOAT32 (widened exactly) or FLOAT64;
  ///  - the array getters: an ARRAY of that kind (any integer type for get_int_array, FLOAT32 or
  ///    FLOAT64 for get_float_array); an empty array is fine.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<std::int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
  std::optional<std::vector<std::int64_t>> get_int_array(std::string_view key) const;
  std::optional<std::vector<double>> get_float_array(std::string_view key) const;

  /// As get_*, but a missing key is an Error(kInvalidInput) naming it too.
  std::string require_string(std::string_view key) const;
  std::int64_t require_int(std::string_view key) const;
  double require_float(std::string_view key) const;
  bool require_bool(std::string_view key) const;
  std::vector<std::string> require_string_array(std::string_view key) const;
  std::vector<std::int64_t> require_int_array(std::string_view key) const;
  std::vector<double> require_float_array(std::string_view key) const;

  // --- tensors -------------------------------------------------------------------------------
  /// Tensors in data-offset order.
  std::vector<GgufTensorInfo> const& tensors() const noexcept;
  /// nullptr if absent.
  GgufTensorInfo const* find(std::string_view name) const noexcept;
  /// Throws Error(kInvalidInput) naming the file if absent.
  GgufTensorInfo const& at(std::string_view name) const;
  /// The tensor's bytes in the data section. The mapping starts page aligned, so they are
  /// aligned to the file's alignment. Error(kUsage) for an info whose range is not inside this
  /// file's data section.
  std::span<std::byte const> bytes(GgufTensorInfo const& tensor) const;

  /// Every element of `tensor` as float32, in logical order (ne[0] fastest); out.size() must be
  /// numel(). Error(kInvalidInput) naming the tensor and its type when the type is not one
  /// dequantize supports (GgmlTypeInfo::dequantizable), Error(kUsage) on a size mismatch.
  void dequantize(GgufTensorInfo const& tensor, std::span<float> out) const;
  std::vector<float> dequantize(GgufTensorInfo const& tensor) const;
  /// Rows [row_begin, row_begin + row_count) of ne[0] elements each (a row starts on a block
  /// boundary, so this costs only the rows asked for); out.size() must be
  /// row_count · ne[0]. Error(kUsage) when the range leaves the tensor's rows().
  void dequantize_rows(GgufTensorInfo const& tensor, std::uint64_t row_begin,
                       std::uint64_t row_count, std::span<float> out) const;

 private:
  struct Impl;
  explicit GgufFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Decodes `data`, whole blocks of `type`, into out (out.size() elements, a multiple of the
/// block size, and data.size() == out.size() / block_size · block_bytes). `what` names the
/// source in errors. The block layouts (ggml's reference dequantization; d, m are FP16, and a
/// block's element j is out[block · 32 + j]):
///   F32, F16, BF16   one element per block, little endian
///   Q4_0  18 B: d, qs[16];      j < 16: (qs[j] & 0xF) − 8,  j >= 16: (qs[j−16] >> 4) − 8;  w = d·q
///   Q4_1  20 B: d, m, qs[16];   q as Q4_0 without the −8;                      w = d·q + m
///   Q8_0  34 B: d, int8 q[32];                                                 w = d·q[j]
/// Error(kInvalidInput) for a type outside these, Error(kUsage) on a size mismatch.
void dequantize_ggml(GgmlType type, std::span<std::byte const> data, std::span<float> out,
                     std::string_view what);

}  // namespace slidesparse::io
