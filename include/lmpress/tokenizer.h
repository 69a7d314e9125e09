// lmpress tokenizers: one vocabulary description (Vocab), filled by the file parsers, and two
// encoders: SentencePiece-style BPE by piece score (llama.cpp "llama"/SPM behaviour) and GPT-2
// byte-level BPE by merge rank ("gpt2", HF tokenizer.json BPE with ByteLevel pre-tokenizer).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lmpress {

enum class VocabKind : uint8_t { SPM = 0, BPE = 1 };

// Token types, same numbering as GGUF tokenizer.ggml.token_type / SentencePiece piece types.
enum class TokenType : int32_t {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

struct Vocab {
  VocabKind kind = VocabKind::SPM;
  std::vector<std::string> tokens;  // piece text: SPM uses U+2581 for space, BPE the GPT-2 byte map
  std::vector<float> scores;        // SPM merge priority (higher first); may be empty for BPE
  std::vector<TokenType> types;     // same length as tokens
  std::vector<std::string> merges;  // BPE only: "left right", rank = index
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = true;
  bool add_space_prefix = true;  // SPM: prepend U+2581 before the first piece (llama.cpp rule)
  bool byte_fallback = true;     // SPM: unknown characters become <0xXX> byte tokens
  std::string pre = "default";   // BPE pre-tokenizer regex family ("gpt2", "llama3", ...)
  std::string source;            // file it came from, for error messages
};

class Tokenizer {
 public:
  explicit Tokenizer(Vocab v);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text -> ids. Throws Error (naming vocab.source) when a character cannot be represented
  // (no piece and no byte fallback).
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // One token's text (SPM: U+2581 -> ' ', <0xXX> -> byte; BPE: byte map reversed).
  std::string token_to_piece(int32_t id) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  const Vocab& vocab() const { return v_; }
  int32_t n_vocab() const { return int32_t(v_.tokens.size()); }
  int32_t bos() const { return v_.bos_id; }
  int32_t eos() const { return v_.eos_id; }

 private:
  Vocab v_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Parsers (untrusted input; throw Error naming the file).
Vocab load_vocab_sentencepiece(const std::string& path);  // tokenizer.model / tok*.model
Vocab load_vocab_llama2c(const std::string& path, int32_t expected_vocab);  // tok*.bin
Vocab load_vocab_hf_json(const std::string& path);                           // tokenizer.json
Vocab parse_vocab_llama2c(const uint8_t* data, size_t n, int32_t expected_vocab,
                          const std::string& name);
Vocab parse_vocab_sentencepiece(const uint8_t* data, size_t n, const std::string& name);
Vocab parse_vocab_hf_json(std::string_view json, const std::string& name);
// GGUF-embedded vocabularies are read by the GGUF loader (io.h) into a Vocab.

// Writers for export.
std::string serialize_sentencepiece_model(const Vocab& v);  // protobuf ModelProto bytes
std::string hf_tokenizer_json(const Vocab& v);              // tokenizer.json text

}  // namespace lmpress
