// AVX-512 kernels of the trellis family (kernels/trellis_x86.h): decode with one vpdpbusd per column
// of 16 rows and token, prefill through the AVX-512 VNNI repacked GEMM; and the Viterbi encoder's
// L = 16 run.
//
// Viterbi step (states in natural order, G = 2^(16-k) groups): the predecessors of successor
// g | t << (16 - k) are the 2^k consecutive states g << k | l, shared by its 2^k siblings (QTIP's
// shared-predecessor structure). Per 16 groups: 2^k vectors of costs reduced pairwise (even / odd
// lanes by vpermt2ps, strict compare, blend: ties keep the lower state, as the reference) to the
// 16 minima and their k-bit argmins (one byte each in the backpointers), then 2^k vectors of
// successors written as min + (x - value)^2 (no FMA: the reference's rounding).
#define LMP_TRELLIS_AVX512 1
#include <atomic>
#include <cstdlib>

#include "kernels/trellis_x86.h"

namespace lmpress::kern {

namespace {

template <int K>
void viterbi_step(const float* __restrict cost, float* __restrict next, uint8_t* __restrict bp, const int8_t* vals, float xi) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
  const __m512 xv = _mm512_set1_ps(xi);
  for (int64_t g0 = 0; g0 < G; g0 += 16) {
    __m512 v[N];
    __m512i id[N];
#pragma GCC unroll 16
    for (int j = 0; j < N; ++j) v[j] = _mm512_loadu_ps(cost + (g0 << K) + 16 * j);
    int n = N;
#pragma GCC unroll 4
    for (int lev = 0; lev < K; ++lev) {
#pragma GCC unroll 8
      for (int p = 0; p < n / 2; ++p) {
        const __m512 e = _mm512_permutex2var_ps(v[2 * p], ie, v[2 * p + 1]);
        const __m512 o = _mm512_permutex2var_ps(v[2 * p], io, v[2 * p + 1]);
        const __mmask16 m = _mm512_cmp_ps_mask(o, e, _CMP_LT_OQ);
        v[p] = _mm512_mask_blend_ps(m, e, o);
        if (lev == 0) {
          id[p] = _mm512_maskz_mov_epi32(m, _mm512_set1_epi32(1));
        } else {
          const __m512i de = _mm512_permutex2var_epi32(id[2 * p], ie, id[2 * p + 1]);
          const __m512i dd = _mm512_permutex2var_epi32(id[2 * p], io, id[2 * p + 1]);
          id[p] = _mm512_mask_blend_epi32(m, de, _mm512_add_epi32(dd, _mm512_set1_epi32(1 << lev)));
        }
      }
      n /= 2;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bp + g0), _mm512_cvtepi32_epi8(id[0]));
#pragma GCC unroll 16
    for (int t = 0; t < N; ++t) {
      const __m512 v8 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vals + g0 + t * G))));
      const __m512 d = _mm512_sub_ps(xv, v8);
      _mm512_storeu_ps(next + g0 + t * G, _mm512_add_ps(v[0], _mm512_mul_ps(d, d)));
    }
  }
}

struct Scratch {
  std::vector<float> a, b;
  std::vector<uint8_t> bp;
};

// The state values as int8 (64 KiB instead of 256: the step streams the table once per weight, and
// the f32 table made it L2-bandwidth bound).
const int8_t* values8(int code) {
  auto make = [](int c) {
    std::vector<int8_t> t(static_cast<size_t>(kStates));
    for (int s = 0; s < kStates; ++s) t[size_t(s)] = int8_t(code_value(c, uint32_t(s)));
    return t;
  };
  static const std::vector<int8_t> v0 = make(0), v1 = make(1);
  return code ? v1.data() : v0.data();
}

template <int K>
float run(const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  const int8_t* vals = values8(code);
  constexpr int64_t S = 65536, G = S >> K;
  thread_local Scratch sc;
  sc.a.resize(S);
  sc.b.resize(S);
  sc.bp.resize(size_t(T) * G);
  float* cost = sc.a.data();
  float* next = sc.b.data();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < S; ++s) {
    const float d = x[0] - float(vals[s]);
    cost[s] = overlap < 0 || (s & (G - 1)) == overlap ? d * d : inf;
  }
  for (int i = 1; i < T; ++i) {
    viterbi_step<K>(cost, next, sc.bp.data() + size_t(i) * G, vals, x[i]);
    std::swap(cost, next);
  }
  float m = inf;
  int64_t last = -1;
  for (int64_t s = 0; s < S; ++s)
    if ((overlap < 0 || (s >> K) == overlap) && cost[s] < m) m = cost[s], last = s;
  if (last < 0) return inf;
  uint32_t s = uint32_t(last);
  states[T - 1] = s;
  for (int i = T - 1; i > 0; --i) {
    const uint32_t g = s & uint32_t(G - 1);
    s = g << K | sc.bp[size_t(i) * G + g];
    states[i - 1] = s;
  }
  return m;
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
