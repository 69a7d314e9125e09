// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
// Transformers", ICLR 2023), following the reference `fasterquant` of IST-DASLab/gptq:
//   dead inputs -> act-order permutation -> dampening -> H^-1 by Cholesky -> upper Cholesky
//   factor U of H^-1 -> column-by-column quantization in blocks with lazy batched updates.
// Also the proxy loss layer_error(). Deviations from the reference are listed in docs/methods.md.
//
// Numerics: H, its dampening, inversion and the Cholesky factor are double (LAPACK); the weight
// updates run in float (the working copy of W and a float copy of U), as in the reference, which
// is float32 throughout. Threads: rows are independent inside a block (each row has its own
// group params and its own error), so the column loop of a block runs over row chunks on the
// ThreadPool; the lazy update between blocks is one sgemm on OpenBLAS threads.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "lmpress/compress.h"

extern "C" void openblas_set_num_threads(int);

namespace lmpress {

namespace {

void check_spec(const QuantSpec& s, const char* who) {
  try {
    format_id(s);
  } catch (const Error& e) {
    fail(who, e.what());
  }
}

void check_finite_f32(const float* w, int64_t n, const char* who, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(w[i]))
      fail(who, std::string("non-finite value in ") + what + " at index " + std::to_string(i));
}

// parallel_for over rows that carries an exception (minmax_params can throw, e.g. for a range
// beyond f16) back to the caller: a pool worker must not throw. Serial when `serial`.
template <class Fn>
void for_rows(ThreadPool& pool, int64_t rows, bool serial, const Fn& fn) {
  if (serial) {
    fn(int64_t(0), rows);
    return;
  }
  parallel_for_checked(pool, rows, [&](int, int64_t r0, int64_t r1) { fn(r0, r1); });
}

}  // namespace

namespace {

// Group params as stored: the grid's plain params (int: min-max) or the `mse` search (rtn.cpp).
GroupParams stored_params(const Grid& grid, const float* w, int64_t n, bool mse, const double* fit_imp) {
  return detail::search_params(grid, w, n, mse ? ParamSearch::Mse : ParamSearch::None, nullptr, fit_imp);
}

// How the group params of a column are chosen (see docs/methods.md).
enum class ParamMode {
  WholeRow,  // group 0: one set per row from the whole (dead-zeroed) row, before any update
  Static,    // from the original W, per original contiguous group, before any update
  Dynamic,   // when the processing index hits a group boundary, from the updated weights
};

// U = the upper Cholesky factor of A^-1 (A^-1 = U^T U) for symmetric positive definite A [n, n],
// written as float into u [n, n] row-major (strict lower triangle zero). Input: r = J A J, the
// reversed matrix (J = reversal permutation), row-major, lower triangle used; destroyed.
// This is the reference's cholesky -> cholesky_inverse -> cholesky(upper) without forming A^-1:
// J A J = L L^T gives A^-1 = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper triangular with a
// positive diagonal, so by uniqueness of the factor U = J L^-1 J. dpotrf + dtrtri cost 2n^3/3
// flops instead of 4n^3/3. LAPACK runs col-major on the row-major buffer (a symmetric matrix is
// its own transpose; col-major 'U' is our lower triangle): no transposed copies inside LAPACKE.
void inverse_cholesky_upper(std::vector<double>& r, int64_t n, float* u) {
  const lapack_int ni = lapack_int(n);
  lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', ni, r.data(), ni);
  if (info > 0)
    fail("gptq", "Hessian is not positive definite after dampening (failed at column " +
                     std::to_string(n - info) + " in processing order); increase damp or use "
                     "more calibration data");
  if (info < 0) fail("gptq", "dpotrf argument error " + std::to_string(info));
  info = LAPACKE_dtrtri(LAPACK_COL_MAJOR, 'U', 'N', ni, r.data(), ni);  // our lower: L^-1
  if (info != 0)
    fail("gptq", "inverse of the Cholesky factor failed (info " + std::to_string(info) + ")");
  for (int64_t i = 0; i < n; ++i) {
    float* ui = u + i * n;
    const double* src = r.data() + (n - 1 - i) * n + (n - 1);  // src[-k] = (J L^-1 J)[i][k]
    for (int64_t k = 0; k < i; ++k) ui[k] = 0.f;
    for (int64_t k = i; k < n; ++k) ui[k] = float(src[-k]);
  }
}

}  // namespace

std::vector<float> inverse_factor_upper(const std::vector<double>& H, int64_t n, double damp, const char* who) {
  if (int64_t(H.size()) != n * n) fail(who, "Hessian of the wrong size");
  std::vector<double> hd(static_cast<size_t>(n));
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = H[size_t(j * n + j)];
    if (!(d >= 0) || !std::isfinite(d)) fail(who, "bad Hessian diagonal at column " + std::to_string(j));
    hd[size_t(j)] = d == 0.0 ? 1.0 : d;
    mean_diag += hd[size_t(j)];
  }
  const double dmp = damp * mean_diag / double(n);
  std::vector<double> r(static_cast<size_t>(n * n), 0.0);  // J H J, lower triangle (inverse_cholesky_upper)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pi = n - 1 - i;
    for (int64_t k = 0; k < i; ++k) r[size_t(i * n + k)] = H[size_t(pi * n + (n - 1 - k))];
    r[size_t(i * n + i)] = hd[size_t(pi)] + dmp;
  }
  std::vector<float> u(static_cast<size_t>(n * n));
  inverse_cholesky_upper(r, n, u.data());
  return u;
}

std::vector<double> inverse_factor_recip_diag(const std::vector<double>& H, int64_t n, double damp) {
  if (int64_t(H.size()) != n * n) fail("pbllm", "Hessian of the wrong size");
  // U = J L^-1 J for J H J = L L^T (see inverse_cholesky_upper), so 1 / U_jj = L_kk, k = n-1-j.
  std::vector<double> hd(static_cast<size_t>(n));
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = H[size_t(j * n + j)];
    if (!(d >= 0) || !std::isfinite(d)) fail("pbllm", "bad Hessian diagonal at column " + std::to_string(j));
    hd[size_t(j)] = d == 0.0 ? 1.0 : d;
    mean_diag += hd[size_t(j)];
  }
  const double dmp = damp * mean_diag / double(n);
  std::vector<double> r(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pi = n - 1 - i;
    // (a dead input's off-diagonal entries are zero: it never had a non-zero value)
    for (int64_t k = 0; k < i; ++k) r[size_t(i * n + k)] = H[size_t(pi * n + (n - 1 - k))];
    r[size_t(i * n + i)] = hd[size_t(pi)] + dmp;
  }
  const lapack_int ni = lapack_int(n);
  const lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', ni, r.data(), ni);
  if (info != 0)
    fail("pbllm", "Hessian is not positive definite after dampening (dpotrf info " + std::to_string(info) +
                      "); increase damp or use more calibration data");
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = n - 1 - j;
    out[size_t(j)] = r[size_t(k * n + k)];
  }
  return out;
}

QuantizedMatrix quantize_gptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                              const std::vector<double>& H, const GptqOptions& o,
                              ThreadPool& pool, const double* fit_imp, const uint8_t* keep, float* kept) {
  const char* who = "gptq";
  if (keep && !kept) fail(who, "kept positions need an output for their values");
  check_spec(s, who);
  if (rows <= 0 || cols <= 0 || w == nullptr)
    fail(who, "empty weight matrix [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  if (int64_t(H.size()) != cols * cols)
    fail(who, "Hessian has " + std::to_string(H.size()) + " entries, expected " +
                  std::to_string(cols) + "^2 for a layer with " + std::to_string(cols) +
                  " input columns");
  if (o.block <= 0) fail(who, "block size must be positive");
  if (!(o.damp >= 0.0) || !std::isfinite(o.damp)) fail(who, "damp must be a finite value >= 0");
  check_finite_f32(w, rows * cols, who, "weights");
  for (size_t i = 0; i < H.size(); ++i)
    if (!std::isfinite(H[i]))
      fail(who, "non-finite value in the Hessian at index " + std::to_string(i));

  const int64_t n = cols;
  const std::unique_ptr<Grid> gridp = make_grid(s);
  const Grid& grid = *gridp;
  if (o.mse && !grid.has_range()) fail(who, format_name(s) + " has no range to search: mse does not apply");
  if (o.group_grids && (o.act_order || o.static_groups || s.group == 0 || s.family == FormatFamily::Ggml ||
                        int64_t(o.group_grids->size()) != (cols + s.group - 1) / s.group))
    fail(who, "per-group grids need dynamic groups (no act_order / static_groups) and one grid per group");
  const ParamMode mode = s.group == 0 && s.family != FormatFamily::Ggml ? ParamMode::WholeRow
                         : (o.act_order || o.static_groups) ? ParamMode::Static
                                                            : ParamMode::Dynamic;

  QuantizedMatrix out;
  out.init(s, rows, cols);
  const int64_t g = out.group_len(), ngroups = out.groups();

  // Dead inputs (never active in calibration): H_ii = 1, weight zeroed (reference).
  std::vector<double> hdiag(n);
  std::vector<uint8_t> dead(size_t(n), 0);
  for (int64_t j = 0; j < n; ++j) {
    const double d = H[size_t(j * n + j)];
    if (d < 0) fail(who, "negative Hessian diagonal at column " + std::to_string(j));
    dead[size_t(j)] = d == 0.0;
    hdiag[size_t(j)] = d == 0.0 ? 1.0 : d;
  }

  // Processing order: identity, or descending diag(H) (stable, so ties keep column order).
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), int64_t(0));
  if (o.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return hdiag[size_t(a)] > hdiag[size_t(b)]; });

  // Working weights [rows, n] float in processing order; dead columns zeroed.
  std::vector<float> wp(rows * n);
  for_rows(pool, rows, rows * n < (int64_t(1) << 16), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* src = w + r * n;
      float* dst = wp.data() + r * n;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t j = perm[size_t(i)];
        dst[i] = dead[size_t(j)] ? 0.f : src[j];
      }
    }
  });

  // Params fixed before any update: from the original-order, dead-zeroed weights.
  if (mode != ParamMode::Dynamic) {
    for_rows(pool, rows, rows * n < (int64_t(1) << 16), [&](int64_t r0, int64_t r1) {
      std::vector<float> row(n);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t j = 0; j < n; ++j)
          row[size_t(j)] = dead[size_t(j)] || (keep && keep[r * n + j]) ? 0.f : w[r * n + j];
        for (int64_t gi = 0; gi < ngroups; ++gi) {
          const int64_t c0 = gi * g, len = std::min(g, n - c0);
          out.set_params(r, gi, stored_params(grid, row.data() + c0, len, o.mse, fit_imp ? fit_imp + c0 : nullptr));
        }
      }
    });
  }

  const double t0 = now_seconds();
  // H in processing order, dampened by damp * mean(diag) (diag after the dead-input fix), stored
  // reversed for inverse_cholesky_upper: r[i][k] = Hp[n-1-i][n-1-k], lower triangle only.
  const ScopedBlasThreads blas_threads(pool.size(), double(rows) * double(n) * double(n));
  std::vector<float> uf(n * n);  // U, float for the updates, row-major [n, n]
  {
    double mean_diag = 0;
    for (int64_t j = 0; j < n; ++j) mean_diag += hdiag[size_t(j)];
    const double damp = o.damp * mean_diag / double(n);
    std::vector<double> r(n * n);
    for_rows(pool, n, n * n < (int64_t(1) << 16), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t pi = perm[size_t(n - 1 - i)];
        const double* hrow = H.data() + pi * n;
        double* ri = r.data() + i * n;
        for (int64_t k = 0; k < i; ++k) ri[k] = hrow[perm[size_t(n - 1 - k)]];
        ri[i] = hdiag[size_t(pi)] + damp;
      }
    });
    inverse_cholesky_upper(r, n, uf.data());
  }

  const double t1 = now_seconds();
  const int64_t B = std::min(o.block, n);
  std::vector<float> err(rows * B);  // [rows, B] scaled errors (w - q) / U_ii of a block

  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(i1 + B, n);
    const int64_t bw = i2 - i1;
    auto column_loop = [&](int64_t r0, int64_t r1) {
      std::vector<float> tmp(mode == ParamMode::Dynamic ? g : 0);
      for (int64_t r = r0; r < r1; ++r) {
        float* wr = wp.data() + r * n;
        float* er = err.data() + r * B;
        uint8_t* qr = out.q.data() + r * n;
        GroupParams p;
        int64_t p_gi = -1;  // group whose params p holds
        for (int64_t i = i1; i < i2; ++i) {
          int64_t gi;
          if (mode == ParamMode::Dynamic) {
            gi = i / g;
            if (i % g == 0) {
              // Params from the fully updated weights of columns [i, i+g): inside the block they
              // are current; beyond the block the pending lazy update of columns [i1, i) is
              // applied here (only when a group is longer than the block).
              const int64_t e = std::min(i + g, n);
              const int64_t in_blk = std::min(e, i2) - i;
              std::copy(wr + i, wr + i + in_blk, tmp.begin());
              for (int64_t j = i2; j < e; ++j) {
                float v = wr[j];
                for (int64_t k = i1; k < i; ++k) v -= er[k - i1] * uf[size_t(k * n + j)];
                tmp[size_t(j - i)] = v;
              }
              if (keep)  // kept weights stay out of the group's range
                for (int64_t j = i; j < e; ++j)
                  if (keep[r * n + perm[size_t(j)]]) tmp[size_t(j - i)] = 0.f;
              if (o.group_grids) {  // this group's own grid (and params search); p straight from it
                const Grid& gg = *(*o.group_grids)[size_t(gi)];
                p = o.group_params ? o.group_params(gg, tmp.data(), e - i)
                                   : stored_params(gg, tmp.data(), e - i, o.mse, fit_imp ? fit_imp + i : nullptr);
                out.set_params(r, gi, p);
                p_gi = gi;
              } else {
                out.set_params(r, gi, stored_params(grid, tmp.data(), e - i, o.mse, fit_imp ? fit_imp + i : nullptr));
                p_gi = -1;
              }
            }
          } else {
            gi = mode == ParamMode::WholeRow ? 0 : perm[size_t(i)] / g;
          }
          if (gi != p_gi) {
            p = out.params(r, gi);
            p_gi = gi;
          }
          const int64_t pos = perm[size_t(i)] - gi * g;  // index in its group
          const Grid& gq = o.group_grids ? *(*o.group_grids)[size_t(gi)] : grid;
          const int32_t code = gq.quantize_at(wr[i], p, pos);
          qr[perm[size_t(i)]] = uint8_t(code);
          float qv = gq.dequantize_at(code, p, pos);
          if (keep && keep[r * n + perm[size_t(i)]]) {  // kept exactly (sparse outlier): no error
            kept[r * n + perm[size_t(i)]] = wr[i];
            qv = wr[i];
          }
          const float* ui = uf.data() + i * n;
          const float e = (wr[i] - qv) / ui[i];
          for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
          er[i - i1] = e;
        }
      }
    };
    // A block costs ~rows * bw^2 / 2 multiply-adds; below ~0.5M a pool wake-up is not worth it.
    for_rows(pool, rows, rows * bw * bw < (int64_t(1) << 20), column_loop);
    // Lazy batch update: W[:, i2:] -= Err1 [rows, bw] * U[i1:i2, i2:].
    if (i2 < n)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n - i2), int(bw),
                  -1.0f, err.data(), int(B), uf.data() + i1 * n + i2, int(n), 1.0f,
                  wp.data() + i2, int(n));
  }
  log_debug("gptq [%lld x %lld] %s: inverse Cholesky %.3f s, columns %.3f s", (long long)rows,
            (long long)cols, format_name(s).c_str(), t1 - t0, now_seconds() - t1);
  return out;
}

std::vector<double> tied_embedding_hessian(const std::vector<double>& H_cls, int64_t n, double emb) {
  const char* who = "gptq (tied embedding)";
  if (n <= 0 || int64_t(H_cls.size()) != n * n)
    fail(who, "Hessian has " + std::to_string(H_cls.size()) + " entries, expected " + std::to_string(n) + "^2");
  if (!(emb >= 0.0) || !std::isfinite(emb)) fail(who, "emb must be a finite value >= 0");
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) mean_diag += H_cls[size_t(j * n + j)];
  mean_diag /= double(n);
  if (!(mean_diag > 0.0)) mean_diag = 1.0;  // no classifier signal at all: the embedding term alone
  std::vector<double> H = H_cls;
  for (int64_t j = 0; j < n; ++j) H[size_t(j * n + j)] += emb * mean_diag;
  return H;
}

double layer_error(const float* w, const QuantizedMatrix& q, const std::vector<double>& H,
                   double* rel, int64_t max_rows) {
  const char* who = "layer_error";
  const int64_t rows = q.rows, cols = q.cols;
  check_spec(q.spec, who);
  if (rows <= 0 || cols <= 0 || w == nullptr) fail(who, "empty matrix");
  const int64_t g = q.group_len(), ngroups = q.groups();
  const std::unique_ptr<Grid> grid = make_grid(q.spec);
  if (int64_t(q.q.size()) != rows * cols || int64_t(q.scales.size()) != rows * ngroups ||
      int64_t(q.zeros.size()) != rows * ngroups)
    fail(who, "quantized matrix has inconsistent code/param sizes");
  if (int64_t(H.size()) != cols * cols)
    fail(who, "Hessian has " + std::to_string(H.size()) + " entries, expected " +
                  std::to_string(cols) + "^2");

  // tr(D H D^T) = <H, D^T D>_F. G = D^T D is accumulated in double by dsyrk over panels of rows
  // (rows * cols^2 flops, half of forming D H with a gemm), upper triangle only.
  // Rows used: all, or max_rows evenly spaced ones (sample index i -> row i * rows / used).
  const int64_t used = max_rows > 0 ? std::min(max_rows, rows) : rows;
  auto row_of = [&](int64_t i) { return used == rows ? i : i * rows / used; };
  constexpr int64_t kPanel = 512;  // fewer passes over G; the panel is a few MB
  const int64_t pr = std::min(kPanel, used);
  std::vector<double> panel(pr * cols), G(cols * cols);
  auto quad = [&](bool deq) {
    std::fill(G.begin(), G.end(), 0.0);
    for (int64_t i0 = 0; i0 < used; i0 += kPanel) {
      const int64_t nr = std::min(kPanel, used - i0);
      for (int64_t i = i0; i < i0 + nr; ++i) {
        const int64_t r = row_of(i);
        const float* wr = w + r * cols;
        double* dr = panel.data() + (i - i0) * cols;
        const uint8_t* qr = q.q.data() + r * cols;
        if (!deq) {
          for (int64_t j = 0; j < cols; ++j) dr[j] = wr[j];
          continue;
        }
        for (int64_t gi = 0; gi < ngroups; ++gi) {
          const GroupParams p = q.params(r, gi);
          for (int64_t j = gi * g; j < std::min(cols, (gi + 1) * g); ++j)
            dr[j] = double(wr[j]) - double(grid->dequantize_at(qr[j], p, j - gi * g));
        }
      }
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(cols), int(nr), 1.0, panel.data(),
                  int(cols), 1.0, G.data(), int(cols));
    }
    double acc = 0;
    for (int64_t i = 0; i < cols; ++i) {
      const double* gi = G.data() + i * cols;
      const double* hi = H.data() + i * cols;
      double off = 0;
      for (int64_t j = i + 1; j < cols; ++j) off += gi[j] * hi[j];
      acc += gi[i] * hi[i] + 2.0 * off;
    }
    return acc;
  };
  double err = quad(true), ref = rel ? quad(false) : 0.0;
  err /= double(used);
  if (rel) {
    ref /= double(used);
    *rel = ref > 0 ? err / ref : (err == 0 ? 0.0 : INFINITY);
  }
  return err;
}

}  // namespace lmpress
