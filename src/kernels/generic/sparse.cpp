// Scalar reference of the sparse-outlier add (qkernels.h SparseArgs): rows in order, each takes
// the run of positions below its end (no division), f16 values converted exactly.
#include <algorithm>

#include "kernels/qkernels.h"

namespace lmpress::kern {

void sparse_add_scalar(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (a.nnz == 0) return;
  const uint32_t* const end = a.idx + a.nnz;
  const uint32_t* k = std::lower_bound(a.idx, end, uint32_t(r0 * a.cols));
  for (int64_t r = r0; r < r1 && k < end; ++r) {
    const uint32_t base = uint32_t(r * a.cols), stop = uint32_t((r + 1) * a.cols);
    const uint32_t* k0 = k;
    while (k < end && *k < stop) ++k;
    if (k == k0) continue;
    const uint16_t* v = a.val + (k0 - a.idx);
    for (int64_t t = t0; t < t1; ++t) {
      const float* xt = a.x + t * a.cols;
      float acc = 0.f;
      for (const uint32_t* q = k0; q < k; ++q) acc += f16_to_f32(v[q - k0]) * xt[*q - base];
      a.y[t * a.ldy + r] += acc;
    }
  }
}

}  // namespace lmpress::kern
