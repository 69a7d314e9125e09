// AMX paths (issue 9): the two GEMMs for f16 / bf16 weights (int8 tiles on 16-bit fixed-point
// limbs, the default; bf16 tiles on a high + low split) against a double product; the matmul front
// end with AMX on and off. (The AMX int8 prefill kernel is in
// test_formats.cpp's repacked parity tests, QuantKernelsAmx.*.) Every test skips loudly on a CPU
// or OS without AMX.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "lmpress/engine.h"
#include "lmpress/model.h"
#include "test_util.h"

using namespace lmpress;
using test::randn;

namespace {

bool skip_without_amx_bf16() {
  if (!cpu_has_amx()) return true;
  ScopedSimdLevel sl(SimdLevel::AVX512, true);
  return !amx_bf16_active();
}

Tensor dense16(DType dt, int64_t rows, int64_t cols, uint32_t seed, std::vector<float>* exact) {
  auto w = randn(size_t(rows * cols), seed, 0.05f);
  std::vector<uint8_t> bytes(size_t(rows * cols) * 2);
  auto* h = reinterpret_cast<uint16_t*>(bytes.data());
  exact->resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    h[i] = dt == DType::F16 ? f32_to_f16(w[i]) : f32_to_bf16(w[i]);
    (*exact)[i] = dt == DType::F16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
  }
  return make_owned_tensor("w", dt, {rows, cols}, std::move(bytes));
}

}  // namespace

// Restores the default f16/bf16 prefill path when a test ends.
struct ScopedBf16x3 {
  explicit ScopedBf16x3(bool on) { force_f16_prefill_bf16x3(on); }
  ~ScopedBf16x3() { force_f16_prefill_bf16x3(false); }
};

// The bf16-split kernel over ragged shapes (rows, columns and tokens not multiples of the tiles)
// against a double product of the stored weights with the f32 activations. Bound: 2^-15 of
// sum |w x| per output (the split's <= 2^-17 per product plus f32 accumulation); the worst errors
// of the AMX path and the f32 path (f16 -> f32 panels + OpenBLAS) on the largest shape are printed.
TEST(Amx, Bf16SplitGemmMatchesDouble) {
  if (skip_without_amx_bf16())
    GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX-BF16; the AMX f16/bf16 GEMM is not run (" << cpu_feature_string()
                 << ")";
  ScopedBf16x3 path(true);
  ThreadPool pool(2);
  int cases = 0;
  for (DType dt : {DType::F16, DType::BF16})
    for (int64_t rows : {1, 17, 40})
      for (int64_t cols : {1, 33, 352, 1023})
        for (int64_t n : {4, 16, 33, 70}) {
          std::vector<float> wd;
          const Tensor W = dense16(dt, rows, cols, uint32_t(rows * 31 + cols * 7 + n), &wd);
          auto x = randn(size_t(n * cols), uint32_t(n + cols), 1.f);
          for (int64_t t = 0; t < n; ++t) x[size_t(t * cols)] *= 40.f;  // an outlier channel
          std::vector<float> ya(size_t(n * rows), NAN), yf(size_t(n * rows), NAN);
          {
            ScopedSimdLevel sl(SimdLevel::AVX512, true);
            ASSERT_FALSE(f16_prefill_int16());
            matmul(W, x.data(), n, ya.data(), pool);
          }
          {
            ScopedSimdLevel sl(SimdLevel::AVX512, false);
            matmul(W, x.data(), n, yf.data(), pool);
          }
          double worst_a = 0, worst_f = 0;
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double e = 0, m = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double p = double(wd[size_t(r * cols + c)]) * x[size_t(t * cols + c)];
                e += p;
                m += std::fabs(p);
              }
              const size_t i = size_t(t * rows + r);
              ASSERT_NEAR(ya[i], e, m * std::ldexp(1.0, -15) + 1e-30)
                  << dtype_name(dt) << " rows " << rows << " cols " << cols << " n " << n << " t " << t << " r " << r;
              worst_a = std::max(worst_a, std::fabs(ya[i] - e) / (m + 1e-30));
              worst_f = std::max(worst_f, std::fabs(yf[i] - e) / (m + 1e-30));
            }
          if (cols == 1023 && rows == 40 && n == 70)
            std::printf("  %s 40x1023 x 70 tokens: worst |error| / sum|w x|: amx split %.3g, f32 panels + sgemm %.3g\n",
                        dtype_name(dt), worst_a, worst_f);
          ++cases;
        }
  EXPECT_EQ(cases, 2 * 3 * 4 * 4);
}

// The int8-limb kernel (the default) over the same ragged shapes, with an outlier channel, against a
// double product. Its error comes from the two 16-bit roundings and the dropped lo x lo product,
// each <= 2^-16 of a block maximum: per column c, |w_c| mx_c + |x_c| mw_c + mw_c mx_c with mx_c the
// largest |x| of c's 256-column chunk of that token and mw_c the largest |w| of c's 256-column block
// of that row; the bound is that sum x 2^-15 plus 2^-20 sum |w x| (f32 accumulation). On rows of
// 352+ columns the actual error must also stay below 2^-11 of sum |w x| (the relative rounding of an f16
// value; with the outlier channel short rows come within 2x of it).
TEST(Amx, Int16LimbGemmMatchesDouble) {
  if (!cpu_has_amx())
    GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX; the AMX int8-limb f16/bf16 GEMM is not run ("
                 << cpu_feature_string() << ")";
  ScopedBf16x3 path(false);
  ThreadPool pool(2);
  int cases = 0;
  double worst = 0;
  for (DType dt : {DType::F16, DType::BF16})
    for (int64_t rows : {1, 17, 40})
      for (int64_t cols : {1, 33, 64, 352, 1023})
        for (int64_t n : {4, 16, 33, 70}) {
          std::vector<float> wd;
          const Tensor W = dense16(dt, rows, cols, uint32_t(rows * 37 + cols * 5 + n), &wd);
          auto x = randn(size_t(n * cols), uint32_t(n * 3 + cols), 1.f);
          for (int64_t t = 0; t < n; ++t) x[size_t(t * cols)] *= 40.f;  // an outlier channel
          std::vector<float> ya(size_t(n * rows), NAN);
          {
            ScopedSimdLevel sl(SimdLevel::AVX512, true);
            ASSERT_TRUE(f16_prefill_int16());
            matmul(W, x.data(), n, ya.data(), pool);
          }
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double e = 0, m = 0, bound = 0;
              for (int64_t c0 = 0; c0 < cols; c0 += 256) {
                const int64_t c1 = std::min(cols, c0 + 256);
                double mx = 0, mw = 0;
                for (int64_t c = c0; c < c1; ++c) {
                  mx = std::max(mx, double(std::fabs(x[size_t(t * cols + c)])));
                  mw = std::max(mw, double(std::fabs(wd[size_t(r * cols + c)])));
                }
                for (int64_t c = c0; c < c1; ++c) {
                  const double w = wd[size_t(r * cols + c)], xv = x[size_t(t * cols + c)];
                  e += w * xv;
                  m += std::fabs(w * xv);
                  bound += std::fabs(w) * mx + std::fabs(xv) * mw + mw * mx;
                }
              }
              bound = bound * std::ldexp(1.0, -15) + m * std::ldexp(1.0, -20) + 1e-30;
              const size_t i = size_t(t * rows + r);
              ASSERT_NEAR(ya[i], e, bound)
                  << dtype_name(dt) << " rows " << rows << " cols " << cols << " n " << n << " t " << t << " r " << r;
              if (cols >= 352) {  // the typical error: far inside the worst-case bound
                EXPECT_LT(std::fabs(ya[i] - e), m * std::ldexp(1.0, -11))
                    << dtype_name(dt) << " rows " << rows << " cols " << cols << " n " << n << " t " << t << " r " << r;
                worst = std::max(worst, std::fabs(ya[i] - e) / (m + 1e-30));
              }
            }
          ++cases;
        }
  std::printf("  int8 limbs, cols >= 352: worst |error| / sum|w x| %.3g\n", worst);
  EXPECT_EQ(cases, 2 * 3 * 5 * 4);
}

// Non-finite values propagate as in f32 (files loaded with --no-check must not give finite logits):
// a NaN or Inf weight makes its row's outputs NaN, an Inf activation its token's outputs, the rest
// stay finite; on both AMX paths.
TEST(Amx, NonFiniteValuesPropagate) {
  if (!cpu_has_amx()) GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX (" << cpu_feature_string() << ")";
  ThreadPool pool(2);
  const int64_t rows = 40, cols = 600, n = 20;
  for (bool bf16x3 : {false, true}) {
    ScopedSimdLevel sl(SimdLevel::AVX512, true);
    ScopedBf16x3 path(bf16x3);
    if (bf16x3 && f16_prefill_int16()) continue;  // (no AMX-BF16)
    for (float bad : {NAN, INFINITY}) {
      std::vector<float> wd;
      const Tensor W = dense16(DType::F16, rows, cols, 5, &wd);
      const_cast<uint16_t*>(W.as<uint16_t>())[7 * cols + 300] = f32_to_f16(bad);  // row 7 (owned bytes)
      auto x = randn(size_t(n * cols), 6, 1.f);
      x[size_t(3 * cols + 17)] = INFINITY;  // token 3
      std::vector<float> y(size_t(n * rows), 0.f);
      matmul(W, x.data(), n, y.data(), pool);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          const float v = y[size_t(t * rows + r)];
          if (r == 7 || t == 3)
            EXPECT_FALSE(std::isfinite(v)) << "bf16x3 " << bf16x3 << " bad " << bad << " t " << t << " r " << r;
          else
            EXPECT_TRUE(std::isfinite(v)) << "bf16x3 " << bf16x3 << " bad " << bad << " t " << t << " r " << r;
        }
    }
  }
}

// The path is taken (prefill of an f16 tensor on AMX) and is not taken for decode-sized batches
// or with AMX off.
TEST(Amx, Bf16PathSelection) {
  if (skip_without_amx_bf16())
    GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX-BF16 (" << cpu_feature_string() << ")";
  {
    ScopedSimdLevel sl(SimdLevel::AVX512, true);
    EXPECT_TRUE(amx_active());
    EXPECT_TRUE(amx_bf16_active());
  }
  {
    ScopedSimdLevel sl(SimdLevel::AVX512, true);
    EXPECT_TRUE(f16_prefill_int16());  // the default
    ScopedBf16x3 path(true);
    EXPECT_FALSE(f16_prefill_int16());
  }
  {
    ScopedSimdLevel sl(SimdLevel::AVX512, false);
    EXPECT_FALSE(amx_active());
    EXPECT_FALSE(f16_prefill_int16());
  }
  {
    ScopedSimdLevel sl(SimdLevel::AVX2, true);  // AMX needs the AVX-512 level
    EXPECT_FALSE(amx_active());
  }
  // The peak measurement runs and is plausible (> 100 GFLOP/s per core for bf16 tiles).
  ScopedSimdLevel sl(SimdLevel::AVX512, true);
  EXPECT_GT(kern::bf16_peak_gflops_amx(0.05), 100e9);
}
