// The row walk shared by the sparse-outlier add kernels (qkernels.h SparseArgs): rows in order,
// each taking the run of ascending positions below its end (no division). Each ISA TU compiles
// its own copy (anonymous namespace: no cross-TU sharing of code built with other flags).
#pragma once
#include <algorithm>

#include "kernels/qkernels.h"

namespace lmpress::kern {
namespace {

// f(r, base, first, n): row r's n outliers at positions first[0..n) (column = position - base).
template <class F>
inline void for_each_sparse_row(const SparseArgs& a, int64_t r0, int64_t r1, F&& f) {
  if (a.nnz == 0) return;
  const uint32_t* const end = a.idx + a.nnz;
  const uint32_t* k = std::lower_bound(a.idx, end, uint32_t(r0 * a.cols));
  for (int64_t r = r0; r < r1 && k < end; ++r) {
    const uint32_t base = uint32_t(r * a.cols), stop = uint32_t((r + 1) * a.cols);
    const uint32_t* k0 = k;
    while (k < end && *k < stop) ++k;
    if (k != k0) f(r, base, k0, k - k0);
  }
}

}  // namespace
}  // namespace lmpress::kern
