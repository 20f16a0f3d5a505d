#include "slidesparse/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include "file_util.hpp"
#include "slidesparse/core/error.hpp"

namespace slidesparse::io {
namespace {

using detail::errno_text;
using detail::FdGuard;
using detail::invalid;

// std::map-backed, so a header of n tensors parses in O(n log n); ordered_json would scan its
// vector on every insert (quadratic, and a 100 MB header can hold a million keys). Header order
// is recorded by HeaderSax instead.
using Json = nlohmann::json;

// The header length is capped by the safetensors specification, which keeps a hostile length
// from making us parse gigabytes of JSON.
constexpr std::uint64_t kMaxHeaderSize = 100'000'000;
constexpr std::uint64_t kLengthPrefix = 8;  // u64 little-endian header length H
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();



/// A JSON value for an error message, cut short so a huge array cannot flood the terminal.
std::string brief_json(Json const& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  constexpr std::size_t kMax = 80;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}


/// a * b, or false on u64 overflow.
bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& product) noexcept {
  if (a != 0 && b > kU64Max / a) return false;
  product = a * b;
  return true;
}

/// Elements of `shape` (entries already known to be >= 0), or false on overflow. A shape
/// with a zero extent has no elements however large the others are, so the zero wins before any
/// overflow is considered.
bool checked_numel(std::vector<std::int64_t> const& shape, std::uint64_t& numel) noexcept {
  if (std::find(shape.begin(), shape.end(), std::int64_t{0}) != shape.end()) {
    numel = 0;
    return true;
  }
  std::uint64_t n = 1;
  for (auto const extent : shape) {
    if (!checked_mul(n, static_cast<std::uint64_t>(extent), n)) return false;
  }
  numel = n;
  return true;
}

std::uint64_t read_u64_le(std::byte const* p) noexcept {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | std::to_integer<std::uint64_t>(p[i]);
  return value;
}

void write_u64_le(std::byte* p, std::uint64_t value) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

/// Builds the header's Json through nlohmann's SAX interface, with three things its own parsers
/// lack:
///  - duplicate keys are an error (nlohmann keeps the last one silently; the format forbids them);
///  - the top-level keys are recorded in header order (the map-backed Json sorts them);
///  - it stays O(n log n): the callback flavour of nlohmann's parser rescans the parent object at
///    every end_object, which made a 200,000-tensor header take minutes.
/// Nesting is capped: a valid header goes three levels deep (top, entry, shape), and error
/// messages dump values recursively.
class HeaderSax {
 public:
  explicit HeaderSax(std::string const& file, Json& root) : file_(file), root_(root) {}

  /// Top-level keys (tensor names and "__metadata__") in the order the header lists them.
  std::vector<std::string> const& order() const noexcept { return order_; }
  /// Set when parse_error was called: the byte (1-based, within the header) and what went wrong.
  std::size_t error_byte() const noexcept { return error_byte_; }
  std::string const& error() const noexcept { return error_; }

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool value) { return add(Json(value)); }
  bool number_integer(Json::number_integer_t value) { return add(Json(value)); }
  bool number_unsigned(Json::number_unsigned_t value) { return add(Json(value)); }
  bool number_float(Json::number_float_t value, Json::string_t const& /*text*/) {
    return add(Json(value));
  }
  bool string(Json::string_t& value) { return add(Json(std::move(value))); }
  bool binary(Json::binary_t& value) { return add(Json::binary(std::move(value))); }

  bool start_object(std::size_t /*elements*/) { return open(Json::object()); }
  bool start_array(std::size_t /*elements*/) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(Json::string_t& key) {
    auto& object = *stack_.back().value;
    if (object.contains(key)) {
      if (stack_.size() == 1) invalid(file_, "duplicate tensor name '{}' in the header", key);
      invalid(file_, "duplicate key '{}' inside '{}' in the header", key, stack_.back().name);
    }
    if (stack_.size() == 1) order_.push_back(key);
    slot_ = &object[key];
    slot_name_ = std::move(key);
    return true;
  }

  bool parse_error(std::size_t byte, std::string const& /*token*/,
                   nlohmann::detail::exception const& error) {
    error_byte_ = byte;
    error_ = error.what();
    return false;
  }

 private:
  static constexpr std::size_t kMaxDepth = 8;

  struct Open {
    Json* value;
    std::string name;  // the key it is the value of ("" at the top or inside an array)
  };

  /// Stores `value` where the parser is: the root, the end of the open array, or the slot of the
  /// last key. Returns where it landed. Pointers to open containers stay valid: only the
  /// innermost open container grows, and object members never move (std::map).
  Json* place(Json&& value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    auto& top = *stack_.back().value;
    if (top.is_array()) {
      top.push_back(std::move(value));
      return &top.back();
    }
    *slot_ = std::move(value);
    return slot_;
  }
  bool add(Json&& value) {
    place(std::move(value));
    return true;
  }
  bool open(Json&& container) {
    if (stack_.size() == kMaxDepth) {
      invalid(file_, "the header nests deeper than {} levels; a valid header uses 3", kMaxDepth);
    }
    bool const in_object = !stack_.empty() && stack_.back().value->is_object();
    std::string name = in_object ? slot_name_ : std::string();
    stack_.push_back(Open{place(std::move(container)), std::move(name)});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  std::string const& file_;
  Json& root_;
  std::vector<Open> stack_;
  Json* slot_ = nullptr;
  std::string slot_name_;
  std::vector<std::string> order_;
  std::size_t error_byte_ = 0;
  std::string error_;
};

/// The parsed and validated header.
struct Header {
  std::vector<TensorInfo> tensors;  // in header order until sorted
  Metadata metadata;
};

void parse_metadata(std::string const& file, Json const& value, Metadata& metadata) {
  if (!value.is_object()) {
    invalid(file, "'{}' must be an object of string to string, got {}", kMetadataKey,
            brief_json(value));
  }
  for (auto const& [key, item] : value.items()) {
    if (!item.is_string()) {
      invalid(file, "'{}' key '{}' has a non-string value {}", kMetadataKey, key,
              brief_json(item));
    }
    metadata.emplace(key, item.get<std::string>());
  }
}

/// A JSON integer that must be >= 0 and <= `max`; `what` names it in messages.
std::uint64_t parse_count(std::string const& file, std::string const& name, Json const& value,
                          std::uint64_t max, std::string_view what) {
  if (!value.is_number_integer()) {
    invalid(file, "tensor '{}': {} {} is not an integer", name, what, brief_json(value));
  }
  if (!value.is_number_unsigned() && value.get<std::int64_t>() < 0) {
    invalid(file, "tensor '{}': {} {} is negative", name, what, value.get<std::int64_t>());
  }
  auto const number = value.get<std::uint64_t>();
  if (number > max) invalid(file, "tensor '{}': {} {} is larger than {}", name, what, number, max);
  return number;
}

TensorInfo parse_entry(std::string const& file, std::string const& name, Json const& entry,
                       std::uint64_t data_size) {
  if (!entry.is_object()) {
    invalid(file, "tensor '{}': entry must be an object with dtype, shape and data_offsets, got {}",
            name, brief_json(entry));
  }
  for (auto const& [key, unused] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      invalid(file, "tensor '{}': unknown field '{}' (allowed: dtype, shape, data_offsets)", name,
              key);
    }
  }
  for (char const* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) invalid(file, "tensor '{}': missing field '{}'", name, field);
  }

  TensorInfo info;
  info.name = name;

  auto const& dtype = entry["dtype"];
  if (!dtype.is_string()) invalid(file, "tensor '{}': dtype {} is not a string", name,
                                  brief_json(dtype));
  auto const parsed = parse_dtype(dtype.get_ref<std::string const&>());
  if (!parsed) {
    invalid(file, "tensor '{}': unknown dtype '{}'", name, dtype.get_ref<std::string const&>());
  }
  info.dtype = *parsed;

  auto const& shape = entry["shape"];
  if (!shape.is_array()) invalid(file, "tensor '{}': shape {} is not an array", name,
                                 brief_json(shape));
  constexpr auto kI64Max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  for (auto const& extent : shape) {
    info.shape.push_back(
        static_cast<std::int64_t>(parse_count(file, name, extent, kI64Max, "shape entry")));
  }

  auto const& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    invalid(file, "tensor '{}': data_offsets {} is not an array [begin, end]", name,
            brief_json(offsets));
  }
  info.begin = parse_count(file, name, offsets[0], kU64Max, "data_offsets begin");
  info.end = parse_count(file, name, offsets[1], kU64Max, "data_offsets end");
  if (info.begin > info.end) {
    invalid(file, "tensor '{}': data_offsets [{}, {}] begin after end", name, info.begin, info.end);
  }

  std::uint64_t numel = 0;
  std::uint64_t nbytes = 0;
  if (!checked_numel(info.shape, numel) || !checked_mul(numel, dtype_size(info.dtype), nbytes)) {
    invalid(file, "tensor '{}': shape [{}] of {} overflows 64-bit byte counts", name,
            fmt::join(info.shape, ", "), dtype_name(info.dtype));
  }
  if (nbytes != info.end - info.begin) {
    invalid(file, "tensor '{}': shape [{}] of {} needs {} bytes but data_offsets [{}, {}] span {}",
            name, fmt::join(info.shape, ", "), dtype_name(info.dtype), nbytes, info.begin,
            info.end, info.end - info.begin);
  }
  if (info.end > data_size) {
    invalid(file, "tensor '{}': data_offsets [{}, {}] end past the data section, which holds {} "
            "bytes (file truncated?)", name, info.begin, info.end, data_size);
  }
  return info;
}

/// Sorts the tensors by offset and checks they tile the data section exactly: no holes, no
/// overlaps, no bytes after the last tensor. Ties (zero-size tensors sharing an offset) keep
/// header order, so a file we wrote reads back in the order it was written.
void check_layout(std::string const& file, std::vector<TensorInfo>& tensors,
                  std::uint64_t data_start, std::uint64_t data_size) {
  std::stable_sort(tensors.begin(), tensors.end(), [](TensorInfo const& a, TensorInfo const& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;  // the data section is covered in [0, covered)
  TensorInfo const* previous = nullptr;
  for (auto const& info : tensors) {
    if (info.begin > covered) {
      if (previous == nullptr) {
        invalid(file, "hole of {} bytes at the start of the data section (file bytes [{}, {})): "
                "the first tensor '{}' begins at data offset {}", info.begin - covered,
                data_start + covered, data_start + info.begin, info.name, info.begin);
      }
      invalid(file, "hole of {} bytes (file bytes [{}, {})) between tensor '{}' data_offsets "
              "[{}, {}] and tensor '{}' data_offsets [{}, {}]", info.begin - covered,
              data_start + covered, data_start + info.begin, previous->name, previous->begin,
              previous->end, info.name, info.begin, info.end);
    }
    if (info.begin < covered) {
      invalid(file, "tensor '{}' data_offsets [{}, {}] (file bytes [{}, {})) overlaps tensor '{}' "
              "data_offsets [{}, {}] (file bytes [{}, {}))", info.name, info.begin, info.end,
              data_start + info.begin, data_start + info.end, previous->name, previous->begin,
              previous->end, data_start + previous->begin, data_start + previous->end);
    }
    covered = info.end;
    previous = &info;
  }
  if (covered != data_size) {
    invalid(file, "{} trailing bytes (file bytes [{}, {})) belong to no tensor: the data section "
            "holds {} bytes but the tensors end at data offset {}", data_size - covered,
            data_start + covered, data_start + data_size, data_size, covered);
  }
}

Header parse_header(std::string const& file, char const* text, std::uint64_t header_size,
                    std::uint64_t data_size) {
  Json json;
  HeaderSax sax(file, json);
  if (!Json::sax_parse(text, text + header_size, &sax)) {
    // The byte counts from 1 within the header.
    invalid(file, "invalid JSON header (file bytes [{}, {}), error near file offset {}): {}",
            kLengthPrefix, kLengthPrefix + header_size,
            kLengthPrefix + std::max<std::size_t>(sax.error_byte(), 1) - 1, sax.error());
  }
  if (!json.is_object()) {
    invalid(file, "the header is not a JSON object but {}: {}", json.type_name(),
            brief_json(json));
  }
  // The specification asks for '{' as the very first byte (so files can be sniffed); only
  // trailing padding is allowed.
  if (text[0] != '{') {
    invalid(file, "the header must begin with '{{' at file offset {}, found byte 0x{:02x}",
            kLengthPrefix, static_cast<unsigned char>(text[0]));
  }

  // Header order: the first bad entry in the file is the one reported, and check_layout's
  // stable sort keeps header order among tensors at the same offset.
  Header header;
  for (auto const& name : sax.order()) {
    auto const& entry = json.find(name).value();
    if (name == kMetadataKey) {
      parse_metadata(file, entry, header.metadata);
    } else {
      header.tensors.push_back(parse_entry(file, name, entry, data_size));
    }
  }
  return header;
}

}  // namespace

std::uint64_t TensorInfo::numel() const {
  std::uint64_t n = 1;
  for (auto const extent : shape) n *= static_cast<std::uint64_t>(extent);
  return n;
}

// =============================================================================================
// SafetensorsFile
// =============================================================================================

struct SafetensorsFile::Impl {
  std::filesystem::path path;
  std::byte const* base = nullptr;  // the whole file, mapped read-only
  std::uint64_t size = 0;
  std::uint64_t header_size = 0;
  std::vector<TensorInfo> tensors;                         // data-offset order
  std::map<std::string, std::size_t, std::less<>> index;  // name -> position in tensors
  Metadata metadata;

  Impl() = default;
  Impl(Impl const&) = delete;
  Impl& operator=(Impl const&) = delete;
  ~Impl() {
    detail::unmap_file(base, size);
  }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(std::filesystem::path const& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  std::string const file = path.string();

  detail::MappedFile const mapped =
      detail::map_file_read_only(file, kLengthPrefix, "a safetensors file begins with an 8-byte header length");
  impl->base = mapped.base;
  impl->size = mapped.size;
  auto const size = mapped.size;

  auto const header_size = read_u64_le(impl->base);
  if (header_size < 2) {
    invalid(file, "header length {} (file offset 0) is below 2, the size of the smallest header "
            "'{{}}'", header_size);
  }
  if (header_size > kMaxHeaderSize) {
    invalid(file, "header length {} (file offset 0) exceeds the format's cap of {} bytes",
            header_size, kMaxHeaderSize);
  }
  if (kLengthPrefix + header_size > size) {
    invalid(file, "header length {} (file offset 0) needs 8 + {} = {} bytes but the file has only "
            "{} bytes", header_size, header_size, kLengthPrefix + header_size, size);
  }
  impl->header_size = header_size;
  auto const data_start = kLengthPrefix + header_size;
  auto const data_size = size - data_start;

  auto header = parse_header(file, reinterpret_cast<char const*>(impl->base + kLengthPrefix),
                             header_size, data_size);
  check_layout(file, header.tensors, data_start, data_size);
  impl->tensors = std::move(header.tensors);
  impl->metadata = std::move(header.metadata);
  for (std::size_t i = 0; i < impl->tensors.size(); ++i) {
    impl->index.emplace(impl->tensors[i].name, i);
  }
  return SafetensorsFile(std::move(impl));
}

std::filesystem::path const& SafetensorsFile::path() const noexcept { return impl_->path; }

std::vector<TensorInfo> const& SafetensorsFile::tensors() const noexcept { return impl_->tensors; }

TensorInfo const* SafetensorsFile::find(std::string_view name) const noexcept {
  auto const it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

TensorInfo const& SafetensorsFile::at(std::string_view name) const {
  auto const* info = find(name);
  if (info == nullptr) {
    invalid(impl_->path.string(), "no tensor named '{}' (the file holds {} tensors)", name,
            impl_->tensors.size());
  }
  return *info;
}

std::span<std::byte const> SafetensorsFile::bytes(TensorInfo const& info) const noexcept {
  return {impl_->base + kLengthPrefix + impl_->header_size + info.begin, info.nbytes()};
}

Metadata const& SafetensorsFile::metadata() const noexcept { return impl_->metadata; }

std::uint64_t SafetensorsFile::header_size() const noexcept { return impl_->header_size; }

std::uint64_t SafetensorsFile::file_size() const noexcept { return impl_->size; }

// =============================================================================================
// SafetensorsWriter
// =============================================================================================

struct SafetensorsWriter::Impl {
  std::filesystem::path path;
  std::filesystem::path temp_path;  // empty until the temporary file exists
  std::vector<TensorSpec> specs;
  std::vector<std::uint64_t> offsets;  // absolute file offset of each tensor
  std::vector<std::uint64_t> sizes;    // bytes of each tensor
  std::map<std::string, std::size_t, std::less<>> index;
  int fd = -1;
  std::byte* base = nullptr;  // the whole temporary file, mapped shared read-write
  std::size_t map_size = 0;
  bool committed = false;

  Impl() = default;
  Impl(Impl const&) = delete;
  Impl& operator=(Impl const&) = delete;
  ~Impl() { release(); }

  /// Unmaps and closes; removes the temporary file unless it has been renamed into place.
  void release() noexcept {
    if (base != nullptr) ::munmap(base, map_size);
    base = nullptr;
    if (fd >= 0) ::close(fd);
    fd = -1;
    if (!committed && !temp_path.empty()) ::unlink(temp_path.c_str());
    temp_path.clear();
  }

  /// Cleans up, then throws Error(kIo) naming the failed step and errno.
  template <typename... Args>
  [[noreturn]] void io_failure(int err, fmt::format_string<Args...> format, Args&&... args) {
    auto const what = fmt::format(format, std::forward<Args>(args)...);
    auto const temp = temp_path.string();
    release();
    fail(ErrorKind::kIo, "{}: {} (temporary file {}): {}", path.string(), what, temp,
         errno_text(err));
  }
};

namespace {

/// '<path>.tmp-<16 hex digits>': same folder, so the final rename stays on one file system.
std::filesystem::path temp_name(std::filesystem::path const& path) {
  std::random_device random;
  auto const bits = (std::uint64_t{random()} << 32) | random();
  auto name = path;
  name += fmt::format(".tmp-{:016x}", bits);
  return name;
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(std::filesystem::path path, std::vector<TensorSpec> specs,
                                     Metadata metadata)
    : impl_(std::make_unique<Impl>()) {
  auto& im = *impl_;
  im.path = std::move(path);
  im.specs = std::move(specs);
  std::string const file = im.path.string();

  // Lay out the data section: tensors packed back to back in the order given. The header text is
  // assembled entry by entry, in that order (a Json object would sort the names):
  //   {"__metadata__":{...},"name":{"dtype":"BF16","shape":[N,K],"data_offsets":[b,e]},...}
  std::string text = "{";
  auto const dump = [&](Json const& value) {
    try {
      text += value.dump();
    } catch (Json::type_error const& e) {
      fail(ErrorKind::kUsage, "{}: a tensor name or metadata string is not valid UTF-8: {}", file,
           e.what());
    }
  };
  if (!metadata.empty()) {
    text += fmt::format("\"{}\":", kMetadataKey);
    dump(Json(metadata));
  }
  std::uint64_t data_size = 0;
  for (std::size_t i = 0; i < im.specs.size(); ++i) {
    auto const& spec = im.specs[i];
    if (spec.name == kMetadataKey) {
      fail(ErrorKind::kUsage, "{}: '{}' is reserved and cannot name a tensor", file, kMetadataKey);
    }
    if (!im.index.emplace(spec.name, i).second) {
      fail(ErrorKind::kUsage, "{}: tensor name '{}' given twice", file, spec.name);
    }
    for (auto const extent : spec.shape) {
      if (extent < 0) {
        fail(ErrorKind::kUsage, "{}: tensor '{}': shape [{}] has a negative extent", file,
             spec.name, fmt::join(spec.shape, ", "));
      }
    }
    std::uint64_t numel = 0;
    std::uint64_t nbytes = 0;
    if (!checked_numel(spec.shape, numel) || !checked_mul(numel, dtype_size(spec.dtype), nbytes) ||
        nbytes > kU64Max - data_size) {
      fail(ErrorKind::kUsage, "{}: tensor '{}': shape [{}] of {} overflows 64-bit byte counts",
           file, spec.name, fmt::join(spec.shape, ", "), dtype_name(spec.dtype));
    }
    if (text.size() > 1) text += ',';
    dump(Json(spec.name));
    text += fmt::format(R"(:{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})",
                        dtype_name(spec.dtype), fmt::join(spec.shape, ","), data_size,
                        data_size + nbytes);
    im.offsets.push_back(data_size);  // made absolute below, once H is known
    im.sizes.push_back(nbytes);
    data_size += nbytes;
  }

  text += '}';
  // Pad with spaces (allowed after the JSON) so 8 + H is a multiple of 8: the data section then
  // starts 8-byte aligned in the file and in the mapping.
  text.append((8 - (kLengthPrefix + text.size()) % 8) % 8, ' ');
  if (text.size() > kMaxHeaderSize) {
    fail(ErrorKind::kUsage, "{}: the header would take {} bytes, past the format's cap of {}", file,
         text.size(), kMaxHeaderSize);
  }
  auto const data_start = kLengthPrefix + text.size();
  if (data_size > kU64Max - data_start ||
      data_start + data_size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
    fail(ErrorKind::kUsage, "{}: {} bytes of tensor data do not fit in one file", file, data_size);
  }
  auto const file_size = data_start + data_size;
  for (auto& offset : im.offsets) offset += data_start;

  // O_EXCL: never reuse or follow someone else's file; a name clash just draws another name.
  for (int attempt = 0; im.fd < 0; ++attempt) {
    auto candidate = temp_name(im.path);
    im.fd = ::open(candidate.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (im.fd >= 0) {
      im.temp_path = std::move(candidate);
    } else if (errno != EEXIST || attempt == 16) {
      fail(ErrorKind::kIo, "{}: cannot create temporary file {}: {}", file, candidate.string(),
           errno_text(errno));
    }
  }
  if (::ftruncate(im.fd, static_cast<off_t>(file_size)) != 0) {
    im.io_failure(errno, "cannot size the file to {} bytes", file_size);
  }
  // Reserve the blocks now: a full disk is then an error here, not a SIGBUS when a thread later
  // stores into a hole of the mapping. File systems without fallocate get the sparse file.
  if (int const err = ::posix_fallocate(im.fd, 0, static_cast<off_t>(file_size));
      err != 0 && err != EINVAL && err != EOPNOTSUPP) {
    im.io_failure(err, "cannot reserve {} bytes", file_size);
  }
  // The header is never empty, so neither is the mapping, even when every tensor is.
  im.map_size = static_cast<std::size_t>(file_size);
  void* mapped = ::mmap(nullptr, im.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, im.fd, 0);
  if (mapped == MAP_FAILED) im.io_failure(errno, "cannot mmap {} bytes", file_size);
  im.base = static_cast<std::byte*>(mapped);

  write_u64_le(im.base, text.size());
  std::memcpy(im.base + kLengthPrefix, text.data(), text.size());
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter::~SafetensorsWriter() = default;

std::size_t SafetensorsWriter::size() const noexcept { return impl_->specs.size(); }

TensorSpec const& SafetensorsWriter::spec(std::size_t index) const {
  if (index >= impl_->specs.size()) {
    fail(ErrorKind::kUsage, "{}: tensor index {} out of range (the writer has {} tensors)",
         impl_->path.string(), index, impl_->specs.size());
  }
  return impl_->specs[index];
}

std::span<std::byte> SafetensorsWriter::bytes(std::size_t index) {
  auto& im = *impl_;
  if (index >= im.specs.size()) {
    fail(ErrorKind::kUsage, "{}: tensor index {} out of range (the writer has {} tensors)",
         im.path.string(), index, im.specs.size());
  }
  if (im.base == nullptr) {
    fail(ErrorKind::kUsage, "{}: tensor '{}' written after commit()", im.path.string(),
         im.specs[index].name);
  }
  return {im.base + im.offsets[index], static_cast<std::size_t>(im.sizes[index])};
}

std::span<std::byte> SafetensorsWriter::bytes(std::string_view name) {
  auto const it = impl_->index.find(name);
  if (it == impl_->index.end()) {
    fail(ErrorKind::kUsage, "{}: the writer has no tensor named '{}'", impl_->path.string(), name);
  }
  return bytes(it->second);
}

void SafetensorsWriter::commit() {
  auto& im = *impl_;
  if (im.committed || im.base == nullptr) {
    fail(ErrorKind::kUsage, "{}: commit() called twice", im.path.string());
  }
  // Data must be on disk before the rename makes it visible under the final name; otherwise a
  // crash could leave a complete-looking file full of zeros.
  if (::msync(im.base, im.map_size, MS_SYNC) != 0) im.io_failure(errno, "msync failed");
  ::munmap(im.base, im.map_size);
  im.base = nullptr;
  if (::fsync(im.fd) != 0) im.io_failure(errno, "fsync failed");
  int const fd = im.fd;
  im.fd = -1;
  if (::close(fd) != 0) im.io_failure(errno, "close failed");
  if (::rename(im.temp_path.c_str(), im.path.c_str()) != 0) {
    im.io_failure(errno, "cannot rename the temporary file over the target");
  }
  im.committed = true;
  im.temp_path.clear();

  // The rename lives in the directory; sync it so the new name survives a crash too.
  auto dir = im.path.parent_path();
  if (dir.empty()) dir = ".";
  FdGuard dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0 || ::fsync(dir_fd.get()) != 0) {
    fail(ErrorKind::kIo, "{}: written and renamed, but syncing directory {} failed: {}",
         im.path.string(), dir.string(), errno_text(errno));
  }
}

void write_safetensors(std::filesystem::path const& path, std::vector<OwnedTensor> const& tensors,
                       Metadata const& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (auto const& tensor : tensors) specs.push_back(tensor.spec);
  SafetensorsWriter writer(path, std::move(specs), metadata);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto const out = writer.bytes(i);
    auto const& data = tensors[i].data;
    if (data.size() != out.size()) {
      fail(ErrorKind::kUsage, "{}: tensor '{}' has {} bytes of data but shape [{}] of {} needs {}",
           path.string(), tensors[i].spec.name, data.size(), fmt::join(tensors[i].spec.shape, ", "),
           dtype_name(tensors[i].spec.dtype), out.size());
    }
    if (!data.empty()) std::memcpy(out.data(), data.data(), data.size());
  }
  writer.commit();
}

}  // namespace slidesparse::io
