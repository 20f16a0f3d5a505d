#include "slidesparse/io/safetensors.hpp"

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"

namespace slidesparse::io {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kTwo40 = std::uint64_t{1} << 40;

/// A fresh folder per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto const* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           fmt::format("slidesparse-safetensors-{}-{}", ::getpid(), info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(std::string const& name) const { return dir_ / name; }

  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (auto const& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

/// Deterministic bytes: position-dependent so swapped or shifted data is caught.
std::vector<std::byte> iota_bytes(std::size_t n, unsigned seed) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((i * 37 + seed) & 0xFF);
  return bytes;
}

std::vector<std::byte> to_vector(std::span<std::byte const> span) {
  return {span.begin(), span.end()};
}

std::vector<char> read_all(fs::path const& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Writes '<8-byte LE length><header><data>'; the length is header.size() unless given.
void write_raw(fs::path const& path, std::string const& header, std::size_t data_bytes,
               std::uint64_t length = ~std::uint64_t{0}) {
  if (length == ~std::uint64_t{0}) length = header.size();
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xFF));
  out << header;
  for (std::size_t i = 0; i < data_bytes; ++i) out.put(static_cast<char>(i & 0xFF));
}

/// Expects open() to throw Error(kInvalidInput) whose message names the file and holds every
/// one of `parts`.
void expect_invalid(fs::path const& path, std::vector<std::string> parts) {
  parts.push_back(path.string());
  test::expect_error([&] { SafetensorsFile::open(path); }, ErrorKind::kInvalidInput, parts);
}

std::string entry(std::string const& name, std::string const& dtype, std::string const& shape,
                  std::uint64_t begin, std::uint64_t end) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", name, dtype,
                     shape, begin, end);
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripEveryDtypeKeepsOrderDataAndMetadata) {
  std::vector<DType> const dtypes = {
      DType::kBool, DType::kU8,   DType::kI8,   DType::kF8E5M2, DType::kF8E4M3,
      DType::kI16,  DType::kU16,  DType::kF16,  DType::kBF16,   DType::kI32,
      DType::kU32,  DType::kF32,  DType::kF64,  DType::kI64,    DType::kU64};
  std::vector<OwnedTensor> tensors;
  for (std::size_t i = 0; i < dtypes.size(); ++i) {
    // Reverse-alphabetical names, so file order differs from name order.
    std::vector<std::int64_t> shape = {static_cast<std::int64_t>(i % 3 + 1), 3};
    auto const bytes = static_cast<std::size_t>(shape[0] * shape[1]) * dtype_size(dtypes[i]);
    tensors.push_back({{fmt::format("t{:02}.{}", 99 - i, dtype_name(dtypes[i])), dtypes[i], shape},
                       iota_bytes(bytes, static_cast<unsigned>(i))});
  }
  Metadata const metadata = {{"format", "pt"}, {"note", "quotes \" and \\ and ü"}};
  auto const path = file("all.safetensors");
  write_safetensors(path, tensors, metadata);

  auto const st = SafetensorsFile::open(path);
  EXPECT_EQ(st.path(), path);
  EXPECT_EQ(st.metadata(), metadata);
  EXPECT_EQ(st.file_size(), fs::file_size(path));
  ASSERT_EQ(st.tensors().size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto const& info = st.tensors()[i];
    SCOPED_TRACE(info.name);
    EXPECT_EQ(info.name, tensors[i].spec.name);
    EXPECT_EQ(info.dtype, tensors[i].spec.dtype);
    EXPECT_EQ(info.shape, tensors[i].spec.shape);
    EXPECT_EQ(info.nbytes(), tensors[i].data.size());
    EXPECT_EQ(to_vector(st.bytes(info)), tensors[i].data);
    EXPECT_EQ(st.find(info.name), &info);
    EXPECT_EQ(&st.at(info.name), &info);
  }
  EXPECT_EQ(entries(), std::vector<std::string>{"all.safetensors"});  // no temporary left
}

TEST_F(SafetensorsTest, ScalarAndZeroSizeTensorsKeepFileOrder) {
  std::vector<OwnedTensor> const tensors = {
      {{"z_scalar", DType::kF32, {}}, iota_bytes(4, 1)},
      {{"y_empty", DType::kBF16, {0, 5}}, {}},
      {{"x_empty_too", DType::kI64, {0}}, {}},
      {{"w_bytes", DType::kU8, {3}}, iota_bytes(3, 2)},
      // The product overflows before the zero is reached; a zero extent still means empty.
      {{"v_empty_huge", DType::kF64, {1LL << 40, 1LL << 40, 0}}, {}},
      {{"u_after", DType::kI16, {2}}, iota_bytes(4, 3)},
  };
  auto const path = file("edge.safetensors");
  write_safetensors(path, tensors);

  auto const st = SafetensorsFile::open(path);
  ASSERT_EQ(st.tensors().size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto const& info = st.tensors()[i];
    EXPECT_EQ(info.name, tensors[i].spec.name);
    EXPECT_EQ(info.shape, tensors[i].spec.shape);
    EXPECT_EQ(to_vector(st.bytes(info)), tensors[i].data) << info.name;
  }
  EXPECT_EQ(st.at("z_scalar").numel(), 1U);
  EXPECT_EQ(st.at("v_empty_huge").numel(), 0U);
  EXPECT_TRUE(st.metadata().empty());
}

TEST_F(SafetensorsTest, ManyEmptyTensorsAtOneOffsetKeepWriteOrder) {
  // 40 zero-size tensors share data offset 0 (enough for an unstable sort to reorder them);
  // names run against write order so a sort by name would show too.
  std::vector<OwnedTensor> tensors;
  for (int i = 0; i < 40; ++i) {
    tensors.push_back({{fmt::format("e{:02}", 40 - i), DType::kF16, {0, i}}, {}});
  }
  tensors.push_back({{"data", DType::kU8, {2}}, iota_bytes(2, 0)});
  auto const path = file("empties.safetensors");
  write_safetensors(path, tensors);
  auto const st = SafetensorsFile::open(path);
  ASSERT_EQ(st.tensors().size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(st.tensors()[i].name, tensors[i].spec.name) << "position " << i;
  }
}

TEST_F(SafetensorsTest, ManyTensorsRoundTrip) {
  // Real shards list thousands of tensors; a parser that is quadratic in the entry count
  // (nlohmann's callback parser is) takes minutes here instead of milliseconds.
  constexpr int kCount = 20000;
  std::vector<TensorSpec> specs;
  for (int i = 0; i < kCount; ++i) {
    specs.push_back({fmt::format("model.layers.{}.weight", kCount - i), DType::kU8, {1}});
  }
  auto const path = file("many.safetensors");
  {
    SafetensorsWriter writer(path, specs);
    for (int i = 0; i < kCount; ++i) writer.bytes(i)[0] = static_cast<std::byte>(i & 0xFF);
    writer.commit();
  }
  auto const st = SafetensorsFile::open(path);
  ASSERT_EQ(st.tensors().size(), specs.size());
  for (int i = 0; i < kCount; i += 997) {
    auto const& info = st.tensors()[i];
    EXPECT_EQ(info.name, specs[i].name);
    EXPECT_EQ(std::to_integer<int>(st.bytes(info)[0]), i & 0xFF);
  }
  EXPECT_EQ(st.find(specs[12345].name), &st.tensors()[12345]);
}

TEST_F(SafetensorsTest, AllTensorsEmptyAndNoTensorsAtAll) {
  auto const empty = file("empty.safetensors");
  write_safetensors(empty, {{{"a", DType::kF16, {0}}, {}}, {{"b", DType::kI8, {4, 0}}, {}}});
  auto const st = SafetensorsFile::open(empty);
  EXPECT_EQ(st.file_size(), 8 + st.header_size());
  ASSERT_EQ(st.tensors().size(), 2U);
  EXPECT_EQ(st.tensors()[0].name, "a");
  EXPECT_EQ(st.tensors()[1].name, "b");

  auto const none = file("none.safetensors");
  write_safetensors(none, {}, {{"k", "v"}});
  auto const st2 = SafetensorsFile::open(none);
  EXPECT_TRUE(st2.tensors().empty());
  EXPECT_EQ(st2.metadata(), (Metadata{{"k", "v"}}));
}

TEST_F(SafetensorsTest, HeaderIsPaddedWithSpacesToEightBytes) {
  // Name lengths 1..16 move H through every residue mod 8.
  for (std::size_t length = 1; length <= 16; ++length) {
    auto const path = file("aligned.safetensors");
    write_safetensors(path, {{{std::string(length, 'n'), DType::kU8, {3}}, iota_bytes(3, 0)}});
    auto const st = SafetensorsFile::open(path);
    EXPECT_EQ((8 + st.header_size()) % 8, 0U) << "name length " << length;
    auto const raw = read_all(path);
    ASSERT_EQ(raw.size(), 8 + st.header_size() + 3);
    std::string const header(raw.begin() + 8, raw.begin() + 8 + st.header_size());
    // Whatever follows the closing brace is padding, and padding is spaces only.
    auto const close = header.rfind('}');
    ASSERT_NE(close, std::string::npos);
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
    EXPECT_LT(header.size() - close - 1, 8U) << header;
    EXPECT_EQ(header.find("__metadata__"), std::string::npos) << "empty metadata is left out";
  }
}

TEST_F(SafetensorsTest, ReadsMisalignedHeaderWithPadding) {
  // H = 8*k + 3 puts the data section at an odd offset; trailing spaces are valid padding.
  std::string header = "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "U8", "[1]", 8, 9) +
                       R"(,"__metadata__":{"k":"v"}})";
  while ((8 + header.size()) % 8 != 3) header += ' ';
  auto const path = file("odd.safetensors");
  write_raw(path, header, 9);

  auto const st = SafetensorsFile::open(path);
  EXPECT_EQ(st.header_size(), header.size());
  EXPECT_EQ(st.metadata(), (Metadata{{"k", "v"}}));
  ASSERT_EQ(st.tensors().size(), 2U);
  auto const& a = st.at("a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2}));
  // write_raw fills data byte i with i.
  auto const bytes = st.bytes(a);
  ASSERT_EQ(bytes.size(), 8U);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(std::to_integer<int>(bytes[i]), int(i));
  EXPECT_EQ(std::to_integer<int>(st.bytes(st.at("b"))[0]), 8);
}

TEST_F(SafetensorsTest, TensorsComeInOffsetOrderNotHeaderOrder) {
  auto const header = "{" + entry("late", "U8", "[2]", 2, 4) + "," + entry("early", "U8", "[2]", 0, 2) +
                      "}";
  auto const path = file("order.safetensors");
  write_raw(path, header, 4);
  auto const st = SafetensorsFile::open(path);
  ASSERT_EQ(st.tensors().size(), 2U);
  EXPECT_EQ(st.tensors()[0].name, "early");
  EXPECT_EQ(st.tensors()[1].name, "late");
}

TEST_F(SafetensorsTest, MissingTensorAndMissingFile) {
  auto const path = file("one.safetensors");
  write_safetensors(path, {{{"a", DType::kU8, {1}}, iota_bytes(1, 0)}});
  auto const st = SafetensorsFile::open(path);
  EXPECT_EQ(st.find("b"), nullptr);
  try {
    (void)st.at("b");
    ADD_FAILURE() << "at() found a missing tensor";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("'b'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  fs::create_directory(file("folder.safetensors"));
  expect_invalid(file("folder.safetensors"), {"not a regular file"});
  try {
    SafetensorsFile::open(file("absent.safetensors"));
    ADD_FAILURE() << "opened a missing file";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("absent.safetensors"), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsTest, MovedFileStaysUsable) {
  auto const path = file("move.safetensors");
  write_safetensors(path, {{{"a", DType::kU8, {2}}, iota_bytes(2, 5)}});
  auto st = SafetensorsFile::open(path);
  SafetensorsFile moved = std::move(st);
  EXPECT_EQ(to_vector(moved.bytes(moved.at("a"))), iota_bytes(2, 5));
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each must be rejected with a message that says where
// ---------------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RejectsEmptyAndShortFiles) {
  auto const empty = file("empty.safetensors");
  write_raw(empty, "", 0, 0);
  fs::resize_file(empty, 0);
  expect_invalid(empty, {"0 bytes"});

  auto const short_file = file("short.safetensors");
  write_raw(short_file, "", 0, 0);
  fs::resize_file(short_file, 5);
  expect_invalid(short_file, {"5 bytes"});
}

TEST_F(SafetensorsTest, RejectsBadHeaderLengths) {
  auto const past = file("past.safetensors");
  write_raw(past, "{}", 8, 100);  // 18 bytes, but the header claims 100
  expect_invalid(past, {"100", "108", "18 bytes"});

  auto const huge = file("huge.safetensors");
  write_raw(huge, "{}", 0, kTwo40);
  expect_invalid(huge, {"1099511627776", "100000000"});

  auto const tiny = file("tiny.safetensors");
  write_raw(tiny, "{}", 0, 1);
  expect_invalid(tiny, {"header length 1"});
}

TEST_F(SafetensorsTest, RejectsBadJson) {
  auto const broken = file("broken.safetensors");
  write_raw(broken, R"({"a": {"dtype": )", 0);
  expect_invalid(broken, {"invalid JSON"});

  auto const array = file("array.safetensors");
  write_raw(array, "[1, 2]", 0);
  expect_invalid(array, {"not a JSON object", "array"});

  // The error position is a file offset: 8 + the header byte where parsing failed.
  auto const garbage = file("garbage.safetensors");
  write_raw(garbage, "{} x", 0);
  expect_invalid(garbage, {"invalid JSON", "file offset 11"});

  auto const deep = file("deep.safetensors");
  write_raw(deep, R"({"__metadata__":[[[[[[[[[[1]]]]]]]]]]})", 0);
  expect_invalid(deep, {"nests deeper"});

  auto const leading = file("leading.safetensors");
  write_raw(leading, " {}", 0);
  expect_invalid(leading, {"'{'"});
}

TEST_F(SafetensorsTest, RejectsDuplicateKeys) {
  auto const names = file("dup_names.safetensors");
  write_raw(names, "{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("a", "U8", "[1]", 1, 2) + "}",
            2);
  expect_invalid(names, {"duplicate", "'a'"});

  auto const fields = file("dup_fields.safetensors");
  write_raw(fields, R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1);
  expect_invalid(fields, {"duplicate", "'dtype'", "'w'"});

  auto const meta = file("dup_meta.safetensors");
  write_raw(meta, R"({"__metadata__":{"k":"1","k":"2"}})", 0);
  expect_invalid(meta, {"duplicate", "'k'", "__metadata__"});
}

TEST_F(SafetensorsTest, RejectsBadEntries) {
  struct Case {
    std::string label;
    std::string header;
    std::size_t data;
    std::vector<std::string> parts;
  };
  std::vector<Case> const cases = {
      {"unknown dtype", "{" + entry("w", "F4", "[2]", 0, 1) + "}", 1, {"'w'", "'F4'"}},
      {"dtype not a string", R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", 1,
       {"'w'", "dtype 7"}},
      {"negative shape", "{" + entry("w", "U8", "[2,-1]", 0, 2) + "}", 2, {"'w'", "-1", "negative"}},
      {"fractional shape", "{" + entry("w", "U8", "[2.5]", 0, 2) + "}", 2, {"'w'", "2.5"}},
      {"shape past int64", "{" + entry("w", "U8", "[9223372036854775808]", 0, 2) + "}", 2,
       {"'w'", "9223372036854775808 is larger than 9223372036854775807"}},
      {"shape not an array", "{" + entry("w", "U8", "3", 0, 3) + "}", 3, {"'w'", "shape 3"}},
      {"size mismatch", "{" + entry("w", "F32", "[3]", 0, 8) + "}", 8,
       {"'w'", "12 bytes", "[0, 8]", "span 8"}},
      {"shape product overflow", "{" + entry("w", "F32", "[1099511627776,1099511627776]", 0, 8) + "}",
       8, {"'w'", "overflow"}},
      {"byte count overflow", "{" + entry("w", "F32", "[4611686018427387904]", 0, 8) + "}", 8,
       {"'w'", "overflow"}},
      {"begin after end", "{" + entry("w", "U8", "[0]", 8, 4) + "}", 8, {"'w'", "[8, 4] begin after end"}},
      {"negative offset", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1,
       {"'w'", "negative"}},
      {"offsets not a pair", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1,
       {"'w'", "data_offsets"}},
      {"end past data", "{" + entry("w", "U8", "[8]", 0, 8) + "}", 4,
       {"'w'", "[0, 8]", "4 bytes"}},
      {"unknown field", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"foo":1}})", 1,
       {"'w'", "'foo'"}},
      {"missing field", R"({"w":{"dtype":"U8","shape":[1]}})", 1, {"'w'", "'data_offsets'"}},
      {"entry not an object", R"({"w":5})", 0, {"'w'", "object"}},
      {"metadata value not a string", R"({"__metadata__":{"k":1}})", 0, {"'k'", "non-string"}},
      {"metadata not an object", R"({"__metadata__":["k"]})", 0, {"__metadata__"}},
  };
  for (auto const& c : cases) {
    SCOPED_TRACE(c.label);
    auto const path = file("bad.safetensors");
    write_raw(path, c.header, c.data);
    expect_invalid(path, c.parts);
  }
}

TEST_F(SafetensorsTest, RejectsOverlapHoleAndTrailingBytesNamingOffsets) {
  // Each message gives data offsets and absolute file offsets (8 + H + offset).
  auto const overlap = file("overlap.safetensors");
  auto const overlap_header =
      "{" + entry("a", "U8", "[8]", 0, 8) + "," + entry("b", "U8", "[8]", 4, 12) + "}";
  write_raw(overlap, overlap_header, 12);
  auto const base = 8 + overlap_header.size();
  expect_invalid(overlap, {"overlap", "'a'", "'b'", "[4, 12]",
                           fmt::format("[{}, {})", base + 4, base + 12)});

  auto const hole = file("hole.safetensors");
  auto const hole_header =
      "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("b", "U8", "[4]", 8, 12) + "}";
  write_raw(hole, hole_header, 12);
  auto const hole_base = 8 + hole_header.size();
  expect_invalid(hole, {"hole of 4 bytes", "'a'", "'b'",
                        fmt::format("[{}, {})", hole_base + 4, hole_base + 8)});

  auto const start = file("start.safetensors");
  write_raw(start, "{" + entry("a", "U8", "[4]", 4, 8) + "}", 8);
  expect_invalid(start, {"hole of 4 bytes", "start", "'a'"});

  auto const trailing = file("trailing.safetensors");
  auto const trailing_header = "{" + entry("a", "U8", "[4]", 0, 4) + "}";
  write_raw(trailing, trailing_header, 7);
  auto const trailing_base = 8 + trailing_header.size();
  expect_invalid(trailing, {"3 trailing bytes",
                            fmt::format("[{}, {})", trailing_base + 4, trailing_base + 7)});

  // A zero-size tensor inside another one overlaps it too.
  auto const inside = file("inside.safetensors");
  write_raw(inside, "{" + entry("a", "U8", "[8]", 0, 8) + "," + entry("z", "U8", "[0]", 4, 4) + "}",
            8);
  expect_invalid(inside, {"overlap", "'a'", "'z'"});
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, WriterFillsThroughSpansAndReadsBack) {
  auto const path = file("w.safetensors");
  {
    SafetensorsWriter writer(path,
                             {{"first", DType::kBF16, {2, 3}}, {"second", DType::kI32, {5}}},
                             {{"producer", "test"}});
    ASSERT_EQ(writer.size(), 2U);
    EXPECT_EQ(writer.spec(1).name, "second");
    auto const first = writer.bytes("first");
    auto const second = writer.bytes(1);
    ASSERT_EQ(first.size(), 12U);
    ASSERT_EQ(second.size(), 20U);
    // The data section starts 8-byte aligned in the mapping.
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first.data()) % 8, 0U);
    auto const a = iota_bytes(12, 1);
    auto const b = iota_bytes(20, 2);
    std::copy(a.begin(), a.end(), first.begin());
    std::copy(b.begin(), b.end(), second.begin());
    writer.commit();
    // After commit the mapping is gone: both are usage errors, not I/O failures.
    for (auto const& misuse : {std::function<void()>([&] { (void)writer.bytes(0); }),
                               std::function<void()>([&] { writer.commit(); })}) {
      try {
        misuse();
        ADD_FAILURE() << "writer used after commit() without error";
      } catch (Error const& e) {
        EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      }
    }
  }
  auto const st = SafetensorsFile::open(path);
  EXPECT_EQ(to_vector(st.bytes(st.at("first"))), iota_bytes(12, 1));
  EXPECT_EQ(to_vector(st.bytes(st.at("second"))), iota_bytes(20, 2));
  EXPECT_EQ(st.metadata(), (Metadata{{"producer", "test"}}));
  EXPECT_EQ(entries(), std::vector<std::string>{"w.safetensors"});
}

TEST_F(SafetensorsTest, WriterWithoutCommitLeavesNothing) {
  auto const path = file("never.safetensors");
  {
    SafetensorsWriter writer(path, {{"a", DType::kF32, {4}}});
    // While open, exactly one temporary sits next to the target, named after it.
    auto const names = entries();
    ASSERT_EQ(names.size(), 1U);
    EXPECT_EQ(names[0].rfind("never.safetensors.tmp-", 0), 0U) << names[0];
    std::fill(writer.bytes(0).begin(), writer.bytes(0).end(), std::byte{1});
  }
  EXPECT_TRUE(entries().empty());

  // The same after a move: only the object holding the file removes it, once.
  {
    SafetensorsWriter writer(path, {{"a", DType::kF32, {4}}});
    SafetensorsWriter moved = std::move(writer);
    EXPECT_EQ(entries().size(), 1U);
  }
  EXPECT_TRUE(entries().empty());
}

TEST_F(SafetensorsTest, CommitReplacesExistingFile) {
  auto const path = file("model.safetensors");
  write_safetensors(path, {{{"old", DType::kU8, {100}}, iota_bytes(100, 9)}});
  {
    SafetensorsWriter writer(path, {{"new", DType::kI16, {3}}});
    // Until commit the old file is untouched.
    EXPECT_NE(SafetensorsFile::open(path).find("old"), nullptr);
    auto const data = iota_bytes(6, 4);
    std::copy(data.begin(), data.end(), writer.bytes(0).begin());
    writer.commit();
  }
  auto const st = SafetensorsFile::open(path);
  ASSERT_EQ(st.tensors().size(), 1U);
  EXPECT_EQ(st.tensors()[0].name, "new");
  EXPECT_EQ(to_vector(st.bytes(st.tensors()[0])), iota_bytes(6, 4));
  EXPECT_EQ(entries(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsTest, FailedCommitRemovesTemporary) {
  // A non-empty directory as target makes rename() fail.
  auto const path = file("target");
  fs::create_directories(path / "inside");
  SafetensorsWriter writer(path, {{"a", DType::kU8, {1}}});
  EXPECT_EQ(entries().size(), 2U);
  try {
    writer.commit();
    ADD_FAILURE() << "commit over a directory succeeded";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  EXPECT_EQ(entries(), std::vector<std::string>{"target"});
  EXPECT_TRUE(fs::is_directory(path / "inside"));
}

TEST_F(SafetensorsTest, WriterRejectsBadSpecs) {
  auto const path = file("bad.safetensors");
  auto const expect_usage = [&](std::vector<TensorSpec> specs, std::string const& part) {
    try {
      SafetensorsWriter writer(path, std::move(specs));
      ADD_FAILURE() << "accepted specs; expected an error with '" << part << "'";
    } catch (Error const& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_usage({{"a", DType::kU8, {1}}, {"b", DType::kU8, {1}}, {"a", DType::kU8, {2}}}, "'a'");
  expect_usage({{"neg", DType::kU8, {3, -2}}}, "'neg': shape [3, -2] has a negative extent");
  expect_usage({{"big", DType::kF32, {1LL << 40, 1LL << 40}}}, "overflow");
  expect_usage({{"__metadata__", DType::kU8, {1}}}, "reserved");
  expect_usage({{"bad\xff", DType::kU8, {1}}}, "UTF-8");
  EXPECT_TRUE(entries().empty());

  try {
    write_safetensors(path, {{{"a", DType::kF32, {2}}, iota_bytes(7, 0)}});
    ADD_FAILURE() << "wrote 7 bytes for an 8-byte tensor";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_NE(std::string(e.what()).find("'a'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(entries().empty());
}

TEST_F(SafetensorsTest, WriterIntoMissingFolderIsAnIoError) {
  try {
    SafetensorsWriter writer(file("no/such/dir/x.safetensors"), {{"a", DType::kU8, {1}}});
    ADD_FAILURE() << "created a file in a missing folder";
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace slidesparse::io
