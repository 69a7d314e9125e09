// AVX-512 kernels of the trellis family (kernels/trellis_x86.h): decode with one vpdpbusd per column
// of 16 rows and token, prefill through the AVX-512 VNNI repacked GEMM; and the Viterbi encoder's
// L = 16 run.
//
// Viterbi run (f32, the arithmetic of trellis_viterbi_generic; used where the CPU lacks AVX512-FP16,
// whose half-precision run is x86_avx512/trellis_fp16.cpp): the layout of x86_avx2/trellis_viterbi.cpp
// with 16 lanes. Group minima and state values in chunks of 16 N entries (N = 2^k), entry a N + b
// stored at b * 16 + a: a block of 16 successive groups reads one contiguous vector of predecessor
// minima and one of state values per l, reduces over l by vertical compares (the masks are the
// backpointers, 16 groups per word), and the N blocks of a chunk return to the transposed order by k
// rounds of even / odd permutes.
#define LMP_TRELLIS_AVX512 1
#include <atomic>
#include <cstdlib>

#include "kernels/trellis_x86.h"
#include "kernels/trellis_viterbi_x86.h"

namespace lmpress::kern {

namespace {

// m_next[g] = min over l of m_prev[(g << K | l) mod G] + (x - value(g << K | l))^2, the argmin l's
// bits (ties: the lower l) in the backpointer words.
template <int K>
void viterbi_step(const float* __restrict mprev, float* __restrict mnext, uint16_t* __restrict bp,
                  const float* __restrict vals, float xi) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
  const auto even = [ie](__m512 a, __m512 b) { return _mm512_permutex2var_ps(a, ie, b); };
  const auto odd = [io](__m512 a, __m512 b) { return _mm512_permutex2var_ps(a, io, b); };
  const __m512 xv = _mm512_set1_ps(xi);
  for (int64_t c0 = 0; c0 < G; c0 += 16 * N) {
    __m512 out[N];
#pragma GCC unroll 16
    for (int t = 0; t < N; ++t) {
      const int64_t g0 = c0 + 16 * t, s0 = g0 << K;
      const float* mp = mprev + (s0 & (G - 1));
      const float* vp = vals + s0;
      uint16_t* b = bp + (g0 / 16) * (N - 1);
      __m512 part[K + 1];  // the tree over l as a binary counter (see x86_avx2/trellis_viterbi.cpp)
#pragma GCC unroll 16
      for (int l = 0; l < N; ++l) {
        const __m512 d = _mm512_sub_ps(xv, _mm512_loadu_ps(vp + 16 * l));
        __m512 cur = _mm512_add_ps(_mm512_loadu_ps(mp + 16 * l), _mm512_mul_ps(d, d));
        int lev = 0;
#pragma GCC unroll 4
        for (int idx = l; idx & 1; idx >>= 1, ++lev) {
          const __mmask16 lt = _mm512_cmp_ps_mask(cur, part[lev], _CMP_LT_OQ);
          b[viterbi_mask_offset(N, lev) + (l >> (lev + 1))] = lt;
          cur = _mm512_mask_blend_ps(lt, part[lev], cur);
        }
        part[lev] = cur;
      }
      out[t] = part[K];
    }
    viterbi_untranspose<K>(out, even, odd);
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) _mm512_storeu_ps(mnext + c0 + 16 * r, out[r]);
  }
}

template <int K>
float run(const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  const float* vals = viterbi_values<K, 16, float>(code, 1.f);
  thread_local ViterbiScratch<float, uint16_t> sc;
  return viterbi_run<K, 16>(T, overlap, states, sc, [&](int i, const float* mprev, float* mnext, uint16_t* bp) {
    viterbi_step<K>(mprev, mnext, bp, vals, x[i]);
  });
}

}  // namespace

float trellis_viterbi16_avx512(int k, const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  switch (k) {
    case 2: return run<2>(x, T, overlap, states, code);
    case 3: return run<3>(x, T, overlap, states, code);
    default: return run<4>(x, T, overlap, states, code);
  }
}

void trellis_gemm_avx512vbmi(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1);  // trellis_vbmi.cpp

std::atomic<bool> g_trellis_vbmi_off{false};
bool trellis_vbmi_available() { return __builtin_cpu_supports("avx512vbmi"); }
void trellis_disable_vbmi(bool off) { g_trellis_vbmi_off = off; }

namespace {
// AVX512-VBMI (Ice Lake and later) extracts a column's states with one vpmultishiftqb; without it
// (Skylake-X, Cascade Lake) vpshufb + vpsrlvd + vpand. LMPRESS_TRELLIS_VBMI=0 forces the latter.
void trellis_gemm_level(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  static const bool vbmi = [] {
    const char* e = std::getenv("LMPRESS_TRELLIS_VBMI");
    return trellis_vbmi_available() && !(e && e[0] == '0');
  }();
  if (vbmi && !g_trellis_vbmi_off.load(std::memory_order_relaxed)) trellis_gemm_avx512vbmi(A, r0, r1, t0, t1);
  else trellis_gemm(A, r0, r1, t0, t1);
}
}  // namespace

const FormatKernels trellis_kernels_avx512 = {SimdLevel::AVX512, trellis_gemm_level, trellis_dequant_rows_scalar};

}  // namespace lmpress::kern
