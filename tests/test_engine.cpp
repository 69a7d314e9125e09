// End-to-end golden tests: logits, greedy continuations and perplexity against the fixtures in
// ../shared/fixtures (computed by llama.cpp b4747 and cross-checked by a float64 implementation),
// for each model loaded from llama2.c, GGUF and a converted Hugging Face directory.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
namespace fs = std::filesystem;

namespace {

std::vector<int32_t> read_tokens(const std::string& path) {
  auto j = nlohmann::json::parse(read_text_file(path));
  if (j.is_object()) j = j["tokens"];
  return j.get<std::vector<int32_t>>();
}

// "model.bin" | "model-f32.gguf" | "hf" (converted on first use into a temp dir).
std::string model_path(const std::string& model, const std::string& fmt) {
  const std::string dir = test::shared("models/" + model);
  if (fmt == "llama2c") return dir + "/model.bin";
  if (fmt == "gguf") return dir + "/model-f32.gguf";
  const std::string out = test::tmp_dir() + "/lmpress_test_hf_" + model + "_" + std::to_string(::getpid());
  if (!fs::exists(out)) {
    Model m = load_model(dir + "/model.bin");
    write_hf_model(m, out, DType::F32);
  }
  return out;
}

struct Case {
  std::string model, fmt;
};
std::string case_name(const testing::TestParamInfo<Case>& i) {
  std::string s = i.param.model + "_" + i.param.fmt;
  for (auto& ch : s)
    if (!isalnum(ch)) ch = '_';
  return s;
}

class EngineGolden : public testing::TestWithParam<Case> {};

}  // namespace

TEST_P(EngineGolden, LogitsFirst128) {
  const auto& p = GetParam();
  LMP_REQUIRE_SHARED("models/" + p.model + "/model.bin");
  LMP_REQUIRE_SHARED("fixtures/" + p.model + "/logits-first128.f32");
  Model m = load_model(model_path(p.model, p.fmt));
  auto meta = nlohmann::json::parse(read_text_file(test::shared("fixtures/" + p.model + "/logits-first128.json")));
  const auto tokens = meta["tokens"].get<std::vector<int32_t>>();
  const int64_t nv = meta["shape"][1].get<int64_t>();
  ASSERT_EQ(nv, m.cfg.vocab_size);
  MappedFile ref(test::shared("fixtures/" + p.model + "/logits-first128.f32"));
  ASSERT_EQ(ref.size(), tokens.size() * size_t(nv) * 4);
  const float* rl = reinterpret_cast<const float*>(ref.data());

  for (int threads : {1, 2}) {
    // Batched prefill (GEMM path) over all 128 tokens.
    EngineOptions eo;
    eo.n_threads = threads;
    eo.n_ctx = int32_t(tokens.size());
    Engine eng(m, eo);
    std::vector<float> logits(tokens.size() * size_t(nv));
    eng.forward(tokens.data(), int64_t(tokens.size()), 0, logits.data(), true);
    double maxdiff = 0;
    for (size_t i = 0; i < logits.size(); ++i) maxdiff = std::max(maxdiff, double(std::fabs(logits[i] - rl[i])));
    EXPECT_LT(maxdiff, 1e-3) << "prefill, threads=" << threads;

    // Token-by-token decode (matrix-vector path) over the first 40 tokens.
    Engine dec(m, eo);
    std::vector<float> one(static_cast<size_t>(nv));
    maxdiff = 0;
    for (int t = 0; t < 40; ++t) {
      dec.forward(&tokens[size_t(t)], 1, t, one.data(), false);
      for (int64_t i = 0; i < nv; ++i) maxdiff = std::max(maxdiff, double(std::fabs(one[size_t(i)] - rl[t * nv + i])));
    }
    EXPECT_LT(maxdiff, 1e-3) << "decode, threads=" << threads;
  }
}

TEST_P(EngineGolden, GreedyContinuation) {
  const auto& p = GetParam();
  LMP_REQUIRE_SHARED("models/" + p.model + "/model.bin");
  const std::string fx = test::shared("fixtures/" + p.model);
  std::string greedy;
  for (const auto& e : fs::directory_iterator(fx))
    if (e.path().filename().string().rfind("greedy-", 0) == 0) greedy = e.path().string();
  if (greedy.empty()) GTEST_SKIP() << "SKIPPED: no greedy fixture in " << fx;
  std::string prompt_file = greedy;
  prompt_file.replace(prompt_file.find("greedy-"), 7, "prompt-");
  prompt_file.replace(prompt_file.find("-40.json"), 8, ".tokens.json");
  const auto want = read_tokens(greedy);
  const auto prompt = read_tokens(prompt_file);
  Model m = load_model(model_path(p.model, p.fmt));
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = int32_t(want.size() + 1);
  Engine eng(m, eo);
  std::vector<float> logits(static_cast<size_t>(m.cfg.vocab_size));
  std::vector<int32_t> got = prompt;
  eng.forward(got.data(), int64_t(got.size()), 0, logits.data(), false);
  while (got.size() < want.size()) {
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    got.push_back(next);
    eng.forward(&next, 1, int32_t(got.size() - 1), logits.data(), false);
  }
  EXPECT_EQ(got, want);
}

class EnginePpl : public testing::TestWithParam<Case> {};

TEST_P(EnginePpl, PerplexityLlamacpp) {
  const auto& p = GetParam();
  struct Row {
    std::string model, text;
    double ppl;
    int64_t scored;
    int ctx;
  };
  const Row rows[] = {
      {"tinystories-279k", "data/tinystories/valid-30k.txt", 10.5606, 7623, 128},
      {"tinystories-279k", "data/tinystories/eval.txt", 10.4370, 4032, 128},
      {"babyllama-936k", "data/tinystories/valid-30k.oneline.txt", 2.5915, 14868, 128},
      {"babyllama-936k", "data/tinystories/eval.oneline.txt", 2.6257, 7812, 128},
      {"wiki5m", "data/wikitext-2/eval.txt", 16.4873, 44831, 256},
  };
  LMP_REQUIRE_SHARED("models/" + p.model + "/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/valid-30k.txt");
  Model m = load_model(model_path(p.model, p.fmt));
  int n = 0;
  for (const auto& r : rows) {
    if (r.model != p.model) continue;
    // valid-30k.oneline.txt is valid-30k.txt with newlines replaced by spaces (shared/README.md).
    std::string text;
    if (r.text == "data/tinystories/valid-30k.oneline.txt") {
      text = read_text_file(test::shared("data/tinystories/valid-30k.txt"));
      std::replace(text.begin(), text.end(), '\n', ' ');
    } else {
      text = read_text_file(test::shared(r.text));
    }
    const auto tokens = m.tokenizer->encode(text, true);
    PerplexityOptions po;
    po.n_ctx = r.ctx;
    po.n_threads = 2;
    po.progress = false;
    const auto res = perplexity(m, tokens, po);
    EXPECT_EQ(res.scored_tokens, r.scored) << r.text;
    // 4 significant digits: |ppl - ref| <= half a unit in the 4th digit (+ fixture rounding).
    const double unit = std::pow(10.0, std::floor(std::log10(r.ppl)) - 3);
    EXPECT_NEAR(res.ppl, r.ppl, 0.5 * unit + 1e-4 * unit) << r.text;
    ++n;
  }
  EXPECT_GT(n, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Models, EngineGolden,
    testing::Values(Case{"tinystories-279k", "llama2c"}, Case{"tinystories-279k", "gguf"},
                    Case{"tinystories-279k", "hf"}, Case{"babyllama-936k", "llama2c"},
                    Case{"babyllama-936k", "gguf"}, Case{"babyllama-936k", "hf"}, Case{"wiki5m", "llama2c"},
                    Case{"wiki5m", "gguf"}, Case{"wiki5m", "hf"}),
    case_name);

// The four tinystories/babyllama values for every format; wiki5m (long: 44831 scored tokens at
// ctx 256) on its llama2.c checkpoint — its GGUF and HF forms are covered by the logits tests.
INSTANTIATE_TEST_SUITE_P(
    Models, EnginePpl,
    testing::Values(Case{"tinystories-279k", "llama2c"}, Case{"tinystories-279k", "gguf"},
                    Case{"tinystories-279k", "hf"}, Case{"babyllama-936k", "llama2c"},
                    Case{"babyllama-936k", "gguf"}, Case{"babyllama-936k", "hf"}, Case{"wiki5m", "llama2c"}),
    case_name);

// The full protocol scores every prediction of each non-overlapping window.
TEST(Perplexity, FullProtocolCounts) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/model.bin");
  Model m = load_model(test::shared("models/babyllama-936k/model.bin"));
  const auto tokens = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.oneline.txt")), true);
  PerplexityOptions po;
  po.protocol = "full";
  po.n_ctx = 128;
  po.progress = false;
  const auto r = perplexity(m, tokens, po);
  EXPECT_EQ(r.scored_tokens, int64_t(tokens.size() / 128) * 127);
  EXPECT_GT(r.ppl, 1.5);
  EXPECT_LT(r.ppl, 4.0);
  // KL of a model against itself is zero, top-1 agreement is total.
  po.protocol = "llamacpp";
  po.base = &m;
  po.max_chunks = 4;
  const auto k = perplexity(m, tokens, po);
  EXPECT_NEAR(k.kld, 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(k.top1, 1.0);
  EXPECT_DOUBLE_EQ(k.ppl, k.ppl_base);
}
