// RTN: per-group min-max round-to-nearest (GPTQ's grid, minmax_params), optionally with a
// clipping search per group: the range is shrunk by c in kClipGrid and the c with the smallest
// importance-weighted error sum_j imp_j (w_j - deq(q_j))^2 is kept (imp = diag(H) when given,
// else 1). c = 1 is tried first and only a strictly smaller error replaces it, so the search is
// never worse than plain RTN in that error.
// `mse` (mse_search): the reference GPTQ quantizer's grid search (IST-DASLab/gptq quant.py,
// Quantizer.find_params with mse=True: grid 100, maxshrink 0.8, norm 2.4): the range is shrunk
// by p = 1 - i/100, i = 0..79, and the p with the smallest unweighted sum_j |w_j - deq(q_j)|^2.4
// is kept (first strict minimum, so p = 1, plain min-max, wins ties). mse_group_params() is also
// GPTQ's param function when its `mse` option is set (declared in gptq.cpp).
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

GroupParams stored_params(const float* w, int64_t n, const QuantSpec& s, float clip) {
  GroupParams p = minmax_params(w, n, s, clip);
  p.scale = round_scale_f16(p.scale);
  return p;
}

double group_error(const float* w, const double* imp, int64_t n, const GroupParams& p,
                   int32_t maxq) {
  double e = 0;
  for (int64_t j = 0; j < n; ++j) {
    const int32_t q = quantize_value(w[j], p, maxq);
    const double d = double(w[j]) - double(p.scale) * double(q - p.zero);
    e += (imp ? imp[j] : 1.0) * d * d;
  }
  return e;
}

}  // namespace

namespace detail {

// The reference's mse search over the f16-rounded (stored) params of one group.
GroupParams mse_group_params(const float* w, int64_t n, const QuantSpec& s) {
  constexpr int kGrid = 100, kSteps = 80;  // grid, int(maxshrink * grid)
  constexpr double kNorm = 2.4;
  const int32_t maxq = (1 << s.bits) - 1;
  GroupParams best = stored_params(w, n, s, 1.0f);
  double best_err = INFINITY;
  for (int i = 0; i < kSteps; ++i) {
    const float p = float(1.0 - double(i) / kGrid);  // the reference's p, as a float
    const GroupParams c = i == 0 ? best : stored_params(w, n, s, p);
    double e = 0;
    for (int64_t j = 0; j < n && e < best_err; ++j) {  // a partial sum >= best cannot win
      const int32_t q = quantize_value(w[j], c, maxq);
      e += std::pow(std::fabs(double(w[j]) - double(c.scale) * double(q - c.zero)), kNorm);
    }
    if (e < best_err) {
      best_err = e;
      best = c;
    }
  }
  return best;
}

}  // namespace detail

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                             bool clip_search, const double* hdiag, bool mse_search) {
  const char* who = "rtn";
  if (clip_search && mse_search)
    fail(who, "clip and mse are alternative parameter searches; use one");
  if (s.bits < 2 || s.bits > 8)
    fail(who, "unsupported bit width " + std::to_string(s.bits) + " (use 2..8)");
  if (s.group < 0) fail(who, "negative group size " + std::to_string(s.group));
  if (rows <= 0 || cols <= 0 || w == nullptr)
    fail(who, "empty weight matrix [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail(who, "non-finite weight at index " + std::to_string(i));
  if (hdiag)
    for (int64_t j = 0; j < cols; ++j)
      if (!std::isfinite(hdiag[j]) || hdiag[j] < 0)
        fail(who, "importance (Hessian diagonal) must be finite and >= 0; column " +
                      std::to_string(j));

  const int64_t g = s.group == 0 ? cols : s.group;
  const int64_t ngroups = (cols + g - 1) / g;
  const int32_t maxq = (1 << s.bits) - 1;

  QuantizedMatrix out;
  out.spec = s;
  out.rows = rows;
  out.cols = cols;
  out.q.resize(size_t(rows * cols));
  out.scales.resize(size_t(rows * ngroups));
  out.zeros.resize(size_t(rows * ngroups));

  auto body = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t gi = 0; gi < ngroups; ++gi) {
        const int64_t c0 = gi * g, len = std::min(g, cols - c0);
        const float* wg = w + r * cols + c0;
        const double* imp = hdiag ? hdiag + c0 : nullptr;
        GroupParams best = mse_search ? detail::mse_group_params(wg, len, s)
                                      : stored_params(wg, len, s, 1.0f);
        if (clip_search) {
          double best_err = group_error(wg, imp, len, best, maxq);
          for (int k = 1; k < kClipSteps; ++k) {
            const GroupParams p = stored_params(wg, len, s, 1.0f - kClipStep * float(k));
            const double e = group_error(wg, imp, len, p, maxq);
            if (e < best_err) {
              best_err = e;
              best = p;
            }
          }
        }
        out.scales[size_t(r * ngroups + gi)] = best.scale;
        out.zeros[size_t(r * ngroups + gi)] = best.zero;
        uint8_t* q = out.q.data() + r * cols + c0;
        for (int64_t j = 0; j < len; ++j) q[j] = uint8_t(quantize_value(wg[j], best, maxq));
      }
    }
  };
  // Large layers with the search are worth a private pool (the API takes none).
  const int64_t work = rows * cols * (clip_search ? kClipSteps : mse_search ? 80 : 1);
  if (work >= (int64_t(1) << 22) && default_threads() > 1 && rows > 1) {
    ThreadPool pool(default_threads());
    std::exception_ptr first;  // minmax_params may throw; a pool worker must not
    std::mutex mu;
    pool.parallel_for(rows, [&](int, int64_t r0, int64_t r1) {
      try {
        body(r0, r1);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first) first = std::current_exception();
      }
    });
    if (first) std::rethrow_exception(first);
  } else {
    body(0, rows);
  }
  return out;
}

}  // namespace lmpress
