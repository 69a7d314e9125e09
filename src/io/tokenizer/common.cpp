// Tokenizer helpers: UTF-8, the GPT-2 byte alphabet, byte pieces, vocabulary validation.
#include <array>
#include <cmath>
#include <cstdio>

#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress::tok {

size_t utf8_valid_len(const char* s, size_t n) {
  if (n == 0) return 0;
  const auto* u = reinterpret_cast<const uint8_t*>(s);
  const uint8_t b0 = u[0];
  if (b0 < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (RFC 3629 table)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (n < len) return 0;
  if (u[1] < lo || u[1] > hi) return 0;
  for (size_t i = 2; i < len; ++i)
    if ((u[i] & 0xC0) != 0x80) return 0;
  return len;
}

uint32_t utf8_decode(const char* s, size_t len) {
  const auto* u = reinterpret_cast<const uint8_t*>(s);
  switch (len) {
    case 1:
      return u[0];
    case 2:
      return (uint32_t(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3:
      return (uint32_t(u[0] & 0x0F) << 12) | (uint32_t(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    default:
      return (uint32_t(u[0] & 0x07) << 18) | (uint32_t(u[1] & 0x3F) << 12) |
             (uint32_t(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
  }
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string describe_char(std::string_view s) {
  char buf[64];
  const size_t len = utf8_valid_len(s.data(), s.size());
  if (len == 0) {
    std::snprintf(buf, sizeof buf, "byte 0x%02X (invalid UTF-8)", unsigned(uint8_t(s[0])));
    return buf;
  }
  const uint32_t cp = utf8_decode(s.data(), len);
  std::snprintf(buf, sizeof buf, "U+%04X", unsigned(cp));
  std::string r = buf;
  // Quote the character itself unless it is whitespace/control (keeps messages on one line).
  if (cp > 0x20 && cp != 0x7F && !(cp >= 0x80 && cp < 0xA0) && cp != 0x2028 && cp != 0x2029)
    r += " '" + std::string(s.substr(0, len)) + "'";
  return r;
}

namespace {
struct ByteMap {
  std::array<std::string, 256> to_utf8;
  std::unordered_map<uint32_t, int> to_byte;
  ByteMap() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = keep ? uint32_t(b) : next++;
      utf8_append(to_utf8[b], cp);
      to_byte[cp] = b;
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}
}  // namespace

const std::string& gpt2_byte_to_utf8(uint8_t b) { return byte_map().to_utf8[b]; }

int gpt2_cp_to_byte(uint32_t cp) {
  const auto& m = byte_map().to_byte;
  auto it = m.find(cp);
  return it == m.end() ? -1 : it->second;
}

std::string byte_piece(uint8_t b) {
  static const char* hex = "0123456789ABCDEF";
  return std::string{'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
}

bool parse_byte_piece(std::string_view s, uint8_t* byte) {
  if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return false;
  auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int h = hexval(s[3]), l = hexval(s[4]);
  if (h < 0 || l < 0) return false;
  *byte = uint8_t(h * 16 + l);
  return true;
}

TokenType infer_spm_type(std::string_view piece) {
  uint8_t b;
  if (parse_byte_piece(piece, &b)) return TokenType::Byte;
  if (piece == "<unk>") return TokenType::Unknown;
  if (piece == "<s>" || piece == "</s>") return TokenType::Control;
  return TokenType::Normal;
}

void validate_vocab(const Vocab& v) {
  const std::string& where = v.source;
  const size_t n = v.tokens.size();
  if (n == 0) fail(where, "vocabulary is empty");
  if (n > kMaxVocab)
    fail(where, "vocabulary has " + std::to_string(n) + " tokens (limit " +
                    std::to_string(kMaxVocab) + ")");
  if (v.types.size() != n)
    fail(where, "vocabulary has " + std::to_string(n) + " tokens but " +
                    std::to_string(v.types.size()) + " token types");
  if (v.kind == VocabKind::SPM && v.scores.size() != n)
    fail(where, "vocabulary has " + std::to_string(n) + " tokens but " +
                    std::to_string(v.scores.size()) + " scores");
  if (!v.scores.empty() && v.scores.size() != n)
    fail(where, "vocabulary has " + std::to_string(n) + " tokens but " +
                    std::to_string(v.scores.size()) + " scores");
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = int32_t(v.types[i]);
    if (t < 1 || t > 6)
      fail(where, "token " + std::to_string(i) + " has invalid type " + std::to_string(t) +
                      " (expected 1..6)");
    if (!v.scores.empty() && std::isnan(v.scores[i]))
      fail(where, "score of token " + std::to_string(i) + " is NaN");
    if (v.tokens[i].size() > kMaxPieceBytes)
      fail(where, "token " + std::to_string(i) + " is " + std::to_string(v.tokens[i].size()) +
                      " bytes long (limit " + std::to_string(kMaxPieceBytes) + ")");
  }
  auto check_id = [&](int32_t id, const char* what) {
    if (id < -1 || id >= int64_t(n))
      fail(where, std::string(what) + " " + std::to_string(id) + " is outside the vocabulary (" +
                      std::to_string(n) + " tokens)");
  };
  check_id(v.bos_id, "bos token id");
  check_id(v.eos_id, "eos token id");
  check_id(v.unk_id, "unknown token id");
  check_id(v.pad_id, "padding token id");
  if (v.kind != VocabKind::SPM && v.kind != VocabKind::BPE)
    fail(where, "unknown vocabulary kind " + std::to_string(int(v.kind)));
}

}  // namespace lmpress::tok
