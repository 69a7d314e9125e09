// SpQR method tests. The oracle below is the method's core step (one sweep) written the plain way:
// double precision, H^-1 by a Cholesky solve of identity columns, one column at a time with the
// update of all remaining columns and the inverse eliminated after each column (no lazy batching,
// no blocks), the leave-one-out outlier search and the first-level statistics in double. Only the
// format's second-level quantization (formats/spqr.h set_group, the format's definition) is shared.
#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "formats/spqr.h"
#include "lmpress/compress.h"
#include "test_util.h"

using namespace lmpress;

namespace {

// Inputs x_j = a_j (z_j + 0.7 z_{j-1}) (an MA(1) chain: neighbouring columns correlate), scales a_j
// spread over a decade, every 11th column heavy; H = mean x^T x.
std::vector<double> ma_hessian(int64_t n, int64_t samples, uint64_t seed, int64_t dead) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  std::vector<double> a(static_cast<size_t>(n)), h(size_t(n * n), 0.0), x(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) a[size_t(j)] = std::exp(std::log(10.0) * double(rng() % 1000) / 1000.0) * (j % 11 == 0 ? 4 : 1);
  for (int64_t t = 0; t < samples; ++t) {
    double prev = nd(rng);
    for (int64_t j = 0; j < n; ++j) {
      const double z = nd(rng);
      x[size_t(j)] = j == dead ? 0.0 : a[size_t(j)] * (z + 0.7 * prev);
      prev = z;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) h[size_t(i * n + j)] += x[size_t(i)] * x[size_t(j)] / double(samples);
  }
  return h;
}

std::vector<float> heavy_weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.04f);
  std::vector<float> w(size_t(rows * cols));
  for (auto& v : w) v = nd(rng);
  for (int64_t k = 0; k < rows * cols / 60; ++k) w[size_t(rng() % w.size())] *= 8.f;  // outliers
  return w;
}

void eliminate(std::vector<double>& hinv, int64_t n, int64_t i) {
  const double d = hinv[size_t(i * n + i)];
  for (int64_t j = i + 1; j < n; ++j)
    for (int64_t k = i + 1; k < n; ++k) hinv[size_t(j * n + k)] -= hinv[size_t(j * n + i)] * hinv[size_t(i * n + k)] / d;
}

// SpQR's first-level statistics in double (the format's rules: min-max, widened to 0 when |zero|
// would exceed 1024, 0 for an all-zero group), and the nearest code under (scale, zero).
void stats_d(const std::vector<double>& v, int bits, double* scale, double* zero) {
  double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  *scale = 0, *zero = 0;
  if (lo == 0 && hi == 0) return;
  const double maxq = (1 << bits) - 1;
  if (hi > lo) *scale = (hi - lo) / maxq, *zero = -lo / *scale;
  if (!(hi > lo) || std::fabs(*zero) > 1024) {
    lo = std::min(lo, 0.0), hi = std::max(hi, 0.0);
    *scale = (hi - lo) / maxq, *zero = -lo / *scale;
  }
}
double deq_d(double w, double s, double z, int bits) {
  const double maxq = (1 << bits) - 1;
  const double q = s > 0 ? std::clamp(std::nearbyint(w / s + z), 0.0, maxq) : std::clamp(std::nearbyint(z), 0.0, maxq);
  return s * q - s * z;
}

struct Oracle {
  QuantizedMatrix qm;
  std::set<uint32_t> outliers;
};

Oracle oracle_sweep(const std::vector<float>& w, int64_t rows, int64_t n, const QuantSpec& s,
                    const std::vector<double>& H, double tau, double damp) {
  const int64_t g = s.group, R = s.group2;
  std::vector<double> h(H);
  std::vector<bool> dead(static_cast<size_t>(n));
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) {
    dead[size_t(j)] = H[size_t(j * n + j)] == 0;
    if (dead[size_t(j)]) {
      for (int64_t k = 0; k < n; ++k) h[size_t(j * n + k)] = h[size_t(k * n + j)] = 0;
      h[size_t(j * n + j)] = 1;
    }
    mean += h[size_t(j * n + j)] / double(n);
  }
  for (int64_t j = 0; j < n; ++j) h[size_t(j * n + j)] += damp * mean;
  std::vector<double> hinv = test::spd_inverse(h, n), ud(static_cast<size_t>(n));
  {
    std::vector<double> t = hinv;
    for (int64_t j = 0; j < n; ++j) ud[size_t(j)] = std::sqrt(t[size_t(j * n + j)]), eliminate(t, n, j);
  }
  std::vector<double> W(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) W[size_t(r * n + j)] = dead[size_t(j)] ? 0.0 : w[size_t(r * n + j)];
  double oscale = 0;
  for (int64_t j = 0; j < n; ++j) {
    double m = 0, v = 0;
    for (int64_t r = 0; r < rows; ++r) m += W[size_t(r * n + j)] / double(rows);
    for (int64_t r = 0; r < rows; ++r) v += (W[size_t(r * n + j)] - m) * (W[size_t(r * n + j)] - m) / double(rows - 1);
    oscale += v / (ud[size_t(j)] * ud[size_t(j)]) / double(n);
  }
  const double thr = tau * oscale;
  Oracle o;
  QuantSpec dense = s;
  dense.sparse = 0;
  o.qm.init(dense, rows, n);
  std::vector<spqr::Factors> f(static_cast<size_t>(rows));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t gi = i / g;
    if (i % g == 0) {
      const int64_t len = std::min(g, n - i);
      for (int64_t r0 = 0; r0 < rows; r0 += R) {
        const int64_t r1 = std::min(rows, r0 + R);
        std::vector<float> sc, ze;
        for (int64_t r = r0; r < r1; ++r) {
          std::vector<double> v(W.begin() + r * n + i, W.begin() + r * n + i + len), fit = v;
          if (std::isfinite(thr) && len > 1) {  // leave-one-out: which weights to fit without
            auto err = [&](const std::vector<double>& x, int64_t skip) {
              std::vector<double> rest;
              for (int64_t k = 0; k < len; ++k)
                if (k != skip) rest.push_back(x[size_t(k)]);
              double sc1, z1, e = 0;
              stats_d(rest, s.bits, &sc1, &z1);
              for (int64_t k = 0; k < len; ++k)
                if (k != skip) e += std::pow((deq_d(x[size_t(k)], sc1, z1, s.bits) - x[size_t(k)]) / ud[size_t(i + k)], 2);
              return e;
            };
            const double base = err(v, -1);
            std::vector<bool> mask(static_cast<size_t>(len));
            double sum = 0;
            int cnt = 0;
            for (int64_t k = 0; k < len; ++k) {
              mask[size_t(k)] = base - err(v, k) > thr;
              if (!mask[size_t(k)]) sum += v[size_t(k)], ++cnt;
            }
            for (int64_t k = 0; k < len; ++k)
              if (mask[size_t(k)]) fit[size_t(k)] = cnt ? sum / cnt : 0.0;
          }
          double sc1, z1;
          stats_d(fit, s.bits, &sc1, &z1);
          sc.push_back(float(sc1));
          ze.push_back(float(z1));
        }
        spqr::set_group(o.qm, r0, r1, gi, sc.data(), ze.data());
      }
      for (int64_t r = 0; r < rows; ++r) f[size_t(r)] = spqr::factors(o.qm, r, gi);
    }
    for (int64_t r = 0; r < rows; ++r) {
      double* wr = W.data() + r * n;
      const spqr::Factors& fr = f[size_t(r)];
      const double maxq = (1 << s.bits) - 1;
      const double q = fr.s > 0 ? std::clamp(std::nearbyint(wr[i] / fr.s + fr.z), 0.0, maxq) : std::clamp(std::nearbyint(double(fr.z)), 0.0, maxq);
      o.qm.q[size_t(r * n + i)] = uint8_t(q);
      double v = double(fr.s) * q - double(fr.m);
      if (std::pow((wr[i] - v) / ud[size_t(i)], 2) > thr) {
        o.outliers.insert(uint32_t(r * n + i));
        v = wr[i];
      }
      const double e = (wr[i] - v) / hinv[size_t(i * n + i)];
      for (int64_t j = i + 1; j < n; ++j) wr[j] -= e * hinv[size_t(i * n + j)];
    }
    eliminate(hinv, n, i);
  }
  return o;
}

double loss(const std::vector<float>& w, const QuantizedMatrix& q, const std::vector<double>& H) {
  const std::vector<float> d = dequantize_matrix(q);
  const int64_t n = q.cols;
  double t = 0;
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        t += (double(w[size_t(r * n + i)]) - d[size_t(r * n + i)]) * H[size_t(i * n + j)] * (double(w[size_t(r * n + j)]) - d[size_t(r * n + j)]);
  return t / double(q.rows);
}

}  // namespace

TEST(Spqr, SweepMatchesPlainDoubleOracle) {
  const int64_t rows = 48, n = 96, dead = 41;
  const auto H = ma_hessian(n, 600, 3, dead);
  const auto w = heavy_weights(rows, n, 5);
  ThreadPool pool(2);
  int configs = 0;
  for (const char* name : {"spqr2g16", "spqr3g32r32", "spqr4g16r64", "spqr3g32"})
    for (double tau : {double(INFINITY), 0.2, 1.0})
      for (int64_t block : {128, 32}) {
        const QuantSpec s = parse_format_name(name);
        SpqrOptions o;
        o.block = block;
        const QuantizedMatrix got = spqr_sweep(w.data(), rows, n, s, H, tau, o, pool);
        const Oracle ref = oracle_sweep(w, rows, n, s, H, tau, o.damp);
        SCOPED_TRACE(testing::Message() << name << " tau=" << tau << " block=" << block);
        int64_t same = 0, same_stats = 0;
        for (size_t k = 0; k < got.q.size(); ++k) same += got.q[k] == ref.qm.q[k];
        for (size_t k = 0; k < got.zeros.size(); ++k) same_stats += got.zeros[k] == ref.qm.zeros[k];
        EXPECT_GE(double(same), 0.99 * double(got.q.size()));
        EXPECT_GE(double(same_stats), 0.98 * double(got.zeros.size()));
        const std::set<uint32_t> mine(got.sp_idx.begin(), got.sp_idx.end());
        ASSERT_EQ(mine.size(), got.sp_idx.size());
        ASSERT_TRUE(std::is_sorted(got.sp_idx.begin(), got.sp_idx.end()));
        int64_t common = 0;
        for (uint32_t i : mine) common += ref.outliers.count(i);
        if (!std::isfinite(tau)) {
          EXPECT_TRUE(mine.empty());
          EXPECT_TRUE(ref.outliers.empty());
        } else {
          EXPECT_GT(mine.size(), 0u);
          EXPECT_GE(double(common), 0.95 * double(std::max(mine.size(), ref.outliers.size())));
        }
        // an outlier's value is the updated weight in f16 on top of its code's value; a dead input's
        // weight is 0 (its code the zero point's)
        for (int64_t r = 0; r < rows; ++r) {
          const spqr::Factors f = spqr::factors(got, r, dead / s.group);
          EXPECT_NEAR(spqr::value(got.q[size_t(r * n + dead)], f), 0.0, 0.51 * f.s + 1e-6);
        }
        ++configs;
      }
  EXPECT_EQ(configs, 4 * 3 * 2);
}

TEST(Spqr, MethodFillsTheBudgetAndLowersTheLoss) {
  const int64_t rows = 64, n = 128;
  const auto H = ma_hessian(n, 800, 7, -1);
  const auto w = heavy_weights(rows, n, 9);
  ThreadPool pool(2);
  const QuantSpec dense = parse_format_name("spqr3g16"), sp = parse_format_name("spqr3g16+s1.00");
  const int64_t nnz = sparse_count(sp, rows, n);
  const double l_rtn = loss(w, quantize_rtn_ref(w.data(), rows, n, dense), H);
  const double l_dense = loss(w, quantize_spqr(w.data(), rows, n, dense, H, SpqrOptions{}, pool), H);
  int sweeps = 0;
  const QuantizedMatrix q = quantize_spqr(w.data(), rows, n, sp, H, SpqrOptions{}, pool, &sweeps);
  const double l_sp = loss(w, q, H);
  std::printf("[ spqr     ] loss: rtn %.4g, sweep %.4g, +s1.00 %.4g (%d sweeps)\n", l_rtn, l_dense, l_sp, sweeps);
  EXPECT_LT(l_dense, l_rtn);
  EXPECT_LT(l_sp, 0.9 * l_dense);
  EXPECT_GT(sweeps, 1);
  ASSERT_EQ(int64_t(q.sp_idx.size()), nnz);
  ASSERT_TRUE(std::is_sorted(q.sp_idx.begin(), q.sp_idx.end()));
  // packs; the packed tensor is the matrix
  const Tensor t = pack_tensor("w", q);
  EXPECT_EQ(dequantize_ref(t), dequantize_matrix(q));
  // a given tau: one sweep; the budget's rest filled after it never raises the loss
  SpqrOptions o;
  o.tau = 4.0;
  const QuantizedMatrix swept = spqr_sweep(w.data(), rows, n, sp, H, o.tau, o, pool);
  ASSERT_LT(int64_t(swept.sp_idx.size()), nnz);
  const QuantizedMatrix filled = quantize_spqr(w.data(), rows, n, sp, H, o, pool, &sweeps);
  EXPECT_EQ(sweeps, 1);
  EXPECT_EQ(int64_t(filled.sp_idx.size()), nnz);
  EXPECT_LT(loss(w, filled, H), loss(w, swept, H));
  // too many outliers for the budget at a small tau; tau without a budget; other formats
  o.tau = 1e-6;
  EXPECT_THROW(quantize_spqr(w.data(), rows, n, sp, H, o, pool), Error);
  EXPECT_THROW(quantize_spqr(w.data(), rows, n, dense, H, o, pool), Error);
  EXPECT_THROW(quantize_spqr(w.data(), rows, n, QuantSpec{3, 16, false}, H, SpqrOptions{}, pool), Error);
  // bad input: non-finite weights, Hessian of the wrong size
  std::vector<float> bad = w;
  bad[7] = NAN;
  EXPECT_THROW(quantize_spqr(bad.data(), rows, n, dense, H, SpqrOptions{}, pool), Error);
  EXPECT_THROW(quantize_spqr(w.data(), rows, n, dense, std::vector<double>(10), SpqrOptions{}, pool), Error);
}

TEST(Spqr, DenseLayerErrorMatchesNaive) {
  const int64_t rows = 20, n = 48;
  const auto H = ma_hessian(n, 300, 11, -1);
  const auto w = heavy_weights(rows, n, 13);
  const QuantizedMatrix q = quantize_rtn_ref(w.data(), rows, n, parse_format_name("spqr2g16"));
  double rel = 0;
  const double e = dense_layer_error(w.data(), dequantize_matrix(q), rows, n, H, &rel);
  const double ref = loss(w, q, H);
  EXPECT_NEAR(e, ref, 1e-9 * ref);
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 1.0);
}
