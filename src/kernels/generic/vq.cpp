// Scalar reference of the vq kernels (the specification, kernels/vq_rows.h): every weight decoded by
// the value formula, y[t][r] = sum_c x[t][c] * w(r, c) summed in f32 in column order.
#include <vector>

#include "kernels/vq_rows.h"

namespace lmpress::kern {

namespace {

void vq_dequant_rows(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < w.cols; ++c) out[(r - r0) * ldo + c] = vq::value(w, r, c);
}

void vq_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    vq_dequant_rows(w, r, r + 1, row.data(), w.cols);
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = A.a.xf + t * w.cols;
      float acc = 0.f;
      for (int64_t c = 0; c < w.cols; ++c) acc += x[c] * row[size_t(c)];
      A.y[t * A.ldy + r] = acc;
    }
  }
}

}  // namespace

const FormatKernels vq_kernels_scalar = {SimdLevel::Scalar, vq_gemm, vq_dequant_rows};

}  // namespace lmpress::kern
