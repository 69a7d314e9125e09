// AVX-512 dense kernels: the shared code of kernels/dense_x86.h over 16-lane registers.
#include "kernels/dense_x86.h"
#include "kernels/x86_math.h"

namespace lmpress::kern {
namespace {

struct V16 {
  using R = __m512;
  static constexpr size_t W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static R bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R set1(float a) { return _mm512_set1_ps(a); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }
};
using K = dense_x86::Kernels<V16>;

}  // namespace

const Ops ops_avx512 = {SimdLevel::AVX512,     K::f16_to_f32, K::bf16_to_f32, K::gemv<K::LF32>, K::gemv<K::LF16>,
                        K::gemv<K::LBF16>,     K::dot_f32,    K::axpy_f32,    silu_mul_f32_x86,
                      softmax_unnorm_f32_x86, K::gemm_f16, K::gemm_bf16};

}  // namespace lmpress::kern
