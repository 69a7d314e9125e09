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

namespace lmpress::kern {

namespace {

template <int K>
inline int64_t tpos16(int64_t h) {
  constexpr int64_t C = int64_t(16) << K;
  return (h & ~(C - 1)) + (h & ((int64_t(1) << K) - 1)) * 16 + ((h & (C - 1)) >> K);
}

// Where level lev's masks start among a block's N - 1 (level 0 first: N / 2 of them, then N / 4, ...).
constexpr int mask_offset(int n, int lev) { return n - (n >> lev); }

// The state values (f32, 256 KiB), chunk-transposed for K.
template <int K>
const float* values_t16(int code) {
  auto make = [](int c) {
    std::vector<float> t(static_cast<size_t>(kStates));
    for (int64_t s = 0; s < kStates; ++s) t[size_t(tpos16<K>(s))] = float(code_value(c, uint32_t(s)));
    return t;
  };
  static const std::vector<float> v0 = make(0), v1 = make(1);
  return code ? v1.data() : v0.data();
}

// m_next[g] = min over l of m_prev[(g << K | l) mod G] + (x - value(g << K | l))^2, the argmin l's
// bits (ties: the lower l) in the backpointer words.
template <int K>
void viterbi_step(const float* __restrict mprev, float* __restrict mnext, uint16_t* __restrict bp,
                  const float* __restrict vals, float xi) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
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
          b[mask_offset(N, lev) + (l >> (lev + 1))] = lt;
          cur = _mm512_mask_blend_ps(lt, part[lev], cur);
        }
        part[lev] = cur;
      }
      out[t] = part[K];
    }
#pragma GCC unroll 4
    for (int lev = 0; lev < K; ++lev) {
      __m512 nx[N];
#pragma GCC unroll 8
      for (int p = 0; p < N / 2; ++p) {
        nx[p] = _mm512_permutex2var_ps(out[2 * p], ie, out[2 * p + 1]);
        nx[N / 2 + p] = _mm512_permutex2var_ps(out[2 * p], io, out[2 * p + 1]);
      }
#pragma GCC unroll 16
      for (int p = 0; p < N; ++p) out[p] = nx[p];
    }
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) _mm512_storeu_ps(mnext + c0 + 16 * r, out[r]);
  }
}

struct Scratch {
  std::vector<float> a, b;
  std::vector<uint16_t> bp;
};

template <int K>
float run(const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  constexpr size_t kWords = size_t(G / 16) * (N - 1);  // backpointer words per step
  const float* vals = values_t16<K>(code);
  const float inf = std::numeric_limits<float>::infinity();
  thread_local Scratch sc;
  sc.a.resize(size_t(G));
  sc.b.resize(size_t(G));
  sc.bp.resize(size_t(T) * kWords);
  float* mprev = sc.a.data();
  float* mnext = sc.b.data();
  // before step 0: the tail-biting start (state s allowed iff s mod G = overlap), as 0 / inf
  for (int64_t g = 0; g < G; ++g) mprev[tpos16<K>(g)] = overlap < 0 || g == overlap ? 0.f : inf;
  for (int i = 0; i < T; ++i) {
    viterbi_step<K>(mprev, mnext, sc.bp.data() + size_t(i) * kWords, vals, x[i]);
    std::swap(mprev, mnext);
  }
  // the end: the last state's group (its top 16 - K bits) is the overlap
  float m = inf;
  int64_t gbest = -1;
  if (overlap >= 0) {
    if (mprev[tpos16<K>(overlap)] < inf) m = mprev[tpos16<K>(overlap)], gbest = overlap;
  } else {
    for (int64_t g = 0; g < G; ++g)
      if (mprev[tpos16<K>(g)] < m) m = mprev[tpos16<K>(g)], gbest = g;
  }
  if (gbest < 0) return inf;
  auto argmin = [&](int i, int64_t g) {
    const uint16_t* w = sc.bp.data() + size_t(i) * kWords + size_t(g / 16) * (N - 1);
    const int lane = int(g % 16);
    int node = 0;
    for (int lev = K - 1; lev >= 0; --lev) node = 2 * node + ((w[mask_offset(N, lev) + node] >> lane) & 1);
    return uint32_t(node);
  };
  uint32_t s = uint32_t(gbest << K) | argmin(T - 1, gbest);
  states[T - 1] = s;
  for (int i = T - 1; i > 0; --i) {
    s = (s & uint32_t(G - 1)) << K | argmin(i - 1, int64_t(s & uint32_t(G - 1)));
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
