// VPTQ (Liu et al., "VPTQ: Extreme Low-bit Vector Post-Training Quantization for Large Language
// Models", EMNLP 2024; reference microsoft/VPTQ, vptq.py / quantizer.py) onto the vq formats
// (formats/vq.h):
//   dead inputs zeroed -> (n) column norm -> H_jj-weighted k-means of the column vectors (v rows of
//   one column: VPTQ's "transposed" vectors) -> channel-independent second-order sweep: GPTQ's
//   column loop where each column's vectors go to their nearest centroid (Euclidean: the entries of
//   a vector share the column, so H_jj weighs them alike) and the scaled error feeds the later
//   columns -> (residual stage) H_jj-weighted k-means of the sweep's remaining error, then a second
//   sweep from the original weights with both codebooks (stage 1 nearest, then stage 2 nearest to
//   what is left).
// Deviations from the paper and the reference: docs/methods.md ("vptq").
//
// Numerics: H, its dampening, inversion and Cholesky factor in double (LAPACK); k-means and the
// sweep in float like the reference. Threads: vectors of a column are independent inside a block,
// so a block's column loop runs over row-block chunks on the pool; the lazy update between blocks is
// one sgemm; k-means assigns its vectors in parallel.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "formats/vq.h"
#include "lmpress/compress.h"

namespace lmpress {

namespace {

const char* kWho = "vptq";

// U [n, n] float (strict lower triangle zero) with A^-1 = U^T U for symmetric positive definite A.
void inverse_factor(std::vector<double> a, int64_t n, std::vector<float>& u) {
  const lapack_int ni = lapack_int(n);
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', ni, a.data(), ni);
  if (info > 0)
    fail(kWho, "Hessian is not positive definite after dampening (column " + std::to_string(info - 1) +
                   "); increase damp or use more calibration data");
  if (info == 0) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', ni, a.data(), ni);
  if (info != 0) fail(kWho, "inverse of the Hessian failed (info " + std::to_string(info) + ")");
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i + 1; k < n; ++k) a[size_t(i * n + k)] = a[size_t(k * n + i)];
  info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ni, a.data(), ni);
  if (info != 0) fail(kWho, "Cholesky factor of the inverse Hessian failed (info " + std::to_string(info) + ")");
  u.assign(size_t(n * n), 0.f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i; k < n; ++k) u[size_t(i * n + k)] = float(a[size_t(i * n + k)]);
}

// The vectors of w [rows][cols] column by column ([cols][real row blocks][v], zero past the last
// row) and their weights (H_jj of their column).
void column_vectors(const float* w, int64_t rows, int64_t cols, int v, const std::vector<double>& hdiag,
                    std::vector<float>& x, std::vector<double>& wt) {
  const int64_t rb = (rows + v - 1) / v;
  x.assign(size_t(rb * cols * v), 0.f);
  wt.assign(size_t(rb * cols), 0.0);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t b = 0; b < rb; ++b) {
      wt[size_t(c * rb + b)] = hdiag[size_t(c)];
      for (int l = 0; l < v && b * v + l < rows; ++l) x[size_t((c * rb + b) * v + l)] = w[(b * v + l) * cols + c];
    }
}

// The int8 codebook of k-means centroids: its values, scale, and the dequantized centroids the
// kernels will use (scale * value in f32).
std::vector<float> fit_book(const std::vector<float>& c, int8_t* book, float* scale) {
  *scale = vq::to_int8(c.data(), int64_t(c.size()), book);
  std::vector<float> deq(c.size());
  for (size_t i = 0; i < c.size(); ++i) deq[i] = *scale * float(book[i]);
  return deq;
}

}  // namespace

std::vector<uint32_t> vptq_sweep(const float* w, int64_t rows, int64_t cols, int v, const std::vector<float>& book1,
                                 const std::vector<float>& book2, int bits1, const std::vector<double>& H,
                                 int64_t block, bool act_order, ThreadPool& pool, std::vector<float>* target) {
  const int64_t n = cols, rb_n = (rows + v - 1) / v;
  if (rows <= 0 || cols <= 0 || !w) fail(kWho, "empty weight matrix");
  if (int64_t(H.size()) != n * n) fail(kWho, "Hessian of the wrong size");
  if (block <= 0) fail(kWho, "block size must be positive");
  const int k1 = int(book1.size()) / v, k2 = int(book2.size()) / v;
  LMP_ASSERT(k1 >= 1 && int64_t(k1) * v == int64_t(book1.size()));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  if (act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return H[size_t(a * n + a)] > H[size_t(b * n + b)]; });
  std::vector<float> u;
  {
    std::vector<double> hp(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < n; ++k) hp[size_t(i * n + k)] = H[size_t(perm[size_t(i)] * n + perm[size_t(k)])];
    const ScopedBlasThreads bt(pool.size(), double(n) * double(n) * double(n));
    inverse_factor(std::move(hp), n, u);
  }
  std::vector<float> wp(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) wp[size_t(r * n + i)] = w[r * n + perm[size_t(i)]];
  const vq::Search s1 = vq::make_search(book1.data(), k1, v);
  const vq::Search s2 = k2 ? vq::make_search(book2.data(), k2, v) : vq::Search{};
  std::vector<uint32_t> codes(size_t(rb_n * cols), 0);
  if (target) target->assign(size_t(rows * cols), 0.f);
  const int64_t B = std::min(block, n);
  std::vector<float> err(static_cast<size_t>(rows * B));
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(n, i1 + B);
    auto row_blocks = [&](int64_t b0, int64_t b1) {
      float x[8], rest[8], q[8];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * v;
        const int nv = int(std::min<int64_t>(v, rows - r0));
        for (int64_t i = i1; i < i2; ++i) {
          for (int l = 0; l < nv; ++l) x[l] = wp[size_t((r0 + l) * n + i)];
          const int32_t j1 = vq::nearest(s1, x, nv);
          int32_t j2 = 0;
          for (int l = 0; l < nv; ++l) q[l] = book1[size_t(j1 * v + l)];
          if (k2) {
            for (int l = 0; l < nv; ++l) rest[l] = x[l] - q[l];
            j2 = vq::nearest(s2, rest, nv);
            for (int l = 0; l < nv; ++l) q[l] = q[l] + book2[size_t(j2 * v + l)];
          }
          const int64_t c = perm[size_t(i)];
          codes[size_t(b * cols + c)] = uint32_t(j1) | uint32_t(j2) << bits1;
          const float* ui = u.data() + i * n;
          for (int l = 0; l < nv; ++l) {
            if (target) (*target)[size_t((r0 + l) * cols + c)] = x[l];
            float* wr = wp.data() + (r0 + l) * n;
            const float e = (x[l] - q[l]) / ui[i];
            for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
            err[size_t((r0 + l) * B + i - i1)] = e;
          }
        }
      }
    };
    if (rb_n * (i2 - i1) * k1 < (int64_t(1) << 18))
      row_blocks(0, rb_n);
    else
      parallel_for_checked(pool, rb_n, [&](int, int64_t a, int64_t b) { row_blocks(a, b); });
    if (i2 < n)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n - i2), int(i2 - i1), -1.0f, err.data(), int(B),
                  u.data() + i1 * n + i2, int(n), 1.0f, wp.data() + i2, int(n));
  }
  return codes;
}

QuantizedMatrix quantize_vptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& H,
                              const VptqOptions& o, ThreadPool& pool) {
  try {
    format_id(s);
  } catch (const Error& e) {
    fail(kWho, e.what());
  }
  if (s.family != FormatFamily::Vq) fail(kWho, "vptq quantizes onto vq formats (vq4k8, vq8k8r8n, ...), not " + format_name(s));
  if (rows <= 0 || cols <= 0 || !w) fail(kWho, "empty weight matrix [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  const int64_t n = cols;
  if (int64_t(H.size()) != n * n)
    fail(kWho, "Hessian has " + std::to_string(H.size()) + " entries, expected " + std::to_string(n) + "^2");
  if (!(o.damp >= 0.0) || !std::isfinite(o.damp)) fail(kWho, "damp must be a finite value >= 0");
  for (int64_t i = 0; i < rows * n; ++i)
    if (!std::isfinite(w[i])) fail(kWho, "non-finite value in weights at index " + std::to_string(i));
  for (size_t i = 0; i < H.size(); ++i)
    if (!std::isfinite(H[i])) fail(kWho, "non-finite value in the Hessian at index " + std::to_string(i));
  const double t0 = now_seconds();
  const int v = s.group;
  QuantizedMatrix qm;
  qm.init(s, rows, cols);

  // Dead inputs (never active): weight zeroed, H_jj = 1 (as gptq).
  std::vector<double> h(H);
  std::vector<float> wn(w, w + rows * n);
  for (int64_t j = 0; j < n; ++j) {
    const double d = h[size_t(j * n + j)];
    if (d < 0) fail(kWho, "negative Hessian diagonal at column " + std::to_string(j));
    if (d == 0) {
      for (int64_t k = 0; k < n; ++k) h[size_t(j * n + k)] = h[size_t(k * n + j)] = 0;
      h[size_t(j * n + j)] = 1;
      for (int64_t r = 0; r < rows; ++r) wn[size_t(r * n + j)] = 0.f;
    }
  }
  // Column norm: W = Wn diag(s) + 1 b^T, so tr(D H D^T) = tr(Dn (S H S) Dn^T).
  if (s.colnorm) {
    vq::column_norm(wn.data(), rows, cols, qm.col_scale, qm.col_bias);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c)
        wn[size_t(r * n + c)] = (wn[size_t(r * n + c)] - qm.col_bias[size_t(c)]) / qm.col_scale[size_t(c)];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < n; ++k) h[size_t(i * n + k)] *= double(qm.col_scale[size_t(i)]) * double(qm.col_scale[size_t(k)]);
  }
  std::vector<double> hdiag(static_cast<size_t>(n));
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) hdiag[size_t(j)] = h[size_t(j * n + j)], mean_diag += hdiag[size_t(j)] / double(n);
  for (int64_t j = 0; j < n; ++j) h[size_t(j * n + j)] += o.damp * mean_diag;

  // Stage 1: H_jj-weighted k-means of the column vectors.
  std::vector<float> x;
  std::vector<double> wt;
  column_vectors(wn.data(), rows, cols, v, hdiag, x, wt);
  const int64_t nvec = int64_t(wt.size());
  const int k1 = 1 << s.bits, k2 = s.group2 ? 1 << s.group2 : 0;
  const std::vector<float> c1 = vq::kmeans(x.data(), nvec, v, wt.data(), k1, o.iters, o.seed, &pool);
  std::vector<float> target;
  std::vector<float> book1 = fit_book(c1, qm.vq_book.data(), &qm.vq_scale[0]);
  std::vector<uint32_t> codes =
      vptq_sweep(wn.data(), rows, cols, v, book1, {}, s.bits, h, o.block, o.act_order, pool, &target);
  // (lmpress) refine=N: the stage-1 centroids re-fitted to what the sweep rounded (each centroid the
  // H_jj-weighted mean of the targets assigned to it: one Lloyd step in the sweep's space), then
  // the sweep again; kept only when the layer loss drops.
  if (o.refine > 0) {
    auto loss = [&](const std::vector<uint32_t>& cd, const std::vector<float>& bk) {
      std::vector<float> q(size_t(rows * n));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < n; ++c) q[size_t(r * n + c)] = bk[size_t(cd[size_t(r / v * cols + c)] * v + r % v)];
      return dense_layer_error(wn.data(), q, rows, cols, h);
    };
    double best = loss(codes, book1);
    for (int it = 0; it < o.refine; ++it) {
      std::vector<double> sum(size_t(k1) * size_t(v), 0.0), ws(size_t(k1), 0.0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < n; ++c) {
          const uint32_t j = codes[size_t(r / v * cols + c)];
          sum[size_t(j * v + r % v)] += hdiag[size_t(c)] * double(target[size_t(r * n + c)]);
          if (r % v == 0) ws[size_t(j)] += hdiag[size_t(c)];
        }
      std::vector<float> c2(c1.size());
      for (int j = 0; j < k1; ++j)
        for (int l = 0; l < v; ++l)
          c2[size_t(j * v + l)] = ws[size_t(j)] > 0 ? float(sum[size_t(j * v + l)] / ws[size_t(j)]) : book1[size_t(j * v + l)];
      std::vector<int8_t> ib(qm.vq_book.size());
      float sc = 0.f;
      const std::vector<float> b2 = fit_book(c2, ib.data(), &sc);
      std::vector<float> t2;
      std::vector<uint32_t> cd2 = vptq_sweep(wn.data(), rows, cols, v, b2, {}, s.bits, h, o.block, o.act_order, pool, &t2);
      const double l2 = loss(cd2, b2);
      if (!(l2 < best)) break;
      best = l2;
      codes = std::move(cd2), target = std::move(t2), book1 = b2, qm.vq_book = ib, qm.vq_scale[0] = sc;
    }
  }
  std::vector<float> book2;
  if (k2) {
    // Stage 2: k-means of what the first sweep left (its targets minus their stage-1 vectors).
    std::vector<float> res(target);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c)
        res[size_t(r * n + c)] -= book1[size_t((codes[size_t(r / v * cols + c)] & uint32_t(k1 - 1)) * v + r % v)];
    std::vector<float> xr;
    column_vectors(res.data(), rows, cols, v, hdiag, xr, wt);
    const std::vector<float> c2 = vq::kmeans(xr.data(), nvec, v, wt.data(), k2, o.iters, o.seed + 1, &pool);
    book2 = fit_book(c2, qm.vq_book.data() + int64_t(k1) * v, &qm.vq_scale[1]);
    codes = vptq_sweep(wn.data(), rows, cols, v, book1, book2, s.bits, h, o.block, o.act_order, pool);
  }
  std::copy(codes.begin(), codes.end(), qm.vq_codes.begin());  // (the padding's codes stay 0)
  log_debug("vptq [%lld x %lld] %s: %.3f s", (long long)rows, (long long)cols, format_name(s).c_str(), now_seconds() - t0);
  return qm;
}

}  // namespace lmpress
