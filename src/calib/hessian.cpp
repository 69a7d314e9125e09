// Hessian accumulator H = X^T X over calibration rows, in double. Rows are converted to double
// in panels of kPanel rows ([kPanel, n], a few MB) and each panel is one dsyrk into the upper
// triangle, so the sum never sees float rounding and runs on OpenBLAS threads.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "lmpress/compress.h"

extern "C" void openblas_set_num_threads(int);

namespace lmpress {

namespace {
constexpr int64_t kPanel = 256;
}

HessianAccumulator::HessianAccumulator(int64_t n) : n_(n) {
  if (n <= 0) fail("hessian", "input width must be positive, got " + std::to_string(n));
  h_.assign(size_t(n * n), 0.0);
}

void HessianAccumulator::add(const float* x, int64_t rows, ThreadPool& pool) {
  if (rows < 0) fail("hessian", "negative row count");
  if (rows == 0) return;
  if (x == nullptr) fail("hessian", "null activation pointer");
  const int64_t n = n_;
  const int64_t pr = std::min(kPanel, rows);
  std::vector<double> panel(pr * n);
  const ScopedBlasThreads blas_threads(pool.size(), double(rows) * double(n) * double(n));
  for (int64_t r0 = 0; r0 < rows; r0 += kPanel) {
    const int64_t nr = std::min(kPanel, rows - r0);
    const float* src = x + r0 * n;
    int64_t bad = -1;
    for (int64_t k = 0; k < nr * n; ++k) {
      const float v = src[k];
      if (!std::isfinite(v)) bad = k;
      panel[size_t(k)] = double(v);
    }
    if (bad >= 0)
      fail("hessian", "non-finite activation at row " + std::to_string(r0 + bad / n) +
                          ", column " + std::to_string(bad % n) +
                          " (did the calibration forward pass overflow?)");
    // C[n, n] (upper) += A^T A with A = panel [nr, n] row-major.
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(n), int(nr), 1.0, panel.data(), int(n),
                1.0, h_.data(), int(n));
  }
  count_ += rows;
}

std::vector<double> HessianAccumulator::mean() const {
  if (count_ == 0)
    fail("hessian", "no calibration rows were accumulated (layer never reached in calibration?)");
  const int64_t n = n_;
  const double inv = 1.0 / double(count_);
  std::vector<double> m(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) {
      const double v = h_[size_t(i * n + j)] * inv;
      m[size_t(i * n + j)] = v;
      m[size_t(j * n + i)] = v;
    }
  return m;
}

}  // namespace lmpress

namespace lmpress {
std::vector<double> HessianAccumulator::take_mean() {
  if (count_ == 0)
    fail("hessian", "no calibration rows were accumulated (layer never reached in calibration?)");
  const int64_t n = n_;
  const double inv = 1.0 / double(count_);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) {
      const double v = h_[size_t(i * n + j)] * inv;
      h_[size_t(i * n + j)] = v;
      h_[size_t(j * n + i)] = v;
    }
  count_ = 0;
  return std::move(h_);
}
}  // namespace lmpress
