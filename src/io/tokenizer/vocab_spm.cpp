// SentencePiece tokenizer.model: protobuf ModelProto (sentencepiece_model.proto), read and
// written with a small bounds-checked protobuf codec (no libprotobuf: fuzzable, no schema).
//
// Fields used (field number: wire type):
//   ModelProto      1: SentencePiece (repeated, len)  2: TrainerSpec (len)  3: NormalizerSpec (len)
//   SentencePiece   1: piece (string)  2: score (fixed32 float)  3: type (varint enum, 1 = NORMAL)
//   TrainerSpec     3: model_type (1 UNIGRAM default, 2 BPE, 3 WORD, 4 CHAR)  4: vocab_size
//                   35: byte_fallback  40: unk_id (0)  41: bos_id (1)  42: eos_id (2)  43: pad_id
//                   (-1)
//   NormalizerSpec  1: name  3: add_dummy_prefix (true)  4: remove_extra_whitespaces (true)
// Everything else is skipped by wire type. int32 fields are varints, negatives sign-extended
// to 10 bytes.
#include <string_view>

#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress {

namespace {

enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

class PbReader {
 public:
  PbReader(const uint8_t* p, size_t n, const std::string& name, const char* msg)
      : p_(p), end_(p + n), base_(p), name_(name), msg_(msg) {}
  bool done() const { return p_ == end_; }

  // Next field key; false at the end of the message.
  bool next(uint32_t* field, uint32_t* wire) {
    if (done()) return false;
    const uint64_t key = varint();
    *field = uint32_t(key >> 3);
    *wire = uint32_t(key & 7);
    if (*field == 0 || key >> 32) bad("invalid field key " + std::to_string(key));
    return true;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (p_ == end_) bad("truncated varint");
      const uint8_t b = *p_++;
      if (shift == 63 && b > 1) bad("varint longer than 64 bits");
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > uint64_t(end_ - p_))
      bad("length " + std::to_string(n) + " runs past the end (" + std::to_string(end_ - p_) +
          " bytes left)");
    std::string_view s(reinterpret_cast<const char*>(p_), size_t(n));
    p_ += n;
    return s;
  }
  float fixed32_float() {
    if (end_ - p_ < 4) bad("truncated fixed32");
    float f;
    std::memcpy(&f, p_, 4);
    p_ += 4;
    return f;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case kVarint:
        varint();
        break;
      case kFixed64:
        if (end_ - p_ < 8) bad("truncated fixed64");
        p_ += 8;
        break;
      case kLen:
        bytes();
        break;
      case kFixed32:
        if (end_ - p_ < 4) bad("truncated fixed32");
        p_ += 4;
        break;
      default:
        bad("unsupported wire type " + std::to_string(wire));
    }
  }
  void expect(uint32_t field, uint32_t wire, uint32_t want) {
    if (wire != want)
      bad("field " + std::to_string(field) + " has wire type " + std::to_string(wire) +
          ", expected " + std::to_string(want));
  }
  [[noreturn]] void bad(const std::string& what) const {
    fail(name_, std::string("invalid SentencePiece model (") + msg_ + " at byte " +
                    std::to_string(p_ - base_) + "): " + what);
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* base_;  // start of this (sub)message, for offsets in messages
  const std::string& name_;
  const char* msg_;
};

class PbWriter {
 public:
  std::string out;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out += char(uint8_t(v) | 0x80);
      v >>= 7;
    }
    out += char(v);
  }
  void key(uint32_t field, uint32_t wire) { varint((uint64_t(field) << 3) | wire); }
  void int32_field(uint32_t field, int32_t v) {
    key(field, kVarint);
    varint(uint64_t(int64_t(v)));  // negatives sign-extend to 10 bytes, as protobuf does
  }
  void bool_field(uint32_t field, bool v) {
    key(field, kVarint);
    varint(v ? 1 : 0);
  }
  void bytes_field(uint32_t field, std::string_view s) {
    key(field, kLen);
    varint(s.size());
    out.append(s);
  }
  void float_field(uint32_t field, float f) {
    key(field, kFixed32);
    char b[4];
    std::memcpy(b, &f, 4);
    out.append(b, 4);
  }
};

}  // namespace

Vocab parse_vocab_sentencepiece(const uint8_t* data, size_t n, const std::string& name) {
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = name;
  int32_t model_type = 1;  // UNIGRAM is the proto default
  bool have_trainer = false;
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.pad_id = -1;
  v.byte_fallback = false;
  v.add_space_prefix = true;

  PbReader top(data, n, name, "ModelProto");
  uint32_t field, wire;
  while (top.next(&field, &wire)) {
    if (field == 1) {
      top.expect(field, wire, kLen);
      const std::string_view msg = top.bytes();
      if (v.tokens.size() >= tok::kMaxVocab)
        top.bad("more than " + std::to_string(tok::kMaxVocab) + " pieces");
      PbReader pr(reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), name, "SentencePiece");
      std::string piece;
      float score = 0.0f;
      int64_t type = 1;
      uint32_t f, w;
      while (pr.next(&f, &w)) {
        if (f == 1) {
          pr.expect(f, w, kLen);
          piece = std::string(pr.bytes());
        } else if (f == 2) {
          pr.expect(f, w, kFixed32);
          score = pr.fixed32_float();
        } else if (f == 3) {
          pr.expect(f, w, kVarint);
          type = int64_t(pr.varint());
        } else {
          pr.skip(w);
        }
      }
      if (type < 1 || type > 6)
        fail(name, "piece " + std::to_string(v.tokens.size()) + " has invalid type " +
                       std::to_string(type) + " (expected 1..6)");
      v.tokens.push_back(std::move(piece));
      v.scores.push_back(score);
      v.types.push_back(TokenType(int32_t(type)));
    } else if (field == 2) {
      top.expect(field, wire, kLen);
      have_trainer = true;
      const std::string_view msg = top.bytes();
      PbReader tr(reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), name, "TrainerSpec");
      uint32_t f, w;
      while (tr.next(&f, &w)) {
        auto i32 = [&]() {
          tr.expect(f, w, kVarint);
          return int32_t(uint32_t(tr.varint()));  // int32 semantics: low 32 bits
        };
        switch (f) {
          case 3:
            model_type = i32();
            break;
          case 35:
            v.byte_fallback = i32() != 0;
            break;
          case 40:
            v.unk_id = i32();
            break;
          case 41:
            v.bos_id = i32();
            break;
          case 42:
            v.eos_id = i32();
            break;
          case 43:
            v.pad_id = i32();
            break;
          default:
            tr.skip(w);
        }
      }
    } else if (field == 3) {
      top.expect(field, wire, kLen);
      const std::string_view msg = top.bytes();
      PbReader nr(reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), name, "NormalizerSpec");
      uint32_t f, w;
      while (nr.next(&f, &w)) {
        if (f == 3) {
          nr.expect(f, w, kVarint);
          v.add_space_prefix = nr.varint() != 0;
        } else {
          nr.skip(w);
        }
      }
    } else {
      top.skip(wire);
    }
  }

  if (v.tokens.empty()) fail(name, "no pieces: not a SentencePiece model file?");
  if (!have_trainer) fail(name, "no trainer_spec: not a SentencePiece model file?");
  if (model_type != 2 && model_type != 4) {
    const char* kind = model_type == 1 ? "unigram" : model_type == 3 ? "word" : "unknown";
    fail(name, std::string("SentencePiece model type ") + std::to_string(model_type) + " (" + kind +
                   ") is not supported: only BPE and char models (Llama-style) are");
  }
  // SentencePiece stores -1 for an absent special; anything else must be a piece index.
  const int64_t nt = int64_t(v.tokens.size());
  auto check = [&](int32_t id, const char* what) {
    if (id < -1 || id >= nt)
      fail(name, std::string(what) + " " + std::to_string(id) + " is outside the " +
                     std::to_string(nt) + " pieces");
  };
  check(v.unk_id, "unk_id");
  check(v.bos_id, "bos_id");
  check(v.eos_id, "eos_id");
  check(v.pad_id, "pad_id");
  v.add_bos = v.bos_id >= 0;
  tok::validate_vocab(v);
  return v;
}

Vocab load_vocab_sentencepiece(const std::string& path) {
  MappedFile f(path);
  return parse_vocab_sentencepiece(f.data(), f.size(), path);
}

std::string serialize_sentencepiece_model(const Vocab& v) {
  tok::validate_vocab(v);
  if (v.kind != VocabKind::SPM)
    fail(v.source,
         "a byte-level BPE vocabulary cannot be written as a SentencePiece model; "
         "export it as tokenizer.json");
  PbWriter w;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    PbWriter p;
    p.bytes_field(1, v.tokens[i]);
    p.float_field(2, v.scores[i]);
    if (v.types[i] != TokenType::Normal) p.int32_field(3, int32_t(v.types[i]));
    w.bytes_field(1, p.out);
  }
  PbWriter t;
  t.int32_field(3, 2);  // BPE
  t.int32_field(4, int32_t(v.tokens.size()));
  t.bool_field(35, v.byte_fallback);
  t.int32_field(40, v.unk_id);
  t.int32_field(41, v.bos_id);
  t.int32_field(42, v.eos_id);
  t.int32_field(43, v.pad_id);
  w.bytes_field(2, t.out);
  PbWriter nz;
  nz.bytes_field(1, "identity");  // llama.cpp applies no normalization either
  nz.bool_field(3, v.add_space_prefix);
  // Keep runs of spaces as llama.cpp does (SentencePiece's default would collapse them).
  nz.bool_field(4, false);
  w.bytes_field(3, nz.out);
  return w.out;
}

}  // namespace lmpress
