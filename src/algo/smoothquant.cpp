// SmoothQuant+ (Pan et al., "SmoothQuant+: Accurate and Efficient 4-bit Post-Training Weight
// Quantization for LLM", 2023): before weight-only rounding, the activation outliers of each linear
// layer input are smoothed per input channel j by
//     s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)
// (max|W_j| over the rows of every tensor reading the input), W <- W diag(s), and 1/s folds into the
// producer (the RMSNorm weight for q/k/v and gate/up, v's rows for o without GQA, up's rows for
// down: the seams AWQ uses). SmoothQuant's formula; SmoothQuant+ searches alpha to minimise the
// quantization loss.
// Deviations (docs/methods.md): the paper searches one alpha for the whole model; here alpha is
// searched per input of each block (as AWQ's scale search), on the grid {0, 1/grid, ..., 1} plus
// "no smoothing" (s = 1), by the mean squared error of the readers' outputs on sampled calibration
// rows when W diag(s) is rounded to nearest on the target format (ScaledReaders::loss, shared with
// awq). A channel that is zero in calibration (max|X_j| = 0) or in every reader (max|W_j| = 0)
// keeps s_j = 1. The paper's code was not published (Adlik/smoothquantplus holds a README only).
#include <algorithm>
#include <cmath>

#include "algo/pipeline_internal.h"

namespace lmpress {

// The smoothing scales of one alpha.
static std::vector<double> smooth_scales(const std::vector<double>& xmax, const std::vector<double>& wmax, double alpha) {
  std::vector<double> s(xmax.size(), 1.0);
  for (size_t j = 0; j < s.size(); ++j)
    if (xmax[j] > 0 && wmax[j] > 0)
      s[j] = std::max(std::pow(xmax[j], alpha) / std::pow(wmax[j], 1.0 - alpha), 1e-5);
  return s;
}

void smoothquant_transform(StepContext& ctx) {
  const InputStats& st = *ctx.stats;
  const SmoothOptions& o = ctx.rule->smooth;
  if (!ctx.norm && !ctx.producer) {
    ctx.note = "smoothquant: skipped (no producer to fold a scale into: grouped-query attention)";
    return;
  }
  const int64_t n = st.n;
  if (st.sample_rows == 0 || int64_t(st.max_abs.size()) != n)
    fail("smoothquant", "missing calibration statistics for " + ctx.input);
  ScaledReaders sr(ctx);
  const ScopedBlasThreads blas(ctx.pool->size(), 1e9);
  std::vector<double> wmax(static_cast<size_t>(n), 0.0);
  for (const auto& R : sr.rd)
    for (int64_t r = 0; r < R.t->rows(); ++r)
      for (int64_t j = 0; j < n; ++j) wmax[size_t(j)] = std::max(wmax[size_t(j)], std::fabs(double(R.w[size_t(r * n + j)])));

  // Candidates: no smoothing, then alpha = k / grid, k = 0..grid (or the one given alpha).
  std::vector<double> best_s(static_cast<size_t>(n), 1.0);
  const double loss0 = sr.loss(best_s);
  double best_loss = loss0, best_alpha = -1;
  const int K = o.alpha >= 0 ? 1 : o.grid + 1;
  for (int k = 0; k < K; ++k) {
    const double alpha = o.alpha >= 0 ? o.alpha : double(k) / o.grid;
    std::vector<double> s = smooth_scales(st.max_abs, wmax, alpha);
    const double loss = sr.loss(s);
    if (loss < best_loss || o.alpha >= 0) {  // a given alpha is applied whatever its loss
      best_loss = loss;
      best_alpha = alpha;
      best_s = std::move(s);
    }
  }
  // (s = 1 is applied too: the fold then changes nothing, and the readers and the producer end up
  // in f32 as planned for a transformed block)
  sr.apply(ctx, best_s);
  sr.commit();
  char buf[160];
  if (best_alpha < 0)
    std::snprintf(buf, sizeof buf, "smoothquant: none (output MSE %.4g; no alpha lowers it)", loss0);
  else
    std::snprintf(buf, sizeof buf, "smoothquant: alpha %.2f (output MSE %.4g -> %.4g)", best_alpha, loss0, best_loss);
  ctx.note = buf;
}

}  // namespace lmpress
