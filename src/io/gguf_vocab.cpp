// Vocabulary from GGUF metadata (tokenizer.ggml.*), as llama.cpp writes and reads it:
//   model "llama" (SentencePiece-style, scores) or "gpt2" (byte-level BPE, merges);
//   tokens, scores, token_type arrays of equal length; special ids; add_bos_token,
//   add_space_prefix; pre (BPE pre-tokenizer name).
#include <cmath>

#include "io/tokenizer/tokenizer_internal.h"
#include "lmpress/io.h"

namespace lmpress {

namespace {

bool is_int_type(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::BOOL:
      return true;
    default:
      return false;
  }
}
bool is_unsigned(GgufType t) {
  return t == GgufType::U8 || t == GgufType::U16 || t == GgufType::U32 || t == GgufType::U64;
}

// Special token id: absent, negative or >= n (llama.cpp writes 0xFFFFFFFF for "none") -> -1.
// A special token id: -1 when absent (or negative: "none"); an id beyond the vocabulary is an
// error when `strict` (bos, eos, unk: used by the tokenizer), otherwise ignored (padding).
int32_t special_id(const GgufFile& g, const char* key, size_t n, const std::string& name, bool strict = true) {
  const GgufValue* v = g.find(key);
  if (!v) return -1;
  if (!is_int_type(v->type) || v->type == GgufType::BOOL)
    fail(name, std::string(key) + " is not an integer");
  if (!is_unsigned(v->type) && v->i < 0) return -1;
  const uint64_t id = is_unsigned(v->type) ? v->u : uint64_t(v->i);
  if (id < n) return int32_t(id);
  if (strict)
    fail(name, std::string(key) + " = " + std::to_string(id) + " is outside the vocabulary of " +
                   std::to_string(n) + " tokens");
  log_debug("%s: ignoring %s = %llu (outside the vocabulary of %zu tokens)", name.c_str(), key,
            (unsigned long long)id, n);
  return -1;
}

bool get_bool(const GgufFile& g, const char* key, bool def, const std::string& name) {
  const GgufValue* v = g.find(key);
  if (!v) return def;
  if (v->type == GgufType::BOOL) return v->b;
  if (is_int_type(v->type)) return is_unsigned(v->type) ? v->u != 0 : v->i != 0;
  fail(name, std::string(key) + " is not a boolean");
}

const GgufValue* get_array(const GgufFile& g, const char* key, GgufType elem, size_t n,
                           const std::string& name, bool required) {
  const GgufValue* v = g.find(key);
  if (!v) {
    if (required) fail(name, std::string("missing ") + key);
    return nullptr;
  }
  if (v->type != GgufType::ARRAY) fail(name, std::string(key) + " is not an array");
  const bool ok = elem == GgufType::STRING ? v->elem_type == GgufType::STRING
                  : elem == GgufType::F32
                      ? (v->elem_type == GgufType::F32 || v->elem_type == GgufType::F64)
                      : is_int_type(v->elem_type);
  if (!ok)
    fail(name, std::string(key) + " has element type " + std::to_string(int(v->elem_type)) +
                   ", expected " + std::to_string(int(elem)));
  const size_t have = elem == GgufType::STRING ? v->as.size()
                      : elem == GgufType::F32  ? v->af.size()
                                               : v->ai.size();
  if (n != size_t(-1) && have != n)
    fail(name, std::string(key) + " has " + std::to_string(have) + " entries, expected " +
                   std::to_string(n) + " (one per token)");
  return v;
}

}  // namespace

Vocab vocab_from_gguf(const GgufFile& g, const std::string& name) {
  const GgufValue* model = g.find("tokenizer.ggml.model");
  if (!model) fail(name, "no tokenizer in the GGUF metadata (tokenizer.ggml.model missing)");
  if (model->type != GgufType::STRING) fail(name, "tokenizer.ggml.model is not a string");
  Vocab v;
  v.source = name;
  if (model->s == "llama") {
    v.kind = VocabKind::SPM;
  } else if (model->s == "gpt2") {
    v.kind = VocabKind::BPE;
  } else {
    fail(name, "tokenizer.ggml.model \"" + model->s.substr(0, 64) +
                   "\" is not supported (only \"llama\" and \"gpt2\")");
  }

  const GgufValue* toks =
      get_array(g, "tokenizer.ggml.tokens", GgufType::STRING, size_t(-1), name, true);
  const size_t n = toks->as.size();
  if (n == 0) fail(name, "tokenizer.ggml.tokens is empty");
  if (n > tok::kMaxVocab) fail(name, "tokenizer.ggml.tokens has too many entries");
  v.tokens = toks->as;

  if (const GgufValue* sc = get_array(g, "tokenizer.ggml.scores", GgufType::F32, n, name, false)) {
    v.scores.resize(n);
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(sc->af[i]))
        fail(name, "tokenizer.ggml.scores[" + std::to_string(i) + "] is not finite");
      v.scores[i] = float(sc->af[i]);
    }
  } else if (v.kind == VocabKind::SPM) {
    v.scores.assign(n, 0.0f);  // llama.cpp's default; merges then go leftmost-first
  }

  v.types.assign(n, TokenType::Normal);
  if (const GgufValue* ty =
          get_array(g, "tokenizer.ggml.token_type", GgufType::I32, n, name, false)) {
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = ty->ai[i];
      if (t < 1 || t > 6)
        fail(name, "tokenizer.ggml.token_type[" + std::to_string(i) + "] = " + std::to_string(t) +
                       " (expected 1..6)");
      v.types[i] = TokenType(int32_t(t));
    }
  } else if (v.kind == VocabKind::SPM) {
    for (size_t i = 0; i < n; ++i) v.types[i] = tok::infer_spm_type(v.tokens[i]);
  }

  if (v.kind == VocabKind::BPE) {
    const GgufValue* mg =
        get_array(g, "tokenizer.ggml.merges", GgufType::STRING, size_t(-1), name, true);
    v.merges = mg->as;
  }

  v.bos_id = special_id(g, "tokenizer.ggml.bos_token_id", n, name);
  v.eos_id = special_id(g, "tokenizer.ggml.eos_token_id", n, name);
  v.unk_id = special_id(g, "tokenizer.ggml.unknown_token_id", n, name);
  v.pad_id = special_id(g, "tokenizer.ggml.padding_token_id", n, name, false);

  if (const GgufValue* pre = g.find("tokenizer.ggml.pre")) {
    if (pre->type != GgufType::STRING) fail(name, "tokenizer.ggml.pre is not a string");
    v.pre = pre->s;
  }
  const bool spm = v.kind == VocabKind::SPM;
  // llama.cpp defaults: SPM adds BOS and the space prefix; BPE neither, except Llama 3.
  v.add_bos = get_bool(g, "tokenizer.ggml.add_bos_token", spm || tok::is_llama3_pre(v.pre), name);
  v.add_space_prefix = get_bool(g, "tokenizer.ggml.add_space_prefix", spm, name);
  bool has_bytes = false;
  for (TokenType t : v.types) has_bytes |= t == TokenType::Byte;
  v.byte_fallback = spm && has_bytes;
  tok::validate_vocab(v);
  return v;
}

}  // namespace lmpress
