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
  // GEMM over f16 / bf16 weights W [rows][cols] (row-major, no padding) and f32 activations x
  // [n][cols]: y[t * ldy + r] = sum_k W[r][k] x[t][k] for rows [r0, r1), tokens [0, n). The
  // prefill path of 16-bit weights where no AMX tile path runs (src/engine/matmul.cpp).
  void (*gemm_f16)(const uint16_t* W, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy, int64_t r0,
                   int64_t r1);
  void (*gemm_bf16)(const uint16_t* W, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy, int64_t r0,
                    int64_t r1);
};

extern const Ops ops_scalar;
extern const Ops ops_avx2;
extern const Ops ops_avx512;

// Table for the active level (honours force_simd_level / LMPRESS_SIMD).
const Ops& ops();
// Table for a given level; the caller must ensure the CPU supports it.
const Ops& ops_at(SimdLevel l);

// AMX bf16 GEMM for f16 / bf16 weights (src/kernels/x86_amx/dense.cpp; only where
// amx_bf16_active()): operands split into bf16 high + low parts, f32-class accuracy.
// Activations x [n][cols] -> pair layout, arrays of amx_bf16_acts_size(n, cols) elements each.
inline int64_t amx_bf16_acts_size(int64_t n, int64_t cols) { return (n + 15) / 16 * ((cols + 31) / 32 * 32) * 16; }
void amx_bf16_pack_acts(const float* x, int64_t n, int64_t cols, uint16_t* xh, uint16_t* xl);
// y[t * ldy + r] for rows [r0, r1) (r0 a multiple of 16) x n tokens; W [rows][cols], f16 or bf16.
void amx_bf16_gemm_rows(const uint16_t* W, bool f16, int64_t cols, const uint16_t* xh, const uint16_t* xl, int64_t n,
                        float* y, int64_t ldy, int64_t r0, int64_t r1);
// AMX int8 GEMM for f16 / bf16 weights as 16-bit fixed point in two int8 limbs
// (src/kernels/x86_amx/dense_i16.cpp): weights one scale per row, activations one per token and
// 256 columns; the default f16/bf16 prefill path on AMX (LMPRESS_F16_PREFILL=bf16x3 selects the
// bf16 split above). Activations: hi / lo arrays of amx_i16_acts_size bytes, scales
// amx_i16_scales_size floats.
inline int64_t amx_i16_acts_size(int64_t n, int64_t cols) { return (n + 15) / 16 * ((cols + 63) / 64 * 64) * 16; }
inline int64_t amx_i16_scales_size(int64_t n, int64_t cols) { return (n + 15) / 16 * 16 * ((cols + 255) / 256); }
void amx_i16_pack_acts(const float* x, int64_t n, int64_t cols, int8_t* xh, int8_t* xl, float* sx);
void amx_i16_gemm_rows(const uint16_t* W, bool f16, int64_t cols, const int8_t* xh, const int8_t* xl, const float* sx,
                       int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1);
// Two independent TDPBF16PS chains on 16x64 tiles, in flops (2 per multiply-add) per second.
double bf16_peak_gflops_amx(double seconds);

}  // namespace lmpress::kern
