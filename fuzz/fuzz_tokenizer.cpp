// Fuzz target: the three tokenizer file parsers (llama2.c tok*.bin, SentencePiece .model,
// tokenizer.json) and the two encoders on arbitrary text. The first byte picks the mode, the
// rest is the input. Any input may be rejected with lmpress::Error; nothing else may escape or
// crash, and these invariants must hold (__builtin_trap otherwise):
//  - a vocabulary that parses builds a Tokenizer or is rejected with Error, and encodes a few
//    texts into in-range ids;
//  - a parsed SentencePiece vocabulary survives serialize_sentencepiece_model -> parse;
//  - with full byte coverage, decode(encode(text)) == text (SPM: unless the text holds U+2581,
//    which SentencePiece pieces use for the space).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "lmpress/core.h"
#include "lmpress/tokenizer.h"

using namespace lmpress;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_ids(const Tokenizer& tk, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) check(id >= 0 && id < tk.n_vocab());
}

// Encodes a few texts with a parsed vocabulary; Error (unrepresentable text) is fine.
void exercise(const Vocab& v, std::string_view extra) {
  try {
    Tokenizer tk(v);
    for (std::string_view text :
         {std::string_view("Hello world, it's 2024!"), std::string_view(" a  b\n"), extra}) {
      try {
        const auto ids = tk.encode(text, true);
        check_ids(tk, ids);
        (void)tk.decode(ids);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  try {
    (void)hf_tokenizer_json(v);
  } catch (const Error&) {
  }
  if (v.kind == VocabKind::SPM) {
    const std::string bytes = serialize_sentencepiece_model(v);
    const Vocab back = parse_vocab_sentencepiece(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                 bytes.size(), "roundtrip");
    check(back.tokens == v.tokens);
    check(back.types == v.types);
    check(back.scores.size() == v.scores.size() &&
          std::memcmp(back.scores.data(), v.scores.data(), v.scores.size() * 4) == 0);
    check(back.bos_id == v.bos_id && back.eos_id == v.eos_id && back.unk_id == v.unk_id &&
          back.pad_id == v.pad_id);
    check(back.byte_fallback == v.byte_fallback && back.add_space_prefix == v.add_space_prefix);
  }
}

// Small fixed vocabularies: SPM with all 256 byte pieces, and byte-level BPE over all bytes.
Vocab spm_vocab() {
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = "fuzz-spm";
  auto add = [&](std::string t, float s, TokenType ty) {
    v.tokens.push_back(std::move(t));
    v.scores.push_back(s);
    v.types.push_back(ty);
  };
  add("<unk>", 0, TokenType::Unknown);
  add("<s>", 0, TokenType::Control);
  add("</s>", 0, TokenType::Control);
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b)
    add(std::string{'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'}, 0, TokenType::Byte);
  float s = -1;
  for (const char* t :
       {"\xE2\x96\x81", "e", "t", "a", "o", "\xE2\x96\x81t", "he", "\xE2\x96\x81the",
        "\xE2\x96\x81"
        "a",
        "in", "\xE2\x96\x81\xE2\x96\x81", "\xC3\xA9", "<", "s", ">", "<s"})
    add(t, s--, TokenType::Normal);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  return v;
}

Vocab bpe_vocab(bool llama3) {
  Vocab v;
  v.kind = VocabKind::BPE;
  v.source = "fuzz-bpe";
  v.add_bos = false;
  v.add_space_prefix = false;
  v.byte_fallback = false;
  // The GPT-2 byte alphabet (printable bytes map to themselves, others to U+0100 + n).
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = keep ? b : next++;
    std::string t;
    if (cp < 0x80) {
      t += char(cp);
    } else {
      t += char(0xC0 | (cp >> 6));
      t += char(0x80 | (cp & 0x3F));
    }
    v.tokens.push_back(t);
  }
  for (const char* m : {"\xC4\xA0 t", "h e", "\xC4\xA0t he", "i n", "1 2", "12 3"}) {
    v.merges.push_back(m);
    std::string t = m;
    t.erase(t.find(' ', 1), 1);
    v.tokens.push_back(t);
  }
  v.tokens.push_back("<|endoftext|>");
  v.types.assign(v.tokens.size(), TokenType::Normal);
  v.types.back() = TokenType::Control;
  v.bos_id = v.eos_id = int32_t(v.tokens.size() - 1);
  v.pre = llama3 ? "llama3" : "gpt-2";
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    switch (mode % 5) {
      case 0: {  // tok*.bin, vocabulary size from the first two bytes (0 = to end of file)
        if (size < 2) return 0;
        const int32_t n = int32_t(data[0] | (data[1] << 8)) % 4096;
        exercise(parse_vocab_llama2c(data + 2, size - 2, n, "fuzz.bin"), text);
        break;
      }
      case 1:
        exercise(parse_vocab_sentencepiece(data, size, "fuzz.model"), text);
        break;
      case 2:
        exercise(parse_vocab_hf_json(text, "fuzz.json"), text.substr(0, 64));
        break;
      case 3: {  // SPM encoder with byte fallback
        static const Tokenizer tk(spm_vocab());
        const auto ids = tk.encode(text, (mode & 8) != 0);
        check_ids(tk, ids);
        if (text.find("\xE2\x96\x81") == std::string_view::npos) check(tk.decode(ids) == text);
        break;
      }
      case 4: {  // byte-level BPE (GPT-2 or Llama 3 pre-tokenizer)
        static const Tokenizer gpt2(bpe_vocab(false)), llama3(bpe_vocab(true));
        const Tokenizer& tk = (mode & 8) ? llama3 : gpt2;
        const auto ids = tk.encode(text, false);
        check_ids(tk, ids);
        check(tk.decode(ids) == text);
        break;
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
