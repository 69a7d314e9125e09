// GPT-2 byte-level BPE encoder (llama.cpp "gpt2" vocabulary, HF tokenizer.json BPE+ByteLevel).
//
// 1. Pre-tokenize with the family's regex (PCRE2, UTF + Unicode properties); text the regex
//    does not cover (invalid UTF-8 bytes) becomes words of its own.
// 2. Map each byte of a word to the GPT-2 byte alphabet; each mapped byte is one symbol.
// 3. Merge adjacent symbols by merge rank (lowest first, ties leftmost) with the same stale-
//    candidate priority queue as the SPM encoder, then map symbols to ids.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdio>
#include <queue>

#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress::tok {

// GPT-2 (tiktoken r50k/p50k; llama.cpp pre "gpt-2" and "default" fallback). The trailing \s+
// catches whitespace that \s+(?!\S) leaves before a non-space (the last space joins the word).
const char* const kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// Llama 3 (tiktoken cl100k-style): case-insensitive contractions, numbers in groups of <= 3.
const char* const kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

namespace {
std::string rank_key(std::string_view l, std::string_view r) {
  std::string k = std::to_string(l.size());
  k += ':';
  k.append(l);
  k.append(r);
  return k;
}

}  // namespace

bool is_llama3_pre(const std::string& pre) {
  return pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe";
}

bool is_split_digits_pre(const std::string& pre) {
  return pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "codeshell" ||
         pre == "exaone" || pre == "minerva";
}

struct BpeEncoder::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

BpeEncoder::BpeEncoder(const Vocab& v) : v_(v), map_(build_piece_map(v)), re_(new Regex) {
  ranks_.reserve(v.merges.size() * 2);
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const std::string& m = v.merges[i];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos)
      fail(v.source, "merge " + std::to_string(i) + " \"" + m.substr(0, 64) +
                         "\" is not of the form \"left right\"");
    // First occurrence keeps the lower rank (the one BPE would apply).
    ranks_.emplace(rank_key(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1)),
                   int32_t(i));
  }
  ignore_merges_ = is_llama3_pre(v.pre);
  const char* pattern = ignore_merges_ ? kLlama3Regex : kGpt2Regex;
  int err = 0;
  PCRE2_SIZE err_off = 0;
  re_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
  LMP_ASSERT(re_->code != nullptr);                  // fixed patterns: a failure is a build problem
  pcre2_jit_compile(re_->code, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back silently
  if (is_split_digits_pre(v.pre)) {
    digits_.reset(new Regex);
    digits_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("\\p{N}"), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
    LMP_ASSERT(digits_->code != nullptr);
    pcre2_jit_compile(digits_->code, PCRE2_JIT_COMPLETE);
  }
}

namespace {
// Match data for one pattern, freed on every exit (pcre2 reports allocation failure as null).
struct MatchData {
  explicit MatchData(const pcre2_code* code) : md(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (!md) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* md;
};
}  // namespace

BpeEncoder::~BpeEncoder() = default;

// Digit-splitting pre-tokenizers (llama.cpp applies its regexes in sequence): every \p{N} code
// point is a pre-token; the text between them goes through the GPT-2 regex as its own subject.
void BpeEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  if (!digits_) return encode_span(text, out);
  const MatchData m(digits_->code);
  pcre2_match_data* md = m.md;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(digits_->code, subject, text.size(), pos, 0, md, nullptr);
    if (rc < 0) {  // no more digits (or an engine error: the rest is plain text either way)
      encode_span(text.substr(pos), out);
      return;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t s = ov[0], e = std::max<size_t>(ov[1], s + 1);
    if (s > pos) encode_span(text.substr(pos, s - pos), out);
    encode_word(text.substr(s, e - s), out);
    pos = e;
  }
}

void BpeEncoder::encode_span(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const MatchData m(re_->code);
  pcre2_match_data* md = m.md;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(re_->code, subject, text.size(), pos, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      encode_word(text.substr(pos), out);
      break;
    }
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail(v_.source, std::string("pre-tokenizer regex failed: ") + reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t s = ov[0], e = ov[1];
    if (s > pos) encode_word(text.substr(pos, s - pos), out);  // bytes the regex skipped
    if (e <= s) {  // empty match (not produced by these patterns): take one byte
      e = s + 1;
    }
    encode_word(text.substr(s, e - s), out);
    pos = e;
  }
}

void BpeEncoder::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  std::string text;
  text.reserve(word.size() * 2);
  std::vector<MergeSymbol> sym;
  sym.reserve(word.size());
  for (char c : word) {
    const std::string& m = gpt2_byte_to_utf8(uint8_t(c));
    const int32_t idx = int32_t(sym.size());
    sym.push_back({idx - 1, idx + 1, uint32_t(text.size()), uint32_t(m.size())});
    text += m;
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  if (ignore_merges_) {
    auto it = map_.find(text);
    if (it != map_.end()) {
      out.push_back(it->second);
      return;
    }
  }

  const std::string_view tv(text);
  // A pair may merge when the merge table has it; the lowest rank merges first.
  auto priority = [&](int32_t l, int32_t r, double* key) {
    auto it = ranks_.find(rank_key(tv.substr(sym[size_t(l)].start, sym[size_t(l)].len),
                                   tv.substr(sym[size_t(r)].start, sym[size_t(r)].len)));
    if (it == ranks_.end()) return false;
    *key = -double(it->second);
    return true;
  };
  merge_pairs(sym, 0, int32_t(sym.size()) - 1, priority);

  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    const std::string_view s = tv.substr(sym[i].start, sym[i].len);
    auto it = map_.find(s);
    if (it != map_.end()) {
      out.push_back(it->second);
      continue;
    }
    // A merged symbol without a token of its own: fall back to its single mapped bytes.
    for (size_t p = 0; p < s.size();) {
      const size_t len = utf8_valid_len(s.data() + p, s.size() - p);  // alphabet: always valid
      auto one = map_.find(s.substr(p, len));
      if (one == map_.end()) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "0x%02X",
                      unsigned(gpt2_cp_to_byte(utf8_decode(s.data() + p, len))));
        fail(v_.source,
             std::string("text contains byte ") + buf + " (byte-level piece '" +
                 std::string(s.substr(p, len)) +
                 "'), which the vocabulary lacks; use a tokenizer that covers all 256 bytes");
      }
      out.push_back(one->second);
      p += len;
    }
  }
}

}  // namespace lmpress::tok
