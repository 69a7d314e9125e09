// RTN: per-group round-to-nearest onto the format's grid (for the int family GPTQ's min-max grid,
// minmax_params), optionally with a clipping search per group: the range is shrunk by c in kClipGrid and the c with the smallest
// importance-weighted error sum_j imp_j (w_j - deq(q_j))^2 is kept (imp = diag(H) when given,
// else 1). c = 1 is tried first and only a strictly smaller error replaces it, so the search is
// never worse than plain RTN in that error.
// `mse` (mse_search): the reference GPTQ quantizer's grid search (IST-DASLab/gptq quant.py,
// Quantizer.find_params with mse=True: grid 100, maxshrink 0.8, norm 2.4): the range is shrunk
// by p = 1 - i/100, i = 0..79, and the p with the smallest unweighted sum_j |w_j - deq(q_j)|^2.4
// is kept (first strict minimum, so p = 1, plain min-max, wins ties). detail::search_params() is
// also GPTQ's param function. Both searches run on any grid with a range (Grid::has_range).
#include <algorithm>
#include <cmath>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lmpress/compress.h"

namespace lmpress {

namespace {

// Clip ratios 1.00, 0.98, ..., 0.50 (26 candidates).
constexpr int kClipSteps = 26;
constexpr float kClipStep = 0.02f;

double group_error(const Grid& grid, const float* w, const double* imp, int64_t n, const GroupParams& p) {
  double e = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = double(w[j]) - double(grid.dequantize_at(grid.quantize_at(w[j], p, j), p, j));
    e += (imp ? imp[j] : 1.0) * d * d;
  }
  return e;
}

}  // namespace

namespace detail {

GroupParams search_params(const Grid& grid, const float* w, int64_t n, ParamSearch search, const double* imp,
                          const double* fit_imp) {
  GroupParams best = grid.params(w, n, 1.0f, fit_imp);
  if (search == ParamSearch::Clip) {
    double best_err = group_error(grid, w, imp, n, best);
    for (int k = 1; k < kClipSteps; ++k) {
      const GroupParams p = grid.params(w, n, 1.0f - kClipStep * float(k), fit_imp);
      const double e = group_error(grid, w, imp, n, p);
      if (e < best_err) {
        best_err = e;
        best = p;
      }
    }
  } else if (search == ParamSearch::Mse) {
    // The reference's mse search (grid 100, maxshrink 0.8, norm 2.4) over the stored params.
    constexpr int kGrid = 100, kSteps = 80;
    constexpr double kNorm = 2.4;
    double best_err = INFINITY;
    const GroupParams first = best;
    for (int i = 0; i < kSteps; ++i) {
      const float pr = float(1.0 - double(i) / kGrid);  // the reference's p, as a float
      const GroupParams c = i == 0 ? first : grid.params(w, n, pr, fit_imp);
      double e = 0;
      for (int64_t j = 0; j < n && e < best_err; ++j)  // a partial sum >= best cannot win
        e += std::pow(std::fabs(double(w[j]) - double(grid.dequantize_at(grid.quantize_at(w[j], c, j), c, j))), kNorm);
      if (e < best_err) {
        best_err = e;
        best = c;
      }
    }
  }
  return best;
}

}  // namespace detail

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                             bool clip_search, const double* hdiag, bool mse_search, const double* fit_imp) {
  const char* who = "rtn";
  if (clip_search && mse_search)
    fail(who, "clip and mse are alternative parameter searches; use one");
  try {
    format_id(s);
  } catch (const Error& e) {
    fail(who, e.what());
  }
  if (rows <= 0 || cols <= 0 || w == nullptr)
    fail(who, "empty weight matrix [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail(who, "non-finite weight at index " + std::to_string(i));
  for (const double* imp : {hdiag, fit_imp})
    if (imp)
      for (int64_t j = 0; j < cols; ++j)
        if (!std::isfinite(imp[j]) || imp[j] < 0)
          fail(who, "importance (Hessian diagonal) must be finite and >= 0; column " + std::to_string(j));
  const std::unique_ptr<Grid> grid = make_grid(s);
  if ((clip_search || mse_search) && !grid->has_range())
    fail(who, format_name(s) + " has no range to search: clip and mse do not apply");
  const ParamSearch search = clip_search ? ParamSearch::Clip : mse_search ? ParamSearch::Mse : ParamSearch::None;

  QuantizedMatrix out;
  out.init(s, rows, cols);
  const int64_t g = out.group_len(), ngroups = out.groups();

  auto body = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t gi = 0; gi < ngroups; ++gi) {
        const int64_t c0 = gi * g, len = std::min(g, cols - c0);
        const float* wg = w + r * cols + c0;
        const GroupParams best = detail::search_params(*grid, wg, len, search, hdiag ? hdiag + c0 : nullptr,
                                                       fit_imp ? fit_imp + c0 : nullptr);
        out.set_params(r, gi, best);
        uint8_t* q = out.q.data() + r * cols + c0;
        for (int64_t j = 0; j < len; ++j) q[j] = uint8_t(grid->quantize_at(wg[j], best, j));
      }
    }
  };
  // Large layers with a search (or k-means) are worth a private pool (the API takes none).
  const int64_t work = rows * cols * (clip_search ? kClipSteps : mse_search ? 80 : grid->row_table() ? 50 : 1);
  if (work >= (int64_t(1) << 22) && default_threads() > 1 && rows > 1) {
    ThreadPool pool(default_threads());
    parallel_for_checked(pool, rows, [&](int, int64_t r0, int64_t r1) { body(r0, r1); });  // params may throw
  } else {
    body(0, rows);
  }
  return out;
}

}  // namespace lmpress
