// The Viterbi encoder's L = 16 run in half precision (AVX512-FP16: Sapphire Rapids and later),
// 32 states per vector, with the recurrence of trellis_viterbi_f16_generic bit for bit.
//
// Arithmetic (the scalar reference's, kernels/trellis_rows.h "Viterbi in half precision"): values v / 8 and
// x' = f16(clamp(x, +-1320) / 8), d = f16(x' - v'), c = f16(d * d + m) (one rounding, vfmadd),
// the min over a group's 2^k predecessors (strict <, the lower state on ties), and every new group
// minimum lowered by the previous step's smallest one (m_next = f16(min - mu)), so the path costs
// stay near zero where f16 is fine-grained; a far-off state that overflows to +inf is dead anyway.
//
// Layout: the step's inner reduction runs across vectors, not lanes. Group minima m[] and the state
// values live in a "chunk-transposed" order: in each chunk of 32 N entries (N = 2^k), entry
// a N + b is stored at b * 32 + a. A block of 32 successive groups g0 + i then reads, for each l, the
// predecessors' minima and the states' values g << k | l as one contiguous vector (lane i), the
// minimum over l is N - 1 vertical compare + blend pairs (their masks are the backpointer bits,
// 32 groups per word), and the N blocks of a chunk are put back into the transposed order by k
// rounds of even / odd word permutes (k per block, where the lane-order reduction needed 2 (N - 1)).
#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/trellis_rows.h"
#include "kernels/trellis_viterbi_x86.h"

namespace lmpress::kern {

namespace {

using h16 = _Float16;

// One step; returns the smallest new group minimum (the next step's mu).
template <int K>
h16 step(const h16* __restrict mprev, h16* __restrict mnext, uint32_t* __restrict bp, const h16* __restrict vals,
         h16 xi, h16 mu) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  alignas(64) static const int16_t kEven[32] = {0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                                                32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62};
  const __m512i ie = _mm512_load_si512(kEven);
  const __m512i io = _mm512_add_epi16(ie, _mm512_set1_epi16(1));
  const auto even = [ie](__m512h a, __m512h b) { return _mm512_permutex2var_ph(a, ie, b); };
  const auto odd = [io](__m512h a, __m512h b) { return _mm512_permutex2var_ph(a, io, b); };
  const __m512h xv = _mm512_set1_ph(xi), muv = _mm512_set1_ph(mu);
  __m512h lowest = _mm512_set1_ph(h16(std::numeric_limits<float>::infinity()));
  for (int64_t c0 = 0; c0 < G; c0 += 32 * N) {
    __m512h out[N];
#pragma GCC unroll 16
    for (int t = 0; t < N; ++t) {
      const int64_t g0 = c0 + 32 * t, s0 = g0 << K;
      const h16* mp = mprev + (s0 & (G - 1));
      const h16* vp = vals + s0;
      // the tree over l as a binary counter: partial minima of completed subtrees per level (k + 1
      // registers live, not 2^k); the masks land where a level-by-level tree puts them
      uint32_t* b = bp + (g0 / 32) * (N - 1);
      __m512h part[K + 1];
#pragma GCC unroll 16
      for (int l = 0; l < N; ++l) {
        const __m512h d = _mm512_sub_ph(xv, _mm512_loadu_ph(vp + 32 * l));
        __m512h cur = _mm512_fmadd_ph(d, d, _mm512_loadu_ph(mp + 32 * l));
        int lev = 0;
#pragma GCC unroll 4
        for (int idx = l; idx & 1; idx >>= 1, ++lev) {
          const __mmask32 lt = _mm512_cmp_ph_mask(cur, part[lev], _CMP_LT_OQ);
          b[viterbi_mask_offset(N, lev) + (l >> (lev + 1))] = lt;
          cur = _mm512_mask_blend_ph(lt, part[lev], cur);
        }
        part[lev] = cur;
      }
      out[t] = _mm512_sub_ph(part[K], muv);
      lowest = _mm512_min_ph(lowest, out[t]);
    }
    // blocks t (groups c0 + 32 t + i) -> rows b (entries c0 + 32 b + a, group c0 + a N + b)
    viterbi_untranspose<K>(out, even, odd);
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) _mm512_storeu_ph(mnext + c0 + 32 * r, out[r]);
  }
  return _mm512_reduce_min_ph(lowest);
}

template <int K>
float run(const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  const h16* vals = viterbi_values<K, 32, h16>(code, trellis::kViterbiF16Scale);
  thread_local ViterbiScratch<h16, uint32_t> sc;
  h16 mu = 0;
  double lowered = 0;  // the sum of the mu taken off, for the returned cost
  const float m = viterbi_run<K, 32>(T, overlap, states, sc, [&](int i, const h16* mprev, h16* mnext, uint32_t* bp) {
    const h16 next_mu = step<K>(mprev, mnext, bp, vals, h16(trellis::viterbi_f16_input(x[i])), mu);
    lowered += double(mu);
    mu = next_mu;
  });
  if (!(m < std::numeric_limits<float>::infinity())) return m;
  return float((lowered + double(m)) / (double(trellis::kViterbiF16Scale) * trellis::kViterbiF16Scale));
}

}  // namespace

// CPUID leaf 7 EDX bit 23 (AVX512-FP16); the caller has checked the AVX-512 level (and the OS's zmm
// state). By CPUID, not __builtin_cpu_supports: clang 14 does not know the feature's name.
bool trellis_viterbi_fp16_available() {
  unsigned a, b, c, d;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 23));
}

float trellis_viterbi16_fp16(int k, const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  switch (k) {
    case 2: return run<2>(x, T, overlap, states, code);
    case 3: return run<3>(x, T, overlap, states, code);
    default: return run<4>(x, T, overlap, states, code);
  }
}

}  // namespace lmpress::kern
