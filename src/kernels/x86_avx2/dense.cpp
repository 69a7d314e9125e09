// AVX2 + FMA + F16C dense kernels: the shared code of kernels/dense_x86.h over 8-lane registers.
#include "kernels/dense_x86.h"
#include "kernels/x86_math.h"

namespace lmpress::kern {
namespace {

struct V8 {
  using R = __m256;
  static constexpr size_t W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static R bf16(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R set1(float a) { return _mm256_set1_ps(a); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static float hsum(R v) { return kern::hsum(v); }
};
using K = dense_x86::Kernels<V8>;

}  // namespace

const Ops ops_avx2 = {SimdLevel::AVX2,        K::f16_to_f32, K::bf16_to_f32, K::gemv<K::LF32>, K::gemv<K::LF16>,
                      K::gemv<K::LBF16>,      K::dot_f32,    K::axpy_f32,    silu_mul_f32_x86,
                      softmax_unnorm_f32_x86, K::gemm_f16, K::gemm_bf16};

}  // namespace lmpress::kern
