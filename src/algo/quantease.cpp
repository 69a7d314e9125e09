// QuantEase (Behdin et al., "QuantEase: Optimization-based Quantization for Language Models", 2023):
// cyclic coordinate descent (CD) on the layer objective f(Q) = tr((W - Q) H (W - Q)^T), Q on the
// format's grid, started from a rounding of W (GPTQ by default, as the reference's gptq_quantease).
//
// One coordinate update, for all rows at once: with D = W - Q and G = D H, the optimal
// unconstrained value of Q[:, j] given every other column is
//     u = W[:, j] + sum_{k != j} D[:, k] H_kj / H_jj  =  Q[:, j] + G[:, j] / H_jj,
// and since f restricted to one coordinate is the convex parabola H_jj (q - u)^2 + const, the
// grid value nearest u (grid.quantize: nearest code under the coordinate's fixed group params) is
// the exact minimiser over the grid. So no update increases f. A pass visits every column once.
//
// Cost per pass: G = D H once (one sgemm, rows * n^2), then columns in blocks of kBlock: inside a
// block each row's G is updated eagerly for the block's later columns (rows are independent, so row
// chunks run on the pool), after it the rest of G by one sgemm with the block's changes (as
// GPTQ's lazy batch). G is recomputed from D at the start of every pass, so float round-off does
// not accumulate over passes; the same product gives the objective of the pass's start for free.
// Deviations from the reference (docs/methods.md): every pass rounds (the reference leaves every
// third pass of the first 25 unrounded), and group params are those of the init (the reference
// recomputes min-max params from GPTQ's working weights at group boundaries).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "lmpress/compress.h"

namespace lmpress {

namespace {
constexpr int64_t kBlock = 64;  // columns per lazy-update block
}  // namespace

QuantizedMatrix quantease_refine(const float* w, int64_t rows, int64_t cols, const QuantizedMatrix& init,
                                 const std::vector<double>& H, int iters, bool act_order, ThreadPool& pool,
                                 std::vector<double>* objective) {
  const char* who = "quantease";
  if (rows <= 0 || cols <= 0 || w == nullptr) fail(who, "empty weight matrix");
  if (init.rows != rows || init.cols != cols || int64_t(init.q.size()) != rows * cols)
    fail(who, "the initial rounding does not match the weight matrix");
  if (int64_t(H.size()) != cols * cols)
    fail(who, "Hessian has " + std::to_string(H.size()) + " entries, expected " + std::to_string(cols) + "^2");
  if (iters < 0) fail(who, "iters must be >= 0");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail(who, "non-finite weight at index " + std::to_string(i));
  for (size_t i = 0; i < H.size(); ++i)
    if (!std::isfinite(H[i])) fail(who, "non-finite value in the Hessian at index " + std::to_string(i));

  const int64_t n = cols;
  const std::unique_ptr<Grid> grid = make_grid(init.spec);
  QuantizedMatrix out = init;
  const int64_t g = out.group_len(), ngroups = out.groups();

  // Processing order: columns, or descending diag(H) (stable) with act_order. Everything below is
  // in processing order: Hp [n][n] float, W, Q (dequantized), D = W - Q [rows][n].
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  if (act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return H[size_t(a * n + a)] > H[size_t(b * n + b)]; });
  std::vector<float> Hp(size_t(n * n)), hjj(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) Hp[size_t(i * n + k)] = float(H[size_t(perm[size_t(i)] * n + perm[size_t(k)])]);
    hjj[size_t(i)] = Hp[size_t(i * n + i)];
    if (hjj[size_t(i)] < 0) fail(who, "negative Hessian diagonal at column " + std::to_string(perm[size_t(i)]));
  }
  std::vector<float> Wp(size_t(rows * n)), Qp(size_t(rows * n)), D(size_t(rows * n)), G(size_t(rows * n));
  std::vector<GroupParams> params(size_t(rows * ngroups));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t gi = 0; gi < ngroups; ++gi) params[size_t(r * ngroups + gi)] = out.params(r, gi);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = perm[size_t(i)];
      Wp[size_t(r * n + i)] = w[r * n + j];
      Qp[size_t(r * n + i)] = grid->dequantize_at(out.q[size_t(r * n + j)], params[size_t(r * ngroups + j / g)], j % g);
      D[size_t(r * n + i)] = Wp[size_t(r * n + i)] - Qp[size_t(r * n + i)];
    }

  const ScopedBlasThreads blas(pool.size(), double(rows) * double(n) * double(n));
  // G = D Hp; returns tr(D H D^T) / rows (double sum of D .* G).
  auto refresh = [&]() {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n), int(n), 1.0f, D.data(), int(n),
                Hp.data(), int(n), 0.0f, G.data(), int(n));
    double f = 0;
    for (size_t i = 0; i < D.size(); ++i) f += double(D[i]) * double(G[i]);
    return f / double(rows);
  };
  if (objective) objective->clear();

  const int64_t B = std::min(kBlock, n);
  std::vector<float> delta(size_t(rows * B));  // [rows][B] changes of Q in the current block
  for (int it = 0; it < iters; ++it) {
    const double f0 = refresh();
    if (objective) objective->push_back(f0);
    for (int64_t i1 = 0; i1 < n; i1 += B) {
      const int64_t i2 = std::min(i1 + B, n), bw = i2 - i1;
      auto body = [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* qr = Qp.data() + r * n;
          float* dr = D.data() + r * n;
          float* gr = G.data() + r * n;
          float* er = delta.data() + r * B;
          uint8_t* codes = out.q.data() + r * n;
          const GroupParams* pr = params.data() + r * ngroups;
          for (int64_t i = i1; i < i2; ++i) {
            er[i - i1] = 0.f;
            const float h = hjj[size_t(i)];
            if (h <= 0.f) continue;  // a dead input: its weight does not matter; keep the init's code
            const int64_t j = perm[size_t(i)];
            const GroupParams& p = pr[j / g];
            const float u = qr[i] + gr[i] / h;
            const int32_t code = grid->quantize_at(u, p, j % g);
            const float v = grid->dequantize_at(code, p, j % g);
            // Move only to a strictly better value (ties keep the current code).
            if (!(std::fabs(v - u) < std::fabs(qr[i] - u))) continue;
            const float d = v - qr[i];
            qr[i] = v;
            dr[i] -= d;
            codes[j] = uint8_t(code);
            er[i - i1] = d;
            const float* hi = Hp.data() + i * n;
            for (int64_t k = i + 1; k < i2; ++k) gr[k] -= d * hi[k];
          }
        }
      };
      if (rows * bw * bw < (int64_t(1) << 18) || pool.size() <= 1)
        body(0, rows);
      else
        parallel_for_checked(pool, rows, [&](int, int64_t r0, int64_t r1) { body(r0, r1); });
      // G[:, i2:] -= delta [rows, bw] * Hp[i1:i2, i2:]
      if (i2 < n)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n - i2), int(bw), -1.0f, delta.data(),
                    int(B), Hp.data() + i1 * n + i2, int(n), 1.0f, G.data() + i2, int(n));
    }
  }
  if (objective) objective->push_back(refresh());
  return out;
}

}  // namespace lmpress
