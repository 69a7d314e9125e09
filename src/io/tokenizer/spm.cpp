// SentencePiece-style encoder with llama.cpp's "llama" vocabulary semantics.
//
// The text (one fragment) has ' ' replaced by U+2581 and, when asked, U+2581 prepended; it is
// split into UTF-8 characters (each invalid byte on its own) which form a doubly linked list of
// symbols. Every adjacent pair whose concatenation is a piece is a candidate; the candidate with
// the highest piece score (ties: leftmost) is merged, its neighbours become new candidates, and
// so on until no pair forms a normal piece. Candidates that went stale (one side merged elsewhere)
// are skipped when popped, which keeps each merge O(log n). Final symbols map to their piece id; a
// symbol with no piece (a single character the vocabulary lacks) becomes <0xHH> byte tokens when
// the vocabulary has byte fallback and is an error otherwise.
#include <queue>

#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress::tok {

namespace {
// One encoder symbol at s[0..n): a UTF-8 character (its code point) or a single invalid byte
// (0x110000 + byte); *len receives its length in bytes.
uint32_t symbol_code(const char* s, size_t n, size_t* len) {
  const size_t l = utf8_valid_len(s, n);
  if (l == 0) {
    *len = 1;
    return 0x110000u + uint8_t(s[0]);
  }
  *len = l;
  return utf8_decode(s, l);
}

}  // namespace

PieceMap build_piece_map(const Vocab& v) {
  PieceMap m;
  m.reserve(v.tokens.size() * 2);
  for (size_t i = 0; i < v.tokens.size(); ++i) m.insert_or_assign(v.tokens[i], int32_t(i));
  return m;
}

SpmEncoder::SpmEncoder(const Vocab& v) : v_(v) {
  // Text only ever becomes normal (or user-defined) pieces: merging "<s" and ">" into the BOS
  // control token, or "<0x4" and "1>" into a byte token, would parse specials out of plain text
  // (SentencePiece never does; llama.cpp only avoids it because such pieces do not exist).
  map_.reserve(v.tokens.size() * 2);
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.types[i] == TokenType::Normal || v.types[i] == TokenType::UserDefined)
      map_.insert_or_assign(v.tokens[i], int32_t(i));
  // Adjacent character pairs inside mergeable pieces (see the chunking in encode).
  for (const auto& [piece, id] : map_) {
    size_t len;
    uint32_t prev = symbol_code(piece.data(), piece.size(), &len);
    for (size_t p = len; p < piece.size(); p += len) {
      const uint32_t c = symbol_code(piece.data() + p, piece.size() - p, &len);
      joinable_.insert((uint64_t(prev) << 32) | c);
      prev = c;
    }
  }
  const PieceMap all = build_piece_map(v);
  for (int b = 0; b < 256; ++b) {
    auto it = all.find(byte_piece(uint8_t(b)));
    byte_ids_[b] = it == all.end() ? -1 : it->second;
  }
}

void SpmEncoder::emit_symbol(std::string_view sym, std::vector<int32_t>& out) const {
  auto it = map_.find(sym);
  if (it != map_.end()) {
    out.push_back(it->second);
    return;
  }
  // Only single characters (never merged symbols) can miss the map.
  if (v_.byte_fallback) {
    for (char c : sym) {
      const int32_t id = byte_ids_[uint8_t(c)];
      if (id < 0)
        fail(v_.source, "text contains " + describe_char(sym) + " and the vocabulary has no " +
                            byte_piece(uint8_t(c)) + " byte piece to fall back on");
      out.push_back(id);
    }
    return;
  }
  fail(v_.source, "text contains " + describe_char(sym) +
                      ", which the vocabulary cannot represent (no piece for it and no byte "
                      "fallback); use a tokenizer that covers this text");
}

void SpmEncoder::encode(std::string_view raw, bool space_prefix, std::vector<int32_t>& out) const {
  if (raw.empty()) return;
  static const std::string_view kSpace = "\xE2\x96\x81";  // U+2581
  std::string text;
  text.reserve(raw.size() + raw.size() / 4 + 3);
  if (space_prefix) text += kSpace;
  for (char c : raw) {
    if (c == ' ')
      text += kSpace;
    else
      text += c;
  }
  if (text.size() > UINT32_MAX / 2) fail(v_.source, "text too long to tokenize in one piece");

  std::vector<MergeSymbol> sym;
  std::vector<uint32_t> code;  // per symbol: code point, or 0x110000 + byte when invalid
  sym.reserve(text.size());
  code.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t len;
    code.push_back(symbol_code(text.data() + pos, text.size() - pos, &len));
    const int32_t idx = int32_t(sym.size());
    sym.push_back({idx - 1, idx + 1, uint32_t(pos), uint32_t(len)});
    pos += len;
  }

  // A pair may merge when the merged text is a piece; its key is the piece's score.
  auto priority = [&](int32_t l, int32_t r, double* key) {
    const uint32_t len = sym[size_t(l)].len + sym[size_t(r)].len;
    auto it = map_.find(std::string_view(text).substr(sym[size_t(l)].start, len));
    if (it == map_.end()) return false;
    *key = double(v_.scores[size_t(it->second)]);
    return true;
  };

  // Chunks: a boundary between two characters that appear next to each other in no piece can
  // never be merged across (any piece spanning it would contain that pair), so the text splits
  // there into independent runs (in practice words). Same result as one pass over the whole
  // text, with small queues instead of one the size of the text.
  const int32_t n_sym = int32_t(sym.size());
  for (int32_t a = 0; a < n_sym;) {
    int32_t b = a + 1;
    while (b < n_sym && joinable_.count((uint64_t(code[b - 1]) << 32) | code[b])) ++b;
    sym[a].prev = -1;
    sym[b - 1].next = -1;
    merge_pairs(sym, a, b - 1, priority);
    for (int32_t i = a; i >= 0; i = sym[i].next)
      emit_symbol(std::string_view(text).substr(sym[i].start, sym[i].len), out);
    a = b;
  }
}

}  // namespace lmpress::tok
