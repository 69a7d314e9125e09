// NUPES (pow formats, the exponent search) and BitMoD (bitmod formats, the per-group datatype
// choice): the grids against the papers' definitions written out here, the searches against a
// straightforward double-precision implementation on a small layer, packing of the tensor's
// exponent / group selectors, corrupt-tensor rejection, recipes, and an end-to-end run.
// (Kernel parity and the generic round trip of every format: test_formats.cpp.)
#include <algorithm>
#include <cmath>
#include <cstring>
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

// The pow grid by its definition: uniform levels u (NF4's split: 2^(b-1) negative, 2^(b-1) - 1
// positive, an exact zero), mapped by sign(u)|u|^(1/a), as int8 (x 127, rounded).
std::vector<double> pow_values(int bits, double a) {
  std::vector<double> v;
  const int h = 1 << (bits - 1);
  for (int k = -h; k < h; ++k) {
    const double u = k < 0 ? double(k) / h : double(k) / (h - 1);
    v.push_back(std::nearbyint(127.0 * (u < 0 ? -1 : 1) * std::pow(std::fabs(u), 1.0 / a)));
  }
  return v;
}

// Nearest grid value (ties to the lower value) of w under scale s; values ascending.
double nearest(const std::vector<double>& vals, double s, double w) {
  double best = vals[0] * s;
  for (double v : vals)
    if (std::fabs(v * s - w) < std::fabs(best - w)) best = v * s;
  return best;
}

// Dequantized W of RTN onto a fixed-value grid with per-group absmax scales (f16 rounded up).
std::vector<double> rtn_ref(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t group,
                            const std::vector<double>& vals) {
  double vmax = 0;
  for (double v : vals) vmax = std::max(vmax, std::fabs(v));
  std::vector<double> out(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += group) {
      double amax = 0;
      for (int64_t c = c0; c < c0 + group; ++c) amax = std::max(amax, std::fabs(double(w[size_t(r * cols + c)])));
      const double s = amax > 0 ? round_scale_f16(float(amax / vmax)) : 1.0;
      for (int64_t c = c0; c < c0 + group; ++c) out[size_t(r * cols + c)] = nearest(vals, s, w[size_t(r * cols + c)]);
    }
  return out;
}


// BitMoD's four datatypes of each width, in units of the smallest nonzero magnitude (FP4: E2M1 x 2;
// FP3: 1, 2, 4), with the special value (ER / EA, positive / negative) added; times the int8
// storage unit (7 for FP4, 21 for FP3: the scale is stored per unit of the int8 table, so its f16
// rounding is of absmax / max|table|).
std::vector<double> bitmod_values(int bits, int sel) {
  std::vector<double> mag = bits == 4 ? std::vector<double>{1, 2, 3, 4, 6, 8, 12} : std::vector<double>{1, 2, 4};
  std::vector<double> v{0};
  for (double m : mag) v.push_back(m), v.push_back(-m);
  const double er = bits == 4 ? 10 : 3, ea = bits == 4 ? 16 : 6;
  v.push_back(sel == 0 ? er : sel == 1 ? -er : sel == 2 ? ea : -ea);
  std::sort(v.begin(), v.end());
  for (double& x : v) x *= bits == 4 ? 7 : 21;
  return v;
}

std::vector<double> spd(int64_t n, uint32_t seed) {
  const auto x = randn(size_t(4 * n * n), seed);
  std::vector<double> H(size_t(n * n), 0.0);
  for (int64_t t = 0; t < 4 * n; ++t)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) H[size_t(i * n + j)] +=
            double(x[size_t(t * n + i)]) * x[size_t(t * n + j)] * (1.0 + (i % 7 == 0) * 2.0) * (1.0 + (j % 7 == 0) * 2.0);
  return H;
}

}  // namespace

TEST(NupesBitmod, PowNamesAndGrid) {
  const QuantSpec s = parse_format_name("pow4a0.60g64");
  EXPECT_EQ(s.family, FormatFamily::Pow);
  EXPECT_EQ(s.param, 60);
  EXPECT_EQ(format_name(s), "pow4a0.60g64");
  EXPECT_EQ(parse_format_name("pow4a0.75g64").param, 0);  // the default exponent has no suffix
  EXPECT_EQ(format_name(parse_format_name("pow3g128")), "pow3g128");
  // the exponent is the tensor's, not the format id's
  EXPECT_EQ(format_id(s), format_id(parse_format_name("pow4g64")));
  for (const char* bad : {"pow4a0.6g64", "pow4a2.50g64", "pow4a0.10g64", "pow5g64", "pow4row", "pow4", "bitmod4g16",
                          "bitmod4row", "bitmod2g128", "bitmod4g128x"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  // Grid values: the definition above; RTN onto it is the nearest value under the absmax scale.
  for (int bits : {3, 4})
    for (int p : {30, 60, 75, 120}) {
      QuantSpec f{bits, 32, true, FormatFamily::Pow};
      f.param = p == 75 ? 0 : p;
      const auto vals = pow_values(bits, p / 100.0);
      const auto grid = make_grid(f);
      const auto w = randn(size_t(4 * 64), uint32_t(p + bits));
      const QuantizedMatrix q = quantize_rtn(w.data(), 4, 64, f, false, nullptr);
      const GroupParams gp = q.params(0, 0);
      for (int c = 0; c < grid->n_codes(); ++c) EXPECT_EQ(double(gp.tab()[c]), vals[size_t(c)]) << bits << " " << p;
      const auto dq = dequantize_matrix(q);
      const auto ref = rtn_ref(w, 4, 64, 32, vals);
      for (size_t i = 0; i < dq.size(); ++i) ASSERT_EQ(double(dq[i]), ref[i]) << bits << " " << p << " " << i;
      // pack -> unpack keeps the exponent; the reference dequantization agrees
      const Tensor t = pack_tensor("w", q);
      EXPECT_EQ(unpack_tensor(t).spec, f);
      const auto dr = dequantize_ref(t);
      for (size_t i = 0; i < dq.size(); ++i) ASSERT_EQ(dr[i], dq[i]);
    }
}

// The exponent search: every candidate's error and the argmin against double precision.
TEST(NupesBitmod, NupesSearchMatchesDouble) {
  const int64_t rows = 12, cols = 64;
  auto w = randn(size_t(rows * cols), 5);
  for (size_t i = 0; i < w.size(); i += 17) w[i] *= 6.f;  // heavy tails: a < 1 should win
  const auto H = spd(cols, 6);
  const QuantSpec s = parse_format_name("pow3g32");
  std::vector<std::pair<int, double>> trace;
  const int best = nupes_search(w.data(), rows, cols, s, &H, nullptr, &trace);
  ASSERT_EQ(trace.size(), size_t((kNupesMax - kNupesMin) / kNupesStep + 1));
  int ref_best = 0;
  double ref_err = INFINITY;
  for (const auto& [p, e] : trace) {
    const double r = test::proxy_loss(w.data(), rtn_ref(w, rows, cols, 32, pow_values(3, p / 100.0)), rows, cols, H);
    EXPECT_NEAR(e, r, 1e-9 * r) << "a=" << p;
    if (r < ref_err) ref_err = r, ref_best = p;
  }
  EXPECT_EQ(best, ref_best);
  EXPECT_LT(best, 100);
  // diag-weighted and plain errors: the same search with the diagonal / unit weights
  std::vector<double> hd(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) hd[size_t(j)] = H[size_t(j * cols + j)];
  trace.clear();
  const int bd = nupes_search(w.data(), rows, cols, s, nullptr, hd.data(), &trace);
  int rb = 0;
  ref_err = INFINITY;
  for (const auto& [p, e] : trace) {
    const auto dq = rtn_ref(w, rows, cols, 32, pow_values(3, p / 100.0));
    double r = 0;
    for (int64_t i = 0; i < rows * cols; ++i) r += hd[size_t(i % cols)] * std::pow(w[size_t(i)] - dq[size_t(i)], 2);
    r /= double(rows);
    EXPECT_NEAR(e, r, 1e-9 * r);
    if (r < ref_err) ref_err = r, rb = p;
  }
  EXPECT_EQ(bd, rb);
  EXPECT_THROW(nupes_search(w.data(), rows, cols, parse_format_name("w3g32"), &H, nullptr), Error);
}

// BitMoD: each group's datatype is the one of least importance-weighted error, the paper's value
// sets; selectors and codes survive packing.
TEST(NupesBitmod, BitmodChoosesLeastErrorDatatype) {
  const int64_t rows = 6, cols = 256;
  for (int bits : {3, 4})
    for (int64_t group : {32, 128})
      for (bool weighted : {false, true}) {
        auto w = randn(size_t(rows * cols), uint32_t(bits * 100 + group));
        // one large weight per group, its sign alternating: the + and - variants should both win somewhere
        for (int64_t k = 0; k < rows * cols / group; ++k) w[size_t(k * group + 5)] = (k % 2 ? 1.f : -1.f) * (3.f + float(k % 3));
        std::vector<double> imp(static_cast<size_t>(cols));
        for (int64_t j = 0; j < cols; ++j) imp[size_t(j)] = 0.1 + double((j * 37) % 11);
        QuantSpec s{bits, int(group), true, FormatFamily::Bitmod};
        const QuantizedMatrix q = quantize_rtn(w.data(), rows, cols, s, false, nullptr, false, weighted ? imp.data() : nullptr);
        const auto dq = dequantize_matrix(q);
        int used[4] = {0, 0, 0, 0};
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t g = 0; g < cols / group; ++g) {
            double amax = 0;
            for (int64_t c = g * group; c < (g + 1) * group; ++c) amax = std::max(amax, std::fabs(double(w[size_t(r * cols + c)])));
            int bsel = -1;
            double berr = INFINITY;
            std::vector<double> bdq;
            for (int sel = 0; sel < 4; ++sel) {
              const auto vals = bitmod_values(bits, sel);
              double vmax = 0;
              for (double v : vals) vmax = std::max(vmax, std::fabs(v));
              const double sc = round_scale_f16(float(amax / vmax));
              double e = 0;
              std::vector<double> d;
              for (int64_t c = g * group; c < (g + 1) * group; ++c) {
                const double x = w[size_t(r * cols + c)], v = nearest(vals, sc, x);
                d.push_back(v);
                e += (weighted ? imp[size_t(c)] : 1.0) * (x - v) * (x - v);
              }
              if (e < berr) berr = e, bsel = sel, bdq = d;
            }
            ASSERT_EQ(q.zeros[size_t(r * (cols / group) + g)], bsel) << bits << " g" << group << " r" << r << " group " << g;
            ++used[bsel];
            for (int64_t c = g * group; c < (g + 1) * group; ++c)
              ASSERT_NEAR(dq[size_t(r * cols + c)], bdq[size_t(c - g * group)], 1e-6 * std::fabs(bdq[size_t(c - g * group)]));
          }
        EXPECT_GE(int(used[0] > 0) + int(used[1] > 0) + int(used[2] > 0) + int(used[3] > 0), 2) << "one datatype only";
        const Tensor t = pack_tensor("w", q);
        const QuantizedMatrix u = unpack_tensor(t);
        EXPECT_EQ(u.zeros, q.zeros);
        EXPECT_EQ(dequantize_ref(t), dq);
      }
}

TEST(NupesBitmod, CorruptTensorsAreRejected) {
  auto w = randn(5 * 128, 3);
  QuantSpec ps = parse_format_name("pow4a0.50g32");
  const Tensor p = pack_tensor("blk.0.ffn_up.weight", quantize_rtn(w.data(), 5, 128, ps, false, nullptr));
  const PackedGeometry pg = packed_geometry(ps, 5, 128);
  auto expect_bad = [](const Tensor& t, const std::vector<uint8_t>& b, const std::string& needle) {
    try {
      validate_packed(make_owned_tensor(t.name, DType::Q, t.shape, b, t.format), "m.lmp");
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("m.lmp"), std::string::npos) << e.what();
    }
  };
  std::vector<uint8_t> b(static_cast<const uint8_t*>(p.data), static_cast<const uint8_t*>(p.data) + p.nbytes);
  auto b1 = b;
  b1[size_t(pg.q_bytes + pg.scale_bytes + 16)] = 7;  // exponent 0.07
  expect_bad(p, b1, "exponent");
  auto b2 = b;
  b2[size_t(pg.q_bytes + pg.scale_bytes + 3)] ^= 1;  // a table entry
  expect_bad(p, b2, "table");
  QuantSpec bs = parse_format_name("bitmod3g64");
  const Tensor t = pack_tensor("blk.0.ffn_up.weight", quantize_rtn(w.data(), 5, 128, bs, false, nullptr));
  const PackedGeometry bg = packed_geometry(bs, 5, 128);
  std::vector<uint8_t> c(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes);
  c[size_t(bg.q_bytes + bg.scale_bytes + 4)] = 4;
  expect_bad(t, c, "selector");
  // the pack side refuses bad selectors too
  QuantizedMatrix q = quantize_rtn(w.data(), 5, 128, bs, false, nullptr);
  q.zeros[1] = 9;
  EXPECT_THROW(pack_tensor("x", q), Error);
}

TEST(NupesBitmod, Recipes) {
  EXPECT_EQ(parse_rule("nupes+gptq:pow3g64").chain, (std::vector<std::string>{"nupes", "gptq"}));
  EXPECT_EQ(parse_rule("nupes:pow4g128,err=diag").nupes_err, NupesErr::Diag);
  EXPECT_EQ(parse_rule("bitmod+gptq:bitmod3g128").chain, (std::vector<std::string>{"bitmod", "gptq"}));
  // the statistics follow the search error: err=mse is data-free, err=diag needs only diag(H)
  EXPECT_TRUE(parse_recipe("nupes:pow4g64").needs_calibration());
  EXPECT_FALSE(parse_recipe("nupes:pow4g64,err=mse").needs_calibration());
  EXPECT_TRUE(parse_recipe("nupes+gptq:pow4g64,err=mse").needs_calibration());
  EXPECT_EQ(parse_rule("nupes:pow4g64,err=diag").stats(), uint32_t(kStatDiag));
  EXPECT_EQ(parse_rule("nupes:pow4g64").stats() & kStatHessian, uint32_t(kStatHessian));
  test::expect_recipes_refused({{"nupes:w4g64", "pow3g<G>"},
                                {"nupes:pow4a0.60g64", "without one"},
                                {"nupes:pow4g64,err=x", "err"},
                                {"bitmod:nf4g64", "bitmod3g<G>"},
                                {"nupes+rtn:pow4g64", "right before gptq"}});
}

// End to end on the small shared model: the searched exponent lands in the file, and BitMoD's
// per-group choice beats plain FP4 on the same groups.
TEST(NupesBitmod, EndToEndOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  auto run = [&](const std::string& recipe, Model* keep) {
    return test::quantized_kld(m, toks, recipe + ";token_embd.weight=rtn:w8g32", test::shared("data/tinystories/calib.txt"),
                               8, keep);
  };
  Model qn;
  const double nupes = run("nupes:pow4g32", &qn), pow_default = run("rtn:pow4g32", nullptr);
  const double bitmod = run("bitmod:bitmod4g32", nullptr), rtn_fp4 = run("rtn:fp4g32", nullptr);
  std::printf("[ nupes    ] tinystories KLD: nupes pow4g32 %.4f, rtn pow4g32 (a = 0.75) %.4f; bitmod %.4f, rtn fp4g32 %.4f\n",
              nupes, pow_default, bitmod, rtn_fp4);
  int searched = 0;
  for (const Tensor* t : qn.weight_tensors())
    if (t->dtype == DType::Q && format_spec(t->format).family == FormatFamily::Pow) searched += unpack_tensor(*t).spec.param != 0;
  EXPECT_GT(searched, 0) << "every tensor kept the default exponent";
  EXPECT_LT(nupes, pow_default);
  EXPECT_LT(bitmod, rtn_fp4);
}

// ---- kernels at every ISA level ------------------------------------------------------------------
// The pow and bitmod families run on the table kernels (pow: one table per tensor, its exponent's;
// bitmod: a table per group, picked by the group's selector). Every level's matmul (decode, the
// multi-token decode path, prefill with K slices and row tiles) against the exact product with the
// dequantized weights in double, within the int8-activation bound, and against the scalar level.
class NupesBitmodKernels : public ::testing::TestWithParam<SimdLevel> {
 protected:
  void SetUp() override {
    if (GetParam() > cpu_simd_level())
      GTEST_SKIP() << "SKIPPED: ISA level " << simd_level_name(GetParam()) << " not supported by this CPU ("
                   << cpu_feature_string() << ")";
  }
};

TEST_P(NupesBitmodKernels, MatmulMatchesDoubleReference) {
  const SimdLevel level = GetParam();
  ThreadPool pool1(1), pool2(2);
  int cases = 0;
  for (const char* name : {"pow4a0.40g32", "pow3a1.50g64", "pow4a0.95g16", "pow3a0.30g128", "bitmod4g32", "bitmod4g64",
                           "bitmod4g128", "bitmod3g32", "bitmod3g64", "bitmod3g128"}) {
    const QuantSpec s = parse_format_name(name);
    // 4000 columns: prefill K slices of 64 blocks and a partial last group; 97: a partial block
    for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{13, 4000}, {5, 97}, {33, 256}}) {
      auto w = randn(size_t(rows * cols), uint32_t(rows * 131 + cols));
      QuantizedMatrix q = quantize_rtn(w.data(), rows, cols, s, false, nullptr);
      if (s.family == FormatFamily::Bitmod) {
        // every selector in every row, in a pattern unrelated to the data (a table per group must
        // be looked up per group, not per row or per block)
        const int64_t G = (cols + s.group - 1) / s.group;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t g = 0; g < G; ++g) q.zeros[size_t(r * G + g)] = int32_t((r * 3 + g * g + g / 2) % 4);
      }
      const Tensor t = pack_tensor("w", q);
      EXPECT_EQ(unpack_tensor(t).spec, s) << name;
      const std::vector<float> wd = dequantize_ref(t);
      for (int64_t n : {1, 3, 16, 70}) {
        auto x = randn(size_t(n * cols), uint32_t(7 + n + cols));
        for (int64_t tk = 0; tk < n; ++tk) x[size_t(tk * cols + (tk * 31) % cols)] = 25.f;  // an outlier per token
        std::vector<float> y(size_t(n * rows), -1.f), yref(size_t(n * rows), -2.f);
        {
          ScopedSimdLevel sl(SimdLevel::Scalar);
          matmul(t, x.data(), n, yref.data(), pool1);
        }
        {
          ScopedSimdLevel sl(level);
          ASSERT_EQ(active_simd_level(), level);
          matmul(t, x.data(), n, y.data(), n >= 16 ? pool2 : pool1);
        }
        for (int64_t tk = 0; tk < n; ++tk) {
          const float* xt = x.data() + tk * cols;
          for (int64_t r = 0; r < rows; ++r) {
            // exact product; int8 activations err by at most d_b / 2 per weight (d_b = block absmax / 127)
            double e = 0, bound = 0, mag = 0;
            for (int64_t b = 0; b * 32 < cols; ++b) {
              double amax = 0;
              for (int64_t c = b * 32; c < std::min(cols, b * 32 + 32); ++c) amax = std::max(amax, std::fabs(double(xt[c])));
              for (int64_t c = b * 32; c < std::min(cols, b * 32 + 32); ++c) {
                const double wv = wd[size_t(r * cols + c)];
                e += wv * xt[c];
                bound += std::fabs(wv) * amax / 127.0 * 0.5;
                mag += std::fabs(wv) * (std::fabs(double(xt[c])) + amax / 127.0);
              }
            }
            const size_t i = size_t(tk * rows + r);
            const std::string where = std::string(name) + " " + simd_level_name(level) + " rows=" + std::to_string(rows) +
                                      " cols=" + std::to_string(cols) + " n=" + std::to_string(n) + " t=" +
                                      std::to_string(tk) + " r=" + std::to_string(r);
            ASSERT_NEAR(yref[i], e, bound + 3e-5 * mag) << where;
            ASSERT_NEAR(y[i], e, bound + 3e-5 * mag) << where;
            ASSERT_NEAR(y[i], yref[i], 3e-5 * mag) << where;
          }
        }
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 10 * 3 * 4);
}

INSTANTIATE_TEST_SUITE_P(Levels, NupesBitmodKernels,
                         ::testing::Values(SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512),
                         [](const ::testing::TestParamInfo<SimdLevel>& i) { return std::string(simd_level_name(i.param)); });
