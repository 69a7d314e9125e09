// End-to-end golden tests: logits, greedy continuations and perplexity against the fixtures in
// ../shared/fixtures (computed by llama.cpp b4747 and cross-checked by a float64 implementation),
// for each model loaded from llama2.c, GGUF and a converted Hugging Face directory.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/attention.h"
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

// Largest |logit - fixture| of a batched prefill over the fixture's 128 tokens.
double prefill_maxdiff(const Model& m, const std::string& model, int threads) {
  auto meta = nlohmann::json::parse(read_text_file(test::shared("fixtures/" + model + "/logits-first128.json")));
  const auto tokens = meta["tokens"].get<std::vector<int32_t>>();
  const int64_t nv = meta["shape"][1].get<int64_t>();
  EXPECT_EQ(nv, m.cfg.vocab_size);
  MappedFile ref(test::shared("fixtures/" + model + "/logits-first128.f32"));
  EXPECT_EQ(ref.size(), tokens.size() * size_t(nv) * 4);
  if (ref.size() != tokens.size() * size_t(nv) * 4 || nv != m.cfg.vocab_size) return 1e30;
  const float* rl = reinterpret_cast<const float*>(ref.data());
  EngineOptions eo;
  eo.n_threads = threads;
  eo.n_ctx = int32_t(tokens.size());
  Engine eng(m, eo);
  std::vector<float> logits(tokens.size() * size_t(nv));
  eng.forward(tokens.data(), int64_t(tokens.size()), 0, logits.data(), true);
  double maxdiff = 0;
  for (size_t i = 0; i < logits.size(); ++i) maxdiff = std::max(maxdiff, double(std::fabs(logits[i] - rl[i])));
  return maxdiff;
}

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
    EXPECT_LT(prefill_maxdiff(m, p.model, threads), 1e-3) << "prefill, threads=" << threads;

    // Token-by-token decode (matrix-vector path) over the first 40 tokens.
    EngineOptions eo;
    eo.n_threads = threads;
    eo.n_ctx = int32_t(tokens.size());
    Engine dec(m, eo);
    double maxdiff = 0;
    std::vector<float> one(static_cast<size_t>(nv));
    for (int t = 0; t < 40; ++t) {
      dec.forward(&tokens[size_t(t)], 1, t, one.data(), false);
      for (int64_t i = 0; i < nv; ++i) maxdiff = std::max(maxdiff, double(std::fabs(one[size_t(i)] - rl[t * nv + i])));
    }
    EXPECT_LT(maxdiff, 1e-3) << "decode, threads=" << threads;
  }
}

// The model read into memory (FileLoad::Copy, the runtime commands' default when it fits) gives the
// same logits as the mapped file.
TEST_P(EngineGolden, LogitsFirst128ReadIntoMemory) {
  const auto& p = GetParam();
  LMP_REQUIRE_SHARED("models/" + p.model + "/model.bin");
  LMP_REQUIRE_SHARED("fixtures/" + p.model + "/logits-first128.f32");
  const FileLoad before = file_load();
  set_file_load(FileLoad::Copy);
  Model m = load_model(model_path(p.model, p.fmt));
  set_file_load(before);
  bool copied = false;
  for (const auto& f : m.files) copied = copied || (f && f->copied());
  EXPECT_TRUE(copied);
  EXPECT_LT(prefill_maxdiff(m, p.model, 2), 1e-3);
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

// ---- attention: blocked (prefill) and per-token paths -------------------------------------------

namespace {
// Straightforward double-precision causal GQA attention (the definition).
std::vector<double> attention_ref(const AttnArgs& a) {
  const int64_t hd = a.head_dim, nh = a.n_heads, G = nh / a.n_kv_heads, qd = nh * hd, kvd = a.n_kv_heads * hd;
  std::vector<double> out(size_t(a.n * qd), 0.0);
  for (int64_t t = 0; t < a.n; ++t)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = h / G, hi = a.pos + t + 1, lo = a.window > 0 ? std::max<int64_t>(0, hi - a.window) : 0;
      std::vector<double> s(size_t(hi - lo));
      double mx = -1e300, sum = 0;
      for (int64_t p = lo; p < hi; ++p) {
        double d = 0;
        for (int64_t i = 0; i < hd; ++i) d += double(a.q[t * qd + h * hd + i]) * double(a.k[p * kvd + kvh * hd + i]);
        s[size_t(p - lo)] = d * double(a.scale);
        mx = std::max(mx, s[size_t(p - lo)]);
      }
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t p = lo; p < hi; ++p)
        for (int64_t i = 0; i < hd; ++i)
          out[size_t(t * qd + h * hd + i)] += s[size_t(p - lo)] / sum * double(a.v[p * kvd + kvh * hd + i]);
    }
  return out;
}
}  // namespace

// Both attention paths against the double reference on random q / k / v: MHA and GQA head
// layouts, n = 1, 7, 64, 200 new tokens at position 0 and after 37 cached ones, no window and
// sliding windows shorter and longer than the batch, at every SIMD level the CPU has (the softmax
// exp is the level's), 1 and 2 threads.
TEST(Attention, BlockedAndPerTokenMatchDoubleReference) {
  struct Heads {
    int64_t nh, nkv, hd;
  };
  int cases = 0;
  for (const SimdLevel level : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
    if (cpu_simd_level() < level) {
      std::printf("SKIPPED level %s: not on this CPU\n", simd_level_name(level));
      continue;
    }
    ScopedSimdLevel sl(level);
    for (const Heads hs : {Heads{4, 4, 16}, Heads{8, 2, 64}, Heads{6, 3, 40}})
      for (int64_t n : {1, 7, 64, 200})
        for (int64_t pos : {0, 37})
          for (int64_t window : {0, 5, 100}) {
            const int64_t qd = hs.nh * hs.hd, kvd = hs.nkv * hs.hd, L = pos + n;
            const uint32_t seed = uint32_t(n * 1000 + pos * 10 + window + hs.nh);
            std::vector<float> q = test::randn(size_t(n * qd), seed, 2.f), k = test::randn(size_t(L * kvd), seed + 1),
                               v = test::randn(size_t(L * kvd), seed + 2);
            AttnArgs a;
            a.q = q.data();
            a.k = k.data();
            a.v = v.data();
            a.n = n;
            a.pos = pos;
            a.n_heads = hs.nh;
            a.n_kv_heads = hs.nkv;
            a.head_dim = hs.hd;
            a.window = window;
            a.scale = 1.f / std::sqrt(float(hs.hd));
            const std::vector<double> ref = attention_ref(a);
            for (int threads : {1, 2}) {
              ThreadPool pool(threads);
              for (int path = 0; path < 2; ++path) {
                std::vector<float> out(size_t(n * qd), NAN);
                a.out = out.data();
                if (path == 0) attention_per_token(a, pool);
                else attention_blocked(a, pool);
                for (size_t i = 0; i < out.size(); ++i)
                  ASSERT_NEAR(out[i], ref[i], 2e-5 * (1.0 + std::fabs(ref[i])))
                      << (path ? "blocked" : "per-token") << " " << simd_level_name(level) << " heads " << hs.nh << "/"
                      << hs.nkv << " hd " << hs.hd << " n " << n << " pos " << pos << " window " << window
                      << " threads " << threads << " i " << i;
                ++cases;
              }
            }
          }
  }
  EXPECT_GE(cases, 3 * 4 * 2 * 3 * 2 * 2);
}

// The engine's logits with blocked attention against the per-token path on real models: n = 1, 7,
// 64, 200 tokens from position 0, and 7 / 64 / 200 tokens continuing a 40-token KV cache;
// interleaved RoPE (llama2.c checkpoint), rotate-halves RoPE (converted HF directory), GQA (the
// synthetic "tiny" shape: 4 heads, 2 kv heads), each without and with a sliding window of 24
// (Mistral semantics, set on the loaded config). The paths differ only in float summation order.
TEST(EngineAttention, BlockedMatchesPerTokenLogits) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  std::vector<std::pair<std::string, Model>> models;
  models.emplace_back("tinystories llama2c", load_model(test::shared("models/tinystories-279k/model.bin")));
  models.emplace_back("tinystories hf", load_model(model_path("tinystories-279k", "hf")));
  models.emplace_back("synth tiny (GQA)", synth_model("tiny", DType::F32, 7));
  ASSERT_EQ(models[1].second.cfg.rope_style, RopeStyle::Halves);
  ASSERT_NE(models[0].second.cfg.rope_style, RopeStyle::Halves);
  ASSERT_LT(models[2].second.cfg.n_kv_heads, models[2].second.cfg.n_heads);
  int compared = 0;
  for (auto& [name, m] : models) {
    const int64_t nv = m.cfg.vocab_size;
    std::vector<int32_t> toks(240);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t((i * 37 + 11) % size_t(nv - 3) + 3);
    for (int32_t window : {0, 24}) {
      m.cfg.sliding_window = window;
      auto run = [&](AttnPath path, int64_t prefix, int64_t n) {
        EngineOptions eo;
        eo.n_threads = 2;
        eo.n_ctx = 256;
        eo.attention = path;
        Engine e(m, eo);
        std::vector<float> logits(size_t(n * nv));
        if (prefix > 0) e.forward(toks.data(), prefix, 0, nullptr, false);  // the KV cache of the prefix
        e.forward(toks.data() + prefix, n, int32_t(prefix), logits.data(), true);
        return logits;
      };
      for (auto [prefix, n] : {std::pair<int64_t, int64_t>{0, 1}, {0, 7}, {0, 64}, {0, 200}, {40, 7}, {40, 64}, {40, 200}}) {
        const auto a = run(AttnPath::PerToken, prefix, n), b = run(AttnPath::Blocked, prefix, n);
        double mx = 0, md = 0;
        for (size_t i = 0; i < a.size(); ++i) {
          mx = std::max(mx, double(std::fabs(a[i])));
          md = std::max(md, double(std::fabs(a[i] - b[i])));
        }
        EXPECT_LT(md, 1e-4 * (mx + 1.0)) << name << " window " << window << " prefix " << prefix << " n " << n;
        EXPECT_GT(mx, 0.0);
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 3 * 2 * 7);
}
