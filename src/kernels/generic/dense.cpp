// Scalar reference kernels: the specification the SIMD versions are tested against.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace lmpress::kern {
namespace {

void f16_to_f32(const uint16_t* s, float* d, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = lmpress::f16_to_f32(s[i]);
}
void bf16_to_f32(const uint16_t* s, float* d, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = lmpress::bf16_to_f32(s[i]);
}
void gemv_f32(const float* W, size_t ld, const float* x, size_t k, float* y, size_t nrows) {
  for (size_t r = 0; r < nrows; ++r) {
    const float* w = W + r * ld;
    float acc = 0.f;
    for (size_t j = 0; j < k; ++j) acc += w[j] * x[j];
    y[r] = acc;
  }
}
void gemv_f16(const uint16_t* W, size_t ld, const float* x, size_t k, float* y, size_t nrows) {
  for (size_t r = 0; r < nrows; ++r) {
    const uint16_t* w = W + r * ld;
    float acc = 0.f;
    for (size_t j = 0; j < k; ++j) acc += lmpress::f16_to_f32(w[j]) * x[j];
    y[r] = acc;
  }
}
void gemv_bf16(const uint16_t* W, size_t ld, const float* x, size_t k, float* y, size_t nrows) {
  for (size_t r = 0; r < nrows; ++r) {
    const uint16_t* w = W + r * ld;
    float acc = 0.f;
    for (size_t j = 0; j < k; ++j) acc += lmpress::bf16_to_f32(w[j]) * x[j];
    y[r] = acc;
  }
}
float dot_f32(const float* a, const float* b, size_t n) {
  float acc = 0.f;
  for (size_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}
void axpy_f32(float a, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}
void silu_mul_f32(float* g, const float* u, size_t n) {
  for (size_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}
float softmax_unnorm_f32(float* x, size_t n) {
  float mx = x[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double s = 0;
  for (size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    s += x[i];
  }
  return float(s);
}

// The GEMM's specification: every output one gemv row (f32 accumulation in column order).
void gemm_f16(const uint16_t* W, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy, int64_t r0,
              int64_t r1) {
  for (int64_t t = 0; t < n; ++t)
    gemv_f16(W + r0 * cols, size_t(cols), x + t * cols, size_t(cols), y + t * ldy + r0, size_t(r1 - r0));
}
void gemm_bf16(const uint16_t* W, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy, int64_t r0,
               int64_t r1) {
  for (int64_t t = 0; t < n; ++t)
    gemv_bf16(W + r0 * cols, size_t(cols), x + t * cols, size_t(cols), y + t * ldy + r0, size_t(r1 - r0));
}

}  // namespace

const Ops ops_scalar = {SimdLevel::Scalar, f16_to_f32, bf16_to_f32, gemv_f32, gemv_f16,
                        gemv_bf16, dot_f32, axpy_f32, silu_mul_f32, softmax_unnorm_f32,
                        gemm_f16, gemm_bf16};

}  // namespace lmpress::kern
