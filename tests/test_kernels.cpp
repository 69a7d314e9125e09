// Dense kernel parity: every ISA level the CPU has against a double-precision dot product, on
// awkward sizes. Levels the CPU lacks are skipped loudly.
#include <cmath>
#include <random>

#include "kernels/kernels.h"
#include "test_util.h"

using namespace lmpress;

class KernelsDense : public testing::TestWithParam<SimdLevel> {};

// w as f16 and as bf16 (round to nearest even).
void to_16bit(const std::vector<float>& w, std::vector<uint16_t>& h, std::vector<uint16_t>& b) {
  h.resize(w.size());
  b.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    h[i] = f32_to_f16(w[i]);
    b[i] = f32_to_bf16(w[i]);
  }
}

TEST_P(KernelsDense, GemvParity) {
  if (GetParam() > cpu_simd_level())
    GTEST_SKIP() << "SKIPPED: ISA level " << simd_level_name(GetParam()) << " not supported by this CPU ("
                 << cpu_feature_string() << ")";
  const std::vector<SimdLevel> levels = {GetParam()};
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (size_t k : {1, 7, 8, 15, 16, 31, 33, 127, 352, 1023}) {
    for (size_t rows : {1, 3, 4, 5, 17}) {
      std::vector<float> w(rows * k), x(k);
      for (auto& v : w) v = nd(rng);
      for (auto& v : x) v = nd(rng);
      std::vector<uint16_t> w16, wb;
      to_16bit(w, w16, wb);
      for (SimdLevel l : levels) {
        const auto& K = kern::ops_at(l);
        std::vector<float> y32(rows), y16(rows), yb(rows);
        K.gemv_f32(w.data(), k, x.data(), k, y32.data(), rows);
        K.gemv_f16(w16.data(), k, x.data(), k, y16.data(), rows);
        K.gemv_bf16(wb.data(), k, x.data(), k, yb.data(), rows);
        for (size_t r = 0; r < rows; ++r) {
          double r32 = 0, r16 = 0, rb = 0, mag = 0;
          for (size_t j = 0; j < k; ++j) {
            r32 += double(w[r * k + j]) * x[j];
            r16 += double(f16_to_f32(w16[r * k + j])) * x[j];
            rb += double(bf16_to_f32(wb[r * k + j])) * x[j];
            mag += std::fabs(double(w[r * k + j]) * x[j]);
          }
          const double tol = 1e-5 * mag + 1e-6;
          ASSERT_NEAR(y32[r], r32, tol) << simd_level_name(l) << " k=" << k;
          ASSERT_NEAR(y16[r], r16, tol) << simd_level_name(l) << " k=" << k;
          ASSERT_NEAR(yb[r], rb, tol) << simd_level_name(l) << " k=" << k;
        }
        float d = K.dot_f32(w.data(), x.data(), k);
        double rd = 0, mag = 0;
        for (size_t j = 0; j < k; ++j) rd += double(w[j]) * x[j], mag += std::fabs(double(w[j]) * x[j]);
        ASSERT_NEAR(d, rd, 1e-5 * mag + 1e-6);
        std::vector<float> conv(k);
        K.f16_to_f32(w16.data(), conv.data(), k);
        for (size_t j = 0; j < k; ++j) ASSERT_EQ(conv[j], f16_to_f32(w16[j]));
        K.bf16_to_f32(wb.data(), conv.data(), k);
        for (size_t j = 0; j < k; ++j) ASSERT_EQ(conv[j], bf16_to_f32(wb[j]));
      }
    }
  }
}

TEST_P(KernelsDense, SiluMulMatchesDouble) {
  if (GetParam() > cpu_simd_level())
    GTEST_SKIP() << "SKIPPED: ISA level " << simd_level_name(GetParam()) << " not supported by this CPU ("
                 << cpu_feature_string() << ")";
  const auto& K = kern::ops_at(GetParam());
  std::vector<float> g, u;
  for (int i = -2000; i <= 2000; ++i) {  // -100 .. 100 in steps of 0.05, and awkward values
    g.push_back(float(i) * 0.05f);
    u.push_back(1.f + float(i % 7) * 0.25f);
  }
  for (float v : {-89.f, -87.5f, -1e-30f, 0.f, 1e-30f, 88.5f, 1e30f}) {
    g.push_back(v);
    u.push_back(-3.f);
  }
  for (size_t n : {g.size(), size_t(1), size_t(7), size_t(13)}) {
    std::vector<float> y(g.begin(), g.begin() + long(n));
    K.silu_mul_f32(y.data(), u.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const double x = g[i], ref = x / (1.0 + std::exp(-x)) * double(u[i]);
      EXPECT_NEAR(y[i], ref, 1e-6 * std::fabs(ref) + 1e-30) << "x = " << x;  // (underflow below)
    }
  }
  // NaN propagates; +inf stays +inf; a huge negative input gives (about) zero, not NaN
  std::vector<float> y = {std::nanf(""), 1.f, -1e30f, INFINITY}, uu = {1.f, 1.f, 1.f, 1.f};
  K.silu_mul_f32(y.data(), uu.data(), 4);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_NEAR(y[1], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_LT(std::fabs(y[2]), 1e-6f);
  EXPECT_TRUE(std::isinf(y[3]) && y[3] > 0);
}

// The f16 / bf16 GEMM (prefill without AMX): every level against a double product, over token
// counts around the micro-kernel's tile (6 / 12 tokens) and the token blocks (at most 192 tokens, equal
// sizes in multiples of the tile: 200 = 2 blocks, 400 = 3 with a shorter last one), row counts around the
// panel (16 / 32 rows) with ragged ends and a row range not starting at 0, column counts around the
// 8-column transpose and the 256-column chunk; and a NaN weight gives NaN outputs in its row only.
TEST_P(KernelsDense, Gemm16MatchesDouble) {
  if (GetParam() > cpu_simd_level())
    GTEST_SKIP() << "SKIPPED: ISA level " << simd_level_name(GetParam()) << " not supported by this CPU ("
                 << cpu_feature_string() << ")";
  const auto& K = kern::ops_at(GetParam());
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  struct Case {
    int64_t n, rows, cols, r0;
  };
  const std::vector<Case> cases = {{1, 16, 8, 0},    {5, 17, 7, 0},     {6, 33, 33, 16},  {13, 40, 257, 0},
                                   {16, 64, 300, 32}, {33, 70, 513, 0},  {128, 48, 96, 16}, {200, 35, 64, 0},
                                   {97, 96, 260, 32}, {400, 20, 40, 0}};
  for (const Case& c : cases) {
    std::vector<float> w(size_t(c.rows * c.cols)), x(size_t(c.n * c.cols));
    for (auto& v : w) v = nd(rng);
    for (auto& v : x) v = nd(rng);
    std::vector<uint16_t> w16, wb;
    to_16bit(w, w16, wb);
    const int64_t ldy = c.rows + 3;
    for (int which = 0; which < 2; ++which) {
      const std::vector<uint16_t>& W = which ? wb : w16;
      std::vector<float> y(size_t(c.n * ldy), -7.f);
      (which ? K.gemm_bf16 : K.gemm_f16)(W.data(), c.cols, x.data(), c.n, y.data(), ldy, c.r0, c.rows);
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t r = 0; r < ldy; ++r) {
          const float got = y[size_t(t * ldy + r)];
          if (r < c.r0 || r >= c.rows) {
            ASSERT_EQ(got, -7.f) << "wrote outside rows [r0, r1): t=" << t << " r=" << r;
            continue;
          }
          double ref = 0, mag = 0;
          for (int64_t j = 0; j < c.cols; ++j) {
            const double wv = which ? bf16_to_f32(W[size_t(r * c.cols + j)]) : f16_to_f32(W[size_t(r * c.cols + j)]);
            ref += wv * x[size_t(t * c.cols + j)];
            mag += std::fabs(wv * x[size_t(t * c.cols + j)]);
          }
          ASSERT_NEAR(got, ref, 1e-5 * mag + 1e-6)
              << simd_level_name(GetParam()) << (which ? " bf16" : " f16") << " n=" << c.n << " rows=" << c.rows
              << " cols=" << c.cols << " t=" << t << " r=" << r;
        }
    }
  }
  // NaN in one weight: NaN in that row's outputs, the other rows finite
  const int64_t n = 7, rows = 20, cols = 40;
  std::vector<uint16_t> W(size_t(rows * cols), f32_to_f16(0.5f));
  W[size_t(3 * cols + 11)] = 0x7e00;  // f16 NaN
  std::vector<float> x(size_t(n * cols), 1.f), y(size_t(n * rows));
  K.gemm_f16(W.data(), cols, x.data(), n, y.data(), rows, 0, rows);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      if (r == 3) EXPECT_TRUE(std::isnan(y[size_t(t * rows + r)]));
      else EXPECT_FLOAT_EQ(y[size_t(t * rows + r)], 20.f);
    }
}

INSTANTIATE_TEST_SUITE_P(Levels, KernelsDense,
                         testing::Values(SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512),
                         [](const testing::TestParamInfo<SimdLevel>& i) { return std::string(simd_level_name(i.param)); });
