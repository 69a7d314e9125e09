// QuantEase: one coordinate-descent pass against a plain double-precision implementation, the
// objective never increasing across passes, never worse than its GPTQ init, recipe options.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "lmpress/compress.h"
#include "test_util.h"

using namespace lmpress;

namespace {
using test::randn;

// H = mean X^T X of AR(1)-correlated inputs with unequal column scales and one dead column.
std::vector<double> correlated_hessian(int64_t n, uint32_t seed, int64_t dead = 5) {
  const int64_t m = 4 * n;
  auto z = randn(size_t(m * n), seed);
  std::vector<float> x(z.size());
  for (int64_t t = 0; t < m; ++t) {
    float prev = 0;
    for (int64_t j = 0; j < n; ++j) {
      prev = 0.8f * prev + z[size_t(t * n + j)];
      x[size_t(t * n + j)] = prev * (1.f + float(j % 7));
    }
    if (dead >= 0) x[size_t(t * n + dead)] = 0.f;
  }
  ThreadPool pool(1);
  HessianAccumulator acc(n);
  acc.add(x.data(), m, pool);
  return acc.mean();
}

// tr(D H D^T) / rows in double.
double objective(const std::vector<float>& w, const QuantizedMatrix& q, const std::vector<double>& H) {
  const auto dq = dequantize_matrix(q);
  const int64_t rows = q.rows, n = q.cols;
  double f = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      const double di = double(w[size_t(r * n + i)]) - dq[size_t(r * n + i)];
      if (di == 0) continue;
      for (int64_t j = 0; j < n; ++j) f += di * H[size_t(i * n + j)] * (double(w[size_t(r * n + j)]) - dq[size_t(r * n + j)]);
    }
  return f / double(rows);
}

// One QuantEase pass written plainly: for each column j in `order`, each row's weight becomes the
// grid value nearest W_j + sum_{k != j} (W_k - Q_k) H_kj / H_jj (sums in double, from scratch),
// moved only when strictly closer to that optimum than the current value.
QuantizedMatrix naive_pass(const std::vector<float>& w, QuantizedMatrix q, const std::vector<double>& H,
                           const std::vector<int64_t>& order) {
  const auto grid = make_grid(q.spec);
  const int64_t rows = q.rows, n = q.cols, g = q.group_len();
  std::vector<double> Q(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) Q[size_t(r * n + j)] = grid->dequantize(q.q[size_t(r * n + j)], q.params(r, j / g));
  for (int64_t j : order) {
    const double hjj = H[size_t(j * n + j)];
    if (hjj == 0) continue;
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k)
        if (k != j) s += (double(w[size_t(r * n + k)]) - Q[size_t(r * n + k)]) * H[size_t(k * n + j)];
      const double u = double(w[size_t(r * n + j)]) + s / hjj;
      const GroupParams p = q.params(r, j / g);
      const int32_t code = grid->quantize(float(u), p);
      const double v = grid->dequantize(code, p);
      if (std::fabs(v - u) < std::fabs(Q[size_t(r * n + j)] - u)) {
        Q[size_t(r * n + j)] = v;
        q.q[size_t(r * n + j)] = uint8_t(code);
      }
    }
  }
  return q;
}
}  // namespace

TEST(QuantEase, OnePassMatchesPlainDouble) {
  const int64_t rows = 24, n = 96;
  const auto H = correlated_hessian(n, 3);
  const auto w = randn(size_t(rows * n), 4, 0.1f);
  ThreadPool pool(2);
  std::vector<QuantSpec> specs = {QuantSpec{3, 32, true}, QuantSpec{4, 0, false}, QuantSpec{2, 16, false},
                                  parse_format_name("nf4g32"), parse_format_name("lut3"), parse_format_name("fp8g32")};
  for (const QuantSpec& s : specs)
    for (bool act_order : {false, true}) {
      const QuantizedMatrix init = quantize_rtn(w.data(), rows, n, s, false, nullptr);
      const QuantizedMatrix got = quantease_refine(w.data(), rows, n, init, H, 1, act_order, pool);
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), int64_t(0));
      if (act_order)
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t a, int64_t b) { return H[size_t(a * n + a)] > H[size_t(b * n + b)]; });
      const QuantizedMatrix want = naive_pass(w, init, H, order);
      int64_t same = 0, moved = 0;
      for (size_t i = 0; i < got.q.size(); ++i) {
        same += got.q[i] == want.q[i];
        moved += want.q[i] != init.q[i];
      }
      const std::string what = format_name(s) + (act_order ? " act_order" : "");
      std::printf("[ quantease] %s: %.2f%% codes as the plain pass, %.2f%% moved\n", what.c_str(),
                  100.0 * double(same) / double(got.q.size()), 100.0 * double(moved) / double(got.q.size()));
      // Float G vs double sums: codes differ only at near-ties (then a row's trajectory differs).
      EXPECT_GE(double(same) / double(got.q.size()), 0.995) << what;
      EXPECT_GT(moved, int64_t(got.q.size() / 50)) << what << ": the pass should change codes";
      EXPECT_EQ(got.scales, init.scales) << what << ": params are fixed by the init";
      EXPECT_EQ(got.zeros, init.zeros) << what;
      EXPECT_EQ(got.table, init.table) << what;
      EXPECT_NEAR(objective(w, got, H), objective(w, want, H), 1e-3 * objective(w, want, H)) << what;
      // the dead column keeps its init codes
      for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(got.q[size_t(r * n + 5)], init.q[size_t(r * n + 5)]) << what;
    }
}

TEST(QuantEase, ObjectiveNeverIncreasesAndBeatsItsInit) {
  const int64_t rows = 32, n = 128;
  const auto H = correlated_hessian(n, 9);
  auto w = randn(size_t(rows * n), 10, 0.05f);
  for (int64_t r = 0; r < rows; ++r) w[size_t(r * n + (r * 7) % n)] = 0.4f;  // a few large weights
  ThreadPool pool(2);
  for (const QuantSpec& s : {QuantSpec{3, 64, true}, QuantSpec{4, 128, false}, QuantSpec{2, 32, false},
                             parse_format_name("nf4g64"), parse_format_name("lut4")})
    for (bool from_gptq : {true, false}) {
      const QuantizedMatrix init = from_gptq ? quantize_gptq(w.data(), rows, n, s, H, GptqOptions{}, pool)
                                             : quantize_rtn(w.data(), rows, n, s, false, nullptr);
      std::vector<double> f;
      const QuantizedMatrix q = quantease_refine(w.data(), rows, n, init, H, 12, false, pool, &f);
      const std::string what = format_name(s) + (from_gptq ? " from gptq" : " from rtn");
      ASSERT_EQ(f.size(), 13u) << what;
      std::printf("[ quantease] %s: objective %.5g -> %.5g (rtn %.5g)\n", what.c_str(), f.front(), f.back(),
                  objective(w, quantize_rtn(w.data(), rows, n, s, false, nullptr), H));
      for (size_t i = 1; i < f.size(); ++i) EXPECT_LE(f[i], f[i - 1] * (1 + 1e-6)) << what << " pass " << i;
      // the reported objectives are the layer objective (float products vs double)
      EXPECT_NEAR(f.front(), objective(w, init, H), 1e-4 * f.front()) << what;
      EXPECT_NEAR(f.back(), objective(w, q, H), 1e-4 * f.back()) << what;
      EXPECT_NEAR(f.back(), layer_error(w.data(), q, H), 1e-4 * f.back()) << what;
      EXPECT_LT(f.back(), f.front() * (from_gptq ? 0.99 : 0.8)) << what;
    }
  // iters = 0 returns the init unchanged.
  const QuantizedMatrix init = quantize_rtn(w.data(), rows, n, QuantSpec{3, 32, true}, false, nullptr);
  EXPECT_EQ(quantease_refine(w.data(), rows, n, init, H, 0, false, pool).q, init.q);
}

TEST(QuantEase, RejectsBadInput) {
  const int64_t rows = 4, n = 16;
  const auto H = correlated_hessian(n, 1, -1);
  auto w = randn(size_t(rows * n), 2);
  ThreadPool pool(1);
  const QuantizedMatrix init = quantize_rtn(w.data(), rows, n, QuantSpec{4, 16, true}, false, nullptr);
  EXPECT_THROW(quantease_refine(w.data(), rows, n, init, std::vector<double>(10), 1, false, pool), Error);
  EXPECT_THROW(quantease_refine(w.data(), rows, n + 16, init, correlated_hessian(n + 16, 1, -1), 1, false, pool), Error);
  EXPECT_THROW(quantease_refine(w.data(), rows, n, init, H, -1, false, pool), Error);
  auto bad = H;
  bad[3] = NAN;
  EXPECT_THROW(quantease_refine(w.data(), rows, n, init, bad, 1, false, pool), Error);
}

TEST(QuantEase, RecipeOptions) {
  const TensorRule a = parse_rule("quantease:w3g64");
  EXPECT_EQ(a.chain, (std::vector<std::string>{"quantease"}));
  EXPECT_EQ(a.quantease.iters, 30);
  EXPECT_FALSE(a.quantease.init_rtn);
  EXPECT_EQ(a.stats() & kStatHessian, kStatHessian);
  const TensorRule b = parse_rule("quantease:w4g128,iters=5,act_order,mse,damp=0.05");
  EXPECT_EQ(b.quantease.iters, 5);
  EXPECT_TRUE(b.gptq.act_order);
  EXPECT_TRUE(b.gptq.mse);
  EXPECT_DOUBLE_EQ(b.gptq.damp, 0.05);
  const TensorRule c = parse_rule("quantease:w3g64,init=rtn,clip");
  EXPECT_TRUE(c.quantease.init_rtn);
  EXPECT_TRUE(c.clip);
  EXPECT_EQ(parse_rule("awq+quantease:nf4g64").chain, (std::vector<std::string>{"awq", "quantease"}));
  EXPECT_EQ(parse_rule("smoothquant+quantease:w4g128").chain, (std::vector<std::string>{"smoothquant", "quantease"}));
  EXPECT_EQ(parse_rule("squeezellm+quantease:lut3").chain, (std::vector<std::string>{"squeezellm", "quantease"}));
  EXPECT_TRUE(parse_recipe("quantease:w3g64").needs_calibration());
  for (const auto& [text, needle] : std::vector<std::pair<std::string, std::string>>{
           {"quantease:w3g64,init=awq", "init is gptq or rtn"},
           {"quantease:w3g64,iters=-1", "iters"},
           {"quantease:w3g64,iters=2.5", "iters"},
           {"quantease:w3g64,clip", "init=rtn"},
           {"quantease:w3g64,init=rtn,damp=0.1", "do not apply with init=rtn"},
           {"quantease:lut3,mse", "no range"},
           {"quantease+gptq:w3g64", "must come last"},
           {"rtn:w3g64,iters=3", "it is an option of quantease"}}) {
    try {
      parse_recipe(text);
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << text << ": " << e.what();
    }
  }
}
