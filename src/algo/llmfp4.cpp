// LLM-FP4 (Liu et al. 2023, "LLM-FP4: 4-Bit Floating-Point Quantized Transformers", EMNLP 2023),
// its weight part: E2M1 values with a real-valued exponent bias b instead of the fixed integer one
// (any minifloat of the fp family the same way: the bias is the group's f16 scale of its table), and
// with `search` its format search: each exponent/mantissa split of the bit width, the one of least
// layer output error kept per tensor (the reference searches the format per layer).
// An E2M1 number with bias b takes the magnitudes 2^-b * {0, 1, 2, 3, 4, 6, 8, 12} (subnormal
// step 2^-b, largest 1.5 * 2^(3 - b)): exactly the fp4 format's int8 table 2 * E2M1 times the
// scale 2^-b, so fp4g<G> stores the searched bias as its f16 group scale and the existing table
// kernels run it. The bias is searched per output channel and block of G input columns (the
// reference's n_V = rows, n_H = cols / G blocks):
//  - min-max init b0 = 2^E - log2(max|w|) + log2(2 - 2^-M) - 1 = log2(12 / max|w|) (E = 2, M = 1);
//  - candidates b = alpha_k * b0, alpha_k = 0.01 + k * (1.2 - 0.01) / n, k = 0..n (the reference's
//    eq_alpha, eq_beta, eq_n = 100), each scale 2^-b f16-rounded as the format stores it;
//  - criterion: the layer's output error on the calibration inputs, per output channel r
//    sum_t (x_t . (w_r - q_r))^2 = d_r^T H d_r (the reference's L2 similarity of the layer outputs;
//    its activations are unquantized here: lmpress quantizes weights only);
//  - the blocks of a row one after the other, the others held at their current bias (the
//    reference's loop over n_H), for `rounds` sweeps (its search_round = 3); the current bias is a
//    candidate too, so the row's error never increases (docs/methods.md: deviations).
// Cost per row and sweep: (n + 1) * cols * G multiply-adds, plus cols^2 once.
#include <algorithm>
#include <cmath>

#include "lmpress/compress.h"

namespace lmpress {

namespace detail {

double llmfp4_init_bias(float amax, float vmax) { return std::log2(double(vmax) / double(amax)); }

std::vector<double> llmfp4_alphas(int n) {
  std::vector<double> a(static_cast<size_t>(n) + 1);
  for (int k = 0; k <= n; ++k) a[size_t(k)] = kLlmfp4AlphaLo + double(k) * (kLlmfp4AlphaHi - kLlmfp4AlphaLo) / double(n);
  return a;
}

}  // namespace detail

QuantizedMatrix quantize_llmfp4(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                                const std::vector<double>& H, const Llmfp4Options& o, ThreadPool& pool,
                                double* err_minmax, double* err_searched) {
  if (s.family != FormatFamily::FP4)
    fail("llmfp4", "llmfp4 searches the exponent bias of a minifloat: use an fp format (fp4g<G>, fp3g<G>, ...), not " +
                       format_name(s));
  if (int64_t(H.size()) != cols * cols) fail("llmfp4", "Hessian size does not match the weight's columns");
  if (o.n < 1 || o.rounds < 0) fail("llmfp4", "n must be >= 1 and rounds >= 0");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail("llmfp4", "non-finite weight at index " + std::to_string(i));
  const std::unique_ptr<Grid> grid = make_grid(s);
  float vmax = 0.f;  // the table's largest magnitude (the min-max scale is amax / vmax)
  {
    const float unit = 1.f;
    GroupParams p1 = grid->params(&unit, 1, 1.0f, nullptr);  // the fixed table; scale set to 1 below
    p1.scale = 1.f;
    for (int32_t c = 0; c < grid->n_codes(); ++c) vmax = std::max(vmax, std::fabs(grid->dequantize(c, p1)));
  }
  const std::vector<double> alphas = detail::llmfp4_alphas(o.n);
  QuantizedMatrix out;
  out.init(s, rows, cols);
  const int64_t g = out.group_len(), G = out.groups();
  std::vector<double> e0(size_t(rows), 0.0), e1(size_t(rows), 0.0);
  parallel_for_checked(pool, rows, [&](int, int64_t r0, int64_t r1) {
    const size_t nc = static_cast<size_t>(cols), ng = static_cast<size_t>(g);
    std::vector<double> d(nc), Hd(nc), c(ng), dn(ng), db(ng);
    std::vector<GroupParams> P(static_cast<size_t>(G));
    // d^T H_gg d + 2 d^T c over the block starting at column c0 (the row's error up to a constant)
    auto block_err = [&](const double* dd, int64_t c0, int64_t len) {
      double e = 0;
      for (int64_t i = 0; i < len; ++i) {
        const double* h = &H[size_t((c0 + i) * cols + c0)];
        double t0 = 0, t1 = 0;
        int64_t j = 0;
        for (; j + 1 < len; j += 2) t0 += h[j] * dd[j], t1 += h[j + 1] * dd[j + 1];
        if (j < len) t0 += h[j] * dd[j];
        e += dd[i] * (t0 + t1 + 2.0 * c[size_t(i)]);
      }
      return e;
    };
    auto row_err = [&]() {
      double e = 0;
      for (int64_t i = 0; i < cols; ++i) e += d[size_t(i)] * Hd[size_t(i)];
      return e;
    };
    for (int64_t r = r0; r < r1; ++r) {
      const float* wr = w + r * cols;
      for (int64_t gi = 0; gi < G; ++gi) {
        const int64_t c0 = gi * g, len = std::min(g, cols - c0);
        P[size_t(gi)] = grid->params(wr + c0, len, 1.0f, nullptr);  // min-max: scale = max|w| / 12
        for (int64_t j = 0; j < len; ++j)
          d[size_t(c0 + j)] = double(wr[c0 + j]) - double(grid->dequantize(grid->quantize(wr[c0 + j], P[size_t(gi)]), P[size_t(gi)]));
      }
      for (int64_t i = 0; i < cols; ++i) {
        double t = 0;
        for (int64_t j = 0; j < cols; ++j) t += H[size_t(i * cols + j)] * d[size_t(j)];
        Hd[size_t(i)] = t;
      }
      e0[size_t(r)] = row_err();
      for (int round = 0; round < o.rounds; ++round) {
        bool changed = false;
        for (int64_t gi = 0; gi < G; ++gi) {
          const int64_t c0 = gi * g, len = std::min(g, cols - c0);
          const float* wg = wr + c0;
          float amax = 0.f;
          for (int64_t j = 0; j < len; ++j) amax = std::max(amax, std::fabs(wg[j]));
          if (amax == 0.f) continue;
          // c = (H d) restricted to the block, without the block's own contribution
          for (int64_t i = 0; i < len; ++i) {
            const double* h = &H[size_t((c0 + i) * cols + c0)];
            double t = 0;
            for (int64_t j = 0; j < len; ++j) t += h[j] * d[size_t(c0 + j)];
            c[size_t(i)] = Hd[size_t(c0 + i)] - t;
          }
          GroupParams p = P[size_t(gi)];
          double best = block_err(&d[size_t(c0)], c0, len);
          float best_scale = p.scale;
          std::copy(d.begin() + c0, d.begin() + c0 + len, db.begin());
          const double b0 = detail::llmfp4_init_bias(amax, vmax);
          for (double a : alphas) {
            p.scale = round_scale_f16(float(std::exp2(-a * b0)));
            if (!(p.scale > 0.f) || !std::isfinite(p.scale) || p.scale == best_scale) continue;
            for (int64_t j = 0; j < len; ++j)
              dn[size_t(j)] = double(wg[j]) - double(grid->dequantize(grid->quantize(wg[j], p), p));
            const double e = block_err(dn.data(), c0, len);
            if (e < best) {
              best = e;
              best_scale = p.scale;
              std::copy(dn.begin(), dn.begin() + len, db.begin());
            }
          }
          if (best_scale == P[size_t(gi)].scale) continue;
          changed = true;
          P[size_t(gi)].scale = best_scale;
          for (int64_t j = 0; j < len; ++j) {
            const double delta = db[size_t(j)] - d[size_t(c0 + j)];
            if (delta == 0.0) continue;
            const double* h = &H[size_t((c0 + j) * cols)];  // column c0 + j of the symmetric H
            for (int64_t i = 0; i < cols; ++i) Hd[size_t(i)] += h[i] * delta;
            d[size_t(c0 + j)] = db[size_t(j)];
          }
        }
        if (!changed) break;
      }
      e1[size_t(r)] = row_err();
      for (int64_t gi = 0; gi < G; ++gi) {
        const int64_t c0 = gi * g, len = std::min(g, cols - c0);
        out.set_params(r, gi, P[size_t(gi)]);
        for (int64_t j = 0; j < len; ++j) out.q[size_t(r * cols + c0 + j)] = uint8_t(grid->quantize(wr[c0 + j], P[size_t(gi)]));
      }
    }
  });
  double s0 = 0, s1 = 0;
  for (int64_t r = 0; r < rows; ++r) s0 += e0[size_t(r)], s1 += e1[size_t(r)];
  if (err_minmax) *err_minmax = s0 / double(rows);
  if (err_searched) *err_searched = s1 / double(rows);
  return out;
}

}  // namespace lmpress
