// Hugging Face tokenizer.json (tokenizers library), model.type "BPE" only:
//  - ByteLevel pre-tokenizer (GPT-2, Llama 3 style)   -> VocabKind::BPE, merges kept by rank.
//  - SentencePiece converted to BPE (Llama/Mistral style: byte_fallback, Metaspace or a
//    Prepend/Replace U+2581 normalizer)                 -> VocabKind::SPM, scores derived from
//    merge ranks (a token's score = -rank of the first merge producing it; tokens no merge
//    produces rank below all merges), which reproduces the merge order for the SPM encoder.
// Writers produce the same two shapes.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "io/io_internal.h"
#include "io/tokenizer/tokenizer_internal.h"

namespace lmpress {

namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr int kMaxJsonDepth = 256;
const char* const kSpaceMark = "\xE2\x96\x81";  // U+2581

// nlohmann's parser and destructor are safe for deep nesting only up to a point; untrusted
// input is capped first (tokenizer.json nests about 6 levels).
void check_depth(std::string_view s, const std::string& name) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : s) {
    if (in_str) {
      if (esc)
        esc = false;
      else if (c == '\\')
        esc = true;
      else if (c == '"')
        in_str = false;
      continue;
    }
    if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        fail(name, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string str_member(const json& j, const char* key) {
  const json* m = member(j, key);
  return m && m->is_string() ? m->get<std::string>() : std::string();
}

// Calls fn on j and, for "Sequence" components, on each element (pretokenizers, normalizers,
// decoders), depth-first.
template <class Fn>
void for_each_component(const json* j, Fn&& fn, int depth = 0) {
  if (!j || !j->is_object() || depth > 8) return;
  fn(*j);
  for (const char* list : {"pretokenizers", "normalizers", "decoders", "processors"}) {
    const json* l = member(*j, list);
    if (l && l->is_array())
      for (const json& e : *l) for_each_component(&e, fn, depth + 1);
  }
}

std::string pattern_text(const json& comp) {
  const json* p = member(comp, "pattern");
  if (!p) return {};
  if (p->is_string()) return p->get<std::string>();
  std::string r = str_member(*p, "Regex");
  return r.empty() ? str_member(*p, "String") : r;
}

int32_t get_id(const json& j, const std::string& name, const char* what) {
  if (!j.is_number_integer()) fail(name, std::string(what) + " is not an integer id");
  const int64_t id = j.get<int64_t>();
  if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX))
    fail(name, std::string(what) + " is out of range");
  if (id < 0 || size_t(id) >= tok::kMaxVocab)
    fail(name, std::string(what) + " " + std::to_string(id) + " is outside 0.." +
                   std::to_string(tok::kMaxVocab - 1));
  return int32_t(id);
}

}  // namespace

Vocab parse_vocab_hf_json(std::string_view text, const std::string& name) {
  check_depth(text, name);
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(name, std::string("invalid JSON: ") + io_detail::json_error_text(e));
  }
  try {
    if (!root.is_object()) fail(name, "not a tokenizer.json: top level is not an object");
    const json* model = member(root, "model");
    if (!model || !model->is_object()) fail(name, "not a tokenizer.json: no \"model\" object");
    const std::string mtype = str_member(*model, "type");
    if (!mtype.empty() && mtype != "BPE")
      fail(name, "tokenizer model type \"" + mtype + "\" is not supported (only BPE)");
    const json* vocab = member(*model, "vocab");
    if (!vocab || !vocab->is_object())
      fail(name, "model.vocab is missing or not an object of token -> id");

    Vocab v;
    v.source = name;
    // Ids must be dense enough that a forged large id cannot make us allocate a huge table.
    size_t max_id = 0, n_entries = vocab->size();
    for (auto it = vocab->begin(); it != vocab->end(); ++it)
      max_id = std::max(max_id, size_t(get_id(it.value(), name, "model.vocab id")));
    const json* at = member(root, "added_tokens");
    if (at && !at->is_array()) fail(name, "added_tokens is not an array");
    if (at) {
      n_entries += at->size();
      for (const json& a : *at)
        if (const json* id = member(a, "id"))
          max_id = std::max(max_id, size_t(get_id(*id, name, "added_tokens id")));
    }
    if (max_id >= 2 * n_entries + 1024)
      fail(name, "token ids are sparse: largest id " + std::to_string(max_id) + " for " +
                     std::to_string(n_entries) + " tokens");
    std::vector<std::string> tokens(max_id + 1);
    std::vector<bool> present(max_id + 1, false);
    auto put = [&](int32_t id, const std::string& text, bool override_text) {
      if (present[id] && tokens[id] != text) {
        if (!override_text)
          fail(name, "id " + std::to_string(id) + " is given to both \"" +
                         tokens[id].substr(0, 64) + "\" and \"" + text.substr(0, 64) + "\"");
      }
      tokens[id] = text;
      present[id] = true;
    };
    for (auto it = vocab->begin(); it != vocab->end(); ++it)
      put(get_id(it.value(), name, "model.vocab id"), it.key(), false);

    // Added tokens: special -> Control, otherwise UserDefined (matched literally in text).
    std::vector<std::pair<int32_t, bool>> added;  // id, special
    if (at) {
      for (const json& a : *at) {
        if (!a.is_object() || !member(a, "id") || !member(a, "content") ||
            !a["content"].is_string())
          fail(name, "added_tokens entry without id/content");
        const int32_t id = get_id(a["id"], name, "added_tokens id");
        put(id, a["content"].get<std::string>(), true);
        const json* sp = member(a, "special");
        added.emplace_back(id, sp && sp->is_boolean() && sp->get<bool>());
      }
    }
    if (n_entries == 0) fail(name, "model.vocab is empty");
    const size_t n = tokens.size();

    // Merges: "left right" strings or [left, right] pairs.
    std::vector<std::pair<std::string, std::string>> merges;
    if (const json* m = member(*model, "merges")) {
      if (!m->is_array()) fail(name, "model.merges is not an array");
      merges.reserve(m->size());
      for (const json& e : *m) {
        if (e.is_string()) {
          const std::string s = e.get<std::string>();
          const size_t sp = s.size() > 1 ? s.find(' ', 1) : std::string::npos;
          if (sp == std::string::npos)
            fail(name, "merge \"" + s.substr(0, 64) + "\" is not of the form \"left right\"");
          merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string() &&
                   !e[0].get_ref<const std::string&>().empty() &&
                   !e[1].get_ref<const std::string&>().empty()) {
          merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
        } else {
          fail(name, "model.merges entry is neither \"left right\" nor [left, right]");
        }
      }
    }

    // Which tokenizer shape is this?
    bool byte_level = false, metaspace = false, prepend = false, replace_space = false;
    bool metaspace_prefix = false;
    std::string split_regex;
    auto scan = [&](const json& c) {
      const std::string t = str_member(c, "type");
      if (t == "ByteLevel") byte_level = true;
      if (t == "Split") split_regex = pattern_text(c);
      if (t == "Metaspace") {
        metaspace = true;
        const std::string scheme = str_member(c, "prepend_scheme");
        const json* aps = member(c, "add_prefix_space");
        metaspace_prefix =
            scheme.empty() ? (!aps || (aps->is_boolean() && aps->get<bool>())) : scheme != "never";
      }
      if (t == "Prepend" && str_member(c, "prepend") == kSpaceMark) prepend = true;
      if (t == "Replace" && pattern_text(c) == " " && str_member(c, "content") == kSpaceMark)
        replace_space = true;
    };
    for_each_component(member(root, "pre_tokenizer"), scan);
    for_each_component(member(root, "normalizer"), scan);
    const bool pre_byte_level = byte_level;
    for_each_component(member(root, "decoder"), scan);
    const json* bf = member(*model, "byte_fallback");
    const bool byte_fallback = bf && bf->is_boolean() && bf->get<bool>();

    if (pre_byte_level || (byte_level && !metaspace && !replace_space && !byte_fallback)) {
      v.kind = VocabKind::BPE;
      if (split_regex.empty()) {
        v.pre = "gpt-2";
      } else if (split_regex.find("\\p{N}{1,3}") != std::string::npos &&
                 split_regex.find("(?i:'s|'t|'re|'ve|'m|'ll|'d)") != std::string::npos) {
        v.pre = "llama3";
      } else {
        fail(name, "pre-tokenizer regex \"" + split_regex.substr(0, 80) +
                       "\" is not supported (known: GPT-2 ByteLevel, Llama 3)");
      }
    } else if (metaspace || replace_space || prepend || byte_fallback) {
      v.kind = VocabKind::SPM;
    } else {
      fail(name,
           "unsupported tokenizer.json: neither a ByteLevel BPE nor a SentencePiece-style "
           "(Metaspace / byte_fallback) BPE");
    }

    v.tokens.resize(n);
    v.types.assign(n, TokenType::Normal);
    for (size_t i = 0; i < n; ++i) {
      if (present[i]) {
        v.tokens[i] = std::move(tokens[i]);
      } else {
        v.tokens[i] = "<lmpress_unused_" + std::to_string(i) + ">";  // hole in the id space
        v.types[i] = TokenType::Unused;
      }
    }
    for (auto [id, special] : added)
      v.types[id] = special ? TokenType::Control : TokenType::UserDefined;

    tok::PieceMap map = tok::build_piece_map(v);
    auto find = [&](const std::string& t) -> int32_t {
      auto it = map.find(t);
      return it == map.end() ? -1 : it->second;
    };
    const std::string unk = str_member(*model, "unk_token");
    if (!unk.empty()) {
      v.unk_id = find(unk);
      if (v.unk_id < 0)
        fail(name, "model.unk_token \"" + unk.substr(0, 64) + "\" is not in the vocabulary");
      v.types[v.unk_id] = TokenType::Unknown;
    }

    // BOS from a TemplateProcessing post-processor ("single": [SpecialToken, $A]).
    bool have_template = false;
    v.add_bos = false;
    for_each_component(member(root, "post_processor"), [&](const json& c) {
      if (str_member(c, "type") != "TemplateProcessing") return;
      have_template = true;
      const json* single = member(c, "single");
      if (!single || !single->is_array() || single->empty()) return;
      const json* st = member((*single)[0], "SpecialToken");
      if (!st) return;
      const int32_t id = find(str_member(*st, "id"));
      if (id >= 0) {
        v.bos_id = id;
        v.add_bos = true;
      }
    });
    // Otherwise the conventional names (eos also only has a name in tokenizer.json).
    auto first_of = [&](std::initializer_list<const char*> names) {
      for (const char* s : names)
        if (int32_t id = find(s); id >= 0) return id;
      return int32_t(-1);
    };
    if (v.bos_id < 0) v.bos_id = first_of({"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"});
    v.eos_id = first_of({"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
    v.pad_id = first_of({"<pad>", "<|padding|>", "[PAD]"});

    if (v.kind == VocabKind::BPE) {
      v.merges.reserve(merges.size());
      for (auto& [l, r] : merges) {
        if (l.find(' ', 1) != std::string::npos)
          fail(name, "merge left part \"" + l.substr(0, 64) +
                         "\" contains a space, which byte-level BPE cannot hold");
        v.merges.push_back(l + " " + r);
      }
      v.add_space_prefix = false;
      v.byte_fallback = false;
    } else {
      // Scores from merge ranks; byte pieces typed as such.
      const float base = -float(merges.size());
      v.scores.assign(n, 0.0f);
      std::vector<bool> scored(n, false);
      for (size_t r = 0; r < merges.size(); ++r) {
        const int32_t id = find(merges[r].first + merges[r].second);
        if (id >= 0 && !scored[id]) {
          v.scores[id] = -float(r);
          scored[id] = true;
        }
      }
      for (size_t i = 0; i < n; ++i) {
        if (!scored[i]) v.scores[i] = base - float(i);
        uint8_t b;
        if (v.types[i] == TokenType::Normal && tok::parse_byte_piece(v.tokens[i], &b))
          v.types[i] = TokenType::Byte;
      }
      v.byte_fallback = byte_fallback;
      v.add_space_prefix = metaspace ? metaspace_prefix : prepend;
      if (!have_template) v.add_bos = v.bos_id >= 0;
      v.pre = "default";
    }
    tok::validate_vocab(v);
    return v;
  } catch (const json::exception& e) {
    fail(name, std::string("unexpected tokenizer.json content: ") + io_detail::json_error_text(e));
  }
}

Vocab load_vocab_hf_json(const std::string& path) {
  const std::string text = read_text_file(path);
  return parse_vocab_hf_json(text, path);
}

// ---- writer ---------------------------------------------------------------------------------

namespace {

ojson template_processing(const Vocab& v) {
  const std::string& bos = v.tokens[size_t(v.bos_id)];
  ojson special = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  ojson seq_a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
  ojson seq_b = {{"Sequence", {{"id", "B"}, {"type_id", 1}}}};
  ojson special1 = {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}};
  ojson tokens = ojson::object();
  tokens[bos] = {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}};
  return {{"type", "TemplateProcessing"},
          {"single", ojson::array({special, seq_a})},
          {"pair", ojson::array({special, seq_a, special1, seq_b})},
          {"special_tokens", tokens}};
}

// SentencePiece-style merges: every split of a normal piece into two pieces, ordered by the
// piece's score (then id), as the tokenizers library's SentencePiece converter does.
std::vector<std::pair<std::string, std::string>> merges_from_scores(const Vocab& v) {
  const tok::PieceMap map = tok::build_piece_map(v);
  struct M {
    float score;
    int32_t id;
    uint32_t split;
  };
  std::vector<M> ms;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.types[i] != TokenType::Normal) continue;
    const std::string& t = v.tokens[i];
    for (size_t k = 0; k < t.size();) {
      size_t len = tok::utf8_valid_len(t.data() + k, t.size() - k);
      k += len ? len : 1;
      if (k >= t.size()) break;
      if (map.count(std::string_view(t).substr(0, k)) && map.count(std::string_view(t).substr(k)))
        ms.push_back({v.scores[i], int32_t(i), uint32_t(k)});
    }
  }
  std::stable_sort(ms.begin(), ms.end(), [](const M& a, const M& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.id < b.id;
  });
  std::vector<std::pair<std::string, std::string>> r;
  r.reserve(ms.size());
  for (const M& m : ms) {
    const std::string& t = v.tokens[size_t(m.id)];
    r.emplace_back(t.substr(0, m.split), t.substr(m.split));
  }
  return r;
}

}  // namespace

std::string hf_tokenizer_json(const Vocab& v) {
  tok::validate_vocab(v);
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const std::string& t = v.tokens[i];
    for (size_t p = 0; p < t.size();) {
      const size_t len = tok::utf8_valid_len(t.data() + p, t.size() - p);
      if (len == 0)
        fail(v.source, "token " + std::to_string(i) +
                           " is not valid UTF-8 and cannot be written to tokenizer.json");
      p += len;
    }
  }
  const bool spm = v.kind == VocabKind::SPM;
  const bool llama3 = !spm && tok::is_llama3_pre(v.pre);

  ojson added = ojson::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const TokenType t = v.types[i];
    if (t != TokenType::Control && t != TokenType::UserDefined && t != TokenType::Unknown) continue;
    added.push_back({{"id", int32_t(i)},
                     {"content", v.tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", t == TokenType::UserDefined},
                     {"special", t != TokenType::UserDefined}});
  }

  // In id order. ordered_json's own insert searches linearly (quadratic for 10^5 keys), so
  // append to its underlying vector, keeping keys unique ourselves (first id wins).
  ojson vocab = ojson::object();
  {
    auto& obj = vocab.get_ref<ojson::object_t&>();
    using Base = std::vector<ojson::object_t::value_type, ojson::object_t::allocator_type>;
    Base& items = obj;
    items.reserve(v.tokens.size());
    std::unordered_set<std::string_view> seen;
    seen.reserve(v.tokens.size() * 2);
    for (size_t i = 0; i < v.tokens.size(); ++i)
      if (seen.insert(v.tokens[i]).second) items.emplace_back(v.tokens[i], int32_t(i));
  }

  ojson merges = ojson::array();
  auto add_merge = [&](const std::string& l, const std::string& r) {
    if (l.find(' ') != std::string::npos || r.find(' ') != std::string::npos)
      merges.push_back(ojson::array({l, r}));  // the pair form allows spaces
    else
      merges.push_back(l + " " + r);
  };
  if (spm) {
    for (const auto& [l, r] : merges_from_scores(v)) add_merge(l, r);
  } else {
    for (const std::string& m : v.merges) {
      const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      if (sp == std::string::npos)
        fail(v.source, "merge \"" + m.substr(0, 64) + "\" is not of the form \"left right\"");
      add_merge(m.substr(0, sp), m.substr(sp + 1));
    }
  }

  ojson model = {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", v.unk_id >= 0 ? ojson(v.tokens[size_t(v.unk_id)]) : ojson(nullptr)},
                 {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr},
                 {"fuse_unk", spm},
                 {"byte_fallback", spm && v.byte_fallback},
                 {"ignore_merges", llama3},
                 {"vocab", std::move(vocab)},
                 {"merges", std::move(merges)}};

  ojson root = {{"version", "1.0"},
                {"truncation", nullptr},
                {"padding", nullptr},
                {"added_tokens", std::move(added)}};
  const ojson byte_level = {{"type", "ByteLevel"},
                            {"add_prefix_space", false},
                            {"trim_offsets", true},
                            {"use_regex", true}};
  if (spm) {
    ojson norms = ojson::array();
    if (v.add_space_prefix) norms.push_back({{"type", "Prepend"}, {"prepend", kSpaceMark}});
    norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpaceMark}});
    root["normalizer"] = {{"type", "Sequence"}, {"normalizers", std::move(norms)}};
    root["pre_tokenizer"] = nullptr;
  } else {
    root["normalizer"] = nullptr;
    if (llama3) {
      ojson split = {{"type", "Split"},
                     {"pattern", {{"Regex", tok::kLlama3Regex}}},
                     {"behavior", "Isolated"},
                     {"invert", false}};
      ojson bl = byte_level;
      bl["use_regex"] = false;
      root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", ojson::array({split, bl})}};
    } else {
      root["pre_tokenizer"] = byte_level;
    }
  }
  if (v.add_bos && v.bos_id >= 0) {
    root["post_processor"] = template_processing(v);
  } else if (spm) {
    // An explicit template without BOS (a missing post-processor would mean "add BOS").
    ojson seq_a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
    ojson seq_b = {{"Sequence", {{"id", "B"}, {"type_id", 1}}}};
    root["post_processor"] = {{"type", "TemplateProcessing"},
                              {"single", ojson::array({seq_a})},
                              {"pair", ojson::array({seq_a, seq_b})},
                              {"special_tokens", ojson::object()}};
  } else {
    root["post_processor"] = byte_level;
  }
  if (spm) {
    ojson decs = ojson::array();
    decs.push_back({{"type", "Replace"}, {"pattern", {{"String", kSpaceMark}}}, {"content", " "}});
    if (v.byte_fallback) decs.push_back({{"type", "ByteFallback"}});
    decs.push_back({{"type", "Fuse"}});
    decs.push_back(
        {{"type", "Strip"}, {"content", " "}, {"start", v.add_space_prefix ? 1 : 0}, {"stop", 0}});
    root["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(decs)}};
  } else {
    root["decoder"] = byte_level;
  }
  root["model"] = std::move(model);
  return root.dump(2) + "\n";
}

}  // namespace lmpress
