#include "slidesparse/runtime/tokenizer.hpp"

#include <algorithm>
#include <climits>
#include <iterator>

#include <fmt/format.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::runtime {
namespace {

// ---------------------------------------------------------------------------------------------
// Character classes of the split rule (\p{L}, \p{N}, \s and the rest)
// ---------------------------------------------------------------------------------------------
//
// U+0000–U+00FF are classified exactly (Unicode general category; \s = the White_Space
// property). Beyond Latin-1 three tables are consulted in order: white space (exact: every
// White_Space code point), numbers (the decimal digits of the common scripts, super/subscript
// digits, number forms, circled and fullwidth digits) and "other" (combining diacritics, the
// punctuation of Greek/Armenian/Hebrew/Arabic/Devanagari/Thai, general and supplemental
// punctuation, currency, letterlike symbols, arrows … dingbats … braille, CJK symbols and
// punctuation, variation selectors, fullwidth punctuation, musical symbols, emoji and
// pictographs, tags). Everything else is a letter. Checked against Python's unicodedata
// (Unicode 14.0): 96.8 % of the 144 762 assigned code points get their exact class; most of the
// rest are combining marks (Mn/Mc) of Indic and South-East Asian scripts, rarer symbols (So) and
// digits of rarer scripts, which all count as letters here.

struct Range {
  char32_t first;
  char32_t last;
};

// Sorted, non-overlapping (checked below by static_assert).
constexpr Range kSpaceRanges[] = {
    {0x1680, 0x1680}, {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
    {0x3000, 0x3000},
};

constexpr Range kNumberRanges[] = {
    {0x0660, 0x0669}, {0x06F0, 0x06F9}, {0x07C0, 0x07C9}, {0x0966, 0x096F}, {0x09E6, 0x09EF},
    {0x0A66, 0x0A6F}, {0x0AE6, 0x0AEF}, {0x0B66, 0x0B6F}, {0x0BE6, 0x0BF2}, {0x0C66, 0x0C6F},
    {0x0CE6, 0x0CEF}, {0x0D66, 0x0D78}, {0x0E50, 0x0E59}, {0x0ED0, 0x0ED9}, {0x0F20, 0x0F33},
    {0x1040, 0x1049}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x1810, 0x1819},
    {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x3007, 0x3007}, {0x3021, 0x3029},
    {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F},
    {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xFF10, 0xFF19}, {0x1D7CE, 0x1D7FF}, {0x1F100, 0x1F10C},
    {0x1FBF0, 0x1FBF9},
};

// Consulted after kNumberRanges, so a number inside one of these blocks stays a number.
constexpr Range kOtherRanges[] = {
    {0x02C2, 0x02C5}, {0x02D2, 0x02DF}, {0x02E5, 0x02EB}, {0x02ED, 0x02ED}, {0x02EF, 0x036F},
    {0x0375, 0x0375}, {0x037E, 0x037E}, {0x0384, 0x0385}, {0x0387, 0x0387}, {0x03F6, 0x03F6},
    {0x0482, 0x0489}, {0x055A, 0x055F}, {0x0589, 0x058A}, {0x058D, 0x058F}, {0x0591, 0x05C7},
    {0x05F3, 0x05F4}, {0x0600, 0x061F}, {0x064B, 0x065F}, {0x066A, 0x066D}, {0x0670, 0x0670},
    {0x06D4, 0x06D4}, {0x06D6, 0x06E4}, {0x06E7, 0x06ED}, {0x0964, 0x0965}, {0x0970, 0x0970},
    {0x0E3F, 0x0E3F}, {0x0E4F, 0x0E4F}, {0x0E5A, 0x0E5B}, {0x2000, 0x206F}, {0x207A, 0x207E},
    {0x208A, 0x208E}, {0x20A0, 0x20FF}, {0x2100, 0x2101}, {0x2103, 0x2106}, {0x2108, 0x2109},
    {0x2114, 0x2114}, {0x2116, 0x2118}, {0x211E, 0x2123}, {0x2125, 0x2125}, {0x2127, 0x2127},
    {0x2129, 0x2129}, {0x212E, 0x212E}, {0x213A, 0x213B}, {0x2140, 0x2144}, {0x214A, 0x214D},
    {0x214F, 0x214F}, {0x218A, 0x218B}, {0x2190, 0x2BFF}, {0x2E00, 0x2E2E}, {0x2E30, 0x2E7F},
    {0x2E80, 0x2FFF}, {0x3001, 0x3004}, {0x3008, 0x3020}, {0x302A, 0x3030}, {0x3036, 0x3037},
    {0x303D, 0x303F}, {0x3099, 0x309C}, {0x30A0, 0x30A0}, {0x30FB, 0x30FB}, {0x3190, 0x3191},
    {0x3196, 0x319F}, {0x31C0, 0x31EF}, {0x3200, 0x33FF}, {0x4DC0, 0x4DFF}, {0xA700, 0xA716},
    {0xA720, 0xA721}, {0xFD3E, 0xFD3F}, {0xFE00, 0xFE6F}, {0xFEFF, 0xFEFF}, {0xFF01, 0xFF0F},
    {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65}, {0xFFE0, 0xFFEE}, {0xFFF9, 0xFFFD},
    {0x1D000, 0x1D24F}, {0x1F000, 0x1FAFF}, {0x1FB00, 0x1FBEF}, {0x1FBFA, 0x1FBFF},
    {0xE0000, 0xE007F}, {0xE0100, 0xE01EF},
};

template <std::size_t N>
constexpr bool sorted_disjoint(Range const (&ranges)[N]) {
  for (std::size_t i = 0; i < N; ++i) {
    if (ranges[i].first > ranges[i].last) return false;
    if (i > 0 && ranges[i].first <= ranges[i - 1].last) return false;
  }
  return true;
}
static_assert(sorted_disjoint(kSpaceRanges), "binary search needs sorted, disjoint ranges");
static_assert(sorted_disjoint(kNumberRanges), "binary search needs sorted, disjoint ranges");
static_assert(sorted_disjoint(kOtherRanges), "binary search needs sorted, disjoint ranges");

template <std::size_t N>
bool in_ranges(Range const (&ranges)[N], char32_t cp) noexcept {
  // The last range starting at or before cp is the only one that can hold it.
  auto const it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                   [](char32_t c, Range const& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

constexpr char32_t kNotUtf8 = 0x110000;  // code point of a byte that is not valid UTF-8

struct Utf8Char {
  char32_t cp;       ///< kNotUtf8 for an invalid byte
  std::size_t size;  ///< bytes consumed: 1 for an invalid byte
};

/// The character starting at text[i]. Overlong forms, surrogates, code points past U+10FFFF,
/// stray continuation bytes and truncated sequences are invalid, one byte at a time.
Utf8Char decode_utf8(std::string_view text, std::size_t i) noexcept {
  auto const byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned const b0 = byte(i);
  if (b0 < 0x80) return {b0, 1};
  std::size_t size = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    size = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    size = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    size = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {kNotUtf8, 1};
  }
  if (size > text.size() - i) return {kNotUtf8, 1};
  for (std::size_t k = 1; k < size; ++k) {
    unsigned const b = byte(i + k);
    if ((b & 0xC0) != 0x80) return {kNotUtf8, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {kNotUtf8, 1};
  return {cp, size};
}

void append_utf8(std::string& out, char32_t cp) {
  auto const put = [&](char32_t bits) { out.push_back(static_cast<char>(bits)); };
  if (cp < 0x80) {
    put(cp);
  } else if (cp < 0x800) {
    put(0xC0 | (cp >> 6));
    put(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    put(0xE0 | (cp >> 12));
    put(0x80 | ((cp >> 6) & 0x3F));
    put(0x80 | (cp & 0x3F));
  } else {
    put(0xF0 | (cp >> 18));
    put(0x80 | ((cp >> 12) & 0x3F));
    put(0x80 | ((cp >> 6) & 0x3F));
    put(0x80 | (cp & 0x3F));
  }
}

/// Text for an error message: at most 60 bytes, controls and invalid UTF-8 as \xHH.
std::string printable(std::string_view text) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size() && out.size() < 60) {
    Utf8Char const c = decode_utf8(text, i);
    if (c.cp == kNotUtf8 || c.cp < 0x20 || c.cp == 0x7F) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[i]));
    } else {
      out.append(text.substr(i, c.size));
    }
    i += c.size;
  }
  if (i < text.size()) out += "...";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenization
// ---------------------------------------------------------------------------------------------

/// One character of the text being split.
struct Unit {
  std::size_t offset;  ///< byte offset in the text
  std::size_t size;    ///< bytes
  char32_t cp;         ///< kNotUtf8 for an invalid byte
  CharClass cls;
};

void to_units(std::string_view text, std::vector<Unit>& units) {
  units.clear();
  for (std::size_t i = 0; i < text.size();) {
    Utf8Char const c = decode_utf8(text, i);
    CharClass const cls = c.cp == kNotUtf8 ? CharClass::kOther : classify_code_point(c.cp);
    units.push_back({i, c.size, c.cp, cls});
    i += c.size;
  }
}

/// GPT-2's split regex over units [begin, end), done by hand; `end` acts as the end of the text
/// (for the lookahead). At each position the first alternative that matches wins:
///   's|'t|'re|'ve|'m|'ll|'d    an ASCII apostrophe and one of these lower-case endings
///   | ?\p{L}+                  an optional U+0020 space, then a maximal run of letters
///   | ?\p{N}+                  ... of numbers
///   | ?[^\s\p{L}\p{N}]+        ... of anything else (punctuation, symbols, invalid bytes)
///   |\s+(?!\S)                 a white-space run, minus its last character when a non-space
///                              follows (that character, if it is U+0020, then starts the next
///                              word: "a  b" -> "a", " ", " b")
///   |\s+                       a single white-space character before a non-space ("\n" in
///                              "a\nb"), which the previous alternative cannot take
/// Every character is matched, so the pieces tile the text.
void split_gpt2(std::string_view text, std::vector<Unit> const& units, std::size_t begin,
                std::size_t end, std::vector<std::string_view>& pieces) {
  auto const emit = [&](std::size_t first, std::size_t last) {  // units [first, last)
    std::size_t const from = units[first].offset;
    pieces.push_back(text.substr(from, units[last - 1].offset + units[last - 1].size - from));
  };
  std::size_t i = begin;
  while (i < end) {
    Unit const& u = units[i];
    if (u.cp == U'\'' && i + 1 < end) {
      char32_t const c1 = units[i + 1].cp;
      if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < end) {
        char32_t const c2 = units[i + 2].cp;
        if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') ||
            (c1 == U'l' && c2 == U'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // ' ?X+' for X = letters, numbers, other: the class of the first character after the
    // optional space decides which alternative it is.
    std::size_t first = i;
    if (u.cp == U' ' && i + 1 < end && units[i + 1].cls != CharClass::kSpace) first = i + 1;
    CharClass const cls = units[first].cls;
    std::size_t k = first + 1;
    if (cls != CharClass::kSpace) {
      while (k < end && units[k].cls == cls) ++k;
    } else {
      while (k < end && units[k].cls == CharClass::kSpace) ++k;
      if (k < end && k - i >= 2) --k;  // (?!\S): leave the last space to the next piece
    }
    emit(i, k);
    i = k;
  }
}

/// Llama-3's (and, with one digit per number piece, Qwen2's) split regex over units [begin, end):
///   (?i:'s|'t|'re|'ve|'m|'ll|'d)   apostrophe + ending, any case
///   |[^\r\n\p{L}\p{N}]?\p{L}+      one optional character that is not CR, LF, letter or
///                                  number (a space, punctuation), then a run of letters
///   |\p{N}{1,3}                    one to three numbers (Qwen2: \p{N}, one)
///   | ?[^\s\p{L}\p{N}]+[\r\n]*      optional space, a run of "other", then any CR/LF
///   |\s*[\r\n]+                    white space up to and including its last CR/LF
///   |\s+(?!\S)|\s+                 as in GPT-2's rule
/// Every character is matched, so the pieces tile the text.
void split_llama3(std::string_view text, std::vector<Unit> const& units, std::size_t begin, std::size_t end,
                  std::size_t max_digits, std::vector<std::string_view>& pieces) {
  auto const emit = [&](std::size_t first, std::size_t last) {  // units [first, last)
    std::size_t const from = units[first].offset;
    pieces.push_back(text.substr(from, units[last - 1].offset + units[last - 1].size - from));
  };
  auto const lower = [](char32_t c) { return c >= U'A' && c <= U'Z' ? c + 32 : c; };
  auto const is_crlf = [](char32_t c) { return c == U'\r' || c == U'\n'; };
  std::size_t i = begin;
  while (i < end) {
    Unit const& u = units[i];
    if (u.cp == U'\'' && i + 1 < end) {
      char32_t const c1 = lower(units[i + 1].cp);
      if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < end) {
        char32_t const c2 = lower(units[i + 2].cp);
        if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    std::size_t letters = i;
    if (u.cls != CharClass::kLetter && u.cls != CharClass::kNumber && !is_crlf(u.cp) && i + 1 < end &&
        units[i + 1].cls == CharClass::kLetter) {
      letters = i + 1;
    }
    if (units[letters].cls == CharClass::kLetter) {
      std::size_t k = letters + 1;
      while (k < end && units[k].cls == CharClass::kLetter) ++k;
      emit(i, k);
      i = k;
      continue;
    }
    if (u.cls == CharClass::kNumber) {
      std::size_t k = i + 1;
      while (k < end && k - i < max_digits && units[k].cls == CharClass::kNumber) ++k;
      emit(i, k);
      i = k;
      continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    std::size_t other = u.cp == U' ' && i + 1 < end ? i + 1 : i;
    if (units[other].cls == CharClass::kOther) {
      std::size_t k = other + 1;
      while (k < end && units[k].cls == CharClass::kOther) ++k;
      while (k < end && is_crlf(units[k].cp)) ++k;
      emit(i, k);
      i = k;
      continue;
    }
    // White space (u is white space here: every other class was taken above).
    std::size_t run = i;
    std::size_t last_crlf = end;  // index of the last CR/LF in the run
    while (run < end && units[run].cls == CharClass::kSpace) {
      if (is_crlf(units[run].cp)) last_crlf = run;
      ++run;
    }
    if (last_crlf != end) {  // \s*[\r\n]+
      emit(i, last_crlf + 1);
      i = last_crlf + 1;
      continue;
    }
    std::size_t k = run;
    if (k < end && k - i >= 2) --k;  // \s+(?!\S): leave the last one to the next piece
    emit(i, k);
    i = k;
  }
}

void split(std::string_view text, PreTokenizer rule, std::vector<Unit>& units,
           std::vector<std::string_view>& pieces) {
  to_units(text, units);
  pieces.clear();
  std::size_t const n = units.size();
  if (rule == PreTokenizer::kGpt2) {
    split_gpt2(text, units, 0, n, pieces);
    return;
  }
  if (rule == PreTokenizer::kLlama3 || rule == PreTokenizer::kQwen2) {
    split_llama3(text, units, 0, n, rule == PreTokenizer::kLlama3 ? 3 : 1, pieces);
    return;
  }
  // kDigitsThenGpt2: every \p{N} character is a piece; GPT-2's rule splits the stretches
  // between them, each on its own (so "a 1" gives "a", " ", "1": the space cannot join the
  // digit, and the lookahead sees the stretch end as the end of the text).
  std::size_t stretch = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (units[i].cls != CharClass::kNumber) continue;
    split_gpt2(text, units, stretch, i, pieces);
    pieces.push_back(text.substr(units[i].offset, units[i].size));
    stretch = i + 1;
  }
  split_gpt2(text, units, stretch, n, pieces);
}

PreTokenizer parse_pre(std::string const& name) {
  // The names llama.cpp maps to the same split expressions (llama-vocab.cpp).
  for (char const* gpt2 : {"", "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais"}) {
    if (name == gpt2) return PreTokenizer::kGpt2;
  }
  for (char const* digits :
       {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}) {
    if (name == digits) return PreTokenizer::kDigitsThenGpt2;
  }
  for (char const* llama3 : {"llama3", "llama-v3", "llama-bpe", "falcon3"}) {
    if (name == llama3) return PreTokenizer::kLlama3;
  }
  for (char const* qwen2 : {"qwen2", "deepseek-r1-qwen"}) {
    if (name == qwen2) return PreTokenizer::kQwen2;
  }
  fail(ErrorKind::kInvalidInput, "tokenizer: pre-tokenizer '{}' is not supported (supported: "
       "gpt-2 and the same split under gpt2, phi-2, mpt, olmo, jais, or empty; smollm and the "
       "same split under starcoder, refact, command-r, codeshell, exaone, minerva-7b; llama3 "
       "(llama-v3, llama-bpe, falcon3); qwen2 (deepseek-r1-qwen))",
       printable(name));
}

constexpr std::uint64_t pair_key(int left, int right) noexcept {
  return (std::uint64_t{static_cast<std::uint32_t>(left)} << 32) |
         std::uint64_t{static_cast<std::uint32_t>(right)};
}

constexpr int kNoToken = -1;  // a byte whose one-character token is missing
constexpr int kMerged = -2;   // a symbol merged into its left neighbour

}  // namespace

CharClass classify_code_point(char32_t cp) noexcept {
  if (cp < 0x80) {
    if ((cp >= U'a' && cp <= U'z') || (cp >= U'A' && cp <= U'Z')) return CharClass::kLetter;
    if (cp >= U'0' && cp <= U'9') return CharClass::kNumber;
    if (cp == U' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (cp < 0x100) {
    if (cp == 0x85 || cp == 0xA0) return CharClass::kSpace;  // NEL, NBSP
    // ª µ º, À–Ö, Ø–ö, ø–ÿ (× and ÷ are symbols)
    if (cp == 0xAA || cp == 0xB5 || cp == 0xBA || (cp >= 0xC0 && cp != 0xD7 && cp != 0xF7)) {
      return CharClass::kLetter;
    }
    if (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE)) {  // ² ³ ¹ ¼ ½ ¾
      return CharClass::kNumber;
    }
    return CharClass::kOther;  // C1 controls, punctuation, symbols, soft hyphen
  }
  if (in_ranges(kSpaceRanges, cp)) return CharClass::kSpace;
  if (in_ranges(kNumberRanges, cp)) return CharClass::kNumber;
  if (in_ranges(kOtherRanges, cp)) return CharClass::kOther;
  return CharClass::kLetter;
}

// GPT-2's byte map. BPE vocabularies cannot hold raw bytes as readable text, so every byte gets a
// printable stand-in: the 188 bytes that are already printable characters of Latin-1 ('!'..'~',
// '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 (0x00–0x20, 0x7F–0xA0, 0xAD) take the
// code points 256, 257, ... in byte order:
//   0x00–0x20 -> U+0100–U+0120,  0x7F–0xA0 -> U+0121–U+0142,  0xAD -> U+0143.
char32_t byte_to_unicode(std::uint8_t byte) noexcept {
  if ((byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE) {
    return byte;
  }
  if (byte <= 0x20) return 0x100 + char32_t{byte};
  if (byte <= 0xA0) return 0x121 + (char32_t{byte} - 0x7F);
  return 0x143;  // 0xAD, the soft hyphen
}

std::optional<std::uint8_t> unicode_to_byte(char32_t cp) noexcept {
  if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) {
    return static_cast<std::uint8_t>(cp);
  }
  if (cp >= 0x100 && cp <= 0x120) return static_cast<std::uint8_t>(cp - 0x100);
  if (cp >= 0x121 && cp <= 0x142) return static_cast<std::uint8_t>(0x7F + (cp - 0x121));
  if (cp == 0x143) return std::uint8_t{0xAD};
  return std::nullopt;
}

std::vector<std::string_view> pre_tokenize(std::string_view text, PreTokenizer rule) {
  std::vector<Unit> units;
  std::vector<std::string_view> pieces;
  split(text, rule, units, pieces);
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// BpeTokenizer
// ---------------------------------------------------------------------------------------------

/// Buffers reused across the pieces of one encode() call (so encode stays const and
/// thread-safe, and nothing outlives the call).
struct BpeTokenizer::Scratch {
  /// A symbol of the word being merged: a doubly linked list over the piece's bytes.
  struct Symbol {
    int id;    ///< token id, kNoToken or kMerged
    int prev;  ///< index of the previous live symbol or -1
    int next;  ///< index of the next live symbol or -1
  };
  /// A mergeable adjacent pair, as it was when queued.
  struct Candidate {
    int rank;
    int left;  ///< symbol index (= byte offset of the left symbol in the piece)
    int right;
    int left_id;
    int right_id;
    int result;
  };
  std::vector<Unit> units;
  std::vector<std::string_view> pieces;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

BpeTokenizer::BpeTokenizer(TokenizerData data) {
  auto& tokens = data.tokens;
  if (tokens.empty()) fail(ErrorKind::kInvalidInput, "tokenizer: the vocabulary is empty");
  if (tokens.size() > static_cast<std::size_t>(INT_MAX)) {
    fail(ErrorKind::kInvalidInput, "tokenizer: {} tokens do not fit 32-bit ids", tokens.size());
  }
  int const n = static_cast<int>(tokens.size());

  // Types: GGUF's 0..6; an absent array means all normal.
  if (!data.token_types.empty() && data.token_types.size() != tokens.size()) {
    fail(ErrorKind::kInvalidInput, "tokenizer: {} token types for {} tokens (need one per token, "
         "or none)", data.token_types.size(), tokens.size());
  }
  types_.assign(tokens.size(), TokenType::kNormal);
  for (std::size_t i = 0; i < data.token_types.size(); ++i) {
    int const type = data.token_types[i];
    if (type < 0 || type > 6) {
      fail(ErrorKind::kInvalidInput, "tokenizer: token {} ('{}') has type {} (GGUF token types "
           "are 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)",
           i, printable(tokens[i]), type);
    }
    types_[i] = static_cast<TokenType>(type);
  }

  ids_.reserve(tokens.size());
  for (int i = 0; i < n; ++i) {
    auto const [it, inserted] = ids_.emplace(tokens[static_cast<std::size_t>(i)], i);
    if (!inserted) {
      fail(ErrorKind::kInvalidInput, "tokenizer: tokens {} and {} are both '{}'", it->second, i,
           printable(it->first));
    }
  }

  auto const check_special = [&](char const* what, std::optional<int> id) {
    if (id && (*id < 0 || *id >= n)) {
      fail(ErrorKind::kInvalidInput, "tokenizer: {} token id {} is out of range (vocabulary size "
           "{})", what, *id, n);
    }
  };
  check_special("bos", data.bos);
  check_special("eos", data.eos);
  check_special("unknown", data.unk);
  check_special("padding", data.pad);
  if (data.add_bos && !data.bos) {
    fail(ErrorKind::kInvalidInput, "tokenizer: add_bos is set but there is no bos token");
  }
  pre_ = parse_pre(data.pre);

  // What each token decodes to: normal tokens character by character through the inverse byte
  // map (a character outside the map, which a byte-level vocabulary should not hold, passes
  // through as its UTF-8), other types as their text.
  bytes_.resize(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::string const& text = tokens[i];
    if (types_[i] != TokenType::kNormal && types_[i] != TokenType::kUndefined) {
      bytes_[i] = text;
      continue;
    }
    for (std::size_t k = 0; k < text.size();) {
      Utf8Char const c = decode_utf8(text, k);
      if (c.cp == kNotUtf8) {
        fail(ErrorKind::kInvalidInput, "tokenizer: token {} ('{}') is not valid UTF-8 (byte {})",
             i, printable(text), k);
      }
      if (auto const byte = unicode_to_byte(c.cp)) {
        bytes_[i].push_back(static_cast<char>(*byte));
      } else {
        bytes_[i].append(text, k, c.size);
      }
      k += c.size;
    }
  }

  for (int b = 0; b < 256; ++b) {
    std::string text;
    append_utf8(text, byte_to_unicode(static_cast<std::uint8_t>(b)));
    auto const it = ids_.find(text);
    byte_token_[static_cast<std::size_t>(b)] = it == ids_.end() ? kNoToken : it->second;
  }

  if (data.merges.size() > static_cast<std::size_t>(INT_MAX)) {
    fail(ErrorKind::kInvalidInput, "tokenizer: {} merges do not fit 32-bit ranks",
         data.merges.size());
  }
  merges_.reserve(data.merges.size());
  for (std::size_t r = 0; r < data.merges.size(); ++r) {
    std::string_view const merge = data.merges[r];
    std::size_t const space = merge.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string_view::npos) {
      fail(ErrorKind::kInvalidInput, "tokenizer: merge {} ('{}') is not two token texts separated "
           "by one space", r, printable(merge));
    }
    std::string_view const parts[2] = {merge.substr(0, space), merge.substr(space + 1)};
    int part_ids[2] = {0, 0};
    for (int p = 0; p < 2; ++p) {
      auto const it = ids_.find(parts[p]);
      if (it == ids_.end()) {
        fail(ErrorKind::kInvalidInput, "tokenizer: merge {} ('{}'): its {} part '{}' is not a "
             "token", r, printable(merge), p == 0 ? "left" : "right", printable(parts[p]));
      }
      part_ids[p] = it->second;
    }
    std::string merged(parts[0]);
    merged += parts[1];
    auto const result = ids_.find(merged);
    if (result == ids_.end()) {
      fail(ErrorKind::kInvalidInput, "tokenizer: merge {} ('{}'): the merged text '{}' is not a "
           "token", r, printable(merge), printable(merged));
    }
    auto const [it, inserted] = merges_.emplace(pair_key(part_ids[0], part_ids[1]),
                                                Merge{static_cast<int>(r), result->second});
    if (!inserted) {
      fail(ErrorKind::kInvalidInput, "tokenizer: merges {} and {} are both '{}'", it->second.rank,
           r, printable(merge));
    }
  }

  // Tokens cut out of the text before pre-tokenization: control and unknown (with
  // parse_special) and user-defined (always), bucketed by first byte, longest first so the
  // first hit at a position is the longest match.
  for (int i = 0; i < n; ++i) {
    TokenType const type = types_[static_cast<std::size_t>(i)];
    std::string const& text = tokens[static_cast<std::size_t>(i)];
    if (text.empty() || (type != TokenType::kControl && type != TokenType::kUnknown &&
                         type != TokenType::kUserDefined)) {
      continue;
    }
    specials_by_first_byte_[static_cast<unsigned char>(text[0])].push_back(i);
  }
  for (auto& bucket : specials_by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](int a, int b) {
      return tokens[static_cast<std::size_t>(a)].size() >
             tokens[static_cast<std::size_t>(b)].size();
    });
  }

  tokens_ = std::move(tokens);
  bos_ = data.bos;
  eos_ = data.eos;
  unk_ = data.unk;
  pad_ = data.pad;
  add_bos_ = data.add_bos;
  ignore_merges_ = data.ignore_merges || pre_ == PreTokenizer::kLlama3;
}

void BpeTokenizer::check_id(int id) const {
  if (id < 0 || id >= vocab_size()) {
    fail(ErrorKind::kInvalidInput, "tokenizer: token id {} is out of range (vocabulary size {})",
         id, vocab_size());
  }
}

std::string const& BpeTokenizer::token_text(int id) const {
  check_id(id);
  return tokens_[static_cast<std::size_t>(id)];
}

std::string const& BpeTokenizer::token_bytes(int id) const {
  check_id(id);
  return bytes_[static_cast<std::size_t>(id)];
}

TokenType BpeTokenizer::token_type(int id) const {
  check_id(id);
  return types_[static_cast<std::size_t>(id)];
}

std::optional<int> BpeTokenizer::find(std::string_view text) const {
  auto const it = ids_.find(text);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::vector<int> BpeTokenizer::encode(std::string_view text, EncodeOptions options) const {
  std::vector<int> out;
  if (options.add_special && add_bos_) out.push_back(*bos_);
  Scratch scratch;
  // Cut out special tokens (leftmost first, the longest at that position), encode the plain
  // text between them.
  std::size_t plain = 0;  // start of the plain text not yet encoded
  std::size_t i = 0;
  while (i < text.size()) {
    int match = -1;
    for (int const id : specials_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      bool const user_defined = types_[static_cast<std::size_t>(id)] == TokenType::kUserDefined;
      if (!options.parse_special && !user_defined) continue;
      if (text.substr(i).starts_with(tokens_[static_cast<std::size_t>(id)])) {
        match = id;
        break;
      }
    }
    if (match < 0) {
      ++i;
      continue;
    }
    encode_plain(text.substr(plain, i - plain), plain, options, scratch, out);
    out.push_back(match);
    i += tokens_[static_cast<std::size_t>(match)].size();
    plain = i;
  }
  encode_plain(text.substr(plain), plain, options, scratch, out);
  return out;
}

void BpeTokenizer::encode_plain(std::string_view text, std::size_t offset,
                                EncodeOptions const& options, Scratch& scratch,
                                std::vector<int>& out) const {
  if (text.empty()) return;
  split(text, pre_, scratch.units, scratch.pieces);
  for (std::string_view const piece : scratch.pieces) {
    encode_piece(piece, offset + static_cast<std::size_t>(piece.data() - text.data()), options,
                 scratch, out);
  }
}

// The merge loop. The piece starts as one symbol per byte (its one-character token) in a linked
// list. Every adjacent pair that some merge rule names is queued with the rule's rank; the queue
// hands out the lowest rank first, and among equal ranks the leftmost pair (this is what GPT-2's
// "merge the best bigram everywhere, left to right" does, and what Hugging Face's and llama.cpp's
// queues do). Merging writes the result into the left symbol, unlinks the right one and queues
// the two new pairs the result forms with its neighbours. Entries made stale by an earlier merge
// (a symbol gone or changed) are recognized when popped, by comparing the ids they were queued
// with, and skipped. Each merge removes a symbol, so there are < n merges and O(n) queue entries:
// O(n log n) per piece.
void BpeTokenizer::encode_piece(std::string_view piece, std::size_t offset,
                                EncodeOptions const& options, Scratch& scratch,
                                std::vector<int>& out) const {
  using Candidate = Scratch::Candidate;
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  if (piece.size() > static_cast<std::size_t>(INT_MAX)) {
    fail(ErrorKind::kInvalidInput, "tokenizer: a pre-token of {} bytes is too long",
         piece.size());
  }
  if (ignore_merges_) {
    // A piece that is a token as a whole is that token, whatever the merges would build.
    std::string mapped;
    for (char const ch : piece) append_utf8(mapped, byte_to_unicode(static_cast<std::uint8_t>(ch)));
    if (auto const it = ids_.find(mapped); it != ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  int const n = static_cast<int>(piece.size());
  symbols.clear();
  for (int i = 0; i < n; ++i) {
    auto const byte = static_cast<unsigned char>(piece[static_cast<std::size_t>(i)]);
    symbols.push_back({byte_token_[byte], i - 1, i + 1 < n ? i + 1 : -1});
  }

  auto const later = [](Candidate const& a, Candidate const& b) {  // min-heap on (rank, left)
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  };
  auto const queue_pair = [&](int left, int right) {
    int const left_id = symbols[static_cast<std::size_t>(left)].id;
    int const right_id = symbols[static_cast<std::size_t>(right)].id;
    if (left_id < 0 || right_id < 0) return;
    auto const it = merges_.find(pair_key(left_id, right_id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, left, right, left_id, right_id, it->second.result});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  heap.clear();
  for (int i = 0; i + 1 < n; ++i) queue_pair(i, i + 1);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Candidate const c = heap.back();
    heap.pop_back();
    auto& left = symbols[static_cast<std::size_t>(c.left)];
    auto& right = symbols[static_cast<std::size_t>(c.right)];
    if (left.id != c.left_id || left.next != c.right || right.id != c.right_id) continue;  // stale
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = c.left;
    right.id = kMerged;
    if (left.prev >= 0) queue_pair(left.prev, c.left);
    if (left.next >= 0) queue_pair(c.left, left.next);
  }

  // Symbol 0 never merges into a left neighbour, so the list starts there.
  for (int s = 0; s >= 0; s = symbols[static_cast<std::size_t>(s)].next) {
    int const id = symbols[static_cast<std::size_t>(s)].id;
    if (id != kNoToken) {
      out.push_back(id);
    } else if (options.missing_byte == MissingByte::kUnknown && unk_) {
      out.push_back(*unk_);
    } else if (options.missing_byte != MissingByte::kSkip) {
      // A kNoToken symbol never merged, so its index is its byte's offset in the piece.
      auto const byte = static_cast<std::uint8_t>(piece[static_cast<std::size_t>(s)]);
      std::string stand_in;
      append_utf8(stand_in, byte_to_unicode(byte));
      fail(ErrorKind::kInvalidInput, "tokenizer: byte 0x{:02x} at offset {} of the text has no "
           "token (the vocabulary lacks '{}'){}", byte, offset + static_cast<std::size_t>(s),
           stand_in, unk_ ? "" : " and there is no unknown token");
    }
  }
}

std::string BpeTokenizer::decode(std::span<int const> ids) const {
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    int const id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      fail(ErrorKind::kInvalidInput, "tokenizer: ids[{}] = {} is not a token id (vocabulary size "
           "{})", i, id, vocab_size());
    }
    out += bytes_[static_cast<std::size_t>(id)];
  }
  return out;
}

}  // namespace slidesparse::runtime
