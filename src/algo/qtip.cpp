// QTIP (Tseng et al., "QTIP: Quantization with Trellises and Incoherence Processing", NeurIPS 2024;
// reference Cornell-RelaxML/qtip) onto the trellis formats (formats/trellis.h):
//   dead inputs zeroed -> f16 row scales from each row's RMS -> LDLQ over column blocks of 16: the
//   block's 16 x 16 tiles coded by the tail-biting Viterbi encoder on the feedback-updated weights
//   (in parallel over row tiles), then the block's error fed to the later columns through GPTQ's
//   upper inverse Cholesky factor U (H^-1 = U^T U): W_rest -= (E U_BB^-1) U_B,rest. With a block of
//   one column this is GPTQ's update; with 16 it is QuIP#'s / QTIP's block LDLQ (the error of a
//   jointly coded block is projected through the block's own factor first).
// Incoherence processing (+h) is the pipeline's randomized Hadamard transform (compress_rotated):
// this file sees the rotated W and H. Deviations from the paper: docs/methods.md ("qtip").
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "formats/trellis.h"
#include "lmpress/compress.h"

namespace lmpress {

QuantizedMatrix quantize_qtip(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>* H,
                              const QtipOptions& o, ThreadPool& pool) {
  const char* who = "qtip";
  if (s.family != FormatFamily::Trellis) fail(who, "qtip quantizes onto trellis formats (trellis2, trellis3, trellis4), not " + format_name(s));
  if (!trellis::shape_ok(rows, cols)) fail(who, trellis::shape_problem(s, rows, cols));
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail(who, "non-finite weight at index " + std::to_string(i));
  if (!H) return trellis::quantize_rtn(w, rows, cols, s, &pool);
  if (int64_t(H->size()) != cols * cols)
    fail(who, "Hessian has " + std::to_string(H->size()) + " entries, expected " + std::to_string(cols) + "^2");
  if (!(o.damp >= 0.0) || !std::isfinite(o.damp)) fail(who, "damp must be a finite value >= 0");
  const int64_t n = cols, T = trellis::kTile, rts = rows / T, cts = cols / T;
  const int k = s.bits;
  const int64_t tb = kern::trellis::tile_bytes(k);

  // Working weights, dead inputs (H_jj = 0) zeroed as GPTQ does.
  std::vector<float> W(w, w + rows * cols);
  for (int64_t j = 0; j < n; ++j)
    if ((*H)[size_t(j * n + j)] == 0.0)
      for (int64_t r = 0; r < rows; ++r) W[size_t(r * n + j)] = 0.f;

  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    double q = 0;
    for (int64_t c = 0; c < cols; ++c) q += double(W[size_t(r * n + c)]) * W[size_t(r * n + c)];
    qm.scales[size_t(r)] = trellis::row_scale(std::sqrt(q / double(cols)), s.variant);
  }
  const std::vector<float> U = inverse_factor_upper(*H, n, o.damp, who);

  std::vector<float> E(size_t(rows * T));  // [rows][16] the block's error, then E U_BB^-1
  for (int64_t ct = 0; ct < cts; ++ct) {
    const int64_t b0 = ct * T, b1 = b0 + T;
    pool.parallel_for(rts, [&](int, int64_t t0, int64_t t1) {
      float Q[trellis::kTile * trellis::kTile];
      for (int64_t rt = t0; rt < t1; ++rt) {
        float* wt = W.data() + rt * T * n + b0;
        trellis::quantize_tile(wt, n, qm.scales.data() + rt * T, k, qm.q.data() + (rt * cts + ct) * tb, Q, T, s.variant);
        for (int64_t i = 0; i < T; ++i) {
          const int64_t r = rt * T + i;
          float* e = E.data() + r * T;
          for (int64_t j = 0; j < T; ++j) e[j] = wt[i * n + j] - Q[i * T + j];
          // e <- e U_BB^-1 (forward substitution with the upper triangular block)
          for (int64_t j = 0; j < T; ++j) {
            float v = e[j];
            for (int64_t l = 0; l < j; ++l) v -= e[l] * U[size_t((b0 + l) * n + b0 + j)];
            e[j] = v / U[size_t((b0 + j) * n + b0 + j)];
          }
        }
      }
    });
    if (b1 < n)  // W[:, b1:] -= E' U[b0:b1, b1:]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n - b1), int(T), -1.0f, E.data(), int(T),
                  U.data() + b0 * n + b1, int(n), 1.0f, W.data() + b1, int(n));
  }
  return qm;
}

}  // namespace lmpress
