// AVX-512 kernels of the trellis family (kernels/trellis_x86.h): decode with one vpdpbusd per column
// of 16 rows and token, prefill through the AVX-512 VNNI repacked GEMM; and the Viterbi encoder's
// L = 16 run.
//
// Viterbi step (states in natural order, G = 2^(16-k) groups): the predecessors of successor
// g | t << (16 - k) are the 2^k consecutive states g << k | l, shared by its 2^k siblings (QTIP's
// shared-predecessor structure), so a step only needs each group's minimum: the run keeps the G
// group minima m[g] between steps (not the 2^16 state costs) and forms a state's cost on the fly as
// m_prev[s mod G] + (x - value(s))^2 (no FMA: the reference's rounding). Per 16 groups: 2^k
// vectors of such costs (contiguous loads of values and of m_prev) reduced pairwise (even / odd
// lanes by vpermt2ps, strict compare, blend: ties keep the lower state, as the reference) to the
// 16 new minima and their k-bit argmins (one byte each in the backpointers). Memory per step: the
// 256 KiB f32 value table and 2 G floats, instead of two 256 KiB cost arrays besides the table.
#define LMP_TRELLIS_AVX512 1
#include <atomic>
#include <cstdlib>

#include "kernels/trellis_x86.h"

namespace lmpress::kern {

namespace {

// One step over the group minima (see the top of the file): m_next[g] = min over l of
// m_prev[(g << K | l) mod G] + (x - value(g << K | l))^2, bp[g] = the argmin l (ties: the lower).
// The states of 16 consecutive groups are 16 * 2^K consecutive states whose predecessor minima are
// also consecutive in m_prev, so every operand is a contiguous vector load.
template <int K>
void viterbi_step(const float* __restrict mprev, float* __restrict mnext, uint8_t* __restrict bp, const float* vals,
                  float xi) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
  const __m512 xv = _mm512_set1_ps(xi);
  for (int64_t g0 = 0; g0 < G; g0 += 16) {
    const int64_t s0 = g0 << K;
    const float* mp = mprev + (s0 & (G - 1));
    __m512 v[N];
    __m512i id[N];
#pragma GCC unroll 16
    for (int j = 0; j < N; ++j) {
      const __m512 d = _mm512_sub_ps(xv, _mm512_loadu_ps(vals + s0 + 16 * j));
      v[j] = _mm512_add_ps(_mm512_loadu_ps(mp + 16 * j), _mm512_mul_ps(d, d));
    }
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
    _mm512_storeu_ps(mnext + g0, v[0]);
  }
}

struct Scratch {
  std::vector<float> a, b;
  std::vector<uint8_t> bp;
};

// The state values as f32 (256 KiB, L2: the step streams the table once per weight).
const float* values32(int code) {
  auto make = [](int c) {
    std::vector<float> t(static_cast<size_t>(kStates));
    for (int s = 0; s < kStates; ++s) t[size_t(s)] = float(code_value(c, uint32_t(s)));
    return t;
  };
  static const std::vector<float> v0 = make(0), v1 = make(1);
  return code ? v1.data() : v0.data();
}

// Only the 2^(16-K) group minima are kept between steps (64 / 32 / 16 KiB for K = 2 / 3 / 4, in L1
// or L2) instead of all 2^16 state costs: the costs of a step's states are formed from them on the
// fly. Same arithmetic and tie-breaking as trellis_viterbi_generic (the reference's backpointer
// row i is row i - 1 here; row T - 1 picks the final state within its group).
template <int K>
float run(const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  const float* vals = values32(code);
  constexpr int64_t G = int64_t(1) << (16 - K);
  thread_local Scratch sc;
  sc.a.resize(G);
  sc.b.resize(G);
  sc.bp.resize(size_t(T) * G);
  float* mprev = sc.a.data();
  float* mnext = sc.b.data();
  const float inf = std::numeric_limits<float>::infinity();
  // before step 0: the tail-biting start (state s allowed iff s mod G = overlap), as 0 / inf
  for (int64_t g = 0; g < G; ++g) mprev[g] = overlap < 0 || g == overlap ? 0.f : inf;
  for (int i = 0; i < T; ++i) {
    viterbi_step<K>(mprev, mnext, sc.bp.data() + size_t(i) * G, vals, x[i]);
    std::swap(mprev, mnext);
  }
  // the end: the last state's group (its top 16 - K bits) is the overlap
  float m = inf;
  int64_t gbest = -1;
  if (overlap >= 0) {
    if (mprev[overlap] < inf) m = mprev[overlap], gbest = overlap;
  } else {
    for (int64_t g = 0; g < G; ++g)
      if (mprev[g] < m) m = mprev[g], gbest = g;
  }
  if (gbest < 0) return inf;
  uint32_t s = uint32_t(gbest << K | sc.bp[size_t(T - 1) * G + size_t(gbest)]);
  states[T - 1] = s;
  for (int i = T - 1; i > 0; --i) {
    const uint32_t g = s & uint32_t(G - 1);
    s = g << K | sc.bp[size_t(i - 1) * G + g];
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
