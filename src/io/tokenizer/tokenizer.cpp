// Tokenizer front end: splits the text at user-defined tokens (llama.cpp and HF match those
// literally before anything else; control tokens are never parsed from text), runs the SPM or
// BPE encoder on the plain fragments, and turns ids back into text.
#include <algorithm>

#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress {

struct Tokenizer::Impl {
  std::unique_ptr<tok::SpmEncoder> spm;
  std::unique_ptr<tok::BpeEncoder> bpe;
  // User-defined tokens, longest first (ties: lower id), matched literally in the text.
  std::vector<std::pair<std::string, int32_t>> literal;
};

Tokenizer::Tokenizer(Vocab v) : v_(std::move(v)), impl_(new Impl) {
  tok::validate_vocab(v_);
  if (v_.kind == VocabKind::SPM)
    impl_->spm = std::make_unique<tok::SpmEncoder>(v_);
  else
    impl_->bpe = std::make_unique<tok::BpeEncoder>(v_);
  for (size_t i = 0; i < v_.tokens.size(); ++i)
    if (v_.types[i] == TokenType::UserDefined && !v_.tokens[i].empty())
      impl_->literal.emplace_back(v_.tokens[i], int32_t(i));
  std::stable_sort(impl_->literal.begin(), impl_->literal.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && v_.bos_id >= 0) out.push_back(v_.bos_id);

  // Fragments: plain text (id < 0) or a literal token (id >= 0).
  struct Frag {
    size_t off, len;
    int32_t id;
  };
  std::vector<Frag> frags;
  if (!text.empty()) frags.push_back({0, text.size(), -1});
  for (const auto& [lit, id] : impl_->literal) {
    std::vector<Frag> next;
    next.reserve(frags.size());
    for (const Frag& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view s = text.substr(f.off, f.len);
      size_t p = 0;
      for (size_t hit; (hit = s.find(lit, p)) != std::string_view::npos; p = hit + lit.size()) {
        if (hit > p) next.push_back({f.off + p, hit - p, -1});
        next.push_back({f.off + hit, lit.size(), id});
      }
      if (p < s.size()) next.push_back({f.off + p, s.size() - p, -1});
    }
    frags.swap(next);
  }

  // llama.cpp SPM rule: a plain fragment gets the U+2581 prefix when it is the first one or
  // follows a literal token.
  bool prev_literal = true;
  for (const Frag& f : frags) {
    if (f.id >= 0) {
      out.push_back(f.id);
      prev_literal = true;
      continue;
    }
    const std::string_view s = text.substr(f.off, f.len);
    if (impl_->spm)
      impl_->spm->encode(s, v_.add_space_prefix && prev_literal, out);
    else
      impl_->bpe->encode(s, out);
    prev_literal = false;
  }
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab())
    fail(v_.source, "token id " + std::to_string(id) + " is outside the vocabulary (" +
                        std::to_string(n_vocab()) + " tokens)");
  const std::string& t = v_.tokens[size_t(id)];
  const TokenType type = v_.types[size_t(id)];
  if (type == TokenType::Control) return {};
  if (v_.kind == VocabKind::SPM) {
    uint8_t b;
    if (type == TokenType::Byte && tok::parse_byte_piece(t, &b)) return std::string(1, char(b));
    std::string r;
    r.reserve(t.size());
    for (size_t i = 0; i < t.size(); ++i) {
      if (t.compare(i, 3, "\xE2\x96\x81") == 0) {
        r += ' ';
        i += 2;
      } else {
        r += t[i];
      }
    }
    return r;
  }
  if (type == TokenType::UserDefined) return t;  // added tokens hold raw text
  std::string r;
  r.reserve(t.size());
  for (size_t p = 0; p < t.size();) {
    size_t len = tok::utf8_valid_len(t.data() + p, t.size() - p);
    if (len == 0) {  // not UTF-8: pass the byte through
      r += t[p++];
      continue;
    }
    const int b = tok::gpt2_cp_to_byte(tok::utf8_decode(t.data() + p, len));
    if (b >= 0)
      r += char(b);
    else
      r.append(t, p, len);
    p += len;
  }
  return r;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string r;
  // SPM: the U+2581 the encoder prepended comes back as one leading space; drop it.
  bool strip = v_.kind == VocabKind::SPM && v_.add_space_prefix;
  for (int32_t id : ids) {
    std::string p = token_to_piece(id);
    if (strip && !p.empty()) {
      if (p[0] == ' ') p.erase(0, 1);
      strip = false;
    }
    r += p;
  }
  return r;
}

}  // namespace lmpress
