// Kernel dispatch table. One table per ISA level (generic/ = scalar reference and specification,
// x86_avx2/, x86_avx512/), chosen at run time from active_simd_level(). Kernels trust their
// arguments: callers validate shapes.
#pragma once
#include <cstddef>
#include <cstdint>

#include "lmpress/core.h"

namespace lmpress::kern {

struct Ops {
  SimdLevel level;
  void (*f16_to_f32)(const uint16_t* src, float* dst, size_t n);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, size_t n);
  // y[r] = sum_j W[r*ld + j] * x[j] for r in [0, nrows). W rows are k long, row stride ld.
  void (*gemv_f32)(const float* W, size_t ld, const float* x, size_t k, float* y, size_t nrows);
  void (*gemv_f16)(const uint16_t* W, size_t ld, const float* x, size_t k, float* y, size_t nrows);
  void (*gemv_bf16)(const uint16_t* W, size_t ld, const float* x, size_t k, float* y, size_t nrows);
  float (*dot_f32)(const float* a, const float* b, size_t n);
  void (*axpy_f32)(float a, const float* x, float* y, size_t n);  // y += a * x
  void (*silu_mul_f32)(float* g, const float* u, size_t n);       // g = g / (1 + exp(-g)) * u
  // x = exp(x - max x) over n >= 1 floats, returns sum x (softmax numerator and denominator).
  float (*softmax_unnorm_f32)(float* x, size_t n);
};

extern const Ops ops_scalar;
extern const Ops ops_avx2;
extern const Ops ops_avx512;

// Table for the active level (honours force_simd_level / LMPRESS_SIMD).
const Ops& ops();
// Table for a given level; the caller must ensure the CPU supports it.
const Ops& ops_at(SimdLevel l);

}  // namespace lmpress::kern
