// The method registry and its first citizens beyond RTN/GPTQ: recipe chains and option
// validation, statistics collectors (against a double-precision computation), AWQ's scale search
// and fold (against a plain double implementation of the same search, and function preservation),
// SqueezeLLM's weighted k-means, streaming output (byte-identical to the in-memory writer), and the
// engine reading norm weights through the model's tensors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>

#include "algo/pipeline_internal.h"
#include "formats/traits.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;

namespace {
using test::randn;
std::string tmp(const std::string& n) { return test::tmp_dir() + "/lmpress_m_" + std::to_string(::getpid()) + "_" + n; }

void expect_recipe_error(const std::string& text, const std::string& needle) {
  try {
    parse_recipe(text);
    ADD_FAILURE() << "accepted '" << text << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << text << ": " << e.what();
  }
}
}  // namespace

TEST(Methods, RegistryAndChains) {
  for (const char* m : {"rtn", "gptq", "quantease", "squeezellm", "awq", "smoothquant", "easyquant"})
    EXPECT_EQ(std::string(find_method(m).name), m);
  EXPECT_FALSE(parse_recipe("easyquant:w3g64+s0.5,steps=10").needs_calibration());
  expect_recipe_error("easyquant:lut3", "no range");
  expect_recipe_error("easyquant:w3g64,steps=-1", "steps");
  expect_recipe_error("quantease:w3g64+s0.5", "sparse outliers");
  EXPECT_THROW(find_method("bitnet"), Error);
  const TensorRule a = parse_rule("awq+gptq:w4g128,act_order,grid=10,noclip");
  EXPECT_EQ(a.chain, (std::vector<std::string>{"awq", "gptq"}));
  EXPECT_EQ(a.rounding(), "gptq");
  EXPECT_TRUE(a.gptq.act_order);
  EXPECT_EQ(a.awq.grid, 10);
  EXPECT_FALSE(a.awq.clip);
  EXPECT_EQ(a.stats() & kStatHessian, kStatHessian);
  EXPECT_EQ(parse_rule("awq:w4g64").chain, (std::vector<std::string>{"awq", "rtn"}));
  EXPECT_EQ(parse_rule("squeezellm:lut3").spec.family, FormatFamily::Lut);
  EXPECT_EQ(parse_rule("gptq:nf4g64,mse").spec.family, FormatFamily::NF4);
  EXPECT_TRUE(parse_recipe("awq+gptq:w4g128").has_transforms());
  EXPECT_FALSE(parse_recipe("gptq:w4g128").has_transforms());
  EXPECT_TRUE(parse_recipe("squeezellm:lut4").needs_calibration());
  EXPECT_FALSE(parse_recipe("rtn:nf4g64;token_embd.weight=rtn:fp8row").needs_calibration());
  // Options go to the method that takes them; one that no method of the chain takes is an error.
  expect_recipe_error("rtn:w4g32,damp=0.1", "it is an option of gptq");
  expect_recipe_error("gptq:w4g32,grid=5", "it is an option of awq");
  expect_recipe_error("gptq:w4g32,foo", "does not apply");
  expect_recipe_error("gptq+awq:w4g32", "must come last");
  expect_recipe_error("awq+awq:w4g32", "twice");
  expect_recipe_error("squeezellm:w4g32", "lut3 or lut4");
  // squeezellm may precede gptq only (it then fits the tables gptq rounds onto).
  EXPECT_EQ(parse_rule("squeezellm+gptq:lut3,act_order").chain, (std::vector<std::string>{"squeezellm", "gptq"}));
  expect_recipe_error("squeezellm+rtn:lut3", "right before gptq");
  expect_recipe_error("gptq+squeezellm:lut3", "must come last");
  expect_recipe_error("squeezellm+gptq:w3g64", "lut3 or lut4");
  expect_recipe_error("rtn:lut4,clip", "no range");
  expect_recipe_error("gptq:lut4,mse", "no range");
  expect_recipe_error("awq+gptq:w4g32,grid=0", "grid");
  expect_recipe_error("bitnet:w3g16", "unknown method");
  expect_recipe_error("spqr:w3g16", "spqr quantizes onto its own formats");
  expect_recipe_error(":w4g32", "missing method");  // (found by fuzz_recipe: an empty chain)
  expect_recipe_error(" :w4g32", "missing method");
  expect_recipe_error("+:w4g32", "empty method name");
  expect_recipe_error("gptq:w4g32;x=:w4g32", "missing method");
  expect_recipe_error("gptq:w4g32;blk.*.ffn_down=gptq:nf5g32", "nf5g32");
}

TEST(Methods, RecipeFileUnknownKeysAreErrors) {
  const std::string path = tmp("recipe.json");
  auto expect = [&](const std::string& json, const std::string& needle) {
    {
      std::ofstream f(path);
      f << json;
    }
    try {
      load_recipe_file(path);
      ADD_FAILURE() << "accepted " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  expect(R"({"default": "gptq:w4g32", "overides": []})", "overides");
  expect(R"({"default": "gptq:w4g32", "overrides": [{"pattern": "blk.0.*", "rule": "rtn:w8g32", "prio": 1}]})", "prio");
  expect(R"({"default": "rtn:w4g32,damp=0.1"})", "it is an option of gptq");
  {
    std::ofstream f(path);
    f << R"({"default": "awq+gptq:w4g128", "overrides": [{"pattern": "token_embd.weight", "rule": "gptq:w8g32"}]})";
  }
  EXPECT_EQ(load_recipe_file(path).text, "awq+gptq:w4g128;token_embd.weight=gptq:w8g32");
  std::remove(path.c_str());
}

TEST(Methods, OverrideMatchingNoTensorIsAnError) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  QuantizeOptions qo;
  qo.progress = false;
  qo.recipe = parse_recipe("rtn:w4g32;*.ffn_down=rtn:w8g32");
  try {
    quantize_model(m, qo, nullptr);
    ADD_FAILURE() << "an override without .weight matched nothing but was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("*.ffn_down"), std::string::npos) << e.what();
  }
  qo.recipe = parse_recipe("rtn:w4g32;*.ffn_down.weight=rtn:w8g32;output.weight=rtn:w6g32");  // tied: ok
  EXPECT_NO_THROW(quantize_model(m, qo, nullptr));
}

TEST(Methods, StatisticsMatchDouble) {
  const int64_t n = 37, rows = 300;
  auto x = randn(size_t(rows * n), 3, 2.f);
  ThreadPool pool(2);
  StatsCollector c(n, kStatHessian | kStatDiag | kStatMeanAbs | kStatMaxAbs | kStatTokenNorms | kStatSamples, rows);
  c.add(x.data(), 100, pool);
  c.add(x.data() + 100 * n, rows - 100, pool);
  const InputStats s = c.finish();
  EXPECT_EQ(s.count, rows);
  ASSERT_EQ(s.H.size(), size_t(n * n));
  ASSERT_EQ(s.token_norms.size(), size_t(rows));
  EXPECT_EQ(s.sample_rows, rows);  // below kMaxSampleRows: every row kept
  for (int64_t i = 0; i < n; ++i) {
    double d = 0, ma = 0, mx = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double v = x[size_t(r * n + i)];
      d += v * v;
      ma += std::fabs(v);
      mx = std::max(mx, std::fabs(v));
      double h = 0;
      (void)h;
    }
    EXPECT_NEAR(s.diag[size_t(i)], d / rows, 1e-12 * d);
    EXPECT_NEAR(s.H[size_t(i * n + i)], d / rows, 1e-12 * d);
    EXPECT_NEAR(s.mean_abs[size_t(i)], ma / rows, 1e-12 * ma);
    EXPECT_EQ(s.max_abs[size_t(i)], mx);
    for (int64_t j = 0; j < n; ++j) {
      double h = 0;
      for (int64_t r = 0; r < rows; ++r) h += double(x[size_t(r * n + i)]) * x[size_t(r * n + j)];
      EXPECT_NEAR(s.H[size_t(i * n + j)], h / rows, 1e-10);
    }
  }
  for (int64_t r = 0; r < rows; r += 17) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[size_t(r * n + i)]) * x[size_t(r * n + i)];
    EXPECT_NEAR(s.token_norms[size_t(r)], std::sqrt(ss), 1e-9);
  }
  EXPECT_EQ(0, std::memcmp(s.samples.data(), x.data(), x.size() * 4));
  // Subsampling keeps at most kMaxSampleRows rows, evenly spread.
  StatsCollector big(4, kStatSamples, 10000);
  std::vector<float> xb(10000 * 4);
  for (size_t i = 0; i < xb.size(); ++i) xb[i] = float(i / 4);
  big.add(xb.data(), 10000, pool);
  const InputStats sb = big.finish();
  EXPECT_LE(sb.sample_rows, InputStats::kMaxSampleRows);
  EXPECT_GE(sb.sample_rows, 3000);
  EXPECT_EQ(sb.samples[4], 3.f);  // every 3rd row
  EXPECT_THROW(StatsCollector(4, kStatFisher, 10), Error);
}

namespace {
// Plain double-precision AWQ scale search: the loss of every alpha, as the method defines it.
std::vector<double> awq_losses_double(const std::vector<float>& X, int64_t m, int64_t n, const std::vector<float>& W,
                                      int64_t rows, const std::vector<double>& mean_abs, const QuantSpec& spec, int grid) {
  std::vector<double> out;
  for (int k = 0; k < grid; ++k) {
    const double alpha = double(k) / grid;
    std::vector<double> s(static_cast<size_t>(n));
    double smax = 0, smin = INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      s[size_t(j)] = std::max(std::pow(mean_abs[size_t(j)], alpha), 1e-4);
      smax = std::max(smax, s[size_t(j)]);
      smin = std::min(smin, s[size_t(j)]);
    }
    for (double& v : s) v /= std::sqrt(smax * smin);
    std::vector<float> ws(W.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) ws[size_t(r * n + j)] = W[size_t(r * n + j)] * float(s[size_t(j)]);
    const auto dq = dequantize_matrix(quantize_rtn(ws.data(), rows, n, spec, false, nullptr));
    double loss = 0;
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double y = 0, yq = 0;
        for (int64_t j = 0; j < n; ++j) {
          y += double(X[size_t(t * n + j)]) * W[size_t(r * n + j)];
          yq += double(X[size_t(t * n + j)]) / s[size_t(j)] * dq[size_t(r * n + j)];
        }
        loss += (y - yq) * (y - yq);
      }
    out.push_back(loss / double(m * rows));
  }
  return out;
}
}  // namespace

TEST(Methods, AwqScaleSearchMatchesDoubleAndPreservesFunction) {
  const int64_t n = 64, rows = 48, m = 200;
  auto X = randn(size_t(m * n), 7);
  // a few outlier input channels, as in LLM activations
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j : {3, 17, 40}) X[size_t(t * n + j)] *= 25.f;
  auto W = randn(size_t(rows * n), 8, 0.05f);
  ThreadPool pool(2);
  StatsCollector col(n, kStatMeanAbs | kStatSamples | kStatHessian, m);
  col.add(X.data(), m, pool);
  const InputStats st = col.finish();

  Model model;
  Tensor norm = make_f32_tensor("blk.0.attn_norm.weight", {n}, randn(size_t(n), 9, 1.f));
  Tensor w = make_f32_tensor("blk.0.ffn_up.weight", {rows, n}, W);
  const TensorRule rule = parse_rule("awq:w3g32,noclip");
  StepContext ctx{model};
  ctx.input = "ffn_in";
  ctx.readers = {&w};
  ctx.rules = {&rule};
  ctx.rule = &rule;
  ctx.stats = &st;
  ctx.norm = &norm;
  ctx.pool = &pool;
  const std::vector<float> g0 = tensor_to_f32(norm);
  find_method("awq").transform(ctx);
  ASSERT_NE(ctx.note.find("alpha"), std::string::npos) << ctx.note;

  // The alpha it chose is the minimum of the double-precision losses.
  const auto losses = awq_losses_double(X, m, n, W, rows, st.mean_abs, rule.spec, rule.awq.grid);
  const size_t best = size_t(std::min_element(losses.begin(), losses.end()) - losses.begin());
  char want[32];
  std::snprintf(want, sizeof want, "alpha %.2f", double(best) / rule.awq.grid);
  EXPECT_NE(ctx.note.find(want), std::string::npos) << ctx.note << " vs " << want;
  EXPECT_LT(losses[best], losses[0] * 0.9) << "outlier channels: scaling should help clearly";

  // Function preserved: (x * g / s) . (W s)^T == (x * g) . W^T.
  const auto g1 = tensor_to_f32(norm), w1 = tensor_to_f32(w);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double y0 = 0, y1 = 0, mag = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double x = X[size_t(t * n + j)];
        y0 += x * g0[size_t(j)] * W[size_t(r * n + j)];
        y1 += x * g1[size_t(j)] * w1[size_t(r * n + j)];
        mag += std::fabs(x * g0[size_t(j)] * W[size_t(r * n + j)]);
      }
      ASSERT_NEAR(y1, y0, 1e-5 * mag);
    }
}

namespace {
// Plain double-precision SmoothQuant+ search: the loss of "no smoothing" and of every alpha on the
// grid, s_j = max|x_j|^alpha / max|w_j|^(1-alpha) over all readers (s_j = 1 for a zero channel).
std::vector<double> smooth_losses_double(const std::vector<float>& X, int64_t m, int64_t n,
                                         const std::vector<std::vector<float>>& Ws, const std::vector<int64_t>& rows,
                                         const std::vector<double>& xmax, const QuantSpec& spec, int grid) {
  std::vector<double> wmax(static_cast<size_t>(n), 0.0);
  for (size_t t = 0; t < Ws.size(); ++t)
    for (int64_t r = 0; r < rows[t]; ++r)
      for (int64_t j = 0; j < n; ++j) wmax[size_t(j)] = std::max(wmax[size_t(j)], std::fabs(double(Ws[t][size_t(r * n + j)])));
  std::vector<double> out;
  for (int k = -1; k <= grid; ++k) {
    std::vector<double> s(static_cast<size_t>(n), 1.0);
    if (k >= 0) {
      const double alpha = double(k) / grid;
      for (int64_t j = 0; j < n; ++j)
        if (xmax[size_t(j)] > 0 && wmax[size_t(j)] > 0)
          s[size_t(j)] = std::max(std::pow(xmax[size_t(j)], alpha) / std::pow(wmax[size_t(j)], 1 - alpha), 1e-5);
    }
    double loss = 0;
    int64_t count = 0;
    for (size_t t = 0; t < Ws.size(); ++t) {
      const auto& W = Ws[t];
      std::vector<float> ws(W.size());
      for (int64_t r = 0; r < rows[t]; ++r)
        for (int64_t j = 0; j < n; ++j) ws[size_t(r * n + j)] = W[size_t(r * n + j)] * float(s[size_t(j)]);
      const auto dq = dequantize_matrix(quantize_rtn(ws.data(), rows[t], n, spec, false, nullptr));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < rows[t]; ++r) {
          double y = 0, yq = 0;
          for (int64_t j = 0; j < n; ++j) {
            y += double(X[size_t(i * n + j)]) * W[size_t(r * n + j)];
            yq += double(X[size_t(i * n + j)]) / s[size_t(j)] * dq[size_t(r * n + j)];
          }
          loss += (y - yq) * (y - yq);
          ++count;
        }
    }
    out.push_back(loss / double(count));
  }
  return out;
}
}  // namespace

TEST(Methods, SmoothQuantAlphaMatchesDoubleAndPreservesFunction) {
  const int64_t n = 64, m = 200;
  const std::vector<int64_t> rows = {48, 40};
  auto X = randn(size_t(m * n), 21);
  for (int64_t t = 0; t < m; ++t)  // outlier input channels, and one channel dead in calibration
    for (int64_t j : {3, 17, 40}) X[size_t(t * n + j)] *= 30.f;
  for (int64_t t = 0; t < m; ++t) X[size_t(t * n + 9)] = 0.f;
  const std::vector<std::vector<float>> W = {randn(size_t(rows[0] * n), 22, 0.05f), randn(size_t(rows[1] * n), 23, 0.08f)};
  ThreadPool pool(2);
  for (const char* text : {"smoothquant:w3g32", "smoothquant:w4g64,grid=10", "smoothquant+gptq:nf4g32", "smoothquant:w3g32,alpha=0.5"}) {
    StatsCollector col(n, find_method("smoothquant").stats, m);
    col.add(X.data(), m, pool);
    const InputStats st = col.finish();
    Model model;
    Tensor norm = make_f32_tensor("blk.0.ffn_norm.weight", {n}, randn(size_t(n), 24, 1.f));
    Tensor gate = make_f32_tensor("blk.0.ffn_gate.weight", {rows[0], n}, W[0]);
    Tensor up = make_f32_tensor("blk.0.ffn_up.weight", {rows[1], n}, W[1]);
    const TensorRule rule = parse_rule(text);
    StepContext ctx{model};
    ctx.input = "ffn_in";
    ctx.readers = {&gate, &up};
    ctx.rules = {&rule, &rule};
    ctx.rule = &rule;
    ctx.stats = &st;
    ctx.norm = &norm;
    ctx.pool = &pool;
    const std::vector<float> g0 = tensor_to_f32(norm);
    find_method("smoothquant").transform(ctx);
    ASSERT_NE(ctx.note.find("smoothquant: "), std::string::npos) << ctx.note;
    std::printf("[ methods  ] %s: %s\n", text, ctx.note.c_str());

    if (rule.smooth.alpha < 0) {
      // The choice is the first minimum of the plain double losses ("none" first, then alpha = k/grid).
      const auto losses = smooth_losses_double(X, m, n, W, rows, st.max_abs, rule.spec, rule.smooth.grid);
      const size_t best = size_t(std::min_element(losses.begin(), losses.end()) - losses.begin());
      char want[40];
      if (best == 0)
        std::snprintf(want, sizeof want, "smoothquant: none");
      else
        std::snprintf(want, sizeof want, "alpha %.2f", double(best - 1) / rule.smooth.grid);
      EXPECT_NE(ctx.note.find(want), std::string::npos) << text << ": " << ctx.note << " vs " << want;
      EXPECT_LT(losses[best], losses[0] * 0.9) << text << ": outlier channels: smoothing should help clearly";
    } else {
      EXPECT_NE(ctx.note.find("alpha 0.50"), std::string::npos) << ctx.note;
    }
    // The dead channel is left alone, and the function is preserved: (x g / s) (W s)^T == (x g) W^T.
    const auto g1 = tensor_to_f32(norm);
    EXPECT_EQ(g1[9], g0[9]) << text;
    for (size_t t = 0; t < 2; ++t) {
      const auto w1 = tensor_to_f32(t == 0 ? gate : up);
      for (int64_t i = 0; i < 5; ++i)
        for (int64_t r = 0; r < rows[t]; ++r) {
          double y0 = 0, y1 = 0, mag = 0;
          for (int64_t j = 0; j < n; ++j) {
            const double x = X[size_t(i * n + j)];
            y0 += x * g0[size_t(j)] * W[t][size_t(r * n + j)];
            y1 += x * g1[size_t(j)] * w1[size_t(r * n + j)];
            mag += std::fabs(x * g0[size_t(j)] * W[t][size_t(r * n + j)]);
          }
          ASSERT_NEAR(y1, y0, 1e-5 * mag) << text;
        }
    }
  }
  // Options and chains.
  EXPECT_EQ(parse_rule("smoothquant:w4g128").chain, (std::vector<std::string>{"smoothquant", "rtn"}));
  EXPECT_EQ(parse_rule("smoothquant+gptq:w4g128,act_order").chain, (std::vector<std::string>{"smoothquant", "gptq"}));
  EXPECT_EQ(parse_rule("smoothquant:w4g128,grid=10").smooth.grid, 10);
  EXPECT_TRUE(parse_recipe("smoothquant:w4g128").has_transforms());
  expect_recipe_error("smoothquant:w4g128,alpha=1.5", "alpha must be in [0, 1]");
  expect_recipe_error("smoothquant:w4g128,noclip", "it is an option of awq");
  expect_recipe_error("awq+smoothquant:w4g128", "use one of them");
}

TEST(Methods, AwqClipNeverWorseInTheLayerObjective) {
  const int64_t n = 64, rows = 16, m = 256;
  auto X = randn(size_t(m * n), 11);
  auto W = randn(size_t(rows * n), 12, 0.05f);
  for (int64_t r = 0; r < rows; ++r) W[size_t(r * n + (r % n))] = 0.6f;  // weight outliers: clipping helps
  ThreadPool pool(1);
  StatsCollector col(n, kStatMeanAbs | kStatSamples | kStatHessian, m);
  col.add(X.data(), m, pool);
  const InputStats st = col.finish();
  auto objective = [&](const std::vector<float>& wq) {  // tr((W - Q) H (W - Q)^T) of the rounded W
    const auto dq = dequantize_matrix(quantize_rtn(wq.data(), rows, n, QuantSpec{3, 32, true}, false, nullptr));
    double e = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          e += (W[size_t(r * n + i)] - dq[size_t(r * n + i)]) * st.H[size_t(i * n + j)] * (W[size_t(r * n + j)] - dq[size_t(r * n + j)]);
    return e;
  };
  Model model;
  Tensor norm = make_f32_tensor("blk.0.ffn_norm.weight", {n}, std::vector<float>(size_t(n), 1.f));
  Tensor w = make_f32_tensor("blk.0.ffn_gate.weight", {rows, n}, W);
  const TensorRule rule = parse_rule("awq:w3g32,grid=1");  // grid 1: alpha 0, scales 1: clipping alone
  StepContext ctx{model};
  ctx.input = "ffn_in";
  ctx.readers = {&w};
  ctx.rules = {&rule};
  ctx.rule = &rule;
  ctx.stats = &st;
  ctx.norm = &norm;
  ctx.pool = &pool;
  find_method("awq").transform(ctx);
  EXPECT_NE(ctx.note.find("1 tensor(s) clipped"), std::string::npos) << ctx.note;
  EXPECT_LT(objective(tensor_to_f32(w)), objective(W));
}

TEST(Methods, SqueezeLlmWeightedKmeans) {
  // Three well separated clusters in a row: lut3's k-means finds them (a centroid per cluster
  // within the table's int8 resolution), and importance pulls centroids to the weighted points.
  const int64_t cols = 96;
  std::vector<float> w(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) w[size_t(c)] = (c % 3 == 0 ? -1.f : c % 3 == 1 ? 0.1f : 2.f) + 0.001f * float(c % 7);
  const auto grid = make_grid(parse_format_name("lut3"));
  const GroupParams p = grid->params(w.data(), cols, 1.f, nullptr);
  for (int64_t c = 0; c < cols; ++c)
    ASSERT_LE(std::fabs(grid->dequantize(grid->quantize(w[size_t(c)], p), p) - w[size_t(c)]), 0.02f) << c;
  // lut4 on Gaussian rows: a per-row non-uniform table beats w4row's uniform grid in MSE.
  const int64_t rows = 8, n = 512;
  auto g = randn(size_t(rows * n), 5);
  auto err = [&](const QuantSpec& s, const double* imp) {
    const auto dq = dequantize_matrix(quantize_rtn(g.data(), rows, n, s, false, nullptr, false, imp));
    double e = 0;
    for (size_t i = 0; i < g.size(); ++i) e += (dq[i] - g[i]) * (dq[i] - g[i]) * (imp ? imp[i % n] : 1.0);
    return e;
  };
  EXPECT_LT(err(parse_format_name("lut4"), nullptr), err(QuantSpec{4, 0, true}, nullptr));
  // Importance: weighted k-means lowers the weighted error against the unweighted fit.
  std::vector<double> imp(static_cast<size_t>(n), 0.01);
  for (int64_t j = 0; j < n; j += 8) imp[size_t(j)] = 100.0;
  const auto fitted = quantize_rtn(g.data(), rows, n, parse_format_name("lut4"), false, nullptr, false, imp.data());
  const auto plain = quantize_rtn(g.data(), rows, n, parse_format_name("lut4"), false, nullptr, false, nullptr);
  auto werr = [&](const QuantizedMatrix& q) {
    const auto dq = dequantize_matrix(q);
    double e = 0;
    for (size_t i = 0; i < g.size(); ++i) e += imp[i % n] * (dq[i] - g[i]) * (dq[i] - g[i]);
    return e;
  };
  EXPECT_LT(werr(fitted), werr(plain) * 0.9);
}

// Weighted SSE of `x` against the nearest of `c`.
static double kmeans_objective(const std::vector<float>& x, const std::vector<double>& wt, const std::vector<double>& c) {
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double best = INFINITY;
    for (double v : c) best = std::min(best, (x[i] - v) * (x[i] - v));
    e += wt[i] * best;
  }
  return e;
}

TEST(Methods, SqueezeLlmKmeansIsExact) {
  // The table fit against a plain O(k n^2) dynamic programme over the sorted values (double
  // precision, every split tried): equal optimum, with and without weights, with ties.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 20 + trial * 3, k = trial % 2 ? 8 : 16;
    std::vector<float> x(static_cast<size_t>(n));
    std::vector<double> wt(static_cast<size_t>(n));
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<double> ud(0.1, 3.0);
    for (int i = 0; i < n; ++i) x[size_t(i)] = trial % 3 ? nd(rng) : std::round(nd(rng) * 3.f) / 3.f;  // ties too
    for (int i = 0; i < n; ++i) wt[size_t(i)] = trial % 4 ? ud(rng) : 1.0;
    std::vector<size_t> o(static_cast<size_t>(n));
    std::iota(o.begin(), o.end(), size_t(0));
    std::sort(o.begin(), o.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
    auto run_cost = [&](int i, int j) {  // sorted positions [i, j)
      double W = 0, S = 0;
      for (int t = i; t < j; ++t) W += wt[o[size_t(t)]], S += wt[o[size_t(t)]] * x[o[size_t(t)]];
      double e = 0;
      for (int t = i; t < j; ++t) e += wt[o[size_t(t)]] * std::pow(x[o[size_t(t)]] - S / W, 2);
      return e;
    };
    const int K = std::min(k, n);
    std::vector<std::vector<double>> D(size_t(K) + 1, std::vector<double>(size_t(n) + 1, INFINITY));
    D[0][0] = 0;
    for (int m = 1; m <= K; ++m)
      for (int j = m; j <= n; ++j)
        for (int i = m - 1; i < j; ++i) D[size_t(m)][size_t(j)] = std::min(D[size_t(m)][size_t(j)], D[size_t(m - 1)][size_t(i)] + run_cost(i, j));
    const auto c = fmt::weighted_kmeans_1d(x.data(), n, trial % 4 ? wt.data() : nullptr, k);
    ASSERT_EQ(c.size(), size_t(k));
    ASSERT_TRUE(std::is_sorted(c.begin(), c.end()));
    EXPECT_NEAR(kmeans_objective(x, wt, c), D[size_t(K)][size_t(n)], 1e-9 * (1 + D[size_t(K)][size_t(n)])) << "trial " << trial;
  }
}

TEST(Methods, EasyQuantRangeOptimisation) {
  // The loss and its straight-through gradient against a plain double implementation on the w4
  // symmetric grid (value s * (clamp(round(w / s) + 8, 0, 15) - 8); LSQ's step-size gradient).
  const QuantSpec s4{4, 32, true};
  const auto grid = make_grid(s4);
  auto w = randn(32 * 200, 9);
  for (size_t i = 0; i < w.size(); i += 37) w[i] *= 4.f;  // some weights beyond a shrunk range
  double sum_minmax = 0, sum_opt = 0;
  for (int gi = 0; gi < 200; ++gi) {
    const float* wg = w.data() + gi * 32;
    GroupParams p = grid->params(wg, 32, 1.0f, nullptr);
    p.scale = round_scale_f16(p.scale * 0.7f);
    double L = 0, g = 0;
    for (int j = 0; j < 32; ++j) {
      const double x = double(wg[j]) / p.scale, r = std::nearbyint(x);
      const double q = std::clamp(r + 8.0, 0.0, 15.0) - 8.0, Q = p.scale * q, d = Q - wg[j];
      L += d * d;
      g += 2 * d * (x < -8.0 || x > 7.0 ? q : q - x);  // LSQ: the clamp acts on w / s before rounding
    }
    double g2 = 0;
    const double L2 = detail::easyquant_loss(*grid, wg, 32, p, &g2);
    ASSERT_NEAR(L2, L, 1e-9 * (1 + L)) << gi;
    ASSERT_NEAR(g2, g, 1e-6 * (1 + std::fabs(g))) << gi;
    // The optimised range is never worse than min-max in the loss.
    const GroupParams mm = grid->params(wg, 32, 1.0f, nullptr);
    const double lm = detail::easyquant_loss(*grid, wg, 32, mm, nullptr);
    const double lo = detail::easyquant_loss(*grid, wg, 32, detail::easyquant_params(*grid, wg, 32, 100), nullptr);
    ASSERT_LE(lo, lm) << gi;
    sum_minmax += lm;
    sum_opt += lo;
  }
  EXPECT_LT(sum_opt, 0.9 * sum_minmax);
}


TEST(Methods, StreamingOutputEqualsInMemoryWriter) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  for (const char* recipe : {"gptq:w4g32;token_embd.weight=rtn:w8g32", "awq+gptq:w3g64;blk.1.*=squeezellm:lut4"}) {
    QuantizeOptions qo;
    qo.recipe = parse_recipe(recipe);
    qo.calib = {test::shared("data/tinystories/calib.txt"), 4, 64, 0};
    qo.n_threads = 2;
    qo.progress = false;
    Model q = quantize_model(m, qo, nullptr);
    const std::string a = tmp("mem.lmp"), b = tmp("stream.lmp");
    write_lmpress_model(q, a);
    std::map<std::string, std::string> meta = m.metadata;
    meta["recipe"] = qo.recipe.text;
    meta["source"] = m.path;
    {
      LmpressStreamWriter w(b, m, plan_quantization(m, qo.recipe), meta);
      qo.sink = &w;
      QuantizeReport rep;
      quantize_model(m, qo, &rep);
      w.commit();
      EXPECT_GT(rep.peak_anon_bytes, 0);
      EXPECT_GT(rep.bpw(), 3.0);
    }
    const std::string sa = read_text_file(a), sb = read_text_file(b);
    EXPECT_EQ(sa.size(), sb.size()) << recipe;
    EXPECT_TRUE(sa == sb) << recipe << ": streamed file differs from the in-memory writer's";
    // and it loads and runs
    Model l = load_model(b);
    EXPECT_EQ(l.metadata.at("recipe"), qo.recipe.text);
    std::remove(a.c_str());
    std::remove(b.c_str());
  }
  // A writer destroyed before commit leaves nothing.
  const std::string c = tmp("never.lmp");
  {
    LmpressStreamWriter w(c, m, plan_quantization(m, parse_recipe("rtn:w4g32")), {});
  }
  EXPECT_FALSE(file_exists(c));
}

TEST(Methods, EngineReadsNormsThroughTheModel) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378};
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = 8;
  Engine e(m, eo);
  const int64_t V = m.cfg.vocab_size;
  std::vector<float> a(static_cast<size_t>(V)), b(static_cast<size_t>(V));
  e.forward(toks.data(), 5, 0, a.data(), false);
  // A transform rewrites a norm after the engine was made: the engine must see it.
  auto g = tensor_to_f32(m.layers[2].ffn_norm);
  for (auto& v : g) v *= 3.f;
  m.layers[2].ffn_norm = make_f32_tensor(m.layers[2].ffn_norm.name, m.layers[2].ffn_norm.shape, g);
  e.reset();
  e.forward(toks.data(), 5, 0, b.data(), false);
  double diff = 0;
  for (int64_t i = 0; i < V; ++i) diff = std::max(diff, double(std::fabs(a[size_t(i)] - b[size_t(i)])));
  EXPECT_GT(diff, 1e-3) << "the engine kept a stale copy of a norm weight";
}

// KLD of `recipe` on tinystories-279k (12 chunks of 128 of eval.txt), calibrated on 16 windows x 128
// of calib.txt when `calib`.
static double tinystories_kld(const Model& m, const std::vector<int32_t>& toks, const std::string& recipe, bool calib) {
  QuantizeOptions qo;
  qo.recipe = parse_recipe(recipe);
  if (calib) qo.calib = {test::shared("data/tinystories/calib.txt"), 16, 128, 0};
  qo.n_threads = 2;
  qo.progress = false;
  Model q = quantize_model(m, qo, nullptr);
  PerplexityOptions po;
  po.n_ctx = 128;
  po.max_chunks = 12;
  po.n_threads = 2;
  po.base = &m;
  po.progress = false;
  return perplexity(q, toks, po).kld;
}

TEST(Methods, AwqGptqRunsEndToEndAndBeatsRtnOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  auto kld = [&](const std::string& recipe) { return tinystories_kld(m, toks, recipe, true); };
  const double rtn = kld("rtn:w3g64;token_embd.weight=rtn:w8g32");
  const double awq = kld("awq:w3g64;token_embd.weight=rtn:w8g32");
  const double awq_gptq = kld("awq+gptq:w3g64;token_embd.weight=rtn:w8g32");
  std::printf("[ methods  ] tinystories w3g64 KLD: rtn %.4f, awq %.4f, awq+gptq %.4f\n", rtn, awq, awq_gptq);
  EXPECT_LT(awq, rtn);
  EXPECT_LT(awq_gptq, awq);
  // SqueezeLLM's tables with GPTQ rounding beat rounding to nearest onto the same tables.
  const double sq = kld("squeezellm:lut3;token_embd.weight=rtn:w8g32");
  const double sq_gptq = kld("squeezellm+gptq:lut3;token_embd.weight=rtn:w8g32");
  std::printf("[ methods  ] tinystories lut3 KLD: squeezellm %.4f, squeezellm+gptq %.4f\n", sq, sq_gptq);
  EXPECT_LT(sq_gptq, sq);
  // Dense-and-sparse: 1% outliers kept apart lower the error of the same dense format.
  const double gptq = kld("gptq:w3g64;token_embd.weight=rtn:w8g32");
  const double gptq_sp = kld("gptq:w3g64+s1.00;token_embd.weight=rtn:w8g32");
  const double sq_sp = kld("squeezellm+gptq:lut3+s1.00;token_embd.weight=rtn:w8g32");
  std::printf("[ methods  ] tinystories sparse 1%% KLD: gptq w3g64 %.4f -> %.4f, squeezellm+gptq lut3 %.4f -> %.4f\n",
              gptq, gptq_sp, sq_gptq, sq_sp);
  EXPECT_LT(gptq_sp, gptq);
  EXPECT_LT(sq_sp, sq_gptq);
}

TEST(Methods, EasyQuantBeatsRtnWithoutCalibration) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  auto kld = [&](const std::string& recipe) {
    EXPECT_FALSE(parse_recipe(recipe).needs_calibration()) << recipe;
    return tinystories_kld(m, toks, recipe, false);
  };
  const double rtn = kld("rtn:w3g64;token_embd.weight=rtn:w8g32");
  const double rtn_sp = kld("rtn:w3g64+s0.50;token_embd.weight=rtn:w8g32");
  const double eq = kld("easyquant:w3g64+s0.50;token_embd.weight=rtn:w8g32");
  std::printf("[ methods  ] tinystories w3g64 KLD, no calibration: rtn %.4f, rtn+s0.5 %.4f, easyquant+s0.5 %.4f\n", rtn,
              rtn_sp, eq);
  EXPECT_LT(eq, rtn_sp);
  EXPECT_LT(eq, rtn);
}

TEST(Methods, QuantEaseAndSmoothQuantEndToEndOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const std::string text = read_text_file(test::shared("data/tinystories/eval.txt"));
  const auto toks = m.tokenizer->encode(text, true);
  auto kld = [&](const std::string& recipe) { return tinystories_kld(m, toks, recipe + ";token_embd.weight=rtn:w8g32", true); };
  const double gptq = kld("gptq:w3g64"), qe = kld("quantease:w3g64");
  const double rtn = kld("rtn:w3g64"), qe_rtn = kld("quantease:w3g64,init=rtn");
  std::printf("[ methods  ] tinystories w3g64 KLD: gptq %.4f, quantease %.4f; rtn %.4f, quantease init=rtn %.4f\n", gptq,
              qe, rtn, qe_rtn);
  EXPECT_LT(qe, gptq);
  EXPECT_LT(qe_rtn, rtn);
  const double sq = kld("smoothquant:w3g64"), sq_gptq = kld("smoothquant+gptq:w3g64");
  std::printf("[ methods  ] tinystories w3g64 KLD: smoothquant %.4f (rtn %.4f), smoothquant+gptq %.4f (gptq %.4f)\n", sq,
              rtn, sq_gptq, gptq);
  EXPECT_LT(sq, rtn);
  EXPECT_LT(sq_gptq, sq);
}

TEST(Methods, SpqrEndToEndOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  auto kld = [&](const std::string& recipe) { return tinystories_kld(m, toks, recipe, true); };
  const double rtn = kld("rtn:w3g64;token_embd.weight=rtn:w8g32");
  const double sp = kld("spqr:spqr3g16;token_embd.weight=rtn:w8g32");
  const double sp_out = kld("spqr:spqr3g16+s1.00;token_embd.weight=rtn:w8g32");
  std::printf("[ methods  ] tinystories KLD: rtn w3g64 %.4f, spqr3g16 %.4f, spqr3g16+s1.00 %.4f\n", rtn, sp, sp_out);
  EXPECT_LT(sp, rtn);
  EXPECT_LT(sp_out, sp);
  // the recipe grammar: spqr's options, its formats only
  EXPECT_NO_THROW(parse_recipe("spqr:spqr3g32r32+s0.5,tau=0.3,damp=0.02"));
  EXPECT_THROW(parse_recipe("spqr:w3g64"), Error);
  EXPECT_THROW(parse_recipe("spqr:spqr3g16,tau=0.2"), Error);  // no +s budget
  EXPECT_THROW(parse_recipe("spqr:spqr3g16,act_order"), Error);
}

// PB-LLM's pieces: the binary grid (alpha = importance-weighted mean |w|, code = sign) against a
// double computation; the salience denominator 1 / U_jj against an explicit inverse and Cholesky.
TEST(Methods, PbllmBinaryGridAndSalienceMatchDouble) {
  const QuantSpec s = parse_format_name("b1g64");
  EXPECT_EQ(format_name(s), "b1g64");
  EXPECT_EQ(format_name(parse_format_name("b1row+s1.00")), "b1row+s1.00");
  const std::unique_ptr<Grid> grid = make_grid(s);
  const std::vector<float> w = randn(64, 7, 0.05f), r = randn(64, 8);
  std::vector<double> imp(64);
  for (int i = 0; i < 64; ++i) imp[size_t(i)] = 0.1 + std::fabs(r[size_t(i)]);
  double num = 0, den = 0;
  for (int i = 0; i < 64; ++i) num += imp[size_t(i)] * std::fabs(double(w[size_t(i)])), den += imp[size_t(i)];
  const GroupParams p = grid->params(w.data(), 64, 1.f, imp.data());
  EXPECT_EQ(p.scale, f16_to_f32(f32_to_f16(float(num / den))));
  // the scale minimises the weighted error for the sign codes: nudging it either way costs more
  auto err = [&](double a) {
    double e = 0;
    for (int i = 0; i < 64; ++i) e += imp[size_t(i)] * std::pow(double(w[size_t(i)]) - a * (w[size_t(i)] > 0 ? 1 : -1), 2);
    return e;
  };
  EXPECT_LE(err(num / den), err(num / den * 1.01));
  EXPECT_LE(err(num / den), err(num / den * 0.99));
  for (int i = 0; i < 64; ++i) {
    const int32_t q = grid->quantize(w[size_t(i)], p);
    EXPECT_EQ(q, w[size_t(i)] > 0 ? 1 : 0);
    EXPECT_EQ(grid->dequantize(q, p), w[size_t(i)] > 0 ? p.scale : -p.scale);
  }
  std::vector<float> z(64, 0.f);
  EXPECT_EQ(grid->params(z.data(), 64, 1.f, nullptr).scale, 0.f);  // all-zero group decodes to zeros

  // salience: A = H + damp * mean(diag) I; A^-1 = U^T U (U upper) = L L^T with L = U^T, so U_jj = L_jj
  const int64_t n = 12;
  const std::vector<float> X = randn(size_t(40 * n), 9);
  std::vector<double> H(size_t(n * n), 0.0);
  for (int64_t t = 0; t < 40; ++t)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) H[size_t(i * n + j)] += X[size_t(t * n + i)] * X[size_t(t * n + j)] / 40.0;
  for (int64_t j = 0; j < n; ++j) H[size_t(3 * n + j)] = H[size_t(j * n + 3)] = 0.0;  // a dead input: H_33 -> 1
  const double damp = 0.01;
  std::vector<double> A(H);
  double md = 0;
  for (int64_t j = 0; j < n; ++j) md += (j == 3 ? 1.0 : A[size_t(j * n + j)]) / double(n);
  A[size_t(3 * n + 3)] = 1.0;
  for (int64_t j = 0; j < n; ++j) A[size_t(j * n + j)] += damp * md;
  // Gauss-Jordan inverse
  std::vector<double> M(A), inv(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[size_t(i * n + i)] = 1.0;
  for (int64_t c = 0; c < n; ++c) {
    const double piv = M[size_t(c * n + c)];
    for (int64_t k = 0; k < n; ++k) M[size_t(c * n + k)] /= piv, inv[size_t(c * n + k)] /= piv;
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = M[size_t(r * n + c)];
      for (int64_t k = 0; k < n; ++k) M[size_t(r * n + k)] -= f * M[size_t(c * n + k)], inv[size_t(r * n + k)] -= f * inv[size_t(c * n + k)];
    }
  }
  // lower Cholesky of inv
  std::vector<double> L(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double v = inv[size_t(i * n + j)];
      for (int64_t k = 0; k < j; ++k) v -= L[size_t(i * n + k)] * L[size_t(j * n + k)];
      L[size_t(i * n + j)] = i == j ? std::sqrt(v) : v / L[size_t(j * n + j)];
    }
  const std::vector<double> got = inverse_factor_recip_diag(H, n, damp);
  ASSERT_EQ(int64_t(got.size()), n);
  for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(got[size_t(j)], 1.0 / L[size_t(j * n + j)], 1e-9 / L[size_t(j * n + j)]) << j;
}

TEST(Methods, PbllmEndToEndOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  auto kld = [&](const std::string& recipe) { return tinystories_kld(m, toks, recipe + ";token_embd.weight=rtn:w8g32", true); };
  const double rtn_sp = kld("rtn:b1g64+s1.00");
  const double pb = kld("pbllm:b1g64+s1.00"), pb_mag = kld("pbllm:b1g64+s1.00,salient=magnitude");
  std::printf("[ methods  ] tinystories b1g64 KLD: rtn+s1.00 %.4f, pbllm+s1.00 %.4f (salient by magnitude %.4f)\n", rtn_sp,
              pb, pb_mag);
  EXPECT_LT(pb, rtn_sp);  // GPTQ's error feedback on the binarized part
  EXPECT_LT(pb_mag, rtn_sp);
  // the recipe grammar: binary formats only, salient=magnitude needs +s
  EXPECT_NO_THROW(parse_recipe("pbllm:b1row+s0.50,salient=hessian,damp=0.02"));
  expect_recipe_error("pbllm:w2g64+s1.00", "binary format");
  expect_recipe_error("pbllm:b1g64,salient=magnitude", "needs a format with them");
  expect_recipe_error("pbllm:b1g64+s1.00,salient=top", "hessian or magnitude");
  expect_recipe_error("pbllm:b1g64+s1.00,act_order", "act_order");
}
