#include "slidesparse/io/gguf.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"

namespace slidesparse::io {
namespace {

namespace fs = std::filesystem;
using test::Rng;
using test::TempDir;

// =============================================================================================
// A tiny GGUF writer for the tests: every field appended little endian, in file order, so a
// test can build a valid file and then corrupt one field at a known offset.
// =============================================================================================

class Bytes {
 public:
  template <typename T>
  Bytes& put(T value) {
    auto const* p = reinterpret_cast<std::byte const*>(&value);
    data_.insert(data_.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& raw(std::string_view text) {
    auto const* p = reinterpret_cast<std::byte const*>(text.data());
    data_.insert(data_.end(), p, p + text.size());
    return *this;
  }
  Bytes& str(std::string_view text) { return put<std::uint64_t>(text.size()).raw(text); }
  std::size_t size() const { return data_.size(); }
  std::vector<std::byte>& data() { return data_; }

 private:
  std::vector<std::byte> data_;
};

/// A metadata value: its type tag and a writer of its body (without the tag).
struct Value {
  GgufType type;
  std::function<void(Bytes&)> body;
};

template <typename T>
Value scalar(GgufType type, T value) {
  return {type, [value](Bytes& b) { b.put(value); }};
}
Value string_value(std::string text) {
  return {GgufType::kString, [text](Bytes& b) { b.str(text); }};
}
/// ARRAY body: element type, count, then each element's body.
Value array_value(GgufType element_type, std::vector<Value> elements) {
  return {GgufType::kArray, [element_type, elements](Bytes& b) {
            b.put(static_cast<std::uint32_t>(element_type));
            b.put<std::uint64_t>(elements.size());
            for (auto const& e : elements) e.body(b);
          }};
}
template <typename T>
Value scalar_array(GgufType element_type, std::vector<T> const& values) {
  std::vector<Value> elements;
  for (auto const v : values) elements.push_back(scalar(element_type, v));
  return array_value(element_type, std::move(elements));
}
Value string_array(std::vector<std::string> const& values) {
  std::vector<Value> elements;
  for (auto const& v : values) elements.push_back(string_value(v));
  return array_value(GgufType::kString, std::move(elements));
}

struct TestTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<std::uint64_t> ne;
  std::vector<std::byte> data;
  std::optional<std::uint64_t> offset;  // data-section offset; default: next aligned position
};

std::uint64_t tensor_bytes(GgmlType type, std::vector<std::uint64_t> const& ne) {
  std::uint64_t numel = 1;
  for (auto const e : ne) numel *= e;
  auto const& info = ggml_type_info(type);
  return numel / info.block_size * info.block_bytes;
}

/// Deterministic bytes: position-dependent so swapped or shifted data is caught.
std::vector<std::byte> iota_bytes(std::size_t n, unsigned seed) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((i * 37 + seed) & 0xFF);
  return bytes;
}

/// A GGUF file under construction. build() lays it out as the format says and records where
/// the fields a test may want to corrupt ended up.
struct GgufBuilder {
  std::uint32_t version = 3;
  std::uint64_t alignment = 32;  // layout only; add "general.alignment" to kvs to declare it
  std::vector<std::pair<std::string, Value>> kvs;
  std::vector<TestTensor> tensors;

  // Filled by build(): absolute offsets.
  std::vector<std::size_t> kv_offsets;    // each key's length field
  std::vector<std::size_t> info_offsets;  // each tensor info's name length field
  std::size_t data_offset = 0;

  GgufBuilder& kv(std::string key, Value value) {
    kvs.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  GgufBuilder& tensor(TestTensor t) {
    tensors.push_back(std::move(t));
    return *this;
  }
  /// A tensor of `type` and extents `ne` filled with deterministic bytes.
  GgufBuilder& tensor(std::string name, GgmlType type, std::vector<std::uint64_t> ne) {
    auto const n = tensor_bytes(type, ne);
    return tensor(TestTensor{std::move(name), type, std::move(ne),
                             iota_bytes(static_cast<std::size_t>(n),
                                        static_cast<unsigned>(tensors.size())),
                             std::nullopt});
  }

  /// Offsets of fields inside tensor info i.
  std::size_t ndims_field(std::size_t i) const {
    return info_offsets[i] + 8 + tensors[i].name.size();
  }
  std::size_t ne_field(std::size_t i, std::size_t d) const { return ndims_field(i) + 4 + 8 * d; }
  std::size_t type_field(std::size_t i) const { return ne_field(i, tensors[i].ne.size()); }
  std::size_t offset_field(std::size_t i) const { return type_field(i) + 4; }
  /// Offset of the value (after the type tag) of metadata entry i.
  std::size_t value_field(std::size_t i) const {
    return kv_offsets[i] + 8 + kvs[i].first.size() + 4;
  }

  std::vector<std::byte> build() {
    Bytes b;
    b.raw("GGUF").put(version).put<std::uint64_t>(tensors.size()).put<std::uint64_t>(kvs.size());
    kv_offsets.clear();
    for (auto const& [key, value] : kvs) {
      kv_offsets.push_back(b.size());
      b.str(key).put(static_cast<std::uint32_t>(value.type));
      value.body(b);
    }
    // Data layout: each tensor at its given offset or at the next multiple of the alignment.
    std::vector<std::uint64_t> offsets;
    std::uint64_t end = 0;
    for (auto const& t : tensors) {
      auto const offset = t.offset.value_or((end + alignment - 1) / alignment * alignment);
      offsets.push_back(offset);
      end = std::max<std::uint64_t>(end, offset + t.data.size());
    }
    info_offsets.clear();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      auto const& t = tensors[i];
      info_offsets.push_back(b.size());
      b.str(t.name).put(static_cast<std::uint32_t>(t.ne.size()));
      for (auto const e : t.ne) b.put(e);
      b.put(static_cast<std::uint32_t>(t.type)).put(offsets[i]);
    }
    while (b.size() % alignment != 0) b.put<std::uint8_t>(0);
    data_offset = b.size();
    auto& out = b.data();
    out.resize(data_offset + static_cast<std::size_t>(end), std::byte{0});
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      std::copy(tensors[i].data.begin(), tensors[i].data.end(),
                out.begin() + static_cast<std::ptrdiff_t>(data_offset + offsets[i]));
    }
    return out;
  }
};

/// "byte offset N", as the reader's messages say it.
std::string at_byte(std::size_t offset) { return fmt::format("byte offset {}", offset); }

/// The first `length` bytes.
std::vector<std::byte> prefix(std::vector<std::byte> const& bytes, std::size_t length) {
  return {bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)};
}

template <typename T>
void patch(std::vector<std::byte>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

void write_file(fs::path const& path, std::vector<std::byte> const& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<char const*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

/// Expects open() to throw Error(kInvalidInput) whose message names the file and holds every
/// one of `parts`. Returns the message.
std::string expect_invalid(fs::path const& path, std::vector<std::string> parts) {
  parts.push_back(path.string());
  return test::expect_error([&] { GgufFile::open(path); }, ErrorKind::kInvalidInput, parts);
}

/// Writes `bytes` and expects open() to fail naming every one of `parts`.
std::string expect_invalid(TempDir const& dir, std::vector<std::byte> const& bytes,
                           std::vector<std::string> const& parts) {
  auto const path = dir / "bad.gguf";
  write_file(path, bytes);
  return expect_invalid(path, parts);
}

GgufFile write_and_open(TempDir const& dir, std::vector<std::byte> const& bytes,
                        std::string const& name = "test.gguf") {
  auto const path = dir / name;
  write_file(path, bytes);
  return GgufFile::open(path);
}

/// A small valid file with a bit of everything, for the corruption tests.
GgufBuilder sample_file() {
  GgufBuilder g;
  g.kv("general.architecture", string_value("llama"))
      .kv("llama.block_count", scalar(GgufType::kUint32, std::uint32_t{2}))
      .kv("tokenizer.ggml.tokens", string_array({"a", "bc", ""}))
      .kv("tokenizer.ggml.token_type", scalar_array<std::int32_t>(GgufType::kInt32, {1, 3, 6}))
      .kv("flag", scalar(GgufType::kBool, std::uint8_t{1}))
      .tensor("w.weight", GgmlType::kQ4_1, {64, 2})
      .tensor("n.weight", GgmlType::kF32, {5});
  return g;
}

// =============================================================================================
// Types table
// =============================================================================================

TEST(GgufTypes, TableCoversEveryKnownIdWithGgmlBlockSizes) {
  // Every id 0..39 is either a known type whose entry has its own id, or one the format
  // retired (4, 5: Q4_2/Q4_3; 31-33, 36-38: repacked variants never stored in files).
  std::vector<std::uint32_t> const retired = {4, 5, 31, 32, 33, 36, 37, 38};
  for (std::uint32_t id = 0; id < 45; ++id) {
    auto const* info = find_ggml_type(id);
    bool const expect_known =
        id < 40 && std::find(retired.begin(), retired.end(), id) == retired.end();
    EXPECT_EQ(info != nullptr, expect_known) << "id " << id;
    if (info != nullptr) {
      EXPECT_EQ(static_cast<std::uint32_t>(info->type), id);
      EXPECT_EQ(&ggml_type_info(info->type), info);
    }
  }
  auto const check = [](GgmlType type, std::string_view name, std::uint32_t block,
                        std::uint32_t bytes, bool dequantizable) {
    auto const& info = ggml_type_info(type);
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.block_size, block) << name;
    EXPECT_EQ(info.block_bytes, bytes) << name;
    EXPECT_EQ(info.dequantizable, dequantizable) << name;
  };
  check(GgmlType::kF32, "F32", 1, 4, true);
  check(GgmlType::kF16, "F16", 1, 2, true);
  check(GgmlType::kBF16, "BF16", 1, 2, true);
  check(GgmlType::kQ4_0, "Q4_0", 32, 2 + 16, true);
  check(GgmlType::kQ4_1, "Q4_1", 32, 2 + 2 + 16, true);
  check(GgmlType::kQ8_0, "Q8_0", 32, 2 + 32, true);
  check(GgmlType::kQ4_K, "Q4_K", 256, 144, false);
  check(GgmlType::kQ6_K, "Q6_K", 256, 210, false);
  EXPECT_EQ(gguf_type_name(GgufType::kFloat64), "FLOAT64");
  EXPECT_EQ(gguf_type_name(static_cast<GgufType>(99)), "?");
}

// =============================================================================================
// Metadata round trips
// =============================================================================================

TEST(GgufMetadata, EveryScalarTypeRoundTrips) {
  TempDir dir;
  GgufBuilder g;
  g.kv("u8", scalar(GgufType::kUint8, std::uint8_t{255}))
      .kv("i8", scalar(GgufType::kInt8, std::int8_t{-128}))
      .kv("u16", scalar(GgufType::kUint16, std::uint16_t{65535}))
      .kv("i16", scalar(GgufType::kInt16, std::int16_t{-32768}))
      .kv("u32", scalar(GgufType::kUint32, std::uint32_t{4294967295u}))
      .kv("i32", scalar(GgufType::kInt32, std::int32_t{-2147483647 - 1}))
      .kv("f32", scalar(GgufType::kFloat32, 1e-5f))
      .kv("bool.true", scalar(GgufType::kBool, std::uint8_t{1}))
      .kv("bool.false", scalar(GgufType::kBool, std::uint8_t{0}))
      .kv("str", string_value(std::string("a\0b\xff", 4)))
      .kv("str.empty", string_value(""))
      .kv("u64", scalar(GgufType::kUint64, std::uint64_t{9223372036854775807u}))
      .kv("u64.big", scalar(GgufType::kUint64, std::numeric_limits<std::uint64_t>::max()))
      .kv("i64", scalar(GgufType::kInt64, std::numeric_limits<std::int64_t>::min()))
      .kv("f64", scalar(GgufType::kFloat64, -0.1));
  auto const f = write_and_open(dir, g.build());

  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_TRUE(f.tensors().empty());
  ASSERT_EQ(f.metadata().size(), g.kvs.size());
  for (std::size_t i = 0; i < g.kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].key, g.kvs[i].first);  // file order
    EXPECT_EQ(f.metadata()[i].key_offset, g.kv_offsets[i]);
    EXPECT_EQ(f.metadata()[i].value.type, g.kvs[i].second.type);
    EXPECT_EQ(f.metadata()[i].value.offset, g.value_field(i));
  }
  EXPECT_EQ(f.get_int("u8"), 255);
  EXPECT_EQ(f.get_int("i8"), -128);
  EXPECT_EQ(f.get_int("u16"), 65535);
  EXPECT_EQ(f.get_int("i16"), -32768);
  EXPECT_EQ(f.get_int("u32"), 4294967295LL);
  EXPECT_EQ(f.get_int("i32"), -2147483648LL);
  EXPECT_EQ(f.get_int("u64"), std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(f.get_int("i64"), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(f.get_float("f32"), static_cast<double>(1e-5f));  // widened exactly
  EXPECT_EQ(f.get_float("f64"), -0.1);
  EXPECT_EQ(f.get_bool("bool.true"), true);
  EXPECT_EQ(f.get_bool("bool.false"), false);
  EXPECT_EQ(f.get_string("str"), std::string("a\0b\xff", 4));
  EXPECT_EQ(f.get_string("str.empty"), "");
  EXPECT_EQ(f.require_int("u32"), 4294967295LL);
  EXPECT_EQ(f.require_string("str.empty"), "");
  EXPECT_TRUE(f.has("f64"));
  EXPECT_FALSE(f.has("nope"));
  EXPECT_EQ(f.find_metadata("nope"), nullptr);
  EXPECT_EQ(f.get_int("nope"), std::nullopt);
  EXPECT_EQ(f.get_string_array("nope"), std::nullopt);

  EXPECT_EQ(format_gguf_value(f.find_metadata("i8")->value), "-128");
  EXPECT_EQ(format_gguf_value(f.find_metadata("u64.big")->value), "18446744073709551615");
  EXPECT_EQ(format_gguf_value(f.find_metadata("bool.true")->value), "true");
  EXPECT_EQ(format_gguf_value(f.find_metadata("str")->value), "\"a\\x00b\\xff\"");
  EXPECT_EQ(format_gguf_value(f.find_metadata("f32")->value), "1e-05");
}

TEST(GgufMetadata, EveryArrayTypeRoundTripsIncludingEmptyAndNested) {
  TempDir dir;
  GgufBuilder g;
  g.kv("a.u8", scalar_array<std::uint8_t>(GgufType::kUint8, {0, 7, 255}))
      .kv("a.i8", scalar_array<std::int8_t>(GgufType::kInt8, {-128, 0, 127}))
      .kv("a.u16", scalar_array<std::uint16_t>(GgufType::kUint16, {1, 65535}))
      .kv("a.i16", scalar_array<std::int16_t>(GgufType::kInt16, {-32768, 5}))
      .kv("a.u32", scalar_array<std::uint32_t>(GgufType::kUint32, {4294967295u}))
      .kv("a.i32", scalar_array<std::int32_t>(GgufType::kInt32, {1, 3, -6}))
      .kv("a.u64", scalar_array<std::uint64_t>(GgufType::kUint64, {0, 1ull << 62}))
      .kv("a.i64", scalar_array<std::int64_t>(GgufType::kInt64, {-(1ll << 62), 2}))
      .kv("a.f32", scalar_array<float>(GgufType::kFloat32, {0.5f, -1e30f, 0.1f}))
      .kv("a.f64", scalar_array<double>(GgufType::kFloat64, {0.1, -2.0}))
      .kv("a.bool", scalar_array<std::uint8_t>(GgufType::kBool, {1, 0, 1}))
      .kv("a.str", string_array({"Ġt", "", std::string("\0x", 2), "<|im_end|>"}))
      .kv("a.empty", string_array({}))
      .kv("a.empty.u8", scalar_array<std::uint8_t>(GgufType::kUint8, {}))
      .kv("a.nested", array_value(GgufType::kArray,
                                  {scalar_array<std::int32_t>(GgufType::kInt32, {1, 2}),
                                   scalar_array<std::int32_t>(GgufType::kInt32, {}),
                                   string_array({"x"})}))
      .kv("after", scalar(GgufType::kUint16, std::uint16_t{77}));  // parsing resumes correctly
  auto const f = write_and_open(dir, g.build());

  using V = std::vector<std::int64_t>;
  EXPECT_EQ(f.get_int_array("a.u8"), (V{0, 7, 255}));
  EXPECT_EQ(f.get_int_array("a.i8"), (V{-128, 0, 127}));
  EXPECT_EQ(f.get_int_array("a.u16"), (V{1, 65535}));
  EXPECT_EQ(f.get_int_array("a.i16"), (V{-32768, 5}));
  EXPECT_EQ(f.get_int_array("a.u32"), (V{4294967295LL}));
  EXPECT_EQ(f.get_int_array("a.i32"), (V{1, 3, -6}));
  EXPECT_EQ(f.get_int_array("a.u64"), (V{0, 1ll << 62}));
  EXPECT_EQ(f.get_int_array("a.i64"), (V{-(1ll << 62), 2}));
  EXPECT_EQ(f.get_int_array("a.empty.u8"), V{});
  using D = std::vector<double>;
  EXPECT_EQ(f.get_float_array("a.f32"),
            (D{0.5, static_cast<double>(-1e30f), static_cast<double>(0.1f)}));
  EXPECT_EQ(f.get_float_array("a.f64"), (D{0.1, -2.0}));
  using S = std::vector<std::string>;
  EXPECT_EQ(f.get_string_array("a.str"), (S{"Ġt", "", std::string("\0x", 2), "<|im_end|>"}));
  EXPECT_EQ(f.require_string_array("a.empty"), S{});
  EXPECT_EQ(f.get_int("after"), 77);

  auto const& nested = f.find_metadata("a.nested")->value;
  EXPECT_EQ(nested.type, GgufType::kArray);
  EXPECT_EQ(nested.element_type, GgufType::kArray);
  EXPECT_EQ(nested.count, 3u);
  EXPECT_EQ(format_gguf_value(nested), "[[1, 2], [], [\"x\"]]");
  EXPECT_EQ(format_gguf_value(f.find_metadata("a.bool")->value), "[true, false, true]");
  EXPECT_EQ(format_gguf_value(f.find_metadata("a.i32")->value, 2), "[1, 3, ... (3 elements)]");
  EXPECT_EQ(f.find_metadata("a.f64")->value.bytes.size(), 16u);
}

TEST(GgufMetadata, WrongTypeAndMissingKeyErrorsNameTheKey) {
  TempDir dir;
  GgufBuilder g;
  g.kv("n", scalar(GgufType::kUint32, std::uint32_t{3}))
      .kv("s", string_value("x"))
      .kv("big", scalar(GgufType::kUint64, std::numeric_limits<std::uint64_t>::max()))
      .kv("big.array", scalar_array<std::uint64_t>(GgufType::kUint64, {1, 1ull << 63}))
      .kv("floats", scalar_array<float>(GgufType::kFloat32, {1.0f}));
  auto const f = write_and_open(dir, g.build());
  auto const expect_error = [&](auto&& call, std::vector<std::string> const& parts) {
    try {
      call();
      ADD_FAILURE() << "no error";
    } catch (Error const& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.what();
      std::string const message = e.what();
      EXPECT_NE(message.find(f.path().string()), std::string::npos) << message;
      for (auto const& part : parts) {
        EXPECT_NE(message.find(part), std::string::npos)
            << "missing '" << part << "' in " << message;
      }
    }
  };
  auto const n_offset = std::to_string(g.value_field(0));
  expect_error([&] { (void)f.get_string("n"); }, {"'n'", "UINT32", "not STRING", n_offset});
  expect_error([&] { (void)f.get_float("n"); }, {"'n'", "UINT32", "FLOAT32"});
  expect_error([&] { (void)f.get_bool("s"); }, {"'s'", "STRING", "BOOL"});
  expect_error([&] { (void)f.get_int("s"); }, {"'s'", "integer"});
  expect_error([&] { (void)f.get_string_array("s"); }, {"'s'", "ARRAY of STRING"});
  expect_error([&] { (void)f.get_int_array("floats"); }, {"'floats'", "ARRAY of FLOAT32"});
  expect_error([&] { (void)f.get_float_array("n"); }, {"'n'", "UINT32"});
  expect_error([&] { (void)f.get_int("big"); }, {"'big'", "18446744073709551615", "signed 64-bit"});
  expect_error([&] { (void)f.get_int_array("big.array"); }, {"'big.array'", "9223372036854775808"});
  expect_error([&] { (void)f.require_string("tokenizer.ggml.model"); },
               {"'tokenizer.ggml.model'", "absent"});
  expect_error([&] { (void)f.require_int_array("x.y"); }, {"'x.y'", "absent"});
  expect_error([&] { (void)f.require_bool("b"); }, {"'b'", "absent"});
  expect_error([&] { (void)f.require_float("c"); }, {"'c'", "absent"});
  expect_error([&] { (void)f.require_float_array("d"); }, {"'d'", "absent"});
}

// =============================================================================================
// Tensors: layout, order, alignment, versions
// =============================================================================================

TEST(GgufTensors, InfosBytesAndDataOrder) {
  TempDir dir;
  GgufBuilder g;
  // The second info's data comes first in the data section.
  g.tensor(TestTensor{"late", GgmlType::kF16, {3, 2}, iota_bytes(12, 1), 64})
      .tensor(TestTensor{"early", GgmlType::kQ8_0, {32, 1, 1, 1}, iota_bytes(34, 2), 0})
      .tensor(TestTensor{"k.weight", GgmlType::kQ4_K, {256, 2}, iota_bytes(288, 3), 96});
  auto const bytes = g.build();
  auto const f = write_and_open(dir, bytes);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "early");
  EXPECT_EQ(f.tensors()[1].name, "late");
  EXPECT_EQ(f.tensors()[2].name, "k.weight");
  EXPECT_EQ(f.data_offset(), g.data_offset);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.file_size(), bytes.size());

  auto const& late = f.at("late");
  EXPECT_EQ(late.type, GgmlType::kF16);
  EXPECT_EQ(late.ne, (std::vector<std::uint64_t>{3, 2}));
  EXPECT_EQ(late.shape(), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(late.numel(), 6u);
  EXPECT_EQ(late.rows(), 2u);
  EXPECT_EQ(late.row_length(), 3u);
  EXPECT_EQ(late.row_bytes(), 6u);
  EXPECT_EQ(late.offset, 64u);
  EXPECT_EQ(late.nbytes, 12u);
  EXPECT_EQ(late.info_offset, g.info_offsets[0]);
  auto const data = f.bytes(late);
  EXPECT_EQ(std::vector<std::byte>(data.begin(), data.end()), iota_bytes(12, 1));
  EXPECT_EQ(data.data(), reinterpret_cast<std::byte const*>(f.bytes(f.at("early")).data()) + 64);

  auto const& early = f.at("early");
  EXPECT_EQ(early.shape(), (std::vector<std::int64_t>{1, 1, 1, 32}));
  EXPECT_EQ(early.nbytes, 34u);
  EXPECT_EQ(f.at("k.weight").nbytes, 288u);
  EXPECT_EQ(f.find("early"), &early);
  EXPECT_EQ(f.find("missing"), nullptr);
  try {
    (void)f.at("missing");
    ADD_FAILURE() << "no error";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("'missing'"), std::string::npos) << e.what();
  }
}

TEST(GgufTensors, VersionTwoCustomAlignmentAndNoTensors) {
  TempDir dir;
  {
    GgufBuilder g;
    g.version = 2;
    g.alignment = 64;
    g.kv("general.alignment", scalar(GgufType::kUint32, std::uint32_t{64}))
        .tensor("a", GgmlType::kF32, {3})
        .tensor("b", GgmlType::kF32, {1});
    auto const f = write_and_open(dir, g.build(), "v2.gguf");
    EXPECT_EQ(f.version(), 2u);
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.data_offset() % 64, 0u);
    EXPECT_EQ(f.at("b").offset, 64u);
  }
  {
    // No tensors: the file may end right after the metadata, without padding.
    Bytes b;
    b.raw("GGUF").put<std::uint32_t>(3).put<std::uint64_t>(0).put<std::uint64_t>(1);
    b.str("k").put(static_cast<std::uint32_t>(GgufType::kUint8)).put<std::uint8_t>(9);
    auto const f = write_and_open(dir, b.data(), "empty.gguf");
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_EQ(f.get_int("k"), 9);
    EXPECT_EQ(f.data_offset(), f.file_size());
  }
}

TEST(GgufTensors, MovedFileStaysUsableAndForeignInfoIsRefused) {
  TempDir dir;
  auto g = sample_file();
  auto f = write_and_open(dir, g.build());
  auto const* data = f.bytes(f.at("n.weight")).data();
  GgufFile moved = std::move(f);
  EXPECT_EQ(moved.bytes(moved.at("n.weight")).data(), data);
  EXPECT_EQ(moved.get_string("general.architecture"), "llama");

  GgufTensorInfo foreign = moved.at("n.weight");
  foreign.offset = 1u << 20;
  try {
    (void)moved.bytes(foreign);
    ADD_FAILURE() << "no error";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
  }
}

// =============================================================================================
// Dequantization
// =============================================================================================
//
// Exactness: every supported format's w is exact in float32 or a single rounding of an exact
// value, so the references compare with ==, not a tolerance:
//  - F32 is a copy; F16 and BF16 widen exactly (fp16_to_float / bf16_to_float are bit exact);
//  - Q4_0 d·(q − 8) and Q8_0 d·q: an FP16 d has an 11-bit significand and q at most 8 bits, so
//    the product fits float's 24 bits (FP16 subnormals and the FP16 exponent range stay normal
//    in float32);
//  - Q4_1 d·q + m: d·q is exact as above, so float's d·q + m is one rounding of the exact sum,
//    the same with or without FMA contraction. The reference rounds the same exact sum.
// The references index differently from the implementation (element-major: element i of a
// block reads nibble i % 16 of byte i % 16, low half for i < 16), which is what they check.

/// Random FP16 bits of a finite value: normal values around `scale` and, now and then, a
/// subnormal or a zero, so the d/m conversions see every class.
std::uint16_t random_fp16(Rng& rng, float scale) {
  int const kind = rng.uniform_int(0, 9);
  if (kind == 0) return static_cast<std::uint16_t>(rng.uniform_int(0, 0x3FF));  // subnormal/zero
  if (kind == 1) return static_cast<std::uint16_t>(0x8000 | rng.uniform_int(0, 0x3FF));
  return float_to_fp16(rng.normal(scale)).bits;
}

float half(std::uint16_t bits) { return fp16_to_float(fp16_t{bits}); }

/// Reference for one Q-block element i in 0..31.
float q4_0_ref(std::byte const* block, int i) {
  auto const byte = std::to_integer<int>(block[2 + i % 16]);
  int const q = i < 16 ? (byte & 0x0F) : (byte >> 4);
  return half(load<std::uint16_t>(block)) * static_cast<float>(q - 8);
}
float q4_1_ref(std::byte const* block, int i) {
  auto const byte = std::to_integer<int>(block[4 + i % 16]);
  int const q = i < 16 ? (byte & 0x0F) : (byte >> 4);
  float const d = half(load<std::uint16_t>(block));
  float const m = half(load<std::uint16_t>(block + 2));
  return d * static_cast<float>(q) + m;
}
float q8_0_ref(std::byte const* block, int i) {
  return half(load<std::uint16_t>(block)) * static_cast<float>(load<std::int8_t>(block + 2 + i));
}

/// Random but well-formed bytes of `blocks` blocks of `type` (finite d and m).
std::vector<std::byte> random_blocks(Rng& rng, GgmlType type, std::size_t elements) {
  auto const& info = ggml_type_info(type);
  std::vector<std::byte> bytes(elements / info.block_size * info.block_bytes);
  for (auto& b : bytes) b = static_cast<std::byte>(rng.uniform_int(0, 255));
  for (std::size_t at = 0; at < bytes.size(); at += info.block_bytes) {
    switch (type) {
      case GgmlType::kF32: patch(bytes, at, rng.normal(2.0f)); break;
      case GgmlType::kF16: patch(bytes, at, random_fp16(rng, 2.0f)); break;
      case GgmlType::kBF16: patch(bytes, at, float_to_bf16(rng.normal(2.0f)).bits); break;
      case GgmlType::kQ4_1:
        patch(bytes, at + 2, random_fp16(rng, 0.1f));
        patch(bytes, at, random_fp16(rng, 0.01f));
        break;
      default: patch(bytes, at, random_fp16(rng, 0.01f)); break;
    }
  }
  return bytes;
}

float reference(GgmlType type, std::vector<std::byte> const& bytes, std::size_t i) {
  auto const* p = bytes.data();
  switch (type) {
    case GgmlType::kF32: return load<float>(p + 4 * i);
    case GgmlType::kF16: return half(load<std::uint16_t>(p + 2 * i));
    case GgmlType::kBF16: return bf16_to_float(bf16_t{load<std::uint16_t>(p + 2 * i)});
    case GgmlType::kQ4_0: return q4_0_ref(p + i / 32 * 18, static_cast<int>(i % 32));
    case GgmlType::kQ4_1: return q4_1_ref(p + i / 32 * 20, static_cast<int>(i % 32));
    case GgmlType::kQ8_0: return q8_0_ref(p + i / 32 * 34, static_cast<int>(i % 32));
    default: ADD_FAILURE() << "no reference"; return 0.0f;
  }
}

class GgufDequantize : public ::testing::TestWithParam<GgmlType> {};

TEST_P(GgufDequantize, MatchesReferenceExactlyThroughTheFileWholeAndByRows) {
  GgmlType const type = GetParam();
  Rng rng(1234 + static_cast<std::uint64_t>(type));
  SCOPED_TRACE(rng.describe());
  TempDir dir;
  // ne = {96, 3, 2}: 6 rows of 96 elements (3 blocks of 32 per row for the Q types).
  std::vector<std::uint64_t> const ne = {96, 3, 2};
  std::size_t const numel = 96 * 3 * 2;
  auto data = random_blocks(rng, type, numel);
  GgufBuilder g;
  g.tensor(TestTensor{"x", type, ne, data, std::nullopt});
  auto const f = write_and_open(dir, g.build());
  auto const& x = f.at("x");
  ASSERT_EQ(x.nbytes, data.size());
  ASSERT_EQ(x.rows(), 6u);

  auto const whole = f.dequantize(x);
  ASSERT_EQ(whole.size(), numel);
  for (std::size_t i = 0; i < numel; ++i) {
    float const expected = reference(type, data, i);
    ASSERT_EQ(std::bit_cast<std::uint32_t>(whole[i]), std::bit_cast<std::uint32_t>(expected))
        << "element " << i << ": " << whole[i] << " vs " << expected;
  }

  // Rows 2..4 (a row starts on a block boundary), and an empty range.
  std::vector<float> rows(3 * 96, -1.0f);
  f.dequantize_rows(x, 2, 3, rows);
  EXPECT_TRUE(std::equal(rows.begin(), rows.end(), whole.begin() + 2 * 96));
  f.dequantize_rows(x, 6, 0, std::span<float>());

  // Size and range mistakes are usage errors.
  auto const expect_usage = [](auto&& call) {
    try {
      call();
      ADD_FAILURE() << "no error";
    } catch (Error const& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
    }
  };
  std::vector<float> short_out(numel - 1);
  expect_usage([&] { f.dequantize(x, short_out); });
  expect_usage([&] { f.dequantize_rows(x, 5, 2, rows); });
  expect_usage([&] { f.dequantize_rows(x, 7, 0, std::span<float>()); });
}

INSTANTIATE_TEST_SUITE_P(Gguf, GgufDequantize,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16,
                                           GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0),
                         [](auto const& p) { return std::string(ggml_type_info(p.param).name); });

TEST(GgufDequantizeByHand, BlocksWithLiteralValues) {
  // Values chosen so every result is a short decimal: d = 0.5 (FP16 0x3800), m = -2 (0xC000).
  // Byte j of qs holds element j in its low nibble and element j + 16 in its high nibble.
  std::vector<std::byte> q4_0(18);
  patch<std::uint16_t>(q4_0, 0, 0x3800);
  for (int j = 0; j < 16; ++j) q4_0[2 + j] = static_cast<std::byte>(j | ((15 - j) << 4));
  std::vector<float> out(32);
  dequantize_ggml(GgmlType::kQ4_0, q4_0, out, "q4_0");
  // element j < 16: 0.5·(j − 8); element 16 + j: 0.5·((15 − j) − 8)
  EXPECT_EQ(out[0], -4.0f);
  EXPECT_EQ(out[8], 0.0f);
  EXPECT_EQ(out[15], 3.5f);
  EXPECT_EQ(out[16], 3.5f);
  EXPECT_EQ(out[31], -4.0f);

  std::vector<std::byte> q4_1(20);
  patch<std::uint16_t>(q4_1, 0, 0x3800);
  patch<std::uint16_t>(q4_1, 2, 0xC000);
  for (int j = 0; j < 16; ++j) q4_1[4 + j] = static_cast<std::byte>(j | ((15 - j) << 4));
  dequantize_ggml(GgmlType::kQ4_1, q4_1, out, "q4_1");
  // element j < 16: 0.5·j − 2; element 16 + j: 0.5·(15 − j) − 2
  EXPECT_EQ(out[0], -2.0f);
  EXPECT_EQ(out[1], -1.5f);
  EXPECT_EQ(out[15], 5.5f);
  EXPECT_EQ(out[16], 5.5f);
  EXPECT_EQ(out[31], -2.0f);

  std::vector<std::byte> q8_0(34);
  patch<std::uint16_t>(q8_0, 0, 0x3800);
  for (int j = 0; j < 32; ++j) {
    q8_0[2 + j] = static_cast<std::byte>(static_cast<std::int8_t>(j * 8 - 128));
  }
  dequantize_ggml(GgmlType::kQ8_0, q8_0, out, "q8_0");
  EXPECT_EQ(out[0], -64.0f);  // 0.5 · −128
  EXPECT_EQ(out[16], 0.0f);
  EXPECT_EQ(out[31], 60.0f);  // 0.5 · 120

  std::vector<std::byte> f16(4);
  patch<std::uint16_t>(f16, 0, 0x3C00);  // 1
  patch<std::uint16_t>(f16, 2, 0x0001);  // 2^-24, the smallest subnormal
  std::vector<float> two(2);
  dequantize_ggml(GgmlType::kF16, f16, two, "f16");
  EXPECT_EQ(two[0], 1.0f);
  EXPECT_EQ(two[1], 0x1p-24f);
  patch<std::uint16_t>(f16, 0, 0xBF80);  // BF16 −1
  patch<std::uint16_t>(f16, 2, 0x4049);  // BF16 3.140625
  dequantize_ggml(GgmlType::kBF16, f16, two, "bf16");
  EXPECT_EQ(two[0], -1.0f);
  EXPECT_EQ(two[1], 3.140625f);
}

TEST(GgufDequantizeByHand, UnsupportedTypeNamesTensorAndType) {
  TempDir dir;
  GgufBuilder g;
  g.tensor("blk.0.ffn_down.weight", GgmlType::kQ6_K, {256, 2});
  auto const f = write_and_open(dir, g.build());
  auto const& t = f.at("blk.0.ffn_down.weight");
  EXPECT_EQ(t.nbytes, 2u * 210u);
  std::vector<float> out(512);
  for (int variant = 0; variant < 3; ++variant) {
    try {
      if (variant == 0) f.dequantize(t, out);
      if (variant == 1) (void)f.dequantize(t);
      if (variant == 2) f.dequantize_rows(t, 0, 1, std::span<float>(out).first(256));
      ADD_FAILURE() << "no error";
    } catch (Error const& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.what();
      std::string const message = e.what();
      EXPECT_NE(message.find("'blk.0.ffn_down.weight'"), std::string::npos) << message;
      EXPECT_NE(message.find("Q6_K"), std::string::npos) << message;
      EXPECT_NE(message.find(f.path().string()), std::string::npos) << message;
    }
  }
}

// =============================================================================================
// Rejection of corrupted files
// =============================================================================================

TEST(GgufReject, EveryTruncationFailsNamingAnOffset) {
  TempDir dir;
  auto g = sample_file();
  auto const bytes = g.build();
  ASSERT_NO_THROW(write_and_open(dir, bytes));
  // Every proper prefix is invalid: the last tensor ends exactly at the end of the file.
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE(fmt::format("truncated to {} of {} bytes", length, bytes.size()));
    if (length < 24) {
      expect_invalid(dir, prefix(bytes, length),
                     {fmt::format("file has {} bytes", length), "24-byte header"});
    } else {
      expect_invalid(dir, prefix(bytes, length), {"byte offset"});
    }
  }
}

TEST(GgufReject, TruncatedStringAndFieldMessages) {
  TempDir dir;
  auto g = sample_file();
  auto const bytes = g.build();
  // Cut inside the value of 'tokenizer.ggml.tokens': too few bytes left for its 3 elements.
  auto const tokens_value = g.value_field(2);
  auto cut = prefix(bytes, tokens_value + 12 + 9 + 8 + 1);
  expect_invalid(dir, cut, {"'tokenizer.ggml.tokens'", "3 STRING elements",
                            at_byte(tokens_value + 12)});
  // Cut inside the second of three long strings: the element and its offset are named.
  GgufBuilder strings;
  strings.kv("s", string_array({std::string(20, 'a'), std::string(20, 'b'), std::string(20, 'c')}));
  auto const whole = strings.build();
  auto const second = strings.value_field(0) + 12 + 28;
  cut = prefix(whole, second + 8 + 5);
  expect_invalid(dir, cut, {"metadata key 's'", "string array element 1",
                            at_byte(second), "claims 20 bytes"});
  // Cut inside the second tensor info's extents.
  cut = prefix(bytes, g.ne_field(1, 0) + 3);
  expect_invalid(dir, cut, {"tensor 'n.weight'", "ne[0]", at_byte(g.ne_field(1, 0))});
  // Cut inside the data of the last tensor.
  cut.assign(bytes.begin(), bytes.end() - 1);
  expect_invalid(dir, cut, {"tensor 'n.weight'", "run past the end of the file"});
}

TEST(GgufReject, BadMagicAndVersion) {
  TempDir dir;
  auto g = sample_file();
  auto bytes = g.build();
  auto bad = bytes;
  bad[3] = std::byte{'G'};
  expect_invalid(dir, bad, {"magic", "'GGUG'", "not a GGUF file"});
  for (std::uint32_t version : {0u, 1u, 4u, 0xFFFFFFFFu}) {
    bad = bytes;
    patch(bad, 4, version);
    expect_invalid(dir, bad, {fmt::format("version {}", version), "byte offset 4"});
  }
  bad = bytes;
  patch<std::uint32_t>(bad, 4, 0x03000000u);
  expect_invalid(dir, bad, {"big-endian"});
}

TEST(GgufReject, HugeCountsAndLengthsFailBeforeAllocating) {
  TempDir dir;
  auto g = sample_file();
  auto const bytes = g.build();
  auto bad = bytes;
  patch<std::uint64_t>(bad, 8, std::uint64_t{1} << 62);
  expect_invalid(dir, bad, {"tensor_count 4611686018427387904", "byte offset 8", "cannot fit"});
  bad = bytes;
  patch<std::uint64_t>(bad, 16, ~std::uint64_t{0});
  expect_invalid(dir, bad, {"metadata_kv_count 18446744073709551615", "byte offset 16"});
  // A key length past the specification's 65535 limit.
  bad = bytes;
  patch<std::uint64_t>(bad, g.kv_offsets[0], std::uint64_t{1} << 60);
  expect_invalid(dir, bad, {"metadata entry 0", "key", at_byte(g.kv_offsets[0]),
                            "limit is 65535"});
  // A string value longer than the file.
  bad = bytes;
  patch<std::uint64_t>(bad, g.value_field(0), ~std::uint64_t{0} - 3);
  expect_invalid(dir, bad, {"'general.architecture'", "string value",
                            at_byte(g.value_field(0) + 8)});
  // An array count no file could hold: string elements, then int32 elements.
  bad = bytes;
  patch<std::uint64_t>(bad, g.value_field(2) + 4, std::uint64_t{1} << 61);
  expect_invalid(dir, bad, {"'tokenizer.ggml.tokens'", "2305843009213693952 STRING", "cannot fit"});
  bad = bytes;
  patch<std::uint64_t>(bad, g.value_field(3) + 4, ~std::uint64_t{0});
  expect_invalid(dir, bad, {"'tokenizer.ggml.token_type'", "18446744073709551615 INT32",
                            "bytes remain"});
  // A string array element whose length runs off the end.
  bad = bytes;
  patch<std::uint64_t>(bad, g.value_field(2) + 12, std::uint64_t{1} << 40);
  expect_invalid(dir, bad, {"'tokenizer.ggml.tokens'", "element 0", "claims 1099511627776 bytes"});
}

TEST(GgufReject, BadValueTypesAndBools) {
  TempDir dir;
  auto g = sample_file();
  auto const bytes = g.build();
  auto bad = bytes;
  auto const type_at = g.value_field(1) - 4;  // 'llama.block_count' type tag
  patch<std::uint32_t>(bad, type_at, 13);
  expect_invalid(dir, bad, {"'llama.block_count'", "value type 13", at_byte(type_at)});
  bad = bytes;
  patch<std::uint32_t>(bad, g.value_field(3), 0x80000000u);  // array element type
  expect_invalid(dir, bad, {"'tokenizer.ggml.token_type'", "array element type 2147483648"});
  bad = bytes;
  patch<std::uint8_t>(bad, g.value_field(4), 2);
  expect_invalid(dir, bad, {"'flag'", "BOOL", "is 2", at_byte(g.value_field(4))});

  GgufBuilder arrays;
  arrays.kv("bools", scalar_array<std::uint8_t>(GgufType::kBool, {0, 1, 7}));
  expect_invalid(dir, arrays.build(), {"'bools'", "element 2", "is 7"});

  // Arrays nested deeper than the cap.
  Value deep = scalar_array<std::uint8_t>(GgufType::kUint8, {1});
  for (int i = 0; i < 10; ++i) deep = array_value(GgufType::kArray, {deep});
  GgufBuilder nested;
  nested.kv("deep", deep);
  expect_invalid(dir, nested.build(), {"'deep'", "nest deeper than 8"});
}

TEST(GgufReject, DuplicateKeysAndTensorNames) {
  TempDir dir;
  GgufBuilder g;
  g.kv("a", scalar(GgufType::kUint8, std::uint8_t{1}))
      .kv("b", scalar(GgufType::kUint8, std::uint8_t{2}))
      .kv("a", string_value("again"));
  auto bytes = g.build();
  expect_invalid(dir, bytes, {"metadata key 'a'", at_byte(g.kv_offsets[2]),
                              fmt::format("repeats the key at byte offset {}", g.kv_offsets[0])});
  GgufBuilder t;
  t.tensor("w", GgmlType::kF32, {4}).tensor("w", GgmlType::kF32, {4});
  bytes = t.build();
  expect_invalid(dir, bytes, {"tensor 'w'", "info at " + at_byte(t.info_offsets[1]),
                              "repeats tensor info 0 at " + at_byte(t.info_offsets[0])});
}

TEST(GgufReject, BadKeysAndNames) {
  TempDir dir;
  GgufBuilder g;
  g.kv("", scalar(GgufType::kUint8, std::uint8_t{1}));
  expect_invalid(dir, g.build(), {"empty", "byte offset 24"});
  GgufBuilder ctl;
  ctl.kv("bad\nkey", scalar(GgufType::kUint8, std::uint8_t{1}));
  expect_invalid(dir, ctl.build(), {"'bad\\x0akey'", "printable ASCII"});
  GgufBuilder long_name;
  long_name.tensor(std::string(65, 'n'), GgmlType::kF32, {1});
  expect_invalid(dir, long_name.build(), {"tensor info 0", "65 bytes long", "limit is 64"});
  GgufBuilder empty_name;
  empty_name.tensor("", GgmlType::kF32, {1});
  expect_invalid(dir, empty_name.build(), {"tensor info 0", "name is empty"});
}

TEST(GgufReject, BadTensorInfos) {
  TempDir dir;
  auto g = sample_file();
  auto const bytes = g.build();
  // n_dims 0 and 5.
  for (std::uint32_t n_dims : {0u, 5u}) {
    auto bad = bytes;
    patch(bad, g.ndims_field(0), n_dims);
    expect_invalid(dir, bad, {"tensor 'w.weight'", fmt::format("n_dims {}", n_dims),
                              at_byte(g.ndims_field(0))});
  }
  // An extent of 0.
  auto bad = bytes;
  patch<std::uint64_t>(bad, g.ne_field(0, 1), 0);
  expect_invalid(dir, bad, {"tensor 'w.weight'", "ne[1]", "is 0", at_byte(g.ne_field(0, 1))});
  // Extents whose product overflows.
  bad = bytes;
  patch<std::uint64_t>(bad, g.ne_field(0, 0), std::uint64_t{1} << 40);
  patch<std::uint64_t>(bad, g.ne_field(0, 1), std::uint64_t{1} << 40);
  expect_invalid(dir, bad, {"tensor 'w.weight'", "overflow", "ne[1]"});
  // Unknown and retired ggml types.
  for (std::uint32_t type : {4u, 31u, 40u, 1000u}) {
    bad = bytes;
    patch(bad, g.type_field(1), type);
    expect_invalid(dir, bad, {"tensor 'n.weight'", fmt::format("ggml type {}", type),
                              at_byte(g.type_field(1)), "not a known tensor type"});
  }
  // ne[0] not a multiple of the Q4_1 block.
  bad = bytes;
  patch<std::uint64_t>(bad, g.ne_field(0, 0), 48);
  patch<std::uint64_t>(bad, g.ne_field(0, 1), 1);
  expect_invalid(dir, bad, {"tensor 'w.weight'", "ne[0] = 48", "Q4_1 block size 32"});
}

TEST(GgufReject, MisalignedOverlappingAndOutOfFileTensors) {
  TempDir dir;
  auto g = sample_file();
  auto const bytes = g.build();
  // Misaligned: 16 is not a multiple of 32.
  auto bad = bytes;
  patch<std::uint64_t>(bad, g.offset_field(1), 16);
  expect_invalid(dir, bad, {"tensor 'n.weight'", "data offset 16", "alignment 32",
                            at_byte(g.offset_field(1))});
  // Overlapping: both at 0.
  bad = bytes;
  patch<std::uint64_t>(bad, g.offset_field(1), 0);
  auto const data = g.data_offset;
  expect_invalid(dir, bad, {"'w.weight'", "'n.weight'", "overlap",
                            fmt::format("[{}, {})", data, data + 80),  // w: 4 Q4_1 blocks
                            fmt::format("[{}, {})", data, data + 20)}); // n: 5 floats
  // Out of the file, and far out (offset + size overflows u64).
  bad = bytes;
  patch<std::uint64_t>(bad, g.offset_field(1), 1u << 20);
  expect_invalid(dir, bad, {"tensor 'n.weight'", "run past the end of the file",
                            fmt::format("absolute byte offset {}", data + (1u << 20))});
  bad = bytes;
  patch<std::uint64_t>(bad, g.offset_field(1), ~std::uint64_t{31});
  expect_invalid(dir, bad, {"tensor 'n.weight'", "run past the end of the file"});
  // A data section that would start past the end of the file.
  bad = prefix(bytes, g.offset_field(1) + 8);
  expect_invalid(dir, bad, {"data section would start", at_byte(data)});
}

TEST(GgufReject, BadAlignmentKey) {
  TempDir dir;
  {
    GgufBuilder g;
    g.kv("general.alignment", scalar(GgufType::kUint64, std::uint64_t{32}));
    expect_invalid(dir, g.build(), {"'general.alignment'", "UINT64", "not UINT32"});
  }
  for (std::uint32_t alignment : {0u, 12u}) {
    GgufBuilder g;
    g.kv("general.alignment", scalar(GgufType::kUint32, alignment));
    expect_invalid(dir, g.build(), {"'general.alignment'", fmt::format("is {}", alignment),
                                    "multiple of 8"});
  }
}

TEST(GgufReject, NotARegularFileAndMissingFile) {
  TempDir dir;
  expect_invalid(dir.path(), {"not a regular file"});
  try {
    GgufFile::open(dir / "missing.gguf");
    ADD_FAILURE() << "no error";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
  }
}

// =============================================================================================
// The real model: SmolLM2-135M-Instruct, Q4_1 (installed by scripts/setup.sh)
// =============================================================================================

/// SLIDESPARSE_SMOLLM2_GGUF, else <source dir>/.deps/models/… found from this file's path
/// (tests/io/gguf_test.cpp) or, failing that, from the working directory upwards.
fs::path smollm2_path() {
  if (char const* env = std::getenv("SLIDESPARSE_SMOLLM2_GGUF"); env != nullptr && *env != '\0') {
    return env;
  }
  fs::path const relative = fs::path(".deps") / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  auto const from_source = fs::path(__FILE__).parent_path().parent_path().parent_path() / relative;
  if (fs::exists(from_source)) return from_source;
  std::error_code ec;
  for (auto dir = fs::current_path(ec); !ec && !dir.empty(); dir = dir.parent_path()) {
    if (fs::exists(dir / relative)) return dir / relative;
    if (dir == dir.parent_path()) break;
  }
  return from_source;
}

struct Stats {
  double mean = 0;
  double rms = 0;
  float max_abs = 0;
  bool finite = true;
};

Stats stats(std::vector<float> const& values) {
  Stats s;
  double sum = 0;
  double sum_sq = 0;
  for (float const v : values) {
    s.finite = s.finite && std::isfinite(v);
    sum += v;
    sum_sq += static_cast<double>(v) * v;
    s.max_abs = std::max(s.max_abs, std::fabs(v));
  }
  s.mean = sum / static_cast<double>(values.size());
  s.rms = std::sqrt(sum_sq / static_cast<double>(values.size()));
  return s;
}

TEST(GgufRealFile, SmolLM2Q4_1OpensAndDequantizes) {
  auto const path = smollm2_path();
  if (!fs::exists(path)) {
    GTEST_SKIP() << "SmolLM2 GGUF not found at " << path
                 << " (scripts/setup.sh installs it; or set SLIDESPARSE_SMOLLM2_GGUF)";
  }
  auto const f = GgufFile::open(path);

  // What the file holds, once, for the log.
  std::map<std::string, int> types;
  for (auto const& t : f.tensors()) ++types[std::string(ggml_type_info(t.type).name)];
  std::cout << fmt::format("{}: GGUF v{}, {} bytes, alignment {}, data at byte {}, {} metadata "
                           "keys, {} tensors:", path.string(), f.version(), f.file_size(),
                           f.alignment(), f.data_offset(), f.metadata().size(), f.tensors().size());
  for (auto const& [name, count] : types) std::cout << fmt::format(" {} {}", count, name);
  std::cout << "\n";
  for (auto const& entry : f.metadata()) {
    if (entry.key == "tokenizer.chat_template") {
      std::cout << fmt::format("  {} = <{} bytes>\n", entry.key, entry.value.bytes.size() - 8);
      continue;
    }
    std::cout << fmt::format("  {} ({}) = {}\n", entry.key, gguf_type_name(entry.value.type),
                             format_gguf_value(entry.value, 5));
  }

  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.file_size(), 98'362'432u);
  EXPECT_EQ(f.require_string("general.architecture"), "llama");
  EXPECT_EQ(f.require_int("llama.block_count"), 30);
  EXPECT_EQ(f.require_int("llama.embedding_length"), 576);
  EXPECT_EQ(f.require_int("llama.feed_forward_length"), 1536);
  EXPECT_EQ(f.require_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.require_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(f.require_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.require_string("tokenizer.ggml.pre"), "smollm");
  auto const tokens = f.require_string_array("tokenizer.ggml.tokens");
  EXPECT_EQ(tokens.size(), 49152u);
  EXPECT_EQ(f.require_int_array("tokenizer.ggml.token_type").size(), 49152u);
  EXPECT_EQ(f.require_string_array("tokenizer.ggml.merges").size(), 48900u);
  auto const bos = f.require_int("tokenizer.ggml.bos_token_id");
  auto const eos = f.require_int("tokenizer.ggml.eos_token_id");
  ASSERT_LT(static_cast<std::size_t>(std::max(bos, eos)), tokens.size());
  EXPECT_EQ(tokens[static_cast<std::size_t>(bos)], "<|im_start|>");
  EXPECT_EQ(tokens[static_cast<std::size_t>(eos)], "<|im_end|>");
  EXPECT_NEAR(f.require_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);

  // 30 blocks × 9 tensors + token_embd + output_norm; the output head is tied to token_embd.
  EXPECT_EQ(f.tensors().size(), 30u * 9u + 2u);
  EXPECT_EQ(f.find("output.weight"), nullptr);

  auto const& embd = f.at("token_embd.weight");
  EXPECT_EQ(embd.type, GgmlType::kQ8_0);
  EXPECT_EQ(embd.shape(), (std::vector<std::int64_t>{49152, 576}));
  auto const& q = f.at("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, GgmlType::kQ4_1);
  EXPECT_EQ(q.shape(), (std::vector<std::int64_t>{576, 576}));
  EXPECT_EQ(f.at("blk.0.attn_k.weight").shape(), (std::vector<std::int64_t>{192, 576}));
  EXPECT_EQ(f.at("blk.29.ffn_down.weight").shape(), (std::vector<std::int64_t>{576, 1536}));
  EXPECT_EQ(f.at("blk.29.ffn_up.weight").shape(), (std::vector<std::int64_t>{1536, 576}));
  EXPECT_EQ(f.at("output_norm.weight").type, GgmlType::kF32);

  // Plausible scales: trained projection weights have an RMS of roughly 0.01 to 0.2, the
  // RMSNorm gains are positive and of order 1.
  for (char const* name : {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight",
                           "blk.29.attn_v.weight", "blk.0.attn_norm.weight",
                           "output_norm.weight"}) {
    auto const& t = f.at(name);
    auto const values = f.dequantize(t);
    ASSERT_EQ(values.size(), t.numel()) << name;
    auto const s = stats(values);
    std::cout << fmt::format("  {} {} shape [{}x{}]: mean {:.4g}, rms {:.4g}, max |w| {:.4g}\n",
                             name, ggml_type_info(t.type).name, t.rows(), t.row_length(), s.mean,
                             s.rms, s.max_abs);
    EXPECT_TRUE(s.finite) << name;
    EXPECT_GT(s.rms, 1e-3) << name;
    EXPECT_LT(s.max_abs, 100.0f) << name;
    if (t.ne.size() == 2) {
      EXPECT_LT(s.rms, 0.5) << name;
      EXPECT_LT(std::fabs(s.mean), 0.1 * s.rms + 1e-3) << name;
    } else {
      EXPECT_GT(s.mean, 0.0) << name;
    }
    // A row range reads the same values as the whole tensor.
    auto const rows = std::min<std::uint64_t>(3, t.rows());
    auto const first = t.rows() - rows;
    std::vector<float> part(static_cast<std::size_t>(rows * t.row_length()));
    f.dequantize_rows(t, first, rows, part);
    EXPECT_TRUE(std::equal(part.begin(), part.end(),
                           values.begin() + static_cast<std::ptrdiff_t>(first * t.row_length())))
        << name;
  }
}

}  // namespace
}  // namespace slidesparse::io
