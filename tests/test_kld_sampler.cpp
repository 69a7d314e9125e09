// KL divergence direction (llama.cpp's --kl-divergence: KL(base || model), averaged over the
// scored tokens) checked against a double-precision computation from both models' logits, on a
// model pair where the two directions differ; and the sampler (greedy, temperature, nucleus,
// seeds) against the distribution it must draw from.
#include <cmath>
#include <map>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;

namespace {
std::vector<double> log_softmax_d(const float* x, int64_t n) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(x[i]));
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(x[i]) - mx);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = double(x[i]) - mx - std::log(s);
  return out;
}
}  // namespace

TEST(Kld, DirectionIsBaseToModelAndMatchesDouble) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  QuantizeOptions qo;
  qo.recipe = parse_recipe("rtn:w2g64");  // far from the base: the two directions differ clearly
  qo.progress = false;
  Model q = quantize_model(m, qo, nullptr);
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  PerplexityOptions po;
  po.n_ctx = 64;
  po.max_chunks = 2;
  po.n_threads = 1;
  po.progress = false;
  po.base = &m;
  const PerplexityResult fwd = perplexity(q, toks, po);  // KL(m || q)
  po.base = &q;
  const PerplexityResult rev = perplexity(m, toks, po);  // KL(q || m)
  // The same quantities from both models' logits, in double.
  const int64_t V = m.cfg.vocab_size, n = po.n_ctx;
  double kl_mq = 0, kl_qm = 0;
  int64_t count = 0;
  for (int64_t c = 0; c < po.max_chunks; ++c) {
    std::vector<int32_t> chunk(toks.begin() + c * n, toks.begin() + (c + 1) * n);
    chunk[0] = m.tokenizer->bos();
    std::vector<float> lm(size_t(n * V)), lq(size_t(n * V));
    EngineOptions eo;
    eo.n_threads = 1;
    eo.n_ctx = int32_t(n);
    Engine em(m, eo), eq(q, eo);
    em.forward(chunk.data(), n, 0, lm.data(), true);
    eq.forward(chunk.data(), n, 0, lq.data(), true);
    for (int64_t j = n / 2; j < n - 1; ++j) {
      const auto a = log_softmax_d(lm.data() + j * V, V), b = log_softmax_d(lq.data() + j * V, V);
      for (int64_t i = 0; i < V; ++i) {
        kl_mq += std::exp(a[size_t(i)]) * (a[size_t(i)] - b[size_t(i)]);
        kl_qm += std::exp(b[size_t(i)]) * (b[size_t(i)] - a[size_t(i)]);
      }
      ++count;
    }
  }
  kl_mq /= double(count);
  kl_qm /= double(count);
  EXPECT_EQ(fwd.scored_tokens, count);
  EXPECT_NEAR(fwd.kld, kl_mq, 1e-4 * kl_mq);
  EXPECT_NEAR(rev.kld, kl_qm, 1e-4 * kl_qm);
  EXPECT_GT(std::fabs(kl_mq - kl_qm), 0.05 * kl_mq) << "pick a pair where the direction matters";
}

TEST(Sampler, GreedyTemperatureNucleusAndSeeds) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, -1.0f, 2.5f};
  // greedy
  Sampler g({0.0f, 1.0f, 7});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(g.sample(logits.data(), 5), 1);
  // temperature 1, no nucleus: frequencies follow softmax(logits)
  std::vector<double> p(5);
  double z = 0;
  for (int i = 0; i < 5; ++i) z += std::exp(double(logits[size_t(i)]));
  for (int i = 0; i < 5; ++i) p[size_t(i)] = std::exp(double(logits[size_t(i)])) / z;
  Sampler s({1.0f, 1.0f, 123});
  std::map<int, int> hist;
  const int N = 40000;
  for (int i = 0; i < N; ++i) hist[s.sample(logits.data(), 5)]++;
  for (int i = 0; i < 5; ++i) {
    const double f = double(hist[i]) / N, sd = std::sqrt(p[size_t(i)] * (1 - p[size_t(i)]) / N);
    EXPECT_NEAR(f, p[size_t(i)], 5 * sd + 1e-4) << "token " << i;
  }
  // nucleus: top_p below the largest probability keeps only the argmax; 0.8 keeps {1, 4, 2}
  Sampler t({1.0f, 0.3f, 5});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(t.sample(logits.data(), 5), 1);
  Sampler u({1.0f, 0.8f, 5});
  for (int i = 0; i < 2000; ++i) {
    const int k = u.sample(logits.data(), 5);
    EXPECT_TRUE(k == 1 || k == 4 || k == 2) << k;
  }
  // low temperature concentrates on the argmax; the same seed gives the same sequence
  Sampler cold({0.05f, 1.0f, 9});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(cold.sample(logits.data(), 5), 1);
  Sampler a({1.0f, 0.95f, 42}), b({1.0f, 0.95f, 42});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(logits.data(), 5), b.sample(logits.data(), 5));
}
