// The byte-level BPE tokenizer on small hand-built vocabularies: GPT-2's byte map, the split rule
// (GPT-2's regex and the SmolLM digit split), merge order by rank, byte fallback, round trips of
// ASCII / white space / digits / contractions / Latin-1 / multi-byte UTF-8 / random bytes,
// special tokens written in the text, and the errors for bad data and bad ids.
#include "slidesparse/runtime/tokenizer.hpp"

#include <chrono>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"

namespace slidesparse::runtime {
namespace {

using Pieces = std::vector<std::string>;

std::string utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

/// Raw bytes -> their vocabulary text under GPT-2's byte map (" world" -> "Ġworld").
std::string byte_level(std::string_view bytes) {
  std::string out;
  for (char const c : bytes) out += utf8(byte_to_unicode(static_cast<std::uint8_t>(c)));
  return out;
}

/// A byte-level vocabulary under construction: ids 0..255 are the one-byte tokens (id = byte
/// value), then whatever add()/merge() append.
struct Vocab {
  TokenizerData data;

  Vocab() {
    for (int b = 0; b < 256; ++b) {
      data.tokens.push_back(byte_level(std::string(1, static_cast<char>(b))));
      data.token_types.push_back(1);
    }
  }
  /// Adds a token for raw bytes (normal: written through the byte map; other types: as is).
  int add(std::string_view bytes, TokenType type = TokenType::kNormal) {
    data.tokens.push_back(type == TokenType::kNormal ? byte_level(bytes) : std::string(bytes));
    data.token_types.push_back(static_cast<int>(type));
    return static_cast<int>(data.tokens.size()) - 1;
  }
  /// Appends the merge "a b" (raw bytes) at the next rank, adding the merged token if new.
  void merge(std::string_view a, std::string_view b) {
    std::string const merged = byte_level(std::string(a) + std::string(b));
    if (std::find(data.tokens.begin(), data.tokens.end(), merged) == data.tokens.end()) {
      add(std::string(a) + std::string(b));
    }
    data.merges.push_back(byte_level(a) + " " + byte_level(b));
  }
};

/// The bytes of each token of an encoding, for readable expectations.
Pieces token_pieces(BpeTokenizer const& tok, std::vector<int> const& ids) {
  Pieces out;
  for (int const id : ids) out.push_back(tok.token_bytes(id));
  return out;
}

Pieces split(std::string_view text, PreTokenizer rule = PreTokenizer::kGpt2) {
  Pieces out;
  for (auto const piece : pre_tokenize(text, rule)) out.emplace_back(piece);
  return out;
}

/// Runs f, expects Error(kInvalidInput) whose message contains every one of `parts`.
template <typename F>
void expect_invalid(F&& f, std::initializer_list<std::string_view> parts) {
  try {
    f();
  } catch (Error const& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.what();
    std::string const message = e.what();
    for (auto const part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
    return;
  }
  ADD_FAILURE() << "no Error thrown";
}

// --------------------------------------------------------------------------------------------
// Byte map and character classes
// --------------------------------------------------------------------------------------------

TEST(ByteMap, IsABijectionOntoPrintableCharacters) {
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) {
    char32_t const cp = byte_to_unicode(static_cast<std::uint8_t>(b));
    EXPECT_TRUE(seen.insert(cp).second) << "byte " << b;
    EXPECT_NE(classify_code_point(cp), CharClass::kSpace) << "byte " << b;
    EXPECT_GT(cp, char32_t{0x20}) << "byte " << b;
    EXPECT_TRUE(cp < 0x7F || cp > 0xA0) << "byte " << b;  // no DEL, C1 controls, NBSP
    auto const back = unicode_to_byte(cp);
    ASSERT_TRUE(back.has_value()) << "byte " << b;
    EXPECT_EQ(*back, b);
  }
  // GPT-2's well-known stand-ins, and the first code points outside the map.
  EXPECT_EQ(byte_to_unicode(' '), U'\u0120');   // Ġ
  EXPECT_EQ(byte_to_unicode('\n'), U'\u010A');  // Ċ
  EXPECT_EQ(byte_to_unicode('\t'), U'\u0109');  // ĉ
  EXPECT_EQ(byte_to_unicode(0x00), U'\u0100');
  EXPECT_EQ(byte_to_unicode(0x7F), U'\u0121');
  EXPECT_EQ(byte_to_unicode(0xA0), U'\u0142');
  EXPECT_EQ(byte_to_unicode(0xAD), U'\u0143');
  EXPECT_EQ(byte_to_unicode('A'), U'A');
  EXPECT_EQ(byte_to_unicode(0xE9), U'\u00E9');
  EXPECT_FALSE(unicode_to_byte(U' ').has_value());
  EXPECT_FALSE(unicode_to_byte(0xAD).has_value());
  EXPECT_FALSE(unicode_to_byte(0x144).has_value());
  EXPECT_FALSE(unicode_to_byte(U'東').has_value());
}

TEST(CharClass, ExactOnAsciiAndLatin1) {
  for (char32_t cp = 0; cp < 0x100; ++cp) {
    CharClass want = CharClass::kOther;
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == 0xAA || cp == 0xB5 ||
        cp == 0xBA || (cp >= 0xC0 && cp <= 0xFF && cp != 0xD7 && cp != 0xF7)) {
      want = CharClass::kLetter;
    } else if ((cp >= '0' && cp <= '9') || cp == 0xB2 || cp == 0xB3 || cp == 0xB9 ||
               (cp >= 0xBC && cp <= 0xBE)) {
      want = CharClass::kNumber;
    } else if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0) {
      want = CharClass::kSpace;
    }
    EXPECT_EQ(classify_code_point(cp), want) << "U+" << std::hex << static_cast<unsigned>(cp);
  }
}

TEST(CharClass, BeyondLatin1) {
  struct Case {
    char32_t cp;
    CharClass want;
  };
  for (auto const [cp, want] : {
           Case{U'ï', CharClass::kLetter},       Case{U'東', CharClass::kLetter},
           Case{U'я', CharClass::kLetter},       Case{U'Ω', CharClass::kLetter},
           Case{U'—', CharClass::kOther},        Case{U'…', CharClass::kOther},
           Case{U'€', CharClass::kOther},        Case{U'→', CharClass::kOther},
           Case{U'、', CharClass::kOther},       Case{U'🙂', CharClass::kOther},
           Case{0xFE0F, CharClass::kOther},      Case{0x0301, CharClass::kOther},  // marks
           Case{0x200D, CharClass::kOther},      Case{U'™', CharClass::kOther},
           Case{U'٣', CharClass::kNumber},       Case{U'३', CharClass::kNumber},
           Case{U'Ⅻ', CharClass::kNumber},       Case{U'①', CharClass::kNumber},
           Case{U'７', CharClass::kNumber},      Case{0x3000, CharClass::kSpace},
           Case{0x2009, CharClass::kSpace},      Case{0x2028, CharClass::kSpace},
           Case{0x1680, CharClass::kSpace},
       }) {
    EXPECT_EQ(classify_code_point(cp), want) << "U+" << std::hex << static_cast<unsigned>(cp);
  }
}

// --------------------------------------------------------------------------------------------
// Pre-tokenization
// --------------------------------------------------------------------------------------------

TEST(PreTokenize, Gpt2Words) {
  EXPECT_EQ(split("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("Hello, world!!! ok?"), (Pieces{"Hello", ",", " world", "!!!", " ok", "?"}));
  EXPECT_EQ(split(" leading"), (Pieces{" leading"}));
  EXPECT_EQ(split(""), Pieces{});
  EXPECT_EQ(split("x"), (Pieces{"x"}));
  EXPECT_EQ(split("$5.00 (ok)"), (Pieces{"$", "5", ".", "00", " (", "ok", ")"}));
}

TEST(PreTokenize, Gpt2WhiteSpace) {
  // A run before a word leaves its last space to the word; at the end it stays whole.
  EXPECT_EQ(split("  multiple   spaces"), (Pieces{" ", " multiple", "  ", " spaces"}));
  EXPECT_EQ(split("trailing  "), (Pieces{"trailing", "  "}));
  EXPECT_EQ(split("   "), (Pieces{"   "}));
  // Only U+0020 joins a word; another white-space character before a word is a piece alone.
  EXPECT_EQ(split("a\nb"), (Pieces{"a", "\n", "b"}));
  EXPECT_EQ(split("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split("a \n\n b"), (Pieces{"a", " \n\n", " b"}));
  EXPECT_EQ(split("a\t\tb"), (Pieces{"a", "\t", "\t", "b"}));
  EXPECT_EQ(split("line\n"), (Pieces{"line", "\n"}));
  EXPECT_EQ(split("x \u3000y"), (Pieces{"x", " ", "\u3000", "y"}));  // ideographic space
  EXPECT_EQ(split("a\xc2\xa0" "b"), (Pieces{"a", "\xc2\xa0", "b"}));  // NBSP is white space
}

TEST(PreTokenize, Gpt2Contractions) {
  EXPECT_EQ(split("I'm sure we'll see they're fine, I've said she'd know it's John's don't"),
            (Pieces{"I", "'m", " sure", " we", "'ll", " see", " they", "'re", " fine", ",", " I",
                    "'ve", " said", " she", "'d", " know", " it", "'s", " John", "'s", " don",
                    "'t"}));
  // Case-sensitive, and only at the start of a match.
  EXPECT_EQ(split("IT'S"), (Pieces{"IT", "'", "S"}));
  EXPECT_EQ(split("'sup"), (Pieces{"'s", "up"}));
  EXPECT_EQ(split("x.'s"), (Pieces{"x", ".'", "s"}));
  EXPECT_EQ(split(" 's"), (Pieces{" '", "s"}));
  EXPECT_EQ(split("rock'n'roll"), (Pieces{"rock", "'", "n", "'", "roll"}));
  EXPECT_EQ(split("'"), (Pieces{"'"}));
  EXPECT_EQ(split("'l"), (Pieces{"'", "l"}));
}

TEST(PreTokenize, Digits) {
  EXPECT_EQ(split("abc 12345 x2"), (Pieces{"abc", " 12345", " x", "2"}));
  // SmolLM: every digit alone, and the space before a digit cannot join it.
  EXPECT_EQ(split("abc 12345 x2", PreTokenizer::kDigitsThenGpt2),
            (Pieces{"abc", " ", "1", "2", "3", "4", "5", " x", "2"}));
  EXPECT_EQ(split("Hello world! 123", PreTokenizer::kDigitsThenGpt2),
            (Pieces{"Hello", " world", "!", " ", "1", "2", "3"}));
  EXPECT_EQ(split("a  7", PreTokenizer::kDigitsThenGpt2), (Pieces{"a", "  ", "7"}));
  EXPECT_EQ(split("½²", PreTokenizer::kDigitsThenGpt2), (Pieces{"½", "²"}));
  EXPECT_EQ(split("½²"), (Pieces{"½²"}));
}

TEST(PreTokenize, Unicode) {
  EXPECT_EQ(split("naïve café — 東京 🙂"),
            (Pieces{"naïve", " café", " —", " 東京", " 🙂"}));
  EXPECT_EQ(split("Grüße, Ζεύς! Привет"), (Pieces{"Grüße", ",", " Ζεύς", "!", " Привет"}));
  EXPECT_EQ(split("東京🙂🙂です。"), (Pieces{"東京", "🙂🙂", "です", "。"}));
  // Invalid UTF-8 bytes are "other" characters, one per byte.
  EXPECT_EQ(split("ab\xff\xfe" "cd \x80"), (Pieces{"ab", "\xff\xfe", "cd", " \x80"}));
  EXPECT_EQ(split("\xe6\x9d" "x"), (Pieces{"\xe6\x9d", "x"}));  // truncated 3-byte sequence
  EXPECT_EQ(split("\xc0\xaf"), (Pieces{"\xc0\xaf"}));             // overlong '/'
  EXPECT_EQ(split("\xed\xa0\x80"), (Pieces{"\xed\xa0\x80"}));     // a surrogate
}

// --------------------------------------------------------------------------------------------
// BPE merges
// --------------------------------------------------------------------------------------------

TEST(Bpe, MergesByRankNotLeftToRight) {
  {
    Vocab v;
    v.merge("b", "c");  // rank 0
    v.merge("a", "b");  // rank 1: would win if merging greedily from the left
    BpeTokenizer const tok(v.data);
    EXPECT_EQ(token_pieces(tok, tok.encode("abc")), (Pieces{"a", "bc"}));
    EXPECT_EQ(token_pieces(tok, tok.encode("abd")), (Pieces{"ab", "d"}));
  }
  {
    Vocab v;
    v.merge("a", "b");
    v.merge("b", "c");
    BpeTokenizer const tok(v.data);
    EXPECT_EQ(token_pieces(tok, tok.encode("abc")), (Pieces{"ab", "c"}));
  }
  {
    // Results merge further in rank order: c+d, then a+b, then ab+cd.
    Vocab v;
    v.merge("c", "d");
    v.merge("b", "c");  // would steal "c" if it came first
    v.merge("a", "b");
    v.merge("ab", "cd");
    BpeTokenizer const tok(v.data);
    EXPECT_EQ(token_pieces(tok, tok.encode("abcd")), (Pieces{"abcd"}));
    EXPECT_EQ(token_pieces(tok, tok.encode("bcd")), (Pieces{"b", "cd"}));
    EXPECT_EQ(token_pieces(tok, tok.encode("abc")), (Pieces{"a", "bc"}));
  }
}

TEST(Bpe, EqualRanksMergeLeftmostFirst) {
  Vocab v;
  v.merge("a", "a");
  v.merge("aa", "a");
  BpeTokenizer const tok(v.data);
  EXPECT_EQ(token_pieces(tok, tok.encode("aaa")), (Pieces{"aaa"}));
  EXPECT_EQ(token_pieces(tok, tok.encode("aaaa")), (Pieces{"aa", "aa"}));  // no "aa aa" merge
  EXPECT_EQ(token_pieces(tok, tok.encode("aaaaa")), (Pieces{"aa", "aaa"}));
}

TEST(Bpe, MergesStayInsidePieces) {
  Vocab v;
  v.merge("o", " ");  // "o " never forms: the space belongs to the next piece
  v.merge(" ", "w");
  v.merge("l", "o");
  BpeTokenizer const tok(v.data);
  EXPECT_EQ(token_pieces(tok, tok.encode("lo wo")), (Pieces{"lo", " w", "o"}));
}

TEST(Bpe, LongPieceMergesInLogLinearTime) {
  // One piece of 2^16 letters, merged up to tokens of 16: quadratic work would take minutes.
  Vocab v;
  std::string unit = "a";
  for (int level = 0; level < 4; ++level) {
    v.merge(unit, unit);
    unit += unit;
  }
  BpeTokenizer const tok(v.data);
  std::string const text(std::size_t{1} << 16, 'a');
  auto const start = std::chrono::steady_clock::now();
  auto const ids = tok.encode(text);
  auto const seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(ids.size(), text.size() / 16);
  for (int const id : ids) ASSERT_EQ(tok.token_bytes(id), unit);
  EXPECT_LT(seconds, 5.0);
}

TEST(Bpe, EveryByteFallsBackToItsToken) {
  Vocab v;
  BpeTokenizer const tok(v.data);
  std::string all;
  for (int b = 0; b < 256; ++b) {
    std::string const one(1, static_cast<char>(b));
    all += one;
    auto const ids = tok.encode(one);
    ASSERT_EQ(ids, std::vector<int>{b}) << "byte " << b;
    EXPECT_EQ(tok.decode(ids), one) << "byte " << b;
  }
  EXPECT_EQ(tok.decode(tok.encode(all)), all);
  EXPECT_EQ(tok.encode(all).size(), 256u);
}

TEST(Bpe, MissingByteTokenIsUnknownOrAnError) {
  Vocab v;
  v.data.tokens[0xFF] = "<unk>";
  v.data.token_types[0xFF] = static_cast<int>(TokenType::kUnknown);
  {
    BpeTokenizer const tok(v.data);
    expect_invalid([&] { (void)tok.encode("ab\xff"); },
                   {"byte 0xff at offset 2", "ÿ", "no unknown token"});
  }
  v.data.unk = 0xFF;
  BpeTokenizer const tok(v.data);
  EXPECT_EQ(tok.encode("a\xff\xff" "b"), (std::vector<int>{'a', 0xFF, 0xFF, 'b'}));
  EXPECT_EQ(tok.encode("a\xff\xff" "b", {.missing_byte = MissingByte::kSkip}),
            (std::vector<int>{'a', 'b'}));
  expect_invalid([&] { (void)tok.encode("a\xff", {.missing_byte = MissingByte::kError}); },
                 {"byte 0xff at offset 1"});
}

// --------------------------------------------------------------------------------------------
// Round trips
// --------------------------------------------------------------------------------------------

/// A small English-ish vocabulary with merges over letters, spaces, newlines, digits,
/// contractions and a few multi-byte characters.
Vocab english_vocab() {
  Vocab v;
  v.merge(" ", "t");
  v.merge("h", "e");
  v.merge(" t", "he");
  v.merge("i", "n");
  v.merge("in", "g");
  v.merge(" ", " ");
  v.merge("\n", "\n");
  v.merge("e", "r");
  v.merge("l", "l");
  v.merge("H", "e");
  v.merge("He", "ll");
  v.merge("Hell", "o");
  v.merge(" ", "w");
  v.merge("o", "r");
  v.merge(" w", "or");
  v.merge(" wor", "l");
  v.merge(" worl", "d");
  v.merge("'", "s");
  v.merge("'", "ll");
  v.merge("1", "2");
  v.merge("\xc3", "\xa9");              // é
  v.merge("\xe6\x9d", "\xb1");          // 東 (after the next merge)
  v.merge("\xe6", "\x9d");
  v.merge("\xf0\x9f", "\x99\x82");      // 🙂
  v.merge("\xf0", "\x9f");
  v.merge("\x99", "\x82");
  return v;
}

TEST(RoundTrip, EncodeDecodeIsIdentity) {
  Vocab v = english_vocab();
  for (PreTokenizer const rule : {PreTokenizer::kGpt2, PreTokenizer::kDigitsThenGpt2}) {
    v.data.pre = rule == PreTokenizer::kGpt2 ? "gpt-2" : "smollm";
    BpeTokenizer const tok(v.data);
    EXPECT_EQ(tok.pre_tokenizer(), rule);
    for (std::string const text : {
             "Hello world",
             "the thing in the ring",
             "  multiple   spaces   ",
             "\n\n\nthree newlines\r\n\tand a tab\n",
             "12 123 1234 007 3.14159 1e-9",
             "it's John's, we'll see: they're, I've, I'm, he'd, don't",
             "naïve café — 東京 🙂",
             "Grüße aus Köln, ½ ² ³ × ÷ ¿qué?",
             "\xc2\xa0nbsp\xc2\xa0",
             "",
             " ",
         }) {
      auto const ids = tok.encode(text);
      EXPECT_EQ(tok.decode(ids), text) << "pre " << v.data.pre;
    }
  }
  BpeTokenizer const tok(english_vocab().data);
  EXPECT_EQ(token_pieces(tok, tok.encode("Hello world")), (Pieces{"Hello", " world"}));
  EXPECT_EQ(token_pieces(tok, tok.encode(" the thing")), (Pieces{" the", " t", "h", "ing"}));
  EXPECT_EQ(token_pieces(tok, tok.encode("it's")), (Pieces{"i", "t", "'s"}));
  EXPECT_EQ(token_pieces(tok, tok.encode("café 東 🙂")),
            (Pieces{"c", "a", "f", "é", " ", "東", " ", "🙂"}));
  EXPECT_EQ(token_pieces(tok, tok.encode("a\n\n\nb")), (Pieces{"a", "\n\n", "\n", "b"}));
}

TEST(RoundTrip, RandomByteStrings) {
  test::Rng rng(0x70C3);
  SCOPED_TRACE(rng.describe());
  Vocab v = english_vocab();
  int const special = v.add("<|im_start|>", TokenType::kControl);
  // Fragments that stress the split rule; mixed with uniformly random bytes.
  std::vector<std::string> const fragments = {
      " ", "  ", "\n", "\t", "'", "s", "ll", "e", "He", "1", "2", "é", "東", "🙂", "\xc2\xa0",
      "\xe2\x80\x94", "!", "<|im_start|>", "<|im_", "\xff", "\xe6\x9d", "\xf0\x9f"};
  for (PreTokenizer const rule : {PreTokenizer::kGpt2, PreTokenizer::kDigitsThenGpt2}) {
    v.data.pre = rule == PreTokenizer::kGpt2 ? "" : "smollm";
    BpeTokenizer const tok(v.data);
    for (int iteration = 0; iteration < 400; ++iteration) {
      std::string text;
      int const parts = rng.uniform_int(0, 40);
      for (int p = 0; p < parts; ++p) {
        if (rng.uniform_int(0, 1) == 0) {
          text += static_cast<char>(rng.uniform_int(0, 255));
        } else {
          text += fragments[static_cast<std::size_t>(
              rng.uniform_int(0, static_cast<int>(fragments.size()) - 1))];
        }
      }
      std::string joined;
      for (auto const piece : pre_tokenize(text, rule)) {
        ASSERT_FALSE(piece.empty());
        joined += piece;
      }
      ASSERT_EQ(joined, text);
      for (bool const parse_special : {true, false}) {
        auto const ids = tok.encode(text, {.add_special = true, .parse_special = parse_special});
        ASSERT_EQ(tok.decode(ids), text) << "iteration " << iteration;
        bool const has_special = std::find(ids.begin(), ids.end(), special) != ids.end();
        ASSERT_EQ(has_special, parse_special && text.find("<|im_start|>") != std::string::npos);
      }
    }
  }
}

// --------------------------------------------------------------------------------------------
// An excerpt of SmolLM2-135M-Instruct's vocabulary
// --------------------------------------------------------------------------------------------

// The tokens (at their real ids) and the merges (in their real relative order; the real rank in
// the comment) of SmolLM2-135M-Instruct's GGUF vocabulary (tokenizer.ggml.pre = "smollm",
// 49152 tokens, 48900 merges) that can act on the words below: every merge whose result is a
// substring of one of the words' pieces. The expected ids follow from the merges by hand:
//   "Hello":  e+l (47) -> el+l (226) -> ell+o (10970) -> H+ello (19304) = 19556. The pairs H+e
//             (3429) and l+l (512) and l+o (5113) rank later than e+l or el+l, so they never form.
//   " world": Ġ+w (15), o+r (18), l+d (148), Ġw+or (206), Ġwor+ld (653) = 905.
//   "user":   e+r (7) before s+e (61), u+s (124), us+er (3841) = 4093.
//   "What":   a+t (9), h+at (710), W+hat (1528) = 1780 (W+h 2451 and h+a 2998 come too late).
//   " is":    i+s (19), Ġ+is (62) = 314.
// Digits are pieces of their own ("smollm"), so " 123" is Ġ 1 2 3 and "2+2" is 2 + 2.
TEST(SmolLm2Excerpt, KnownEncodings) {
  struct Token {
    int id;
    char const* text;
  };
  constexpr Token kTokens[] = {
      {0, "<|endoftext|>"}, {1, "<|im_start|>"}, {2, "<|im_end|>"}, {17, "!"}, {27, "+"},
      {33, "1"}, {34, "2"}, {35, "3"}, {47, "?"}, {56, "H"}, {71, "W"}, {81, "a"}, {84, "d"},
      {85, "e"}, {88, "h"}, {89, "i"}, {92, "l"}, {95, "o"}, {98, "r"}, {99, "s"}, {100, "t"},
      {101, "u"}, {103, "w"}, {198, "Ċ"}, {216, "Ġ"}, {259, "er"}, {261, "at"}, {267, "Ġw"},
      {270, "or"}, {271, "is"}, {299, "el"}, {313, "se"}, {314, "Ġis"}, {376, "us"}, {400, "ld"},
      {458, "Ġwor"}, {478, "ell"}, {764, "ll"}, {905, "Ġworld"}, {962, "hat"}, {1726, "use"},
      {1780, "What"}, {1886, "orld"}, {2056, "Ġi"}, {2703, "Wh"}, {3250, "ha"}, {3681, "He"},
      {3761, "ser"}, {4093, "user"}, {5365, "lo"}, {6466, "wo"}, {6693, "world"},
      {11222, "ello"}, {11653, "Hel"}, {17397, "rl"}, {19556, "Hello"}, {31394, "llo"},
  };
  TokenizerData data;
  data.tokens.resize(49152);
  data.token_types.assign(49152, static_cast<int>(TokenType::kNormal));
  for (std::size_t i = 0; i < data.tokens.size(); ++i) {
    data.tokens[i] = fmt::format("<filler {}>", i);  // stand-ins for the tokens not needed here
  }
  for (auto const& t : kTokens) data.tokens[static_cast<std::size_t>(t.id)] = t.text;
  for (std::size_t id : {0u, 1u, 2u}) data.token_types[id] = static_cast<int>(TokenType::kControl);
  data.merges = {
      "e r",      // 7
      "a t",      // 9
      "Ġ w",      // 15
      "o r",      // 18
      "i s",      // 19
      "e l",      // 47
      "s e",      // 61
      "Ġ is",     // 62
      "u s",      // 124
      "l d",      // 148
      "Ġw or",    // 206
      "el l",     // 226
      "l l",      // 512
      "Ġwor ld",  // 653
      "h at",     // 710
      "u se",     // 1474
      "W hat",    // 1528
      "or ld",    // 1634
      "Ġ i",      // 1804
      "W h",      // 2451
      "h a",      // 2998
      "H e",      // 3429
      "s er",     // 3509
      "us er",    // 3841
      "l o",      // 5113
      "w o",      // 6214
      "w orld",   // 6441
      "ell o",    // 10970
      "H el",     // 11401
      "r l",      // 17145
      "H ello",   // 19304
      "ll o",     // 31142
  };
  data.bos = 1;
  data.eos = 2;
  data.unk = 0;
  data.pad = 2;
  data.pre = "smollm";
  data.add_bos = false;  // tokenizer.ggml.add_bos_token
  BpeTokenizer const tok(std::move(data));
  EXPECT_EQ(tok.encode("Hello world! 123"), (std::vector<int>{19556, 905, 17, 216, 33, 34, 35}));
  std::string const chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";
  auto const ids = tok.encode(chat);
  EXPECT_EQ(ids, (std::vector<int>{1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198}));
  EXPECT_EQ(tok.decode(ids), chat);
}

// --------------------------------------------------------------------------------------------
// Special tokens
// --------------------------------------------------------------------------------------------

TEST(Special, ControlTokensAreMatchedLiterally) {
  Vocab v = english_vocab();
  int const eot = v.add("<|endoftext|>", TokenType::kControl);
  int const start = v.add("<|im_start|>", TokenType::kControl);
  int const end = v.add("<|im_end|>", TokenType::kControl);
  BpeTokenizer const tok(v.data);
  std::string const chat = "<|im_start|>user\nHello<|im_end|>\n<|endoftext|>";
  auto const ids = tok.encode(chat);
  EXPECT_EQ(token_pieces(tok, ids), (Pieces{"<|im_start|>", "u", "s", "er", "\n", "Hello",
                                            "<|im_end|>", "\n", "<|endoftext|>"}));
  EXPECT_EQ(ids.front(), start);
  EXPECT_EQ(ids[6], end);
  EXPECT_EQ(ids.back(), eot);
  EXPECT_EQ(tok.decode(ids), chat);
  EXPECT_EQ(tok.token_text(start), "<|im_start|>");
  EXPECT_EQ(tok.token_bytes(start), "<|im_start|>");
  EXPECT_EQ(tok.token_type(start), TokenType::kControl);

  // Without parse_special the same text is plain text: no control ids, same bytes back.
  auto const plain = tok.encode(chat, {.parse_special = false});
  for (int const id : plain) EXPECT_NE(tok.token_type(id), TokenType::kControl);
  EXPECT_EQ(tok.decode(plain), chat);

  // Touching specials, one at the very start and end; a broken one is plain text.
  EXPECT_EQ(tok.encode("<|im_end|><|im_end|>"), (std::vector<int>{end, end}));
  EXPECT_EQ(token_pieces(tok, tok.encode("<|im_end|")),
            (Pieces{"<", "|", "i", "m", "_", "e", "n", "d", "|"}));
}

TEST(Special, LongestMatchWinsAndUserDefinedAlwaysMatch) {
  Vocab v;
  int const short_one = v.add("<x>", TokenType::kControl);
  int const long_one = v.add("<x>y", TokenType::kControl);
  int const added = v.add("[[tool]]", TokenType::kUserDefined);
  BpeTokenizer const tok(v.data);
  EXPECT_EQ(tok.encode("<x>y"), (std::vector<int>{long_one}));
  EXPECT_EQ(tok.encode("<x>z<x>"), (std::vector<int>{short_one, 'z', short_one}));
  EXPECT_EQ(tok.encode("a[[tool]]b", {.parse_special = false}),
            (std::vector<int>{'a', added, 'b'}));
  EXPECT_EQ(tok.encode("<x>", {.parse_special = false}), (std::vector<int>{'<', 'x', '>'}));
}

TEST(Special, BosIsAddedWhenAsked) {
  Vocab v;
  int const bos = v.add("<s>", TokenType::kControl);
  v.data.bos = bos;
  v.data.eos = bos;
  v.data.add_bos = true;
  BpeTokenizer const tok(v.data);
  EXPECT_EQ(tok.encode("a"), (std::vector<int>{bos, 'a'}));
  EXPECT_EQ(tok.encode("a", {.add_special = false}), (std::vector<int>{'a'}));
  EXPECT_EQ(tok.encode(""), (std::vector<int>{bos}));
  EXPECT_EQ(tok.bos(), bos);
  EXPECT_EQ(tok.eos(), bos);
  EXPECT_TRUE(tok.add_bos());
  v.data.add_bos = false;
  EXPECT_EQ(BpeTokenizer(v.data).encode("a"), (std::vector<int>{'a'}));
}

// --------------------------------------------------------------------------------------------
// Errors
// --------------------------------------------------------------------------------------------

TEST(Errors, BadIds) {
  BpeTokenizer const tok(Vocab().data);
  EXPECT_EQ(tok.vocab_size(), 256);
  std::vector<int> const ids = {'a', 256};
  expect_invalid([&] { (void)tok.decode(ids); }, {"ids[1] = 256", "vocabulary size 256"});
  std::vector<int> const negative = {-1};
  expect_invalid([&] { (void)tok.decode(negative); }, {"-1", "vocabulary size 256"});
  expect_invalid([&] { (void)tok.token_text(300); }, {"token id 300", "vocabulary size 256"});
  expect_invalid([&] { (void)tok.token_bytes(-5); }, {"token id -5"});
  EXPECT_FALSE(tok.find("no such token").has_value());
  EXPECT_EQ(tok.find("Ġ"), ' ');
}

TEST(Errors, BadData) {
  auto const build = [](auto&& edit) {
    Vocab v;
    v.merge("a", "b");
    edit(v.data);
    return [data = v.data] { BpeTokenizer const tok(data); };
  };
  expect_invalid([] { BpeTokenizer const tok(TokenizerData{}); }, {"vocabulary is empty"});
  expect_invalid(build([](TokenizerData& d) { d.tokens[200] = d.tokens[100]; }),
                 {"tokens 100 and 200", "'d'"});
  expect_invalid(build([](TokenizerData& d) { d.token_types.pop_back(); }),
                 {"256 token types for 257 tokens"});
  expect_invalid(build([](TokenizerData& d) { d.token_types[7] = 9; }), {"token 7", "type 9"});
  expect_invalid(build([](TokenizerData& d) { d.tokens[5] = "\xff"; }),
                 {"token 5", "not valid UTF-8"});
  expect_invalid(build([](TokenizerData& d) { d.merges.push_back("ab"); }),
                 {"merge 1 ('ab')", "one space"});
  expect_invalid(build([](TokenizerData& d) { d.merges.push_back("a b c"); }), {"merge 1"});
  expect_invalid(build([](TokenizerData& d) { d.merges.push_back(" a"); }), {"merge 1"});
  expect_invalid(build([](TokenizerData& d) { d.merges.push_back("a zz"); }),
                 {"merge 1 ('a zz')", "right part 'zz' is not a token"});
  expect_invalid(build([](TokenizerData& d) { d.merges.push_back("b a"); }),
                 {"merge 1 ('b a')", "merged text 'ba' is not a token"});
  expect_invalid(build([](TokenizerData& d) { d.merges.push_back("a b"); }),
                 {"merges 0 and 1 are both 'a b'"});
  expect_invalid(build([](TokenizerData& d) { d.bos = 257; }),
                 {"bos token id 257 is out of range", "vocabulary size 257"});
  expect_invalid(build([](TokenizerData& d) { d.eos = -1; }), {"eos token id -1"});
  expect_invalid(build([](TokenizerData& d) { d.unk = 1000; }), {"unknown token id 1000"});
  expect_invalid(build([](TokenizerData& d) { d.pad = 257; }), {"padding token id 257"});
  expect_invalid(build([](TokenizerData& d) { d.add_bos = true; }), {"add_bos", "no bos"});
  expect_invalid(build([](TokenizerData& d) { d.pre = "gemma"; }),
                 {"pre-tokenizer 'gemma' is not supported", "smollm", "llama3", "qwen2"});
  // Still valid: no token types at all (all normal), a known pre-tokenizer name.
  Vocab v;
  v.data.token_types.clear();
  v.data.pre = "smollm";
  EXPECT_EQ(BpeTokenizer(v.data).pre_tokenizer(), PreTokenizer::kDigitsThenGpt2);
  v.data.pre = "llama-bpe";
  EXPECT_EQ(BpeTokenizer(v.data).pre_tokenizer(), PreTokenizer::kLlama3);
  v.data.pre = "qwen2";
  EXPECT_EQ(BpeTokenizer(v.data).pre_tokenizer(), PreTokenizer::kQwen2);
}

// --------------------------------------------------------------------------------------------
// Llama-3 / Qwen2 split rules and Hugging Face tokenizer.json
// --------------------------------------------------------------------------------------------

TEST(PreTokenize, Llama3AndQwen2) {
  auto const l3 = [](std::string_view t) { return split(t, PreTokenizer::kLlama3); };
  auto const q2 = [](std::string_view t) { return split(t, PreTokenizer::kQwen2); };
  EXPECT_EQ(l3("Hello world"), (Pieces{"Hello", " world"}));
  // Contractions in any case; numbers in runs of at most three (Qwen2: one).
  EXPECT_EQ(l3("I'm HERE'S 12345 x"), (Pieces{"I", "'m", " HERE", "'S", " ", "123", "45", " x"}));
  EXPECT_EQ(q2("I'm 12345"), (Pieces{"I", "'m", " ", "1", "2", "3", "4", "5"}));
  // One non-letter, non-number, non-newline character joins the letters after it.
  EXPECT_EQ(l3("(hello) \tworld"), (Pieces{"(hello", ")", " ", "\tworld"}));
  // Punctuation takes the newlines after it; a white-space run ends at its last newline.
  EXPECT_EQ(l3("Hi!!\n\nthere  ok\n"), (Pieces{"Hi", "!!\n\n", "there", " ", " ok", "\n"}));
  EXPECT_EQ(l3("a  \n  b"), (Pieces{"a", "  \n", " ", " b"}));
  EXPECT_EQ(l3("x\ny ..."), (Pieces{"x", "\n", "y", " ..."}));
  EXPECT_EQ(l3("   "), (Pieces{"   "}));
  // The pieces always tile the text.
  test::Rng rng(77);
  for (int round = 0; round < 200; ++round) {
    std::string text;
    for (int c = 0; c < 30; ++c) text += "a Z1'\n\t!.5 x"[rng.uniform_int(0, 11)];
    std::string joined;
    for (auto const& p : l3(text)) joined += p;
    ASSERT_EQ(joined, text);
  }
}

// A tokenizer.json (as Hugging Face writes it) for a Vocab, with Llama-3's split.
nlohmann::json hf_json(Vocab const& v, bool ignore_merges, std::string const& regex) {
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  for (std::size_t i = 0; i < v.data.tokens.size(); ++i) {
    if (v.data.token_types[i] == 3) {
      added.push_back({{"id", i}, {"content", v.data.tokens[i]}, {"special", true}});
    } else {
      vocab[v.data.tokens[i]] = i;
    }
  }
  nlohmann::json merges = nlohmann::json::array();
  for (std::size_t r = 0; r < v.data.merges.size(); ++r) {
    std::string const& m = v.data.merges[r];
    auto const space = m.find(' ');
    if (r % 2) {
      merges.push_back(m);  // both spellings: "left right" and [left, right]
    } else {
      merges.push_back({m.substr(0, space), m.substr(space + 1)});
    }
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
          {"model",
           {{"type", "BPE"}, {"byte_fallback", false}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
}

TEST(HfTokenizer, ReadsTokenizerJsonWithLlama3Split) {
  std::string const llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  Vocab v;
  v.merge("h", "e");
  v.merge("he", "l");
  v.merge("hel", "l");
  v.merge("hell", "o");
  v.merge(" ", "w");
  int const world = v.add(" world");  // a token no merge builds
  int const bos = v.add("<|begin_of_text|>", TokenType::kControl);
  nlohmann::json const config = {{"eos_token", {{"content", "<|begin_of_text|>"}}}, {"bos_token", "<|begin_of_text|>"}};
  for (bool const ignore : {false, true}) {
    SCOPED_TRACE(ignore ? "ignore_merges" : "merges only");
    TokenizerData const d = tokenizer_data_from_hf(hf_json(v, ignore, llama3), &config, "test tokenizer.json");
    EXPECT_EQ(d.pre, "llama3");
    EXPECT_EQ(d.bos, bos);
    EXPECT_TRUE(d.add_bos);
    EXPECT_EQ(d.merges, v.data.merges);
    BpeTokenizer const tok(d);
    std::vector<int> const ids = tok.encode("hello world");
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), bos);
    // The llama3 pre-tokenizer implies ignore_merges (as llama.cpp does), so " world" is one
    // token either way; "hello" comes from the merges.
    EXPECT_EQ(token_pieces(tok, ids), (Pieces{"<|begin_of_text|>", "hello", " world"}));
    EXPECT_EQ(ids.back(), world);
    EXPECT_EQ(tok.decode(std::span(ids).subspan(1)), "hello world");
  }
  // Qwen2's split (no implied ignore_merges): " world" is built from " w" and single bytes.
  std::string qwen2 = llama3;
  qwen2.replace(qwen2.find(R"(\p{N}{1,3})"), 10, R"(\p{N})");
  TokenizerData const q = tokenizer_data_from_hf(hf_json(v, false, qwen2), nullptr, "qwen tokenizer.json");
  EXPECT_EQ(q.pre, "qwen2");
  BpeTokenizer const qt(q);
  EXPECT_EQ(token_pieces(qt, qt.encode("hello world 12")), (Pieces{"<|begin_of_text|>", "hello", " w", "o", "r", "l", "d", " ", "1", "2"}));
  // What it refuses, naming the part.
  expect_invalid([&] { tokenizer_data_from_hf(hf_json(v, false, R"(\w+)"), nullptr, "x.json"); }, {"x.json", "pre_tokenizer", "Split"});
  nlohmann::json wrong = hf_json(v, false, llama3);
  wrong["model"]["type"] = "Unigram";
  expect_invalid([&] { tokenizer_data_from_hf(wrong, nullptr, "x.json"); }, {"x.json", "Unigram"});
  wrong = hf_json(v, false, llama3);
  wrong["model"]["merges"][0] = 5;
  expect_invalid([&] { tokenizer_data_from_hf(wrong, nullptr, "x.json"); }, {"merge 0"});
}

}  // namespace
}  // namespace slidesparse::runtime
