// Scalar reference of the sparse-outlier add (qkernels.h SparseArgs), f16 values converted exactly.
#include "kernels/sparse_rows.h"

namespace lmpress::kern {

void sparse_add_scalar(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  for_each_sparse_row(a, r0, r1, [&](int64_t r, uint32_t base, const uint32_t* k0, int64_t n) {
    const uint16_t* v = a.val + (k0 - a.idx);
    for (int64_t t = t0; t < t1; ++t) {
      const float* xt = a.x + t * a.cols;
      float acc = 0.f;
      for (int64_t j = 0; j < n; ++j) acc += f16_to_f32(v[j]) * xt[k0[j] - base];
      a.y[t * a.ldy + r] += acc;
    }
  });
}

}  // namespace lmpress::kern
