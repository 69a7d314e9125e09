// LLM-FP4's exponent-bias search (llmfp4.cpp): the E2M1 grid with a real-valued bias written out
// from the FP definition (sign, exponent, mantissa; independent of the fp4 table), the search
// against a straightforward double-precision brute force (every candidate's whole-row output error
// d^T H d, no incremental updates), its guarantees, recipes and an end-to-end run.
// (fp4g<G> itself: kernel parity, round trip and corrupt-file rejection in test_formats.cpp.)
#include <algorithm>
#include <cmath>
#include <random>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_quant_util.h"
#include "test_util.h"

using namespace lmpress;
using test::randn;

namespace {

// An E2M1 number (1 sign, E = 2 exponent, M = 1 mantissa bits, subnormals) with the real-valued
// exponent bias b of LLM-FP4, nearest to w: clamp to +-maxval = (2 - 2^-M) 2^(2^E - 1 - b), the
// binade's exponent e = max(floor(log2|w| + b), 1), its step 2^(e - M - b), round to the step.
double e2m1_biased(double w, double b) {
  const int E = 2, M = 1;
  const double maxval = (2.0 - std::ldexp(1.0, -M)) * std::exp2(double((1 << E) - 1) - b);
  const double x = std::clamp(w, -maxval, maxval);
  if (x == 0.0) return 0.0;
  const double e = std::max(std::floor(std::log2(std::fabs(x)) + b), 1.0);
  const double step = std::exp2(e - M - b);
  return std::nearbyint(x / step) * step;
}

// The search written out plainly: per row, min-max init, then for each group in order and each
// round, the candidates {current} + alpha_k * b0 (f16-rounded scale 2^-b) scored by the whole row's
// d^T H d; strict improvement moves. Returns the chosen scales [rows][groups] and dequantized W.
void search_ref(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t group, const std::vector<double>& H,
                int n, int rounds, std::vector<float>* scales, std::vector<double>* dq) {
  const int64_t G = cols / group;
  scales->assign(size_t(rows * G), 0.f);
  dq->assign(w.size(), 0.0);
  auto row_err = [&](const std::vector<double>& d) {
    double e = 0;
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) e += d[size_t(i)] * H[size_t(i * cols + j)] * d[size_t(j)];
    return e;
  };
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> s(static_cast<size_t>(G)), q(static_cast<size_t>(cols)), d(static_cast<size_t>(cols));
    auto requant = [&](int64_t g, double sc) {
      for (int64_t c = g * group; c < (g + 1) * group; ++c) {
        const double wv = w[size_t(r * cols + c)];
        q[size_t(c)] = e2m1_biased(wv, -std::log2(sc));
        d[size_t(c)] = wv - q[size_t(c)];
      }
    };
    std::vector<double> amax(static_cast<size_t>(G), 0.0);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t c = g * group; c < (g + 1) * group; ++c) amax[size_t(g)] = std::max(amax[size_t(g)], std::fabs(double(w[size_t(r * cols + c)])));
      // min-max: maxval = max|w|, i.e. b0 = 2^E - log2(max|w|) + log2(2 - 2^-M) - 1
      const double b0 = 4.0 - std::log2(amax[size_t(g)]) + std::log2(1.5) - 1.0;
      s[size_t(g)] = round_scale_f16(float(std::exp2(-b0)));
      requant(g, s[size_t(g)]);
    }
    for (int round = 0; round < rounds; ++round)
      for (int64_t g = 0; g < G; ++g) {
        const double b0 = 4.0 - std::log2(amax[size_t(g)]) + std::log2(1.5) - 1.0;
        double best = row_err(d), best_s = s[size_t(g)];
        for (int k = 0; k <= n; ++k) {
          const double alpha = 0.01 + k * (1.2 - 0.01) / n;
          const double sc = round_scale_f16(float(std::exp2(-alpha * b0)));
          requant(g, sc);
          const double e = row_err(d);
          if (e < best * (1 - 1e-12)) best = e, best_s = sc;
        }
        s[size_t(g)] = best_s;
        requant(g, best_s);
      }
    for (int64_t g = 0; g < G; ++g) (*scales)[size_t(r * G + g)] = float(s[size_t(g)]);
    for (int64_t c = 0; c < cols; ++c) (*dq)[size_t(r * cols + c)] = q[size_t(c)];
  }
}

// H = X^T X / T of random inputs with uneven channel scales and correlations.
std::vector<double> random_hessian(int64_t cols, int64_t T, uint32_t seed) {
  const std::vector<float> x = randn(size_t(T * cols), seed);
  std::vector<double> sc(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) sc[size_t(j)] = 0.3 + 2.0 * double((j * 37) % 11) / 11.0;
  std::vector<double> H(size_t(cols * cols), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < cols; ++i) {
      const double xi = sc[size_t(i)] * (x[size_t(t * cols + i)] + 0.5 * x[size_t(t * cols + (i + 1) % cols)]);
      for (int64_t j = 0; j < cols; ++j) {
        const double xj = sc[size_t(j)] * (x[size_t(t * cols + j)] + 0.5 * x[size_t(t * cols + (j + 1) % cols)]);
        H[size_t(i * cols + j)] += xi * xj / double(T);
      }
    }
  return H;
}


}  // namespace

// The fp4 table times 2^-b is LLM-FP4's biased E2M1, and min-max is the reference's init.
TEST(Llmfp4, BiasedE2M1IsTheFp4Table) {
  const QuantSpec s = parse_format_name("fp4g32");
  const std::unique_ptr<Grid> grid = make_grid(s);
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(-1.0, 1.0), ub(2.0, 9.0);
  int checked = 0;
  for (int t = 0; t < 2000; ++t) {
    GroupParams p = grid->params(std::vector<float>(32, 0.5f).data(), 32, 1.0f, nullptr);
    p.scale = round_scale_f16(float(std::exp2(-ub(rng))));
    const double b = -std::log2(double(p.scale));
    const float w = float(u(rng) * 14.0 * p.scale);
    const double ref = e2m1_biased(w, b);
    const double q = grid->dequantize(grid->quantize(w, p), p);
    // away from the midpoints between values (ties round differently: to even vs to the lower)
    bool near_tie = false;
    for (int c = 0; c < grid->n_codes(); ++c)
      for (int c2 = 0; c2 < grid->n_codes(); ++c2) {
        const double m = 0.5 * (grid->dequantize(c, p) + grid->dequantize(c2, p));
        if (c != c2 && std::fabs(m - w) < 1e-6 * p.scale) near_tie = true;
      }
    if (near_tie) continue;
    ASSERT_NEAR(q, ref, 1e-12 * std::fabs(ref)) << "w " << w << " bias " << b;  // 2^-b vs the stored scale: ulps
    ++checked;
  }
  EXPECT_GT(checked, 1900);
  // min-max: b0 = log2(12 / max|w|), the fp4 grid's absmax scale
  const std::vector<float> w = randn(32, 3);
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  EXPECT_NEAR(detail::llmfp4_init_bias(amax), 4.0 - std::log2(double(amax)) + std::log2(1.5) - 1.0, 1e-12);
  EXPECT_EQ(grid->params(w.data(), 32, 1.0f, nullptr).scale, round_scale_f16(float(std::exp2(-detail::llmfp4_init_bias(amax)))));
  const std::vector<double> a = detail::llmfp4_alphas(100);
  ASSERT_EQ(a.size(), 101u);
  EXPECT_DOUBLE_EQ(a.front(), 0.01);
  EXPECT_DOUBLE_EQ(a.back(), 1.2);
}

// The search (incremental block errors, one thread and two) against the brute force above.
TEST(Llmfp4, SearchMatchesDoubleBruteForce) {
  const int64_t rows = 7, cols = 64, group = 16;
  std::vector<float> w = randn(size_t(rows * cols), 11, 0.05f);
  for (size_t i = 0; i < w.size(); i += 29) w[i] *= 6.f;  // a few outliers: min-max is not optimal
  const std::vector<double> H = random_hessian(cols, 256, 12);
  const QuantSpec s = parse_format_name("fp4g16");
  for (int rounds : {1, 3}) {
    std::vector<float> ref_scales;
    std::vector<double> ref_dq;
    search_ref(w, rows, cols, group, H, 40, rounds, &ref_scales, &ref_dq);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      Llmfp4Options o;
      o.n = 40;
      o.rounds = rounds;
      double e0 = 0, e1 = 0;
      const QuantizedMatrix q = quantize_llmfp4(w.data(), rows, cols, s, H, o, pool, &e0, &e1);
      int moved = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < cols / group; ++g) {
          EXPECT_EQ(q.scales[size_t(r * (cols / group) + g)], ref_scales[size_t(r * (cols / group) + g)])
              << "row " << r << " group " << g << " rounds " << rounds;
          float amax = 0;
          for (int64_t c = g * group; c < (g + 1) * group; ++c) amax = std::max(amax, std::fabs(w[size_t(r * cols + c)]));
          moved += q.scales[size_t(r * (cols / group) + g)] != round_scale_f16(amax / 12.f);
        }
      EXPECT_GT(moved, 0) << "the search never left min-max";
      const std::vector<float> dq = dequantize_matrix(q);
      for (size_t i = 0; i < dq.size(); ++i) ASSERT_DOUBLE_EQ(double(dq[i]), ref_dq[i]) << "weight " << i;
      // the reported errors are the layer objective before / after, and the search lowered it
      const QuantizedMatrix mm = quantize_rtn(w.data(), rows, cols, s, false, nullptr);
      const std::vector<float> mmq = dequantize_matrix(mm);
      const double ref_e0 = test::proxy_loss(w.data(), std::vector<double>(mmq.begin(), mmq.end()), rows, cols, H);
      EXPECT_NEAR(e0, ref_e0, 1e-9 * ref_e0);
      EXPECT_NEAR(e1, test::proxy_loss(w.data(), ref_dq, rows, cols, H), 1e-9 * ref_e0);
      EXPECT_LT(e1, 0.9 * e0);
    }
  }
}

// Never worse than min-max row by row, whatever the weights' scale (the candidates are relative to
// b0, so large and small weights both get searched), and zero groups stay exact.
TEST(Llmfp4, NeverWorseThanMinMax) {
  const int64_t rows = 12, cols = 128;
  const std::vector<double> H = random_hessian(cols, 300, 21);
  ThreadPool pool(2);
  for (float sigma : {1e-3f, 0.05f, 3.0f}) {
    std::vector<float> w = randn(size_t(rows * cols), 22, sigma);
    std::fill(w.begin() + 32, w.begin() + 64, 0.f);  // row 0, group 1 of fp4g32: all zero
    const QuantSpec s = parse_format_name("fp4g32");
    const QuantizedMatrix q = quantize_llmfp4(w.data(), rows, cols, s, H, Llmfp4Options{}, pool);
    const QuantizedMatrix mm = quantize_rtn(w.data(), rows, cols, s, false, nullptr);
    const std::vector<float> a = dequantize_matrix(q), b = dequantize_matrix(mm);
    for (int64_t c = 32; c < 64; ++c) EXPECT_EQ(a[size_t(c)], 0.f);
    double tot_a = 0, tot_b = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> wr(w.begin() + r * cols, w.begin() + (r + 1) * cols);
      const double ea = test::proxy_loss(wr.data(), std::vector<double>(a.begin() + r * cols, a.begin() + (r + 1) * cols), 1, cols, H);
      const double eb = test::proxy_loss(wr.data(), std::vector<double>(b.begin() + r * cols, b.begin() + (r + 1) * cols), 1, cols, H);
      EXPECT_LE(ea, eb * (1 + 1e-12)) << "sigma " << sigma << " row " << r;
      tot_a += ea, tot_b += eb;
    }
    EXPECT_LT(tot_a, 0.95 * tot_b) << "sigma " << sigma;
  }
}

TEST(Llmfp4, Recipes) {
  const TensorRule r = parse_rule("llmfp4:fp4g64,n=50,rounds=1");
  EXPECT_EQ(r.chain, (std::vector<std::string>{"llmfp4"}));
  EXPECT_EQ(r.llmfp4.n, 50);
  EXPECT_EQ(r.llmfp4.rounds, 1);
  EXPECT_EQ(parse_rule("llmfp4:fp4g128").llmfp4.n, 100);
  EXPECT_TRUE(parse_recipe("llmfp4:fp4g64").needs_calibration());
  EXPECT_NO_THROW(parse_recipe("llmfp4:fp4g32+s0.50"));
  test::expect_recipes_refused({{"llmfp4:w4g64", "fp4g<G>"}, {"llmfp4:mxfp4", "fp4g<G>"},
                                {"llmfp4:fp4g64,n=0", "n must be"}, {"llmfp4:fp4g64,n=2.5", "n must be"},
                                {"llmfp4:fp4g64,rounds=x", "rounds must be"}, {"llmfp4:fp4g64,mse", "mse"},
                                {"llmfp4+gptq:fp4g64", "llmfp4"}});
}

// End to end on babyllama: the searched biases land in the file's fp4 scales and beat min-max
// fp4 (rtn) in KLD.
TEST(Llmfp4, EndToEndOnBabyllama) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.oneline.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.oneline.txt");
  Model m = load_model(test::shared("models/babyllama-936k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.oneline.txt")), true);
  auto run = [&](const std::string& recipe) {
    return test::quantized_kld(m, toks, recipe + ";token_embd.weight=rtn:w8g32",
                               test::shared("data/tinystories/calib.oneline.txt"), 8);
  };
  const double searched = run("llmfp4:fp4g64,rounds=1"), minmax = run("rtn:fp4g64");
  std::printf("[ llmfp4   ] babyllama KLD: llmfp4 fp4g64 %.4f, rtn fp4g64 %.4f\n", searched, minmax);
  EXPECT_LT(searched, minmax);
}

// The fp family's minifloats (fp4.cpp) against their definition: sign, E exponent bits, M mantissa
// bits, bias 2^(E-1) - 1, subnormals (exponent field 0: m / 2^M * 2^(1 - bias)), normals
// ((1 + m / 2^M) * 2^(e - bias)); the table is the magnitudes over the smallest subnormal step.
// Every code's value and the nearest rounding of random weights.
TEST(Llmfp4, MinifloatTablesMatchTheirDefinition) {
  struct V {
    const char* name;
    int E, M;
  };
  for (const V v : {V{"fp4g32", 2, 1}, V{"fp4e3m0g32", 3, 0}, V{"fp4e1m2g32", 1, 2}, V{"fp3g32", 2, 0}, V{"fp3e1m1g32", 1, 1}}) {
    const QuantSpec s = parse_format_name(v.name);
    const int bits = 1 + v.E + v.M;
    ASSERT_EQ(s.bits, bits) << v.name;
    const double bias = std::exp2(v.E - 1) - 1;
    std::vector<double> mags;  // by code: exponent field << M | mantissa
    for (int code = 0; code < (1 << (v.E + v.M)); ++code) {
      const int e = code >> v.M, m = code & ((1 << v.M) - 1);
      mags.push_back(e == 0 ? double(m) / std::exp2(v.M) * std::exp2(1 - bias)
                            : (1 + double(m) / std::exp2(v.M)) * std::exp2(e - bias));
    }
    const double unit = std::exp2(1 - bias - v.M);  // the subnormal step (E3M0: no subnormals but 0)
    const auto grid = make_grid(s);
    const float one = 1.f;
    GroupParams p = grid->params(&one, 1, 1.0f, nullptr);
    p.scale = 1.f;
    ASSERT_EQ(grid->n_codes(), 1 << bits) << v.name;
    for (int code = 0; code < (1 << bits); ++code) {
      const double sign = code >> (bits - 1) ? -1.0 : 1.0;
      const double want = sign * mags[size_t(code & ((1 << (bits - 1)) - 1))] / (v.M == 0 ? mags[1] : unit);
      EXPECT_EQ(double(grid->dequantize(code, p)), want) << v.name << " code " << code;
    }
    // nearest rounding at the min-max scale (absmax -> the largest magnitude)
    std::vector<float> w = randn(64, 5, 1.0f);
    const GroupParams pm = grid->params(w.data(), 64, 1.0f, nullptr);
    for (float x : w) {
      double best = INFINITY;
      for (int code = 0; code < (1 << bits); ++code) best = std::min(best, std::fabs(double(grid->dequantize(code, pm)) - x));
      EXPECT_NEAR(std::fabs(double(grid->dequantize(grid->quantize(x, pm), pm)) - x), best, 1e-7) << v.name << " " << x;
    }
  }
}

// `search`: every split of the bit width is searched and the one of least layer output error kept,
// so the result is never worse than any single split, and the file records the chosen split.
TEST(Llmfp4, FormatSearchKeepsTheBestSplit) {
  const int64_t rows = 16, cols = 128;
  const std::vector<double> H = random_hessian(cols, 300, 31);
  ThreadPool pool(2);
  for (const char* base : {"fp4g32", "fp3g32"}) {
    for (int kind = 0; kind < 2; ++kind) {
      // Gaussian weights, and signed powers of two 2^-k, k uniform in 0..6 (E3M0 holds them exactly)
      std::vector<float> w = randn(size_t(rows * cols), 41, 0.05f);
      if (kind == 1) {
        std::mt19937 rng(42);
        for (float& x : w) x = (x < 0 ? -0.1f : 0.1f) * std::ldexp(1.f, -int(rng() % 7));
      }
      TensorRule r = parse_rule(std::string("llmfp4:") + base + ",search,rounds=1,n=30");
      ASSERT_TRUE(r.llmfp4.search);
      RoundArgs a;
      a.w = w.data();
      a.rows = rows;
      a.cols = cols;
      a.rule = &r;
      a.H = &H;
      a.pool = &pool;
      const QuantizedMatrix q = find_method("llmfp4").round(a);
      const std::vector<float> dq = dequantize_matrix(q);
      const double e = test::proxy_loss(w.data(), std::vector<double>(dq.begin(), dq.end()), rows, cols, H);
      double best = INFINITY;
      QuantSpec best_spec;
      for (int eb : {0, 1, 3}) {
        QuantSpec c = r.spec;
        c.variant = eb;
        if (std::string(base) == "fp3g32" && eb == 3) continue;
        const QuantizedMatrix qc = quantize_llmfp4(w.data(), rows, cols, c, H, r.llmfp4, pool);
        const std::vector<float> dc = dequantize_matrix(qc);
        const double ec = test::proxy_loss(w.data(), std::vector<double>(dc.begin(), dc.end()), rows, cols, H);
        if (ec < best) {
          best = ec;
          best_spec = c;
        }
      }
      EXPECT_EQ(q.spec, best_spec) << base << " kind " << kind;
      EXPECT_NEAR(e, best, 1e-9 * best) << base << " kind " << kind;
      if (kind == 1 && std::string(base) == "fp4g32") {
        EXPECT_EQ(q.spec.variant, 3) << "cubed Gaussians: E3M0 expected";
      }
    }
  }
  test::expect_recipes_refused({{"llmfp4:fp4g64,search=1", "search"}});
}
