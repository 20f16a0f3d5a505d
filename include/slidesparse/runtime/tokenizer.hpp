/// \file tokenizer.hpp
/// \brief GPT-2-style byte-level BPE tokenizer (GGUF tokenizer model "gpt2": GPT-2, SmolLM2,
/// StarCoder, ...), built from plain data so that it does not depend on any file reader.
///
/// Encoding runs in four steps:
///   1. special tokens written literally in the text are cut out first (leftmost, longest match);
///   2. each stretch of text between them is pre-tokenized by the split rule that
///      `TokenizerData::pre` names (GPT-2's regex, done by hand; see `pre_tokenize`);
///   3. each piece becomes a sequence of single-byte symbols, byte b being the vocabulary token
///      whose text is the one character `byte_to_unicode(b)` (GPT-2's byte map);
///   4. adjacent symbols are merged by merge rank (lowest rank first) until no listed merge
///      applies; the remaining symbols are the token ids.
/// Decoding concatenates the bytes of each token: normal tokens through the inverse byte map,
/// every other token type (control, user-defined, ...) as its text.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace slidesparse::runtime {

/// GGUF `tokenizer.ggml.token_type` values.
enum class TokenType : int {
  kUndefined = 0,  ///< treated like kNormal
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      ///< "<|im_start|>", "<|endoftext|>": matched in text only with parse_special
  kUserDefined = 4,  ///< added tokens: always matched in text
  kUnused = 5,
  kByte = 6,
};

/// The tokenizer's inputs, as a GGUF file (or a tokenizer.json) gives them.
struct TokenizerData {
  /// id -> text. Normal tokens are written in GPT-2's byte map ("Ġworld" is " world").
  std::vector<std::string> tokens;
  /// "left right" pairs of token texts in rank order (index = rank, 0 merges first).
  std::vector<std::string> merges;
  /// One GGUF token type per token (1 normal, 3 control, ...); empty means all normal.
  std::vector<int> token_types;
  std::optional<int> bos, eos, unk, pad;
  /// `tokenizer.ggml.pre`, the pre-tokenizer name: "gpt-2"/"gpt2" or "" (GPT-2's split), or
  /// "smollm" and the names llama.cpp groups with it (digits split off one by one first).
  std::string pre;
  bool add_bos = false;  ///< prepend bos when encoding with EncodeOptions::add_special
  /// A pre-token that is a vocabulary token as a whole is emitted as that token without merging
  /// (Hugging Face's BPE `ignore_merges`, Llama-3; always on for the llama3 pre-tokenizer).
  bool ignore_merges = false;
};

/// How text is cut into pieces before BPE.
enum class PreTokenizer {
  /// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  /// \p{N} first (every number character is a piece of its own), then kGpt2 inside each of the
  /// remaining stretches (llama.cpp's "smollm", "starcoder", "refact", "command-r", "codeshell",
  /// "exaone", "minerva-7b"; Hugging Face: Digits(individual_digits) + ByteLevel).
  kDigitsThenGpt2,
  /// Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  /// \s*[\r\n]+|\s+(?!\S)|\s+ (llama.cpp's "llama3", "llama-bpe", ...)
  kLlama3,
  /// Qwen2: the Llama-3 rule with \p{N} (one number character per piece) instead of \p{N}{1,3}.
  kQwen2,
};

/// The character classes of the split rule. Exact for U+0000–U+00FF; beyond Latin-1 a compact
/// table (see tokenizer.cpp) names the white space, the common digits and number forms and the
/// common punctuation, symbol, emoji and combining-mark blocks; everything else counts as a
/// letter (an approximation: e.g. the combining vowel signs of Indic scripts, which Unicode
/// classes as marks, count as letters here, and unassigned code points too).
enum class CharClass : std::uint8_t { kLetter, kNumber, kSpace, kOther };
CharClass classify_code_point(char32_t cp) noexcept;

/// GPT-2's byte map: the printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the
/// other 68 (controls, space, DEL, NBSP, soft hyphen) in byte order to U+0100, U+0101, ...
/// (so ' ' -> 'Ġ' U+0120, '\n' -> 'Ċ' U+010A). Every byte thus has a printable character.
char32_t byte_to_unicode(std::uint8_t byte) noexcept;
/// The inverse of byte_to_unicode; nullopt for the code points it never produces.
std::optional<std::uint8_t> unicode_to_byte(char32_t cp) noexcept;

/// Splits text (special tokens already cut out) into the pieces BPE works on; the pieces are
/// never empty and concatenate to the text. A byte that is not part of valid UTF-8 counts as one
/// character of class kOther.
std::vector<std::string_view> pre_tokenize(std::string_view text, PreTokenizer rule);

/// What encode does with a byte whose one-character token the vocabulary lacks. (SmolLM2's
/// vocabulary lacks 21: 0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5–0xFF, and its unk
/// id is 0, "<|endoftext|>".)
enum class MissingByte {
  kUnknown,  ///< the unk token, one per byte; Error(kInvalidInput) when there is no unk
  kSkip,     ///< drop the byte, as llama.cpp does
  kError,    ///< Error(kInvalidInput) naming the byte and its offset in the text
};

struct EncodeOptions {
  /// Prepend bos where TokenizerData::add_bos says so.
  bool add_special = true;
  /// Cut control and unknown-type tokens written literally in the text ("<|im_start|>") out as
  /// their ids, as Hugging Face tokenizers do by default (llama.cpp's default is off). Off, such
  /// text is encoded as plain bytes. User-defined tokens are cut out either way.
  bool parse_special = true;
  MissingByte missing_byte = MissingByte::kUnknown;
};

class BpeTokenizer {
 public:
  /// Validates the data; throws Error(kInvalidInput) naming the offending index for: an empty
  /// vocabulary, duplicate tokens, a normal token that is not valid UTF-8, a token_types size
  /// that is neither 0 nor the vocabulary size or a type outside 0..6, a merge that is not
  /// "left right" or whose parts or merged text are not tokens, a pair merged twice, a
  /// bos/eos/unk/pad id outside the vocabulary, add_bos without bos, an unknown `pre`.
  explicit BpeTokenizer(TokenizerData data);

  /// Token ids of UTF-8 text. Any byte string is accepted (invalid UTF-8 goes through the byte
  /// map like any other byte), and decode(encode(s)) == s whenever every byte has its
  /// one-character token; a byte without one is handled as options.missing_byte says. Special
  /// tokens are matched leftmost first, the longest one at a position. Nothing is cached; the
  /// call is thread-safe.
  std::vector<int> encode(std::string_view utf8_text, EncodeOptions options = {}) const;
  /// The bytes the ids stand for. Throws Error(kInvalidInput) for an id outside the vocabulary.
  std::string decode(std::span<int const> ids) const;

  int vocab_size() const noexcept { return static_cast<int>(tokens_.size()); }
  /// The vocabulary text of a token ("Ġworld"). Throws for an invalid id.
  std::string const& token_text(int id) const;
  /// The bytes the token decodes to (" world"). Throws for an invalid id.
  std::string const& token_bytes(int id) const;
  TokenType token_type(int id) const;
  /// The id whose vocabulary text is `text`, if any.
  std::optional<int> find(std::string_view text) const;

  std::optional<int> bos() const noexcept { return bos_; }
  std::optional<int> eos() const noexcept { return eos_; }
  std::optional<int> unk() const noexcept { return unk_; }
  std::optional<int> pad() const noexcept { return pad_; }
  bool add_bos() const noexcept { return add_bos_; }
  PreTokenizer pre_tokenizer() const noexcept { return pre_; }
  std::size_t merge_count() const noexcept { return merges_.size(); }

 private:
  struct Merge {
    int rank;
    int result;
  };
  /// Lets the token map be searched with a string_view (no temporary std::string).
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept {
      return std::hash<std::string_view>{}(text);
    }
  };
  struct Scratch;
  void check_id(int id) const;
  void encode_plain(std::string_view text, std::size_t offset, EncodeOptions const& options,
                    Scratch& scratch, std::vector<int>& out) const;
  void encode_piece(std::string_view piece, std::size_t offset, EncodeOptions const& options,
                    Scratch& scratch, std::vector<int>& out) const;

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> bytes_;  ///< decoded bytes of every token
  std::unordered_map<std::string, int, TextHash, std::equal_to<>> ids_;
  /// (left id << 32 | right id) -> rank and result id.
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::array<int, 256> byte_token_{};  ///< id of byte b's one-character token, or -1
  /// Special tokens cut out of the text, bucketed by first byte, longest first.
  std::array<std::vector<int>, 256> specials_by_first_byte_;
  std::optional<int> bos_, eos_, unk_, pad_;
  bool add_bos_ = false;
  bool ignore_merges_ = false;
  PreTokenizer pre_ = PreTokenizer::kGpt2;
};

/// The TokenizerData of a Hugging Face `tokenizer.json` (byte-level BPE: GPT-2, Llama-3, Qwen2,
/// SmolLM2 families), with bos/eos from `tokenizer_config.json` when given (may be null).
/// The pre-tokenizer is recognized from its definition: ByteLevel with its regex (GPT-2), a
/// Split with Llama-3's or Qwen2's expression followed by ByteLevel, or Digits(individual) +
/// ByteLevel (SmolLM2); anything else, a model other than BPE, byte_fallback, or a normalizer
/// other than none/NFC is Error(kInvalidInput) naming `source` and the part. Added tokens keep
/// their ids (special ones become control tokens, others user-defined); ids no entry names
/// become unused placeholders. add_bos comes from tokenizer_config's add_bos_token, else from a
/// TemplateProcessing post-processor that starts with a special token.
TokenizerData tokenizer_data_from_hf(nlohmann::json const& tokenizer, nlohmann::json const* config,
                                     std::string_view source);
/// tokenizer_data_from_hf of DIR/tokenizer.json (and DIR/tokenizer_config.json if present).
TokenizerData load_hf_tokenizer(std::filesystem::path const& dir);

}  // namespace slidesparse::runtime
