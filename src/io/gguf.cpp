#include "slidesparse/io/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "file_util.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"

namespace slidesparse::io {

// Values and tensor data are read in place from the mapping with memcpy loads (numeric.hpp's
// load<T>), which is only right on a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "the GGUF reader loads little-endian file data in place");

namespace {

using detail::errno_text;
using detail::FdGuard;
using detail::invalid;

constexpr std::uint64_t kHeaderBytes = 24;  // magic, version, tensor_count, metadata_kv_count
constexpr std::uint64_t kDefaultAlignment = 32;
constexpr std::string_view kAlignmentKey = "general.alignment";
// Limits from the specification: keys at most 65535 bytes, tensor names at most 64 bytes
// (ggml's GGML_MAX_NAME), at most 4 dimensions (GGML_MAX_DIMS).
constexpr std::uint64_t kMaxKeyBytes = 65535;
constexpr std::uint64_t kMaxTensorNameBytes = 64;
constexpr std::uint32_t kMaxDims = 4;
// Arrays may nest; real files never go past one level. The cap keeps a hostile file of nested
// array headers from recursing the stack away.
constexpr int kMaxArrayDepth = 8;
// The smallest encodings, used to reject a count the rest of the file cannot hold before any
// element is parsed: a key/value pair is a non-empty key (8 + 1), a type (4) and at least one
// byte of value; a tensor info is a non-empty name (8 + 1), n_dims (4), one extent (8), a type
// (4) and an offset (8).
constexpr std::uint64_t kMinKeyValueBytes = 8 + 1 + 4 + 1;
constexpr std::uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
constexpr std::uint64_t kMinStringBytes = 8;      // an empty string: its length field
constexpr std::uint64_t kMinArrayBytes = 4 + 8;   // an empty array: element type and count
constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();
constexpr std::uint64_t kI64Max =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());



/// Text from the file for a message: printable ASCII kept, other bytes as \xNN, cut at 80 bytes
/// so a hostile megabyte-long name cannot flood the terminal.
std::string printable(std::string_view text) {
  constexpr std::size_t kMax = 80;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    auto const c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (text.size() > kMax) out += fmt::format("...({} bytes)", text.size());
  return out;
}


// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

constexpr std::uint32_t kLastValueType = static_cast<std::uint32_t>(GgufType::kFloat64);

/// Bytes of one scalar of a fixed-size type; 0 for STRING and ARRAY.
std::uint64_t fixed_size(GgufType type) noexcept {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool: return 1;
    case GgufType::kUint16:
    case GgufType::kInt16: return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32: return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64: return 8;
    case GgufType::kString:
    case GgufType::kArray: return 0;
  }
  return 0;
}

bool is_integer(GgufType type) noexcept {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64: return true;
    default: return false;
  }
}

bool is_float(GgufType type) noexcept {
  return type == GgufType::kFloat32 || type == GgufType::kFloat64;
}

/// "UINT32", or "ARRAY of STRING" for arrays.
std::string describe_type(GgufValue const& value) {
  if (value.type != GgufType::kArray) return std::string(gguf_type_name(value.type));
  return fmt::format("ARRAY of {}", gguf_type_name(value.element_type));
}

// ---------------------------------------------------------------------------------------------
// Decoding validated values. These walk bytes that open() has already checked, so they need no
// bounds checks of their own.
// ---------------------------------------------------------------------------------------------

/// The number stored at p, of integer type `type`, as a u64 bit pattern plus its sign:
/// signed types are sign-extended into `value` and `negative` says whether it is below zero.
struct DecodedInteger {
  std::uint64_t value;
  bool negative;
};

DecodedInteger decode_integer(GgufType type, std::byte const* p) noexcept {
  auto const from_signed = [](std::int64_t v) {
    return DecodedInteger{static_cast<std::uint64_t>(v), v < 0};
  };
  switch (type) {
    case GgufType::kUint8: return {load<std::uint8_t>(p), false};
    case GgufType::kInt8: return from_signed(load<std::int8_t>(p));
    case GgufType::kUint16: return {load<std::uint16_t>(p), false};
    case GgufType::kInt16: return from_signed(load<std::int16_t>(p));
    case GgufType::kUint32: return {load<std::uint32_t>(p), false};
    case GgufType::kInt32: return from_signed(load<std::int32_t>(p));
    case GgufType::kUint64: return {load<std::uint64_t>(p), false};
    case GgufType::kInt64: return from_signed(load<std::int64_t>(p));
    default: return {0, false};
  }
}

double decode_float(GgufType type, std::byte const* p) noexcept {
  return type == GgufType::kFloat32 ? static_cast<double>(load<float>(p)) : load<double>(p);
}

/// A string at p (u64 length + bytes), and the bytes it takes.
std::string_view decode_string(std::byte const* p, std::uint64_t& encoded_size) noexcept {
  auto const length = load<std::uint64_t>(p);
  encoded_size = 8 + length;
  return {reinterpret_cast<char const*>(p + 8), static_cast<std::size_t>(length)};
}

/// Bytes taken by one validated value of `type` at p (for arrays: type, count and elements).
std::uint64_t encoded_size(GgufType type, std::byte const* p) noexcept {
  if (auto const size = fixed_size(type); size != 0) return size;
  if (type == GgufType::kString) return 8 + load<std::uint64_t>(p);
  // ARRAY: element type, count, then the elements.
  auto const element_type = static_cast<GgufType>(load<std::uint32_t>(p));
  auto const count = load<std::uint64_t>(p + 4);
  if (auto const size = fixed_size(element_type); size != 0) return kMinArrayBytes + count * size;
  std::uint64_t total = kMinArrayBytes;
  for (std::uint64_t i = 0; i < count; ++i) total += encoded_size(element_type, p + total);
  return total;
}

void format_scalar(std::string& out, GgufType type, std::byte const* p) {
  switch (type) {
    case GgufType::kFloat32: out += fmt::format("{}", load<float>(p)); return;
    case GgufType::kFloat64: out += fmt::format("{}", load<double>(p)); return;
    case GgufType::kBool: out += load<std::uint8_t>(p) != 0 ? "true" : "false"; return;
    case GgufType::kString: {
      std::uint64_t size = 0;
      out += fmt::format("\"{}\"", printable(decode_string(p, size)));
      return;
    }
    default: {
      auto const number = decode_integer(type, p);
      out += number.negative ? fmt::format("{}", static_cast<std::int64_t>(number.value))
                             : fmt::format("{}", number.value);
    }
  }
}

void format_array(std::string& out, GgufType element_type, std::uint64_t count,
                  std::byte const* elements, std::size_t max_elements) {
  out += '[';
  std::uint64_t pos = 0;
  for (std::uint64_t i = 0; i < count && i < max_elements; ++i) {
    if (i > 0) out += ", ";
    auto const* p = elements + pos;
    if (element_type == GgufType::kArray) {
      format_array(out, static_cast<GgufType>(load<std::uint32_t>(p)), load<std::uint64_t>(p + 4),
                   p + kMinArrayBytes, max_elements);
    } else {
      format_scalar(out, element_type, p);
    }
    pos += encoded_size(element_type, p);
  }
  if (count > max_elements) out += fmt::format(", ... ({} elements)", count);
  out += ']';
}

// ---------------------------------------------------------------------------------------------
// Parsing with bounds checks
// ---------------------------------------------------------------------------------------------

/// A bounds-checked read position in the mapped file. Every failure names the file, what was
/// being read (`context`: "header", "metadata key 'x'", "tensor info 3 'name'"; `what`: the
/// field) and the absolute byte offset.
class Cursor {
 public:
  Cursor(std::string const& file, std::byte const* base, std::uint64_t size) noexcept
      : file_(file), base_(base), size_(size) {}

  std::string const& file() const noexcept { return file_; }
  std::uint64_t pos() const noexcept { return pos_; }
  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t remaining() const noexcept { return size_ - pos_; }
  std::byte const* at(std::uint64_t offset) const noexcept { return base_ + offset; }

  [[noreturn]] void truncated(std::uint64_t n, std::string_view context,
                              std::string_view what) const {
    invalid(file_, "{}: {} at byte offset {} needs {} bytes, but the file ends at byte {}",
            context, what, pos_, n, size_);
  }

  /// Moves past n bytes and returns where they start.
  std::byte const* take(std::uint64_t n, std::string_view context, std::string_view what) {
    if (n > remaining()) truncated(n, context, what);
    auto const* p = base_ + pos_;
    pos_ += n;
    return p;
  }

  template <typename T>
  T read(std::string_view context, std::string_view what) {
    return load<T>(take(sizeof(T), context, what));
  }

  /// A GGUF string: u64 length (at most max_length) + bytes.
  std::string_view read_string(std::string_view context, std::string_view what,
                               std::uint64_t max_length) {
    auto const length_offset = pos_;
    auto const length = read<std::uint64_t>(context, fmt::format("length of the {}", what));
    if (length > max_length) {
      invalid(file_, "{}: the {} at byte offset {} is {} bytes long; the limit is {}", context,
              what, length_offset, length, max_length);
    }
    auto const* p = take(length, context, what);
    return {reinterpret_cast<char const*>(p), static_cast<std::size_t>(length)};
  }

 private:
  std::string const& file_;
  std::byte const* base_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
};

/// The u32 type tag at the cursor, checked against the known value types.
GgufType read_value_type(Cursor& c, std::string_view context, std::string_view what) {
  auto const offset = c.pos();
  auto const raw = c.read<std::uint32_t>(context, what);
  if (raw > kLastValueType) {
    invalid(c.file(), "{}: {} {} at byte offset {} is not a GGUF value type (0..{})", context,
            what, raw, offset, kLastValueType);
  }
  return static_cast<GgufType>(raw);
}

/// Validates one value of `type` at the cursor and moves past it. Arrays recurse, `depth`
/// levels deep so far.
void skip_value(Cursor& c, GgufType type, std::string_view context, int depth);

/// Validates `count` elements of `element_type` at the cursor (an array's body).
void skip_elements(Cursor& c, GgufType element_type, std::uint64_t count,
                   std::string_view context, int depth) {
  auto const start = c.pos();
  if (auto const size = fixed_size(element_type); size != 0) {
    // count·size without overflow: compare count against what the rest of the file can hold.
    if (count > c.remaining() / size) {
      invalid(c.file(), "{}: an array of {} {} elements at byte offset {} needs {} bytes per "
              "element, but only {} bytes remain in the file", context, count,
              gguf_type_name(element_type), start, size, c.remaining());
    }
    auto const* p = c.take(count * size, context, "array elements");
    if (element_type == GgufType::kBool) {
      for (std::uint64_t i = 0; i < count; ++i) {
        auto const byte = std::to_integer<unsigned>(p[i]);
        if (byte > 1) {
          invalid(c.file(), "{}: BOOL array element {} at byte offset {} is {}; a bool is 0 or 1",
                  context, i, start + i, byte);
        }
      }
    }
    return;
  }
  auto const min_size = element_type == GgufType::kString ? kMinStringBytes : kMinArrayBytes;
  if (count > c.remaining() / min_size) {
    invalid(c.file(), "{}: an array of {} {} elements at byte offset {} cannot fit: each takes at "
            "least {} bytes and only {} bytes remain in the file", context, count,
            gguf_type_name(element_type), start, min_size, c.remaining());
  }
  for (std::uint64_t i = 0; i < count; ++i) {
    if (element_type == GgufType::kString) {
      if (c.remaining() < 8) c.truncated(8, context, fmt::format("length of array element {}", i));
      auto const length = load<std::uint64_t>(c.at(c.pos()));
      if (length > c.remaining() - 8) {
        invalid(c.file(), "{}: string array element {} at byte offset {} claims {} bytes, but "
                "only {} bytes remain in the file", context, i, c.pos(), length,
                c.remaining() - 8);
      }
      c.take(8 + length, context, "string");
    } else {
      skip_value(c, element_type, context, depth);
    }
  }
}

void skip_value(Cursor& c, GgufType type, std::string_view context, int depth) {
  if (auto const size = fixed_size(type); size != 0) {
    auto const offset = c.pos();
    auto const* p = c.take(size, context, fmt::format("{} value", gguf_type_name(type)));
    if (type == GgufType::kBool && std::to_integer<unsigned>(*p) > 1) {
      invalid(c.file(), "{}: BOOL value at byte offset {} is {}; a bool is 0 or 1", context,
              offset, std::to_integer<unsigned>(*p));
    }
    return;
  }
  if (type == GgufType::kString) {
    c.read_string(context, "string value", kU64Max);
    return;
  }
  // ARRAY
  auto const offset = c.pos();
  if (depth >= kMaxArrayDepth) {
    invalid(c.file(), "{}: arrays nest deeper than {} levels at byte offset {}", context,
            kMaxArrayDepth, offset);
  }
  auto const element_type = read_value_type(c, context, "array element type");
  auto const count = c.read<std::uint64_t>(context, "array length");
  skip_elements(c, element_type, count, context, depth + 1);
}

/// Parses and validates one metadata value whose type tag is at the cursor.
GgufValue parse_value(Cursor& c, std::string_view context) {
  GgufValue value;
  value.type = read_value_type(c, context, "value type");
  if (value.type == GgufType::kArray) {
    value.element_type = read_value_type(c, context, "array element type");
    value.count = c.read<std::uint64_t>(context, "array length");
    value.offset = c.pos();
    skip_elements(c, value.element_type, value.count, context, 1);
  } else {
    value.offset = c.pos();
    skip_value(c, value.type, context, 0);
  }
  value.bytes = {c.at(value.offset), static_cast<std::size_t>(c.pos() - value.offset)};
  return value;
}

/// Metadata keys: non-empty printable ASCII (the specification asks for ASCII
/// lower_snake_case segments joined by '.'; only the ASCII part is enforced, so an odd but
/// harmless key does not make a model unreadable).
void check_key(Cursor const& c, std::string_view key, std::uint64_t key_offset) {
  if (key.empty()) invalid(c.file(), "metadata key at byte offset {} is empty", key_offset);
  for (auto const ch : key) {
    auto const byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte >= 0x7F) {
      invalid(c.file(), "metadata key '{}' at byte offset {} is not printable ASCII",
              printable(key), key_offset);
    }
  }
}

/// a * b, or false on u64 overflow.
bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& product) noexcept {
  if (a != 0 && b > kU64Max / a) return false;
  product = a * b;
  return true;
}

// ---------------------------------------------------------------------------------------------
// ggml types
// ---------------------------------------------------------------------------------------------

// Block sizes and bytes per block, as the ggml headers declare them (block_q4_0 = fp16 d +
// 16 bytes of nibbles = 18 bytes for 32 elements, K-quants 256 elements per super-block, ...).
constexpr std::array kGgmlTypes = {
    GgmlTypeInfo{GgmlType::kF32, "F32", 1, 4, true},
    GgmlTypeInfo{GgmlType::kF16, "F16", 1, 2, true},
    GgmlTypeInfo{GgmlType::kQ4_0, "Q4_0", 32, 18, true},
    GgmlTypeInfo{GgmlType::kQ4_1, "Q4_1", 32, 20, true},
    GgmlTypeInfo{GgmlType::kQ5_0, "Q5_0", 32, 22, false},
    GgmlTypeInfo{GgmlType::kQ5_1, "Q5_1", 32, 24, false},
    GgmlTypeInfo{GgmlType::kQ8_0, "Q8_0", 32, 34, true},
    GgmlTypeInfo{GgmlType::kQ8_1, "Q8_1", 32, 36, false},
    GgmlTypeInfo{GgmlType::kQ2_K, "Q2_K", 256, 84, false},
    GgmlTypeInfo{GgmlType::kQ3_K, "Q3_K", 256, 110, false},
    GgmlTypeInfo{GgmlType::kQ4_K, "Q4_K", 256, 144, false},
    GgmlTypeInfo{GgmlType::kQ5_K, "Q5_K", 256, 176, false},
    GgmlTypeInfo{GgmlType::kQ6_K, "Q6_K", 256, 210, false},
    GgmlTypeInfo{GgmlType::kQ8_K, "Q8_K", 256, 292, false},
    GgmlTypeInfo{GgmlType::kIQ2_XXS, "IQ2_XXS", 256, 66, false},
    GgmlTypeInfo{GgmlType::kIQ2_XS, "IQ2_XS", 256, 74, false},
    GgmlTypeInfo{GgmlType::kIQ3_XXS, "IQ3_XXS", 256, 98, false},
    GgmlTypeInfo{GgmlType::kIQ1_S, "IQ1_S", 256, 50, false},
    GgmlTypeInfo{GgmlType::kIQ4_NL, "IQ4_NL", 32, 18, false},
    GgmlTypeInfo{GgmlType::kIQ3_S, "IQ3_S", 256, 110, false},
    GgmlTypeInfo{GgmlType::kIQ2_S, "IQ2_S", 256, 82, false},
    GgmlTypeInfo{GgmlType::kIQ4_XS, "IQ4_XS", 256, 136, false},
    GgmlTypeInfo{GgmlType::kI8, "I8", 1, 1, false},
    GgmlTypeInfo{GgmlType::kI16, "I16", 1, 2, false},
    GgmlTypeInfo{GgmlType::kI32, "I32", 1, 4, false},
    GgmlTypeInfo{GgmlType::kI64, "I64", 1, 8, false},
    GgmlTypeInfo{GgmlType::kF64, "F64", 1, 8, false},
    GgmlTypeInfo{GgmlType::kIQ1_M, "IQ1_M", 256, 56, false},
    GgmlTypeInfo{GgmlType::kBF16, "BF16", 1, 2, true},
    GgmlTypeInfo{GgmlType::kTQ1_0, "TQ1_0", 256, 54, false},
    GgmlTypeInfo{GgmlType::kTQ2_0, "TQ2_0", 256, 66, false},
    GgmlTypeInfo{GgmlType::kMXFP4, "MXFP4", 32, 17, false},
};

std::string dequantizable_names();

/// The entry of `type`, or Error(kInvalidInput) naming `what` when dequantize cannot decode it.
GgmlTypeInfo const& require_dequantizable(GgmlType type, std::string_view what) {
  auto const* info = find_ggml_type(static_cast<std::uint32_t>(type));
  if (info == nullptr || !info->dequantizable) {
    fail(ErrorKind::kInvalidInput, "{}: ggml type {} ({}) cannot be dequantized (supported: {})",
         what, info != nullptr ? info->name : "unknown", static_cast<std::uint32_t>(type),
         dequantizable_names());
  }
  return *info;
}

std::string dequantizable_names() {
  std::string names;
  for (auto const& info : kGgmlTypes) {
    if (!info.dequantizable) continue;
    if (!names.empty()) names += ", ";
    names += info.name;
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Dequantization kernels. `out` holds whole blocks; `in` their bytes.
// ---------------------------------------------------------------------------------------------

constexpr std::size_t kQBlock = 32;  // elements per Q4_0 / Q4_1 / Q8_0 block

// Q4_0, 18 bytes per block of 32:  [0,2) d (FP16) | [2,18) qs[16]
//   element j < 16: q = qs[j] & 0xF;  element j >= 16: q = qs[j − 16] >> 4;  w = d·(q − 8)
// (the low nibbles of the 16 bytes are elements 0..15, the high nibbles 16..31, as in ggml's
// dequantize_row_q4_0). d·(q − 8) is exact in float: an 11-bit significand times a 4-bit integer.
void dequantize_q4_0(std::byte const* in, float* out, std::size_t blocks) noexcept {
  for (std::size_t b = 0; b < blocks; ++b, in += 18, out += kQBlock) {
    float const d = fp16_to_float(fp16_t{load<std::uint16_t>(in)});
    auto const* qs = in + 2;
    for (std::size_t j = 0; j < kQBlock / 2; ++j) {
      auto const byte = std::to_integer<int>(qs[j]);
      out[j] = d * static_cast<float>((byte & 0xF) - 8);
      out[j + kQBlock / 2] = d * static_cast<float>((byte >> 4) - 8);
    }
  }
}

// Q4_1, 20 bytes per block of 32:  [0,2) d (FP16) | [2,4) m (FP16) | [4,20) qs[16]
//   q as in Q4_0 (without the −8);  w = d·q + m
// d·q is exact (11 × 4 significand bits), so w is the single rounding of the exact d·q + m
// whether or not the compiler contracts it into an FMA: the result does not depend on it.
void dequantize_q4_1(std::byte const* in, float* out, std::size_t blocks) noexcept {
  for (std::size_t b = 0; b < blocks; ++b, in += 20, out += kQBlock) {
    float const d = fp16_to_float(fp16_t{load<std::uint16_t>(in)});
    float const m = fp16_to_float(fp16_t{load<std::uint16_t>(in + 2)});
    auto const* qs = in + 4;
    for (std::size_t j = 0; j < kQBlock / 2; ++j) {
      auto const byte = std::to_integer<int>(qs[j]);
      out[j] = d * static_cast<float>(byte & 0xF) + m;
      out[j + kQBlock / 2] = d * static_cast<float>(byte >> 4) + m;
    }
  }
}

// Q8_0, 34 bytes per block of 32:  [0,2) d (FP16) | [2,34) q[32] (int8);  w = d·q[j]
// Exact in float: an 11-bit significand times an 8-bit integer.
void dequantize_q8_0(std::byte const* in, float* out, std::size_t blocks) noexcept {
  for (std::size_t b = 0; b < blocks; ++b, in += 34, out += kQBlock) {
    float const d = fp16_to_float(fp16_t{load<std::uint16_t>(in)});
    for (std::size_t j = 0; j < kQBlock; ++j) {
      out[j] = d * static_cast<float>(load<std::int8_t>(in + 2 + j));
    }
  }
}

/// Decodes n elements (whole blocks) of a dequantizable type; sizes already checked.
void decode_blocks(GgmlType type, std::byte const* in, float* out, std::size_t n) noexcept {
  switch (type) {
    case GgmlType::kF32:
      for (std::size_t i = 0; i < n; ++i) out[i] = load<float>(in + 4 * i);
      return;
    case GgmlType::kF16:
      for (std::size_t i = 0; i < n; ++i) {
        out[i] = fp16_to_float(fp16_t{load<std::uint16_t>(in + 2 * i)});
      }
      return;
    case GgmlType::kBF16:
      for (std::size_t i = 0; i < n; ++i) {
        out[i] = bf16_to_float(bf16_t{load<std::uint16_t>(in + 2 * i)});
      }
      return;
    case GgmlType::kQ4_0: dequantize_q4_0(in, out, n / kQBlock); return;
    case GgmlType::kQ4_1: dequantize_q4_1(in, out, n / kQBlock); return;
    case GgmlType::kQ8_0: dequantize_q8_0(in, out, n / kQBlock); return;
    default: return;  // unreachable: callers pass only types marked dequantizable in kGgmlTypes
  }
}

}  // namespace

// =============================================================================================
// Free functions
// =============================================================================================

std::string_view gguf_type_name(GgufType type) noexcept {
  switch (type) {
    case GgufType::kUint8: return "UINT8";
    case GgufType::kInt8: return "INT8";
    case GgufType::kUint16: return "UINT16";
    case GgufType::kInt16: return "INT16";
    case GgufType::kUint32: return "UINT32";
    case GgufType::kInt32: return "INT32";
    case GgufType::kFloat32: return "FLOAT32";
    case GgufType::kBool: return "BOOL";
    case GgufType::kString: return "STRING";
    case GgufType::kArray: return "ARRAY";
    case GgufType::kUint64: return "UINT64";
    case GgufType::kInt64: return "INT64";
    case GgufType::kFloat64: return "FLOAT64";
  }
  return "?";
}

GgmlTypeInfo const* find_ggml_type(std::uint32_t id) noexcept {
  for (auto const& info : kGgmlTypes) {
    if (static_cast<std::uint32_t>(info.type) == id) return &info;
  }
  return nullptr;
}

GgmlTypeInfo const& ggml_type_info(GgmlType type) noexcept {
  // Every enumerator has a table entry (checked by the tests), so this never falls through.
  auto const* info = find_ggml_type(static_cast<std::uint32_t>(type));
  return info != nullptr ? *info : kGgmlTypes[0];
}

std::string format_gguf_value(GgufValue const& value, std::size_t max_elements) {
  std::string out;
  if (value.type == GgufType::kArray) {
    format_array(out, value.element_type, value.count, value.bytes.data(), max_elements);
  } else {
    format_scalar(out, value.type, value.bytes.data());
  }
  return out;
}

void dequantize_ggml(GgmlType type, std::span<std::byte const> data, std::span<float> out,
                     std::string_view what) {
  auto const& info = require_dequantizable(type, what);
  if (out.size() % info.block_size != 0 ||
      data.size() != out.size() / info.block_size * info.block_bytes) {
    fail(ErrorKind::kUsage, "{}: {} {} elements need {} bytes in whole blocks of {}, got {} bytes",
         what, out.size(), info.name, out.size() / info.block_size * info.block_bytes,
         info.block_size, data.size());
  }
  decode_blocks(type, data.data(), out.data(), out.size());
}

// =============================================================================================
// GgufTensorInfo
// =============================================================================================

std::uint64_t GgufTensorInfo::numel() const noexcept {
  std::uint64_t n = 1;
  for (auto const extent : ne) n *= extent;
  return n;
}

std::uint64_t GgufTensorInfo::rows() const noexcept { return numel() / ne[0]; }

std::uint64_t GgufTensorInfo::row_bytes() const noexcept {
  auto const& info = ggml_type_info(type);
  return ne[0] / info.block_size * info.block_bytes;
}

std::vector<std::int64_t> GgufTensorInfo::shape() const {
  std::vector<std::int64_t> shape;
  for (auto it = ne.rbegin(); it != ne.rend(); ++it) {
    shape.push_back(static_cast<std::int64_t>(*it));
  }
  return shape;
}

// =============================================================================================
// GgufFile
// =============================================================================================

struct GgufFile::Impl {
  std::filesystem::path path;
  std::string file;                 // path as text, for messages
  std::byte const* base = nullptr;  // the whole file, mapped read-only
  std::uint64_t size = 0;
  std::uint32_t version = 0;
  std::uint64_t alignment = kDefaultAlignment;
  std::uint64_t data_offset = 0;
  std::uint64_t data_size = 0;
  std::vector<GgufMetadataEntry> metadata;                       // file order
  std::map<std::string, std::size_t, std::less<>> metadata_index;  // key -> position
  std::vector<GgufTensorInfo> tensors;                           // data-offset order
  std::map<std::string, std::size_t, std::less<>> tensor_index;  // name -> position

  Impl() = default;
  Impl(Impl const&) = delete;
  Impl& operator=(Impl const&) = delete;
  ~Impl() {
    detail::unmap_file(base, size);
  }

  void parse();
  void parse_metadata(Cursor& c, std::uint64_t count);
  void parse_tensor_infos(Cursor& c, std::uint64_t count);
  void check_layout();

  /// The entry of `key`, nullptr if absent.
  GgufMetadataEntry const* lookup(std::string_view key) const noexcept {
    auto const it = metadata_index.find(key);
    return it == metadata_index.end() ? nullptr : &metadata[it->second];
  }
  [[noreturn]] void wrong_type(GgufMetadataEntry const& entry, std::string_view expected) const {
    invalid(file, "metadata key '{}' (value at byte offset {}) holds {}, not {}", entry.key,
            entry.value.offset, describe_type(entry.value), expected);
  }
  [[noreturn]] void missing(std::string_view key, std::string_view expected) const {
    invalid(file, "required metadata key '{}' ({}) is absent", key, expected);
  }
  /// An integer element at p, widened to int64 (a UINT64 above INT64_MAX is an error).
  std::int64_t widen(GgufMetadataEntry const& entry, GgufType type, std::byte const* p) const {
    auto const number = decode_integer(type, p);
    if (!number.negative && number.value > kI64Max) {
      invalid(file, "metadata key '{}' (value at byte offset {}) holds {} {}, which does not fit "
              "a signed 64-bit integer", entry.key, entry.value.offset, gguf_type_name(type),
              number.value);
    }
    return static_cast<std::int64_t>(number.value);
  }
};

void GgufFile::Impl::parse() {
  Cursor c(file, base, size);
  // --- header ---
  auto const* magic = c.take(4, "header", "magic");
  if (std::to_integer<char>(magic[0]) != 'G' || std::to_integer<char>(magic[1]) != 'G' ||
      std::to_integer<char>(magic[2]) != 'U' || std::to_integer<char>(magic[3]) != 'F') {
    invalid(file, "header: magic at byte offset 0 is '{}', not 'GGUF'; not a GGUF file",
            printable({reinterpret_cast<char const*>(magic), 4}));
  }
  version = c.read<std::uint32_t>("header", "version");
  if (version != 2 && version != 3) {
    auto const swapped = ((version & 0xFFu) << 24) | ((version & 0xFF00u) << 8) |
                         ((version >> 8) & 0xFF00u) | (version >> 24);
    if (swapped == 2 || swapped == 3) {
      invalid(file, "header: version at byte offset 4 reads {} little endian, {} big endian: a "
              "big-endian GGUF file, which this reader does not support", version, swapped);
    }
    invalid(file, "header: version {} at byte offset 4 is not supported (versions 2 and 3 are; "
            "version 1 had 32-bit counts)", version);
  }
  auto const tensor_count = c.read<std::uint64_t>("header", "tensor_count");
  auto const kv_count = c.read<std::uint64_t>("header", "metadata_kv_count");
  // Counts are checked against the bytes left before anything is parsed, and nothing is
  // reserved from them: memory grows only with what is actually in the file.
  if (kv_count > c.remaining() / kMinKeyValueBytes) {
    invalid(file, "header: metadata_kv_count {} at byte offset 16 cannot fit: a key/value pair "
            "takes at least {} bytes and {} bytes follow the header", kv_count, kMinKeyValueBytes,
            c.remaining());
  }
  if (tensor_count > c.remaining() / kMinTensorInfoBytes) {
    invalid(file, "header: tensor_count {} at byte offset 8 cannot fit: a tensor info takes at "
            "least {} bytes and {} bytes follow the header", tensor_count, kMinTensorInfoBytes,
            c.remaining());
  }
  parse_metadata(c, kv_count);
  parse_tensor_infos(c, tensor_count);

  // --- data section: the first multiple of the alignment at or after the tensor infos ---
  auto const end_of_infos = c.pos();
  data_offset = end_of_infos + (alignment - end_of_infos % alignment) % alignment;
  if (data_offset > size) {
    if (!tensors.empty()) {
      invalid(file, "the data section would start at byte offset {} (tensor infos end at {}, "
              "aligned to {}), past the end of the file at byte {}", data_offset, end_of_infos,
              alignment, size);
    }
    data_offset = size;  // no tensors: a file may end right after its metadata
  }
  data_size = size - data_offset;
  check_layout();
}

void GgufFile::Impl::parse_metadata(Cursor& c, std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i) {
    auto const key_offset = c.pos();
    auto const context = fmt::format("metadata entry {}", i);
    std::string key(c.read_string(context, "key", kMaxKeyBytes));
    check_key(c, key, key_offset);
    auto value = parse_value(c, fmt::format("metadata key '{}'", key));
    auto const [it, inserted] = metadata_index.emplace(key, metadata.size());
    if (!inserted) {
      invalid(file, "metadata key '{}' at byte offset {} repeats the key at byte offset {}", key,
              key_offset, metadata[it->second].key_offset);
    }
    metadata.push_back(GgufMetadataEntry{std::move(key), value, key_offset});
  }

  if (auto const* entry = lookup(kAlignmentKey); entry != nullptr) {
    if (entry->value.type != GgufType::kUint32) wrong_type(*entry, "UINT32");
    alignment = load<std::uint32_t>(entry->value.bytes.data());
    if (alignment == 0 || alignment % 8 != 0) {
      invalid(file, "metadata key '{}' (value at byte offset {}) is {}; the alignment must be a "
              "positive multiple of 8", kAlignmentKey, entry->value.offset, alignment);
    }
  }
}

void GgufFile::Impl::parse_tensor_infos(Cursor& c, std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i) {
    GgufTensorInfo info;
    info.info_offset = c.pos();
    auto const name_context = fmt::format("tensor info {} (byte offset {})", i, info.info_offset);
    info.name = c.read_string(name_context, "name", kMaxTensorNameBytes);
    if (info.name.empty()) invalid(file, "{}: the tensor name is empty", name_context);
    auto const context = fmt::format("tensor '{}' (info at byte offset {})", printable(info.name),
                                     info.info_offset);

    auto const dims_offset = c.pos();
    auto const n_dims = c.read<std::uint32_t>(context, "n_dims");
    if (n_dims < 1 || n_dims > kMaxDims) {
      invalid(file, "{}: n_dims {} at byte offset {} is outside 1..{}", context, n_dims,
              dims_offset, kMaxDims);
    }
    std::uint64_t numel = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      auto const extent_offset = c.pos();
      auto const extent = c.read<std::uint64_t>(context, fmt::format("ne[{}]", d));
      if (extent == 0) {
        invalid(file, "{}: ne[{}] at byte offset {} is 0; extents must be at least 1", context, d,
                extent_offset);
      }
      // ggml counts elements in int64: the product must stay at or below INT64_MAX.
      if (!checked_mul(numel, extent, numel) || numel > kI64Max) {
        invalid(file, "{}: extents up to ne[{}] = {} (byte offset {}) overflow a 64-bit element "
                "count", context, d, extent, extent_offset);
      }
      info.ne.push_back(extent);
    }

    auto const type_offset = c.pos();
    auto const type_id = c.read<std::uint32_t>(context, "ggml type");
    auto const* type = find_ggml_type(type_id);
    if (type == nullptr) {
      invalid(file, "{}: ggml type {} at byte offset {} is not a known tensor type", context,
              type_id, type_offset);
    }
    info.type = type->type;
    if (info.ne[0] % type->block_size != 0) {
      invalid(file, "{}: ne[0] = {} is not a multiple of the {} block size {}", context,
              info.ne[0], type->name, type->block_size);
    }
    // numel / block_size · block_bytes: numel <= 2^63 and block_bytes <= 292 per block of at
    // least 1, so only a 1-element-block type can overflow, and checked_mul sees it.
    if (!checked_mul(numel / type->block_size, type->block_bytes, info.nbytes)) {
      invalid(file, "{}: {} {} elements overflow a 64-bit byte count", context, numel,
              type->name);
    }

    auto const offset_offset = c.pos();
    info.offset = c.read<std::uint64_t>(context, "data offset");
    if (info.offset % alignment != 0) {
      invalid(file, "{}: data offset {} at byte offset {} is not a multiple of the alignment {}",
              context, info.offset, offset_offset, alignment);
    }
    auto const [it, inserted] = tensor_index.emplace(info.name, tensors.size());
    if (!inserted) {
      invalid(file, "{}: the name repeats tensor info {} at byte offset {}", context, it->second,
              tensors[it->second].info_offset);
    }
    tensors.push_back(std::move(info));
  }
}

void GgufFile::Impl::check_layout() {
  for (auto const& t : tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      invalid(file, "tensor '{}' (info at byte offset {}): its {} bytes at data offset {} "
              "(absolute byte offset {}) run past the end of the file at byte {}",
              printable(t.name), t.info_offset, t.nbytes, t.offset,
              t.offset <= kU64Max - data_offset ? fmt::format("{}", data_offset + t.offset)
                                                : std::string("beyond 2^64"),
              size);
    }
  }
  // Data order; infos may list tensors in any order.
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](GgufTensorInfo const& a, GgufTensorInfo const& b) {
                     return a.offset < b.offset;
                   });
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    auto const& prev = tensors[i - 1];
    auto const& cur = tensors[i];
    if (prev.offset + prev.nbytes > cur.offset) {
      invalid(file, "tensors '{}' (bytes [{}, {})) and '{}' (bytes [{}, {})) overlap (absolute "
              "byte offsets; infos at {} and {})", printable(prev.name),
              data_offset + prev.offset, data_offset + prev.offset + prev.nbytes,
              printable(cur.name), data_offset + cur.offset, data_offset + cur.offset + cur.nbytes,
              prev.info_offset, cur.info_offset);
    }
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) tensor_index[tensors[i].name] = i;
}

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

GgufFile GgufFile::open(std::filesystem::path const& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->file = path.string();
  auto const& file = impl->file;

  detail::MappedFile const mapped = detail::map_file_read_only(
      file, kHeaderBytes,
      fmt::format("a GGUF file begins with a {}-byte header (magic, version, tensor_count, metadata_kv_count)", kHeaderBytes));
  impl->base = mapped.base;
  impl->size = mapped.size;
  impl->parse();
  return GgufFile(std::move(impl));
}

std::filesystem::path const& GgufFile::path() const noexcept { return impl_->path; }
std::uint32_t GgufFile::version() const noexcept { return impl_->version; }
std::uint64_t GgufFile::file_size() const noexcept { return impl_->size; }
std::uint64_t GgufFile::alignment() const noexcept { return impl_->alignment; }
std::uint64_t GgufFile::data_offset() const noexcept { return impl_->data_offset; }

std::vector<GgufMetadataEntry> const& GgufFile::metadata() const noexcept {
  return impl_->metadata;
}

GgufMetadataEntry const* GgufFile::find_metadata(std::string_view key) const noexcept {
  return impl_->lookup(key);
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  if (entry->value.type != GgufType::kString) impl_->wrong_type(*entry, "STRING");
  std::uint64_t size = 0;
  return std::string(decode_string(entry->value.bytes.data(), size));
}

std::optional<std::int64_t> GgufFile::get_int(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  if (!is_integer(entry->value.type)) impl_->wrong_type(*entry, "an integer");
  return impl_->widen(*entry, entry->value.type, entry->value.bytes.data());
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  if (!is_float(entry->value.type)) impl_->wrong_type(*entry, "FLOAT32 or FLOAT64");
  return decode_float(entry->value.type, entry->value.bytes.data());
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  if (entry->value.type != GgufType::kBool) impl_->wrong_type(*entry, "BOOL");
  return load<std::uint8_t>(entry->value.bytes.data()) != 0;
}

std::optional<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  auto const& value = entry->value;
  if (value.type != GgufType::kArray || value.element_type != GgufType::kString) {
    impl_->wrong_type(*entry, "ARRAY of STRING");
  }
  std::vector<std::string> strings;
  strings.reserve(static_cast<std::size_t>(value.count));  // validated: the elements exist
  auto const* p = value.bytes.data();
  for (std::uint64_t i = 0; i < value.count; ++i) {
    std::uint64_t size = 0;
    strings.emplace_back(decode_string(p, size));
    p += size;
  }
  return strings;
}

std::optional<std::vector<std::int64_t>> GgufFile::get_int_array(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  auto const& value = entry->value;
  if (value.type != GgufType::kArray || !is_integer(value.element_type)) {
    impl_->wrong_type(*entry, "an ARRAY of integers");
  }
  auto const size = fixed_size(value.element_type);
  std::vector<std::int64_t> numbers(static_cast<std::size_t>(value.count));
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    numbers[i] = impl_->widen(*entry, value.element_type, value.bytes.data() + i * size);
  }
  return numbers;
}

std::optional<std::vector<double>> GgufFile::get_float_array(std::string_view key) const {
  auto const* entry = impl_->lookup(key);
  if (entry == nullptr) return std::nullopt;
  auto const& value = entry->value;
  if (value.type != GgufType::kArray || !is_float(value.element_type)) {
    impl_->wrong_type(*entry, "an ARRAY of FLOAT32 or FLOAT64");
  }
  auto const size = fixed_size(value.element_type);
  std::vector<double> numbers(static_cast<std::size_t>(value.count));
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    numbers[i] = decode_float(value.element_type, value.bytes.data() + i * size);
  }
  return numbers;
}

std::string GgufFile::require_string(std::string_view key) const {
  auto value = get_string(key);
  if (!value) impl_->missing(key, "STRING");
  return std::move(*value);
}

std::int64_t GgufFile::require_int(std::string_view key) const {
  auto const value = get_int(key);
  if (!value) impl_->missing(key, "an integer");
  return *value;
}

double GgufFile::require_float(std::string_view key) const {
  auto const value = get_float(key);
  if (!value) impl_->missing(key, "FLOAT32 or FLOAT64");
  return *value;
}

bool GgufFile::require_bool(std::string_view key) const {
  auto const value = get_bool(key);
  if (!value) impl_->missing(key, "BOOL");
  return *value;
}

std::vector<std::string> GgufFile::require_string_array(std::string_view key) const {
  auto value = get_string_array(key);
  if (!value) impl_->missing(key, "ARRAY of STRING");
  return std::move(*value);
}

std::vector<std::int64_t> GgufFile::require_int_array(std::string_view key) const {
  auto value = get_int_array(key);
  if (!value) impl_->missing(key, "an ARRAY of integers");
  return std::move(*value);
}

std::vector<double> GgufFile::require_float_array(std::string_view key) const {
  auto value = get_float_array(key);
  if (!value) impl_->missing(key, "an ARRAY of FLOAT32 or FLOAT64");
  return std::move(*value);
}

std::vector<GgufTensorInfo> const& GgufFile::tensors() const noexcept { return impl_->tensors; }

GgufTensorInfo const* GgufFile::find(std::string_view name) const noexcept {
  auto const it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

GgufTensorInfo const& GgufFile::at(std::string_view name) const {
  auto const* info = find(name);
  if (info == nullptr) {
    invalid(impl_->file, "no tensor named '{}' (the file holds {} tensors)", name,
            impl_->tensors.size());
  }
  return *info;
}

std::span<std::byte const> GgufFile::bytes(GgufTensorInfo const& tensor) const {
  auto const& im = *impl_;
  if (tensor.offset > im.data_size || tensor.nbytes > im.data_size - tensor.offset) {
    fail(ErrorKind::kUsage, "{}: tensor '{}' ({} bytes at data offset {}) is not one of this "
         "file's tensors: its data section has {} bytes", im.file, tensor.name, tensor.nbytes,
         tensor.offset, im.data_size);
  }
  return {im.base + im.data_offset + tensor.offset, static_cast<std::size_t>(tensor.nbytes)};
}

void GgufFile::dequantize(GgufTensorInfo const& tensor, std::span<float> out) const {
  dequantize_rows(tensor, 0, tensor.rows(), out);
}

std::vector<float> GgufFile::dequantize(GgufTensorInfo const& tensor) const {
  // Refuse an unsupported type before allocating numel floats for it.
  require_dequantizable(tensor.type, fmt::format("{}: tensor '{}'", impl_->file, tensor.name));
  std::vector<float> out(static_cast<std::size_t>(tensor.numel()));
  dequantize(tensor, out);
  return out;
}

void GgufFile::dequantize_rows(GgufTensorInfo const& tensor, std::uint64_t row_begin,
                               std::uint64_t row_count, std::span<float> out) const {
  // The message prefix is built only on the error paths: this may run once per row.
  auto const what = [&] { return fmt::format("{}: tensor '{}'", impl_->file, tensor.name); };
  if (!ggml_type_info(tensor.type).dequantizable) require_dequantizable(tensor.type, what());
  auto const rows = tensor.rows();
  if (row_begin > rows || row_count > rows - row_begin) {
    fail(ErrorKind::kUsage, "{}: rows [{}, {}+{}) are outside its {} rows", what(), row_begin,
         row_begin, row_count, rows);
  }
  if (out.size() != row_count * tensor.row_length()) {
    fail(ErrorKind::kUsage, "{}: {} rows of {} elements need an output of {} floats, got {}",
         what(), row_count, tensor.row_length(), row_count * tensor.row_length(), out.size());
  }
  // Rows are whole blocks (ne[0] is a multiple of the block size), so row r starts at byte
  // r · row_bytes of the tensor.
  auto const row_bytes = tensor.row_bytes();
  auto const data = bytes(tensor).subspan(static_cast<std::size_t>(row_begin * row_bytes),
                                          static_cast<std::size_t>(row_count * row_bytes));
  decode_blocks(tensor.type, data.data(), out.data(), out.size());
}

}  // namespace slidesparse::io
