// SpQR (Dettmers et al., "SpQR: A Sparse-Quantized Representation for Near-Lossless LLM Weight
// Compression", 2023), following the reference implementation (Vahe1994/SpQR, spqr_engine.py
// SPQRUtil.quantize, quant_groups.py Quantizer with qq_scale_bits / qq_zero_bits = 3): its own GPTQ
// sweep onto the spqr formats (formats/spqr.h):
//   dead inputs -> dampening -> U = upper Cholesky factor of H^-1 -> columns in blocks with lazy
//   batched updates; at each group of G columns, per row: leave-one-out outlier detection
//   (get_leave_one_out_error), min-max scale and zero without the likely outliers, both quantized
//   to 3 bits over row groups of R rows; per weight: nearest code, scaled error e = (w - q) / U_ii,
//   e^2 > threshold -> kept as an f16 outlier with no error fed back.
// Then (lmpress) the outliers are fitted to the format's fixed +s budget: the threshold is searched
// (or given), and the budget's rest is filled by the best single-weight corrections after the
// sweep. Deviations: docs/methods.md.
//
// Numerics: H, dampening, inversion and Cholesky in double (LAPACK), the sweep in float like the
// reference. Threads: row groups are independent inside a block (their statistics are quantized
// over their own rows), so a block's column loop runs over row groups on the pool; the lazy update
// between blocks is one sgemm.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "formats/spqr.h"
#include "lmpress/compress.h"

namespace lmpress {

namespace {

const char* kWho = "spqr";

// U [n, n] float row-major (strict lower triangle zero) with H^-1 = U^T U, H symmetric positive
// definite (destroyed). The reference's cholesky -> cholesky_inverse -> cholesky(upper).
void inverse_cholesky(std::vector<double>& h, int64_t n, std::vector<float>& u) {
  const lapack_int ni = lapack_int(n);
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', ni, h.data(), ni);
  if (info > 0)
    fail(kWho, "Hessian is not positive definite after dampening (column " + std::to_string(info - 1) +
                   "); increase damp or use more calibration data");
  if (info == 0) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', ni, h.data(), ni);
  if (info != 0) fail(kWho, "inverse of the Hessian failed (info " + std::to_string(info) + ")");
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i + 1; k < n; ++k) h[size_t(i * n + k)] = h[size_t(k * n + i)];
  info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ni, h.data(), ni);
  if (info != 0) fail(kWho, "Cholesky factor of the inverse Hessian failed (info " + std::to_string(info) + ")");
  u.assign(size_t(n * n), 0.f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i; k < n; ++k) u[size_t(i * n + k)] = float(h[size_t(i * n + k)]);
}

// Sum over a group of ((deq(q(w)) - w) / d)^2 with first-level statistics st (no second level), the
// entry `skip` left out (-1: none).
double group_error(const float* w, const float* d, int64_t n, const spqr::Stats1& st, int32_t maxq, int64_t skip) {
  spqr::Factors f;
  f.s = st.scale;
  f.z = st.zero;
  f.m = st.scale * st.zero;
  double e = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (k == skip) continue;
    const double x = (double(spqr::value(spqr::quantize(w[k], f, maxq), f)) - w[k]) / d[k];
    e += x * x;
  }
  return e;
}

// The reference's get_leave_one_out_error + mask: the group with each likely outlier (its
// leave-one-out reduction of the group's scaled error above `thr`) replaced by the mean of the
// others, into out[n] (the weights the statistics are fitted to).
void without_likely_outliers(const float* w, const float* d, int64_t n, int bits, double thr, float* out) {
  std::copy(w, w + n, out);
  if (n < 2 || !std::isfinite(thr)) return;
  const int32_t maxq = (1 << bits) - 1;
  const double base = group_error(w, d, n, spqr::minmax_stats(w, n, bits), maxq, -1);
  std::vector<float> rest(static_cast<size_t>(n - 1));
  std::vector<uint8_t> mask(static_cast<size_t>(n), 0);
  double sum = 0;
  int64_t kept = 0;
  for (int64_t k = 0; k < n; ++k) {
    std::copy(w, w + k, rest.begin());
    std::copy(w + k + 1, w + n, rest.begin() + k);
    const spqr::Stats1 st = spqr::minmax_stats(rest.data(), n - 1, bits);
    mask[size_t(k)] = base - group_error(w, d, n, st, maxq, k) > thr;
    if (!mask[size_t(k)]) sum += w[k], ++kept;
  }
  const float mean = kept ? float(sum / double(kept)) : 0.f;
  for (int64_t k = 0; k < n; ++k)
    if (mask[size_t(k)]) out[k] = mean;
}

// Dead inputs and the dampened Hessian's factor, shared by every sweep of a tensor.
struct Prepared {
  std::vector<uint8_t> dead;
  std::vector<float> u;     // U, [n, n]
  double outlier_scale = 0;  // mean_j var_j / U_jj^2 (the threshold's unit)
};

Prepared prepare(const float* w, int64_t rows, int64_t n, const std::vector<double>& H, const SpqrOptions& o,
                 ThreadPool& pool) {
  if (rows <= 0 || n <= 0 || !w) fail(kWho, "empty weight matrix [" + std::to_string(rows) + ", " + std::to_string(n) + "]");
  if (int64_t(H.size()) != n * n)
    fail(kWho, "Hessian has " + std::to_string(H.size()) + " entries, expected " + std::to_string(n) + "^2");
  if (!(o.damp >= 0.0) || !std::isfinite(o.damp)) fail(kWho, "damp must be a finite value >= 0");
  for (int64_t i = 0; i < rows * n; ++i)
    if (!std::isfinite(w[i])) fail(kWho, "non-finite value in weights at index " + std::to_string(i));
  for (size_t i = 0; i < H.size(); ++i)
    if (!std::isfinite(H[i])) fail(kWho, "non-finite value in the Hessian at index " + std::to_string(i));
  Prepared p;
  p.dead.assign(size_t(n), 0);
  std::vector<double> h(H);
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) {
    double& d = h[size_t(j * n + j)];
    if (d < 0) fail(kWho, "negative Hessian diagonal at column " + std::to_string(j));
    if (d == 0) {  // never active: H_jj = 1, weight zeroed (reference)
      p.dead[size_t(j)] = 1;
      for (int64_t k = 0; k < n; ++k) h[size_t(j * n + k)] = h[size_t(k * n + j)] = 0;
      d = 1;
    }
    mean_diag += d / double(n);
  }
  for (int64_t j = 0; j < n; ++j) h[size_t(j * n + j)] += o.damp * mean_diag;
  {
    const ScopedBlasThreads bt(pool.size(), double(n) * double(n) * double(n));
    inverse_cholesky(h, n, p.u);
  }
  for (int64_t j = 0; j < n; ++j) {
    double s1 = 0, s2 = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double v = p.dead[size_t(j)] ? 0.0 : w[r * n + j];
      s1 += v, s2 += v * v;
    }
    const double var = rows > 1 ? std::max(0.0, (s2 - s1 * s1 / double(rows)) / double(rows - 1)) : 0.0;
    const double ujj = p.u[size_t(j * n + j)];
    p.outlier_scale += var / (ujj * ujj) / double(n);
  }
  return p;
}

QuantizedMatrix sweep(const float* w, int64_t rows, int64_t n, const QuantSpec& s, const Prepared& P, double tau,
                      const SpqrOptions& o, ThreadPool& pool) {
  QuantSpec dense = s;
  dense.sparse = 0;
  QuantizedMatrix qm;
  qm.init(dense, rows, n);
  const int64_t g = s.group, R = s.group2, nrg = spqr::row_groups(s, rows);
  const int32_t maxq = (1 << s.bits) - 1;
  const double thr = tau * P.outlier_scale;  // tau = inf: no outliers
  const float* u = P.u.data();
  std::vector<float> wp(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) wp[size_t(r * n + j)] = P.dead[size_t(j)] ? 0.f : w[r * n + j];
  const int64_t B = std::max(g, o.block / g * g);
  std::vector<float> err(size_t(rows * B));
  std::vector<std::vector<std::pair<uint32_t, float>>> outl(static_cast<size_t>(nrg));
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(n, i1 + B);
    auto row_groups = [&](int64_t rg0, int64_t rg1) {
      std::vector<float> sc(static_cast<size_t>(R)), ze(static_cast<size_t>(R)), fit(static_cast<size_t>(g)),
          d(static_cast<size_t>(g));
      std::vector<spqr::Factors> f(static_cast<size_t>(R));
      for (int64_t rg = rg0; rg < rg1; ++rg) {
        const int64_t r0 = rg * R, r1 = std::min(rows, r0 + R);
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t gi = i / g;
          if (i % g == 0) {  // the group's statistics from the current weights (all updated: g divides B)
            const int64_t len = std::min(g, n - i);
            for (int64_t k = 0; k < len; ++k) d[size_t(k)] = u[(i + k) * n + i + k];
            for (int64_t r = r0; r < r1; ++r) {
              without_likely_outliers(wp.data() + r * n + i, d.data(), len, s.bits, thr, fit.data());
              const spqr::Stats1 st = spqr::minmax_stats(fit.data(), len, s.bits);
              sc[size_t(r - r0)] = st.scale;
              ze[size_t(r - r0)] = st.zero;
            }
            spqr::set_group(qm, r0, r1, gi, sc.data(), ze.data());
            for (int64_t r = r0; r < r1; ++r) f[size_t(r - r0)] = spqr::factors(qm, r, gi);
          }
          const float* ui = u + i * n;
          for (int64_t r = r0; r < r1; ++r) {
            float* wr = wp.data() + r * n;
            const uint8_t q = spqr::quantize(wr[i], f[size_t(r - r0)], maxq);
            qm.q[size_t(r * n + i)] = q;
            float qv = spqr::value(q, f[size_t(r - r0)]);
            float e = (wr[i] - qv) / ui[i];
            if (double(e) * e > thr) {  // outlier: kept in f16 on top of its code's value
              const float sp = f16_to_f32(f32_to_f16(wr[i] - qv));
              if (!std::isfinite(sp))
                fail("", "outlier at row " + std::to_string(r) + ", column " + std::to_string(i) + " beyond the f16 range");
              outl[size_t(rg)].emplace_back(uint32_t(r * n + i), sp);
              qv += sp;
              e = (wr[i] - qv) / ui[i];
            }
            for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
            err[size_t(r * B + i - i1)] = e;
          }
        }
      }
    };
    if (rows * (i2 - i1) * (i2 - i1) < (int64_t(1) << 20))
      row_groups(0, nrg);
    else
      parallel_for_checked(pool, nrg, [&](int, int64_t a, int64_t b) { row_groups(a, b); });
    if (i2 < n)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n - i2), int(i2 - i1), -1.0f, err.data(),
                  int(B), u + i1 * n + i2, int(n), 1.0f, wp.data() + i2, int(n));
  }
  std::vector<std::pair<uint32_t, float>> all;
  for (auto& v : outl) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  for (auto& [i, v] : all) qm.sp_idx.push_back(i), qm.sp_val.push_back(v);
  return qm;
}

// The rest of the +s budget after the sweep: per weight (r, j) not yet an outlier, the best single
// correction delta of row r's error e (loss e H e^T) is (e H)_j / H_jj, lowering the loss by
// (e H)_j^2 / H_jj; the largest reductions are taken (in position order, each row's e H updated
// after each correction), unused slots get value 0 at free positions.
void fill_budget(const float* w, QuantizedMatrix& qm, const std::vector<double>& H, int64_t nnz) {
  const int64_t rows = qm.rows, n = qm.cols;
  std::vector<float> deq = dequantize_matrix(qm);
  std::vector<uint8_t> taken(size_t(rows * n), 0);
  for (uint32_t i : qm.sp_idx) taken[i] = 1;
  const int64_t want = nnz - int64_t(qm.sp_idx.size());
  std::vector<double> eh(size_t(rows * n));
  {
    std::vector<double> e(size_t(rows * n));
    for (int64_t i = 0; i < rows * n; ++i) e[size_t(i)] = double(w[i]) - double(deq[size_t(i)]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n), int(n), 1.0, e.data(), int(n), H.data(),
                int(n), 0.0, eh.data(), int(n));
  }
  std::vector<std::pair<double, uint32_t>> cand;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const double hjj = H[size_t(j * n + j)], x = eh[size_t(r * n + j)];
      if (hjj > 0 && !taken[size_t(r * n + j)] && x != 0) cand.emplace_back(x * x / hjj, uint32_t(r * n + j));
    }
  const int64_t k = std::min<int64_t>(want, int64_t(cand.size()));
  std::nth_element(cand.begin(), cand.begin() + k, cand.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  std::vector<uint32_t> pick;
  for (int64_t t = 0; t < k; ++t) pick.push_back(cand[size_t(t)].second);
  std::sort(pick.begin(), pick.end());
  std::vector<std::pair<uint32_t, float>> add;
  for (uint32_t i : pick) {
    const int64_t r = i / n, j = i % n;
    double* ehr = eh.data() + r * n;
    const float delta = f16_to_f32(f32_to_f16(float(ehr[j] / H[size_t(j * n + j)])));
    if (!std::isfinite(delta)) continue;
    for (int64_t c = 0; c < n; ++c) ehr[c] -= double(delta) * H[size_t(j * n + c)];
    add.emplace_back(i, delta);
    taken[i] = 1;
  }
  for (uint32_t i = 0; int64_t(add.size()) < want; ++i)  // free positions, value 0
    if (!taken[i]) add.emplace_back(i, 0.f), taken[i] = 1;
  std::vector<std::pair<uint32_t, float>> all;
  for (size_t t = 0; t < qm.sp_idx.size(); ++t) all.emplace_back(qm.sp_idx[t], qm.sp_val[t]);
  all.insert(all.end(), add.begin(), add.end());
  std::sort(all.begin(), all.end());
  qm.sp_idx.clear();
  qm.sp_val.clear();
  for (auto& [i, v] : all) qm.sp_idx.push_back(i), qm.sp_val.push_back(v);
}

void check_spec(const QuantSpec& s) {
  try {
    format_id(s);
  } catch (const Error& e) {
    fail(kWho, e.what());
  }
  if (s.family != FormatFamily::Spqr) fail(kWho, "spqr quantizes onto spqr formats (spqr3g16, ...), not " + format_name(s));
}

}  // namespace

QuantizedMatrix spqr_sweep(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                           const std::vector<double>& H, double tau, const SpqrOptions& o, ThreadPool& pool) {
  check_spec(s);
  if (o.block <= 0) fail(kWho, "block size must be positive");
  const Prepared P = prepare(w, rows, cols, H, o, pool);
  return sweep(w, rows, cols, s, P, tau, o, pool);
}

QuantizedMatrix quantize_spqr(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                              const std::vector<double>& H, const SpqrOptions& o, ThreadPool& pool, int* sweeps) {
  check_spec(s);
  if (o.block <= 0) fail(kWho, "block size must be positive");
  const Prepared P = prepare(w, rows, cols, H, o, pool);
  const int64_t nnz = sparse_count(s, rows, cols);
  int runs = 0;
  auto run = [&](double tau) {
    ++runs;
    return sweep(w, rows, cols, s, P, tau, o, pool);
  };
  QuantizedMatrix best;
  if (nnz == 0) {
    if (o.tau >= 0) fail(kWho, "tau sets the outlier threshold: it needs a format with outliers (+s, e.g. " + format_name(s) + "+s0.50)");
    best = run(INFINITY);
  } else if (o.tau >= 0) {
    best = run(o.tau);
    if (int64_t(best.sp_idx.size()) > nnz)
      fail(kWho, "tau=" + std::to_string(o.tau) + " keeps " + std::to_string(best.sp_idx.size()) + " outliers, " +
                     format_name(s) + " holds " + std::to_string(nnz) + ": raise tau or the +s budget");
  } else {
    // The largest outlier count within the budget: bracket tau by doubling / halving from the
    // paper's 0.2, then bisect geometrically; the count falls as tau grows (not strictly: the
    // statistics move too), so the best result seen is kept.
    bool have = false;
    auto consider = [&](double tau) {
      QuantizedMatrix q = run(tau);
      const int64_t c = int64_t(q.sp_idx.size());
      const bool fits = c <= nnz;
      if (fits && (!have || c > int64_t(best.sp_idx.size()))) best = std::move(q), have = true;
      return fits;
    };
    double lo = 0.2, hi = 0.2;  // lo: too many outliers, hi: fits
    if (consider(0.2)) {
      for (int k = 0; k < 8 && consider(lo /= 2); ++k) hi = lo;
      if (hi == lo) lo = 0;  // fits even at the smallest tau tried
    } else {
      do hi *= 4;
      while (!consider(hi) && hi < 1e12);
      lo = hi / 4;
    }
    for (int k = 0; k < 5 && lo > 0 && int64_t(best.sp_idx.size()) < nnz; ++k) {
      const double mid = std::sqrt(lo * hi);
      if (consider(mid))
        hi = mid;
      else
        lo = mid;
    }
    if (!have) best = run(INFINITY);
  }
  best.spec = s;
  if (nnz) fill_budget(w, best, H, nnz);
  if (sweeps) *sweeps = runs;
  return best;
}

double dense_layer_error(const float* w, const std::vector<float>& wq, int64_t rows, int64_t cols,
                         const std::vector<double>& H, double* rel, int64_t max_rows) {
  if (rows <= 0 || cols <= 0 || int64_t(wq.size()) != rows * cols || int64_t(H.size()) != cols * cols)
    fail("layer_error", "inconsistent sizes");
  const int64_t used = max_rows > 0 ? std::min(max_rows, rows) : rows;
  std::vector<double> d(size_t(used * cols)), x(size_t(used * cols)), dh(size_t(used * cols)), xh(size_t(used * cols));
  for (int64_t i = 0; i < used; ++i) {
    const int64_t r = used == rows ? i : i * rows / used;
    for (int64_t j = 0; j < cols; ++j) {
      x[size_t(i * cols + j)] = w[r * cols + j];
      d[size_t(i * cols + j)] = double(w[r * cols + j]) - double(wq[size_t(r * cols + j)]);
    }
  }
  auto quad = [&](const std::vector<double>& a, std::vector<double>& ah) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(used), int(cols), int(cols), 1.0, a.data(), int(cols),
                H.data(), int(cols), 0.0, ah.data(), int(cols));
    double t = 0;
    for (size_t k = 0; k < a.size(); ++k) t += a[k] * ah[k];
    return t / double(used);
  };
  const double err = quad(d, dh);
  if (rel) {
    const double ref = quad(x, xh);
    *rel = ref > 0 ? err / ref : (err == 0 ? 0.0 : INFINITY);
  }
  return err;
}

}  // namespace lmpress
