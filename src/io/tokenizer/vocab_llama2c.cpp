// llama2.c tokenizer (tok*.bin), as written by llama2.c's tokenizer.py export:
//   int32 max_token_length
//   vocab_size x { float32 score; int32 len; uint8 bytes[len] }     (little-endian)
// The vocabulary size is not stored: it comes from the checkpoint header. The export rewrote
// the pieces: U+2581 became ' ' and BOS/EOS became "\n<s>\n" / "\n</s>\n". We undo both so the
// vocabulary equals the SentencePiece model it came from (llama.cpp ids). Types are not stored
// and are inferred from the text: <0xHH> byte, <unk> unknown, <s> </s> control.
#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress {

namespace {
std::string normalize_llama2c_piece(std::string s) {
  if (s == "\n<s>\n") return "<s>";
  if (s == "\n</s>\n") return "</s>";
  std::string r;
  r.reserve(s.size() + 8);
  for (char c : s) {
    if (c == ' ')
      r += "\xE2\x96\x81";
    else
      r += c;
  }
  return r;
}
}  // namespace

Vocab parse_vocab_llama2c(const uint8_t* data, size_t n, int32_t expected_vocab,
                          const std::string& name) {
  tok::Reader rd(data, n, name);
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = name;
  const int32_t max_len = rd.i32("max_token_length");
  if (max_len < 0 || size_t(max_len) > tok::kMaxPieceBytes)
    fail(name, "max_token_length " + std::to_string(max_len) +
                   " is not plausible: not a llama2.c tokenizer file?");
  if (expected_vocab > 0 && size_t(expected_vocab) > tok::kMaxVocab)
    fail(name, "vocab_size " + std::to_string(expected_vocab) + " exceeds the limit of " +
                   std::to_string(tok::kMaxVocab));
  // expected_vocab <= 0: read tokens until the end of the file.
  const bool to_eof = expected_vocab <= 0;
  for (int64_t i = 0; to_eof ? rd.left() > 0 : i < expected_vocab; ++i) {
    if (!to_eof && rd.left() == 0)
      fail(name, "holds " + std::to_string(i) + " tokens but the model's vocab_size is " +
                     std::to_string(expected_vocab) + ": tokenizer and checkpoint do not match");
    if (v.tokens.size() >= tok::kMaxVocab)
      fail(name, "more than " + std::to_string(tok::kMaxVocab) + " tokens");
    const float score = rd.f32("token score");
    const int32_t len = rd.i32("token length");
    if (len < 0 || size_t(len) > tok::kMaxPieceBytes)
      fail(name, "token " + std::to_string(i) + " has length " + std::to_string(len) +
                     " at offset " + std::to_string(rd.pos() - 4));
    std::string piece = normalize_llama2c_piece(rd.bytes(size_t(len), "token text"));
    v.types.push_back(tok::infer_spm_type(piece));
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
  }
  if (rd.left() != 0)
    fail(name, std::to_string(rd.left()) + " bytes left after " + std::to_string(expected_vocab) +
                   " tokens: the file holds a larger vocabulary than the model's vocab_size");

  bool has_bytes = false;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const std::string& t = v.tokens[i];
    if (t == "<unk>" && v.unk_id < 0) v.unk_id = int32_t(i);
    if (t == "<s>" && v.bos_id < 0) v.bos_id = int32_t(i);
    if (t == "</s>" && v.eos_id < 0) v.eos_id = int32_t(i);
    has_bytes |= v.types[i] == TokenType::Byte;
  }
  v.byte_fallback = has_bytes;
  v.add_bos = true;
  v.add_space_prefix = true;
  tok::validate_vocab(v);
  return v;
}

Vocab load_vocab_llama2c(const std::string& path, int32_t expected_vocab) {
  MappedFile f(path);
  return parse_vocab_llama2c(f.data(), f.size(), expected_vocab, path);
}

}  // namespace lmpress
