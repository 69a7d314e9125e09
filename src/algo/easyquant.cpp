// EasyQuant (Tang et al. 2023, "EasyQuant: An Efficient Data-free Quantization Algorithm for
// LLMs"): data-free. Outliers are kept apart (the format's +s sparse part, selected by
// round_with_outliers: per-row z-score without calibration) and each group's quantization range
// is optimised by gradient descent on the weights' reconstruction error
//   L(s) = sum_j (Q(w_j; s) - w_j)^2,   Q(w; s) = s * v(q(w / s))
// with the straight-through gradient dQ/ds = v(q) - w/s inside the range and v(q) (the clamp's
// derivative) for weights beyond it (as LSQ's step-size gradient). Steps are multiplicative and
// normalised, s <- s * (1 - eta_k * sign(dL/ds)), eta_k falling linearly from kEta0 to 0; every
// candidate is rounded to the stored (f16) scale and the best L seen is kept, so the result is
// never worse than min-max RTN in L (docs/methods.md, EasyQuant: deviations).
#include <algorithm>
#include <cmath>

#include "lmpress/compress.h"

namespace lmpress {

namespace {
constexpr double kEta0 = 0.02;
}

namespace detail {

double easyquant_loss(const Grid& grid, const float* w, int64_t n, const GroupParams& p, double* grad) {
  // the grid's extreme values at scale p.scale (a weight beyond them is clipped)
  float lo = INFINITY, hi = -INFINITY;
  for (int32_t c = 0; c < grid.n_codes(); ++c) {
    const float v = grid.dequantize(c, p);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  double L = 0, g = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double Q = grid.dequantize_at(grid.quantize_at(w[j], p, j), p, j), d = Q - double(w[j]);
    L += d * d;
    const bool clipped = (w[j] > hi && Q == hi) || (w[j] < lo && Q == lo);
    const double dq = clipped ? Q / p.scale : (Q - double(w[j])) / p.scale;  // v(q) or v(q) - w/s
    g += 2.0 * d * dq;
  }
  if (grad) *grad = g;
  return L;
}

GroupParams easyquant_params(const Grid& grid, const float* w, int64_t n, int steps) {
  GroupParams best = grid.params(w, n, 1.0f, nullptr);
  GroupParams p = best;
  double g = 0;
  double best_L = easyquant_loss(grid, w, n, p, &g);
  for (int k = 0; k < steps && g != 0.0; ++k) {
    const double eta = kEta0 * (1.0 - double(k) / steps);
    const float s = round_scale_f16(float(double(p.scale) * (1.0 - eta * (g > 0 ? 1.0 : -1.0))));
    if (!(s > 0.f) || !std::isfinite(s)) break;
    p.scale = s;
    const double L = easyquant_loss(grid, w, n, p, &g);
    if (L < best_L) {
      best_L = L;
      best = p;
    }
  }
  return best;
}

}  // namespace detail

QuantizedMatrix quantize_easyquant(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, int steps,
                                   ThreadPool& pool) {
  const std::unique_ptr<Grid> grid = make_grid(s);
  if (!grid->has_range()) fail("easyquant", format_name(s) + " has no range to optimise");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail("easyquant", "non-finite weight at index " + std::to_string(i));
  QuantizedMatrix out;
  out.init(s, rows, cols);
  const int64_t g = out.group_len(), G = out.groups();
  parallel_for_checked(pool, rows, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t gi = 0; gi < G; ++gi) {
        const int64_t c0 = gi * g, len = std::min(g, cols - c0);
        const float* wg = w + r * cols + c0;
        const GroupParams p = detail::easyquant_params(*grid, wg, len, steps);
        out.set_params(r, gi, p);
        for (int64_t j = 0; j < len; ++j) out.q[size_t(r * cols + c0 + j)] = uint8_t(grid->quantize_at(wg[j], p, j));
      }
  });
  return out;
}

}  // namespace lmpress
