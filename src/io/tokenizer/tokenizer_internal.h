// Private helpers shared by the tokenizer sources (src/io/tokenizer/*.cpp): UTF-8 scanning, the
// GPT-2 byte <-> unicode alphabet, vocabulary checks and a bounds-checked little-endian reader.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "lmpress/core.h"
#include "lmpress/tokenizer.h"

namespace lmpress::tok {

// Caps on untrusted sizes: far above any real vocabulary, low enough that a forged count cannot
// make us allocate gigabytes before the bytes run out.
constexpr size_t kMaxVocab = size_t(1) << 24;       // 16.7 M tokens
constexpr size_t kMaxPieceBytes = size_t(1) << 16;  // 64 KiB per piece

// Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 when s[0..n) does not start
// with one (stray continuation byte, overlong form, surrogate, truncated sequence, > U+10FFFF).
size_t utf8_valid_len(const char* s, size_t n);
// Code point of a valid sequence of length len (as returned by utf8_valid_len).
uint32_t utf8_decode(const char* s, size_t len);
void utf8_append(std::string& out, uint32_t cp);
// "U+00E9" (+ " 'é'" when printable) or "byte 0xFF (invalid UTF-8)" for error messages.
std::string describe_char(std::string_view s);

// GPT-2 byte-level alphabet: every byte maps to one printable code point (bytes 33..126,
// 161..172, 174..255 map to themselves, the other 68 to U+0100.. in byte order).
const std::string& gpt2_byte_to_utf8(uint8_t b);
// Inverse: code point -> byte, or -1 when cp is not in the alphabet.
int gpt2_cp_to_byte(uint32_t cp);

// "<0xAB>" (upper-case hex, as SentencePiece writes byte pieces).
std::string byte_piece(uint8_t b);
// True when s is exactly "<0xHH>" (either case); *byte receives the value.
bool parse_byte_piece(std::string_view s, uint8_t* byte);

// Checks sizes and ids (types/scores length, ids in range, caps) and throws Error naming
// v.source. Called by every parser and by the Tokenizer constructor.
void validate_vocab(const Vocab& v);

// Little-endian reader over an untrusted buffer; every read is checked against the bytes left.
class Reader {
 public:
  Reader(const uint8_t* d, size_t n, const std::string& name) : d_(d), n_(n), name_(name) {}
  size_t left() const { return n_ - pos_; }
  size_t pos() const { return pos_; }
  void need(size_t k, const char* what) const {
    if (k > left())
      fail(name_, std::string("truncated: ") + what + " needs " + std::to_string(k) +
                      " bytes at offset " + std::to_string(pos_) + ", " + std::to_string(left()) +
                      " left");
  }
  int32_t i32(const char* what) {
    need(4, what);
    int32_t v;
    std::memcpy(&v, d_ + pos_, 4);
    pos_ += 4;
    return v;
  }
  float f32(const char* what) {
    need(4, what);
    float v;
    std::memcpy(&v, d_ + pos_, 4);
    pos_ += 4;
    return v;
  }
  std::string bytes(size_t k, const char* what) {
    need(k, what);
    std::string s(reinterpret_cast<const char*>(d_ + pos_), k);
    pos_ += k;
    return s;
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& name_;
};

// Token types inferred from the piece text alone (llama2.c .bin has none stored).
TokenType infer_spm_type(std::string_view piece);

// Piece text -> id with string_view lookups. Later ids win on duplicate texts (llama.cpp).
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceMap = std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>>;
PieceMap build_piece_map(const Vocab& v);

// SentencePiece-style encoder (llama.cpp "llama" vocab): pieces merged greedily by score.
class SpmEncoder {
 public:
  explicit SpmEncoder(const Vocab& v);
  // Appends the ids of one fragment of raw text. space_prefix: prepend U+2581 (the caller
  // decides: llama.cpp does it for the first fragment and after special tokens).
  void encode(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const;

 private:
  const Vocab& v_;
  PieceMap map_;
  int32_t byte_ids_[256];                  // id of "<0xHH>" or -1
  std::unordered_set<uint64_t> joinable_;  // (code << 32 | code) pairs adjacent in some piece
  void emit_symbol(std::string_view sym, std::vector<int32_t>& out) const;
};

// GPT-2 byte-level BPE encoder: regex pre-tokenizer, byte alphabet, merges by rank.
class BpeEncoder {
 public:
  explicit BpeEncoder(const Vocab& v);
  ~BpeEncoder();
  BpeEncoder(const BpeEncoder&) = delete;
  BpeEncoder& operator=(const BpeEncoder&) = delete;
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  struct Regex;
  const Vocab& v_;
  PieceMap map_;
  // Merge rank keyed by "<len(left)>:" + left + right (unambiguous whatever the pieces hold).
  std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>> ranks_;
  std::unique_ptr<Regex> re_;
  std::unique_ptr<Regex> digits_;  // split_digits_pre: every \p{N} is a pre-token of its own first
  bool ignore_merges_ = false;  // llama3: a pre-token that is itself a token is emitted whole
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_span(std::string_view text, std::vector<int32_t>& out) const;  // the regex pass
};
// True for BPE pre-tokenizer names that select the llama3 regex.
bool is_llama3_pre(const std::string& pre);
// True for pre-tokenizer names (llama.cpp's smollm, starcoder, refact, command-r, codeshell,
// exaone, minerva) that split every digit off before the GPT-2 regex.
bool is_split_digits_pre(const std::string& pre);
// The pre-tokenizer regexes (PCRE / HF tokenizers syntax).
extern const char* const kGpt2Regex;
extern const char* const kLlama3Regex;


// ---- pair merging shared by the SPM and BPE encoders ----------------------------------------------
// Symbols of a text in a doubly linked list (prev/next, -1 at the ends) over byte ranges.
struct MergeSymbol {
  int32_t prev, next;
  uint32_t start, len;  // byte range in the text; len 0 once merged into its left neighbour
};
// Greedy pair merging over symbols first..last (linked): `priority(l, r, &key)` says whether the
// adjacent symbols l and r may merge, and with which key; the highest key merges first (ties: the
// leftmost pair), then its neighbours become candidates, until no pair may merge. Candidates that
// went stale (one side merged elsewhere since) are skipped when popped: O(log n) per merge.
// SPM: key = the merged piece's score; BPE: key = -(merge rank).
template <class Priority>
void merge_pairs(std::vector<MergeSymbol>& sym, int32_t first, int32_t last, const Priority& priority) {
  struct Cand {
    double key;
    int32_t left, right;
    uint32_t len;  // len(left) + len(right) when pushed; a mismatch at pop time means stale
  };
  auto lower = [](const Cand& a, const Cand& b) { return a.key != b.key ? a.key < b.key : a.left > b.left; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(lower)> queue(lower);
  auto consider = [&](int32_t l, int32_t r) {
    double key;
    if (l < 0 || r < 0 || !priority(l, r, &key)) return;
    queue.push({key, l, r, sym[size_t(l)].len + sym[size_t(r)].len});
  };
  for (int32_t i = first + 1; i <= last; ++i) consider(i - 1, i);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    MergeSymbol& L = sym[size_t(c.left)];
    MergeSymbol& R = sym[size_t(c.right)];
    if (L.len == 0 || R.len == 0 || L.next != c.right || L.len + R.len != c.len) continue;
    L.len += R.len;
    R.len = 0;
    L.next = R.next;
    if (R.next >= 0) sym[size_t(R.next)].prev = c.left;
    consider(L.prev, c.left);
    consider(c.left, L.next);
  }
}

}  // namespace lmpress::tok
