// Tokenizer tests: llama.cpp's vocabulary test vectors (SPM + GPT-2), the models' token fixtures
// (computed by llama.cpp), libsentencepiece as an independent reference, writer round trips and
// bad input.
#include <sentencepiece_processor.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "lmpress/io.h"
#include "lmpress/tokenizer.h"
#include "test_util.h"

using namespace lmpress;
using lmpress::test::shared;

namespace {

std::string read_all(const std::string& path) { return read_text_file(path); }

std::vector<int32_t> read_ids_json(const std::string& path) {
  return nlohmann::json::parse(read_all(path)).get<std::vector<int32_t>>();
}

// llama.cpp test-tokenizer-0 vectors: strings each followed by "\n__ggml_vocab_test__\n";
// expected ids one line per string.
struct VocabTest {
  std::string text;
  std::vector<int32_t> ids;
};
std::vector<VocabTest> read_vocab_tests(const std::string& base) {
  const std::string inp = read_all(base + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<VocabTest> tests;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t e = inp.find(sep, pos);
    if (e == std::string::npos) break;
    tests.push_back({inp.substr(pos, e - pos), {}});
    pos = e + sep.size();
  }
  std::istringstream out(read_all(base + ".out"));
  std::string line;
  for (auto& t : tests) {
    EXPECT_TRUE(bool(std::getline(out, line))) << base << ".out has too few lines";
    std::istringstream ls(line);
    for (int32_t id; ls >> id;) t.ids.push_back(id);
  }
  return tests;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) {
    s += ' ';  // (appends: GCC 12 warns falsely, -Wrestrict, on " " + std::string)
    s += std::to_string(ids[i]);
  }
  if (ids.size() > 40) s += " ...";
  return s;
}

// First index where a and b differ (or the shorter length), for readable failures.
size_t first_diff(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

#define EXPECT_IDS_EQ(got, want, what)                                                             \
  do {                                                                                             \
    const auto& g_ = (got);                                                                        \
    const auto& w_ = (want);                                                                       \
    if (g_ != w_) {                                                                                \
      const size_t d_ = first_diff(g_, w_);                                                        \
      ADD_FAILURE() << what << ": " << g_.size() << " ids vs " << w_.size()                        \
                    << " expected; first difference at " << d_ << "\n got: "                       \
                    << show(std::vector<int32_t>(g_.begin() + std::min(d_, g_.size()), g_.end()))  \
                    << "\nwant: "                                                                  \
                    << show(std::vector<int32_t>(w_.begin() + std::min(d_, w_.size()), w_.end())); \
    }                                                                                              \
  } while (0)

Vocab gguf_vocab(const std::string& rel) {
  const std::string path = shared(rel);
  GgufFile g = read_gguf(path);
  return vocab_from_gguf(g, path);
}

void expect_same_vocab(const Vocab& a, const Vocab& b, bool scores = true) {
  ASSERT_EQ(a.kind, b.kind);
  ASSERT_EQ(a.tokens.size(), b.tokens.size());
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    ASSERT_EQ(a.tokens[i], b.tokens[i]) << "token " << i;
    ASSERT_EQ(int(a.types[i]), int(b.types[i])) << "type of token " << i << " " << a.tokens[i];
    if (scores) {
      ASSERT_EQ(a.scores[i], b.scores[i]) << "score of token " << i;
    }
  }
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.unk_id, b.unk_id);
  EXPECT_EQ(a.add_bos, b.add_bos);
  EXPECT_EQ(a.add_space_prefix, b.add_space_prefix);
  EXPECT_EQ(a.byte_fallback, b.byte_fallback);
}

// GPT-2 encoder.json + vocab.bpe as a minimal tokenizer.json (exercises the HF parser).
std::string gpt2_files_as_tokenizer_json() {
  auto vocab = nlohmann::json::parse(read_all(shared("tokenizers/gpt2_vocab.json")));
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream ms(read_all(shared("tokenizers/gpt2_merges.txt")));
  std::string line;
  while (std::getline(ms, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(line);
  }
  nlohmann::json j = {
      {"added_tokens", {{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

struct ModelCase {
  const char* dir;
  const char* tok;  // tok*.model / tok*.bin stem
  int32_t n_vocab;
};
const ModelCase kModels[] = {
    {"tinystories-279k", "tok512", 512},
    {"babyllama-936k", "tok105", 105},
    {"wiki5m", "tok1024", 1024},
};

std::string model_path(const ModelCase& m, const char* ext) {
  return shared(std::string("models/") + m.dir + "/" + m.tok + ext);
}

// Lines of a text file (without the newline).
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> r;
  std::istringstream s(text);
  for (std::string l; std::getline(s, l);) r.push_back(l);
  return r;
}

// Trim and collapse runs of spaces: texts on which SentencePiece (remove_extra_whitespaces)
// and llama.cpp agree.
std::string squeeze_spaces(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == ' ' && (r.empty() || r.back() == ' ')) continue;
    r += c;
  }
  while (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

}  // namespace

// ---- llama.cpp vocabulary test vectors ---------------------------------------------------------

TEST(TokenizerGguf, LlamaSpmVectors) {
  LMP_REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  Tokenizer tk(gguf_vocab("tokenizers/ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(tk.vocab().kind, VocabKind::SPM);
  EXPECT_EQ(tk.n_vocab(), 32000);
  EXPECT_EQ(tk.bos(), 1);
  EXPECT_EQ(tk.eos(), 2);
  const auto tests = read_vocab_tests(shared("tokenizers/ggml-vocab-llama-spm.gguf"));
  ASSERT_EQ(tests.size(), 46u);
  for (const auto& t : tests) {
    EXPECT_IDS_EQ(tk.encode(t.text, false), t.ids, "text \"" << t.text << "\"");
    // Decoding gives the text back (every character is representable via byte fallback).
    EXPECT_EQ(tk.decode(tk.encode(t.text, false)), t.text);
  }
  const auto with_bos = tk.encode("Hello world", true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 1);
}

TEST(TokenizerGguf, Gpt2Vectors) {
  LMP_REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  Tokenizer tk(gguf_vocab("tokenizers/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(tk.vocab().kind, VocabKind::BPE);
  EXPECT_EQ(tk.n_vocab(), 50257);
  EXPECT_FALSE(tk.vocab().add_bos);
  const auto tests = read_vocab_tests(shared("tokenizers/ggml-vocab-gpt-2.gguf"));
  ASSERT_EQ(tests.size(), 46u);
  for (const auto& t : tests) {
    EXPECT_IDS_EQ(tk.encode(t.text, false), t.ids, "text \"" << t.text << "\"");
    EXPECT_EQ(tk.decode(tk.encode(t.text, false)), t.text);
  }
}

TEST(TokenizerHfJson, Gpt2FilesMatchGguf) {
  LMP_REQUIRE_SHARED("tokenizers/gpt2_vocab.json");
  LMP_REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  Vocab from_json = parse_vocab_hf_json(gpt2_files_as_tokenizer_json(), "gpt2-files");
  Vocab from_gguf = gguf_vocab("tokenizers/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(from_json.pre, "gpt-2");
  EXPECT_EQ(from_json.bos_id, 50256);
  EXPECT_EQ(from_json.eos_id, 50256);
  expect_same_vocab(from_json, from_gguf, /*scores=*/false);
  Tokenizer a(std::move(from_json)), b(std::move(from_gguf));
  for (const auto& t : read_vocab_tests(shared("tokenizers/ggml-vocab-gpt-2.gguf")))
    EXPECT_IDS_EQ(a.encode(t.text, false), t.ids, "text \"" << t.text << "\"");
  const std::string story = read_all(shared("data/tinystories/sample-small.txt"));
  EXPECT_EQ(a.encode(story, false), b.encode(story, false));
  EXPECT_EQ(a.decode(a.encode(story, false)), story);
}

// ---- model token fixtures (llama.cpp)
// ------------------------------------------------------------

TEST(TokenizerFixtures, BinMatchesModelAndGguf) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.dir);
    LMP_REQUIRE_SHARED(std::string("models/") + m.dir + "/" + m.tok + ".model");
    const Vocab spm = load_vocab_sentencepiece(model_path(m, ".model"));
    const Vocab bin = load_vocab_llama2c(model_path(m, ".bin"), m.n_vocab);
    EXPECT_EQ(spm.unk_id, 0);
    EXPECT_EQ(spm.bos_id, 1);
    EXPECT_EQ(spm.eos_id, 2);
    expect_same_vocab(bin, spm);
    const Vocab gg = gguf_vocab(std::string("models/") + m.dir + "/model-f32.gguf");
    expect_same_vocab(gg, spm);
  }
}

TEST(TokenizerFixtures, TokenFilesMatchLlamaCpp) {
  struct Case {
    const char* model_dir;
    const char* fixture;
    const char* text;     // shared-relative path, or nullptr when `literal` is used
    const char* literal;  // prompt text
  };
  const Case cases[] = {
      {"tinystories-279k", "prompt-once-upon-a-time.tokens.json", nullptr, "Once upon a time"},
      {"tinystories-279k", "tinystories-valid-30k.tokens.json", "data/tinystories/valid-30k.txt",
       nullptr},
      {"tinystories-279k", "eval.tokens.json", "data/tinystories/eval.txt", nullptr},
      {"babyllama-936k", "prompt-once-upon-a-time.tokens.json", nullptr, "Once upon a time"},
      {"babyllama-936k", "eval.oneline.tokens.json", "data/tinystories/eval.oneline.txt", nullptr},
      {"babyllama-936k", "tinystories-valid-30k.tokens.json",
       "ONELINE:data/tinystories/valid-30k.txt", nullptr},
      {"wiki5m", "prompt-the-city-of.tokens.json", nullptr, "The city of"},
      {"wiki5m", "eval.tokens.json", "data/wikitext-2/eval.txt", nullptr},
  };
  for (const auto& m : kModels) {
    LMP_REQUIRE_SHARED(std::string("models/") + m.dir + "/" + m.tok + ".model");
    Tokenizer from_model(load_vocab_sentencepiece(model_path(m, ".model")));
    Tokenizer from_bin(load_vocab_llama2c(model_path(m, ".bin"), m.n_vocab));
    for (const auto& c : cases) {
      if (std::string(c.model_dir) != m.dir) continue;
      const std::string fx = std::string("fixtures/") + c.model_dir + "/" + c.fixture;
      LMP_REQUIRE_SHARED(fx);
      std::string text;
      if (c.literal) {
        text = c.literal;
      } else {
        std::string rel = c.text;
        const bool oneline = rel.rfind("ONELINE:", 0) == 0;
        if (oneline) rel = rel.substr(8);
        LMP_REQUIRE_SHARED(rel);
        text = read_all(shared(rel));
        // The babyllama vocabulary has no newline: its fixtures tokenize the text with
        // newlines replaced by spaces (what data/*.oneline.txt holds).
        if (oneline)
          for (char& ch : text)
            if (ch == '\n') ch = ' ';
      }
      const auto want = read_ids_json(shared(fx));
      EXPECT_IDS_EQ(from_model.encode(text, true), want, m.dir << " .model vs " << c.fixture);
      EXPECT_IDS_EQ(from_bin.encode(text, true), want, m.dir << " .bin vs " << c.fixture);
    }
  }
}

// ---- libsentencepiece as an independent reference --------------------------------------------

TEST(TokenizerSentencePiece, MatchesLibSentencePiece) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.dir);
    LMP_REQUIRE_SHARED(std::string("models/") + m.dir + "/" + m.tok + ".model");
    sentencepiece::SentencePieceProcessor sp;
    ASSERT_TRUE(sp.Load(model_path(m, ".model")).ok());
    Tokenizer tk(load_vocab_sentencepiece(model_path(m, ".model")));
    const bool wiki = std::string(m.dir) == "wiki5m";
    const std::string text =
        read_all(shared(wiki ? "data/wikitext-2/calib.txt" : "data/tinystories/calib.txt"));
    int compared = 0;
    for (const std::string& line : lines_of(text)) {
      const std::string s = squeeze_spaces(line);
      if (s.empty()) continue;
      if (wiki && compared >= 300) break;
      std::vector<int> ref;
      ASSERT_TRUE(sp.Encode(s, &ref).ok());
      const auto got = tk.encode(s, false);
      EXPECT_IDS_EQ(got, std::vector<int32_t>(ref.begin(), ref.end()), "line \"" << s << "\"");
      ++compared;
    }
    EXPECT_GT(compared, 5);
  }
}

TEST(TokenizerSentencePiece, RandomTextsMatchLibSentencePiece) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/tok512.model");
  const std::string path = shared("models/tinystories-279k/tok512.model");
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(path).ok());
  Tokenizer tk(load_vocab_sentencepiece(path));
  // Letters the merges like, punctuation, a character only reachable by byte fallback.
  const std::vector<std::string> alphabet = {"a", "e", "t", "h", "n",  "d",        "o",
                                             "s", "i", "r", "w", " ",  " ",        " ",
                                             ".", ",", "'", "T", "\n", "\xC3\xA9", "\xE2\x82\xAC",
                                             "1"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s;
    const int n = 1 + int(rng() % 80);
    for (int i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    s = squeeze_spaces(s);
    if (s.empty()) continue;
    std::vector<int> ref;
    ASSERT_TRUE(sp.Encode(s, &ref).ok());
    EXPECT_IDS_EQ(tk.encode(s, false), std::vector<int32_t>(ref.begin(), ref.end()),
                  "text \"" << s << "\"");
  }
}

// ---- writers -----------------------------------------------------------------------------------

TEST(TokenizerWriters, SentencePieceRoundTrip) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.dir);
    LMP_REQUIRE_SHARED(std::string("models/") + m.dir + "/" + m.tok + ".model");
    const Vocab orig = load_vocab_sentencepiece(model_path(m, ".model"));
    const std::string bytes = serialize_sentencepiece_model(orig);
    const Vocab back = parse_vocab_sentencepiece(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                 bytes.size(), "roundtrip.model");
    expect_same_vocab(back, orig);
    EXPECT_EQ(back.pad_id, orig.pad_id);
    // The .bin vocabulary serializes to the same model.
    const Vocab bin = load_vocab_llama2c(model_path(m, ".bin"), m.n_vocab);
    EXPECT_EQ(serialize_sentencepiece_model(bin), bytes);

    // libsentencepiece reads the written model and encodes like us.
    sentencepiece::SentencePieceProcessor sp;
    ASSERT_TRUE(sp.LoadFromSerializedProto(bytes).ok());
    EXPECT_EQ(sp.GetPieceSize(), int(orig.tokens.size()));
    Tokenizer tk(back);
    const std::string text = read_all(shared("data/tinystories/calib.txt"));
    for (const std::string& line : lines_of(text)) {
      std::vector<int> ref;
      ASSERT_TRUE(sp.Encode(line, &ref).ok());
      EXPECT_IDS_EQ(tk.encode(line, false), std::vector<int32_t>(ref.begin(), ref.end()),
                    "line \"" << line << "\"");
    }
  }
}

TEST(TokenizerWriters, HfJsonRoundTripBpe) {
  LMP_REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  const Vocab orig = gguf_vocab("tokenizers/ggml-vocab-gpt-2.gguf");
  const std::string js = hf_tokenizer_json(orig);
  const Vocab back = parse_vocab_hf_json(js, "roundtrip.json");
  expect_same_vocab(back, orig, /*scores=*/false);
  EXPECT_EQ(back.pre, orig.pre);
  Tokenizer a(orig), b(back);
  for (const auto& t : read_vocab_tests(shared("tokenizers/ggml-vocab-gpt-2.gguf")))
    EXPECT_IDS_EQ(b.encode(t.text, false), t.ids, "text \"" << t.text << "\"");
  const std::string story = read_all(shared("data/tinystories/valid-30k.txt"));
  EXPECT_EQ(a.encode(story, false), b.encode(story, false));
  // Writing again gives the same text.
  EXPECT_EQ(hf_tokenizer_json(back), js);
}

TEST(TokenizerWriters, HfJsonRoundTripSpm) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.dir);
    LMP_REQUIRE_SHARED(std::string("models/") + m.dir + "/" + m.tok + ".model");
    const Vocab orig = load_vocab_sentencepiece(model_path(m, ".model"));
    const Vocab back = parse_vocab_hf_json(hf_tokenizer_json(orig), "roundtrip.json");
    expect_same_vocab(back, orig, /*scores=*/false);
    Tokenizer a(orig), b(back);
    const bool baby = std::string(m.dir) == "babyllama-936k";
    const std::string text =
        read_all(shared(baby ? "data/tinystories/eval.oneline.txt" : "data/tinystories/eval.txt"));
    EXPECT_IDS_EQ(b.encode(text, true), a.encode(text, true), m.dir);
  }
  LMP_REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  const Vocab orig = gguf_vocab("tokenizers/ggml-vocab-llama-spm.gguf");
  const Vocab back = parse_vocab_hf_json(hf_tokenizer_json(orig), "roundtrip.json");
  Tokenizer b(back);
  for (const auto& t : read_vocab_tests(shared("tokenizers/ggml-vocab-llama-spm.gguf")))
    EXPECT_IDS_EQ(b.encode(t.text, false), t.ids, "text \"" << t.text << "\"");
}

// ---- encoder behaviour on small hand-made vocabularies ------------------------------------------

namespace {
// Byte-level vocabulary: the 256 byte symbols, then the results of `merges` in order.
Vocab tiny_bpe(const std::vector<std::string>& merges, const std::string& pre) {
  Vocab v;
  v.kind = VocabKind::BPE;
  v.pre = pre;
  v.source = "tiny-bpe";
  v.add_bos = false;
  v.add_space_prefix = false;
  v.byte_fallback = false;
  // GPT-2 alphabet order is irrelevant here: use the printable ASCII bytes only.
  for (int c = 33; c < 127; ++c) v.tokens.push_back(std::string(1, char(c)));
  v.tokens.push_back("\xC4\xA0");  // U+0120 'Ġ' = space
  for (const auto& m : merges) {
    v.merges.push_back(m);
    std::string t = m;
    t.erase(t.find(' ', 1), 1);
    v.tokens.push_back(t);
  }
  v.types.assign(v.tokens.size(), TokenType::Normal);
  return v;
}
}  // namespace

TEST(TokenizerBpe, Llama3PreTokenizerSplitsNumbersInThrees) {
  const std::vector<std::string> merges = {"1 2", "12 3", "123 4", "1234 5", "4 5"};
  Tokenizer gpt2(tiny_bpe(merges, "gpt-2"));
  Tokenizer llama3(tiny_bpe(merges, "llama3"));
  const auto g = gpt2.encode("12345", false);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(gpt2.token_to_piece(g[0]), "12345");
  const auto l = llama3.encode("12345", false);
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(llama3.token_to_piece(l[0]), "123");
  EXPECT_EQ(llama3.token_to_piece(l[1]), "45");
  EXPECT_EQ(llama3.decode(llama3.encode("a 12345 b", false)), "a 12345 b");
}

// llama.cpp's smollm (starcoder, refact, ...) pre-tokenizer: every digit is split off first, then
// the GPT-2 regex runs on the text between digits (so "  1" keeps its two spaces together).
TEST(TokenizerBpe, SmollmPreTokenizerSplitsEveryDigit) {
  const std::vector<std::string> merges = {"1 2", "12 3", "\xc4\xa0 1", "\xc4\xa0 \xc4\xa0", "a b"};  // U+0120 = GPT-2's space
  Tokenizer gpt2(tiny_bpe(merges, "gpt-2"));
  Tokenizer smol(tiny_bpe(merges, "smollm"));
  auto pieces = [](const Tokenizer& tk, const std::string& text) {
    std::vector<std::string> r;
    for (int32_t id : tk.encode(text, false)) r.push_back(tk.token_to_piece(id));
    return r;
  };
  EXPECT_EQ(pieces(gpt2, "ab 123"), (std::vector<std::string>{"ab", " ", "123"}));
  EXPECT_EQ(pieces(smol, "ab 123"), (std::vector<std::string>{"ab", " ", "1", "2", "3"}));
  EXPECT_EQ(pieces(gpt2, "ab  1"), (std::vector<std::string>{"ab", " ", " 1"}));
  EXPECT_EQ(pieces(smol, "ab  1"), (std::vector<std::string>{"ab", "  ", "1"}));
  EXPECT_EQ(smol.decode(smol.encode("x 12,345.6 y", false)), "x 12,345.6 y");
}

TEST(TokenizerBpe, MergesLowestRankFirstLeftmostOnTies) {
  Tokenizer tk(tiny_bpe({"a a", "aa a"}, "gpt-2"));
  auto pieces = [&](const std::string& text) {
    std::vector<std::string> r;
    for (int32_t id : tk.encode(text, false)) r.push_back(tk.token_to_piece(id));
    return r;
  };
  // "a a" (rank 0) everywhere first, leftmost first: (aa)(aa)a; then "aa a" -> aa|aaa.
  EXPECT_EQ(pieces("aaaaa"), (std::vector<std::string>{"aa", "aaa"}));
  EXPECT_EQ(pieces("aaa"), (std::vector<std::string>{"aaa"}));
  Tokenizer only_pairs(tiny_bpe({"a a"}, "gpt-2"));
  const auto ids = only_pairs.encode("aaa", false);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(only_pairs.token_to_piece(ids[0]), "aa");
  EXPECT_EQ(only_pairs.token_to_piece(ids[1]), "a");
}

TEST(TokenizerSpm, LeadingSpaceGetsLonePrefixPiece) {
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = "tiny-spm";
  v.tokens = {"<unk>",
              "<s>",
              "</s>",
              "\xE2\x96\x81",
              "a",
              "b",
              "\xE2\x96\x81"
              "a",
              "ab",
              "\xE2\x96\x81"
              "ab"};
  v.scores = {0, 0, 0, -1, -2, -3, -4, -5, -6};
  v.types = {TokenType::Unknown, TokenType::Control, TokenType::Control,
             TokenType::Normal,  TokenType::Normal,  TokenType::Normal,
             TokenType::Normal,  TokenType::Normal,  TokenType::Normal};
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.byte_fallback = false;
  Tokenizer tk(v);
  EXPECT_EQ(tk.encode("ab", true), (std::vector<int32_t>{1, 8}));
  EXPECT_EQ(tk.encode(" ab", false), (std::vector<int32_t>{3, 8}));
  EXPECT_EQ(tk.encode("ab ab", false), (std::vector<int32_t>{8, 8}));
  EXPECT_EQ(tk.encode("", false), (std::vector<int32_t>{}));
  EXPECT_EQ(tk.encode("", true), (std::vector<int32_t>{1}));
  EXPECT_EQ(tk.decode(tk.encode(" ab ab", true)), " ab ab");
  // "<s>" in text is plain text, not the control token: here it is not representable.
  try {
    tk.encode("a<s>", false);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny-spm"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("U+003C"), std::string::npos) << e.what();
  }
}

TEST(TokenizerSpm, UserDefinedTokensAreMatchedLiterally) {
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = "tiny-spm";
  v.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "<sep>"};
  v.scores = {0, 0, 0, -1, -2, 0};
  v.types = {TokenType::Unknown, TokenType::Control, TokenType::Control,
             TokenType::Normal,  TokenType::Normal,  TokenType::UserDefined};
  v.bos_id = 1;
  v.byte_fallback = false;
  Tokenizer tk(v);
  // llama.cpp: the fragment after a literal token gets the space prefix again.
  EXPECT_EQ(tk.encode("a<sep>a", false), (std::vector<int32_t>{3, 4, 5, 3, 4}));
}

TEST(TokenizerSpm, TextNeverMergesIntoControlOrBytePieces) {
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = "tiny-spm";
  v.tokens = {"<unk>", "<s>", "</s>",   "\xE2\x96\x81", "<",  "s",
              ">",     "<s",  "<0x41>", "<0",           "x4", "1>"};
  v.scores = {0, 0, 0, -1, -2, -3, -4, -5, 0, -6, -7, -8};
  v.types.assign(v.tokens.size(), TokenType::Normal);
  v.types[0] = TokenType::Unknown;
  v.types[1] = v.types[2] = TokenType::Control;
  v.types[8] = TokenType::Byte;
  v.bos_id = 1;
  v.byte_fallback = false;
  v.add_space_prefix = false;
  Tokenizer tk(v);
  EXPECT_EQ(tk.encode("<s>", false), (std::vector<int32_t>{7, 6}));
  EXPECT_EQ(tk.encode("<0x41>", false), (std::vector<int32_t>{9, 10, 11}));
}

// ---- bad input ---------------------------------------------------------------------------------

namespace {
template <class Fn>
void expect_error_naming(Fn&& fn, const std::string& name, const std::string& what) {
  try {
    fn();
    ADD_FAILURE() << what << ": expected lmpress::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(name), std::string::npos) << what << ": message lacks the name: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": message is not one line: " << msg;
  }
}
std::vector<uint8_t> bytes_of(const std::string& path) {
  const std::string s = read_all(path);
  return std::vector<uint8_t>(s.begin(), s.end());
}
}  // namespace

TEST(TokenizerBadInput, TruncatedAndGarbageFiles) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/tok512.bin");
  const ModelCase& m = kModels[0];
  const auto bin = bytes_of(model_path(m, ".bin"));
  for (size_t cut :
       {size_t(0), size_t(3), size_t(4), size_t(9), size_t(100), bin.size() / 2, bin.size() - 1})
    expect_error_naming([&] { parse_vocab_llama2c(bin.data(), cut, 512, "tok-cut.bin"); },
                        "tok-cut.bin", "tok512.bin cut at " + std::to_string(cut));
  expect_error_naming([&] { parse_vocab_llama2c(bin.data(), bin.size(), 600, "tok.bin"); },
                      "tok.bin", "vocab_size larger than the file");
  expect_error_naming([&] { parse_vocab_llama2c(bin.data(), bin.size(), 100, "tok.bin"); },
                      "tok.bin", "vocab_size smaller than the file");
  std::vector<uint8_t> bad = bin;
  bad[4 + 4 + 4 + 5 + 4] = 0xFF;  // length of token 1 -> negative/huge
  bad[4 + 4 + 4 + 5 + 4 + 3] = 0x7F;
  expect_error_naming([&] { parse_vocab_llama2c(bad.data(), bad.size(), 512, "bad.bin"); },
                      "bad.bin", "forged token length");

  const auto model = bytes_of(model_path(m, ".model"));
  for (size_t cut : {size_t(0), size_t(1), size_t(2), size_t(7), size_t(100), model.size() / 2,
                     model.size() - 1})
    expect_error_naming([&] { parse_vocab_sentencepiece(model.data(), cut, "tok-cut.model"); },
                        "tok-cut.model", "tok512.model cut at " + std::to_string(cut));
  // Any truncation either fails cleanly or (cut at a field boundary) parses.
  for (size_t cut = 0; cut < model.size(); cut += 7) {
    try {
      parse_vocab_sentencepiece(model.data(), cut, "cut.model");
    } catch (const Error&) {
    }
  }
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<uint8_t> g(size_t(rng() % 300));
    for (auto& b : g) b = uint8_t(rng());
    try {
      parse_vocab_sentencepiece(g.data(), g.size(), "garbage.model");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("garbage.model"), std::string::npos);
    }
    try {
      parse_vocab_llama2c(g.data(), g.size(), 0, "garbage.bin");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("garbage.bin"), std::string::npos);
    }
  }
  // A model file given as a llama2.c tokenizer and vice versa.
  expect_error_naming([&] { parse_vocab_llama2c(model.data(), model.size(), 512, "x.bin"); },
                      "x.bin", ".model read as .bin");
  expect_error_naming([&] { parse_vocab_sentencepiece(bin.data(), bin.size(), "x.model"); },
                      "x.model", ".bin read as .model");

  expect_error_naming([&] { load_vocab_sentencepiece("/nonexistent/tok.model"); },
                      "/nonexistent/tok.model", "missing file");
  expect_error_naming([&] { load_vocab_llama2c("/nonexistent/tok.bin", 32); },
                      "/nonexistent/tok.bin", "missing file");
  expect_error_naming([&] { load_vocab_hf_json("/nonexistent/tokenizer.json"); },
                      "/nonexistent/tokenizer.json", "missing file");
}

TEST(TokenizerBadInput, BadTokenizerJson) {
  const char* cases[] = {
      "",
      "{",
      "[]",
      "{}",
      "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}, \"pre_tokenizer\": {\"type\": "
      "\"ByteLevel\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}, \"pre_tokenizer\": "
      "{\"type\": \"ByteLevel\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}, "
      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}, "
      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": "
      "\"Whitespace\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}}, \"pre_tokenizer\": "
      "{\"type\": \"ByteLevel\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 5000000}}, \"pre_tokenizer\": "
      "{\"type\": \"ByteLevel\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"unk_token\": \"<unk>\"}, "
      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
  };
  for (const char* c : cases)
    expect_error_naming([&] { parse_vocab_hf_json(c, "tokenizer.json"); }, "tokenizer.json", c);
  const std::string deep(100000, '[');
  expect_error_naming([&] { parse_vocab_hf_json(deep, "deep.json"); }, "deep.json", "deep");
  LMP_REQUIRE_SHARED("tokenizers/gpt2_vocab.json");
  const std::string good = gpt2_files_as_tokenizer_json();
  for (size_t cut : {size_t(1), size_t(1000), good.size() / 2, good.size() - 1})
    expect_error_naming([&] { parse_vocab_hf_json(good.substr(0, cut), "cut.json"); }, "cut.json",
                        "cut at " + std::to_string(cut));
}

TEST(TokenizerBadInput, CharacterTheVocabularyLacks) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/tok105.model");
  const std::string path = shared("models/babyllama-936k/tok105.model");
  Tokenizer tk(load_vocab_sentencepiece(path));
  EXPECT_FALSE(tk.vocab().byte_fallback);
  EXPECT_NO_THROW(tk.encode("Once upon a time", true));
  for (const char* text : {"line one\nline two", "caf\xC3\xA9 \xCE\xA9", "bad \xFF byte"}) {
    try {
      tk.encode(text, true);
      ADD_FAILURE() << "expected an Error for " << text;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  try {
    tk.encode("x\ny", false);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("U+000A"), std::string::npos) << e.what();
  }
  // Out-of-range ids are errors too.
  EXPECT_THROW(tk.token_to_piece(105), Error);
  EXPECT_THROW(tk.token_to_piece(-1), Error);
  // An inconsistent Vocab is rejected by the constructor.
  Vocab v = load_vocab_sentencepiece(path);
  v.scores.pop_back();
  EXPECT_THROW(Tokenizer{v}, Error);
}

TEST(TokenizerSpm, DecodeRoundTripAndBytes) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/tok512.model");
  Tokenizer tk(load_vocab_sentencepiece(shared("models/tinystories-279k/tok512.model")));
  const std::string text = read_all(shared("data/tinystories/valid-30k.txt"));
  EXPECT_EQ(tk.decode(tk.encode(text, true)), text);
  const std::string odd = " two  spaces, tab\t, \xE2\x82\xAC uro, \xF0\x9F\x98\x80, bad \xFF\xC3";
  EXPECT_EQ(tk.decode(tk.encode(odd, true)), odd);
  EXPECT_EQ(tk.token_to_piece(3 + 0x0A), "\n");  // <0x0A>
  EXPECT_EQ(tk.token_to_piece(1), "");           // control
}

TEST(TokenizerBpe, LongRunsAndInvalidUtf8) {
  LMP_REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  Vocab v = gguf_vocab("tokenizers/ggml-vocab-gpt-2.gguf");
  Tokenizer gpt2(v);
  v.pre = "llama3";
  Tokenizer llama3(v);
  // Long pre-tokens must not hit regex stack or heap limits.
  for (const std::string& s :
       {std::string(100000, ' '), std::string(100000, 'a'), std::string(50000, '\n') + "x",
        std::string(20000, '7'), std::string(20000, '!') + "  \t\n\n a"}) {
    EXPECT_EQ(gpt2.decode(gpt2.encode(s, false)), s);
    EXPECT_EQ(llama3.decode(llama3.encode(s, false)), s);
  }
  // Invalid UTF-8 is still encoded byte by byte and decodes back.
  const std::string bad = "ok \xFF\xFE caf\xC3 \xE2\x82 end \xC3\xA9";
  EXPECT_EQ(gpt2.decode(gpt2.encode(bad, false)), bad);
  EXPECT_EQ(llama3.decode(llama3.encode(bad, false)), bad);
}
