// x86 quantized kernels, one body for two ISA levels. Included ONLY by x86_avx2/quant.cpp (AVX2:
// maddubs + madd) and x86_avx512/quant.cpp (defines LMP_QX86_VNNI first: AVX512-VNNI dpbusd on
// 256-bit vectors, AVX512BW mask ops for bit planes, 32 registers for bigger tiles). Everything
// lives in an anonymous namespace so each TU keeps its own copy compiled with its own flags.
//
// Structure (both levels):
//  - unpack<BITS>(block) -> 32 unsigned codes as bytes, natural order (codes 0..15 in the low
//    128-bit lane, 16..31 in the high lane: a group-16 scale applies to one lane);
//  - dot<BITS>(codes, int8 activations) -> 8 x i32 partial dot products (lanes 0-3 = half 0);
//  - decode (n = 1): decode_row_fused / decode_row_g16, one row at a time with the f16 scales,
//    activation scales and zero-point term applied inside the block loop;
//  - prefill: tile<R, T>: R rows x T tokens, each block unpacked once and used for all T tokens;
//    per (row, token, block): acc = fma(cvt(dot), scale * d, acc); expand_row: per row, f16
//    scales -> one f32 factor per scale unit + the zero-point correction sum_g s_g (z_g - C) X[t][g].
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/qkernels.h"
#include "kernels/x86_math.h"

namespace lmpress::kern {
namespace {

#if defined(LMP_QX86_VNNI)
constexpr bool kVnni = true;
#else
constexpr bool kVnni = false;
#endif

// Code offset C of qkernels.h: AVX2's 8-bit dot uses the sign trick on (q - 128).
template <int BITS>
constexpr int32_t code_offset() {
  return (BITS == 8 && !kVnni) ? 128 : 0;
}


inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline int64_t load_i64(const uint8_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// ---- unpacking ---------------------------------------------------------------------------------
// 2-bit plane: byte j holds codes j, j+8, j+16, j+24 -> broadcast the 8 bytes to the four 64-bit
// lanes and shift lane k right by 2k.
inline __m256i unpack2(const uint8_t* p) {
  const __m256i v = _mm256_set1_epi64x(load_i64(p));
  return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3));
}
// 4-bit plane: byte j holds codes j (low nibble) and j+16 -> the 16 bytes in both 128-bit lanes,
// high lane shifted right by 4.
inline __m256i unpack4(const uint8_t* p) {
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
}
// 1-bit plane (u32, bit i = code i): lo + val where the bit is set (lo has that bit clear).
inline __m256i add_bit_plane(__m256i lo, const uint8_t* p, char val) {
#if defined(LMP_QX86_VNNI)
  const __mmask32 k = load_u32(p);  // kmovd: bit i selects byte i
  return _mm256_or_si256(lo, _mm256_maskz_mov_epi8(k, _mm256_set1_epi8(val)));
#else
  // Byte i gets plane byte i/8 (vpshufb is per 128-bit lane; the broadcast puts all 4 bytes in
  // both), then tests its bit i%8.
  const __m256i v = _mm256_set1_epi32(int(load_u32(p)));
  const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2,
                                       2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  const __m256i m = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, sel), bit), bit);
  return _mm256_or_si256(lo, _mm256_and_si256(m, _mm256_set1_epi8(val)));
#endif
}

template <int BITS>
inline __m256i unpack(const uint8_t* p) {
  if constexpr (BITS == 1) return add_bit_plane(_mm256_setzero_si256(), p, 1);
  if constexpr (BITS == 2) return unpack2(p);
  if constexpr (BITS == 3) return add_bit_plane(unpack2(p), p + 8, 4);
  if constexpr (BITS == 4) return unpack4(p);
  if constexpr (BITS == 5) return add_bit_plane(unpack4(p), p + 16, 16);
  if constexpr (BITS == 6) return _mm256_or_si256(unpack4(p), _mm256_slli_epi16(unpack2(p + 16), 4));
  if constexpr (BITS == 8) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// ---- integer dot ---------------------------------------------------------------------------------
// Lane k = sum of 4 consecutive products. Unsigned codes <= 63 times |a| <= 127: maddubs pairs stay
// below 2*63*127 < 2^15. 8-bit codes use (q - 128) as int8 with the sign trick: |q-128| <= 128,
// pairs <= 2*128*127 < 2^15. VNNI's dpbusd takes u8 x s8 straight into i32.
template <int BITS>
inline __m256i dot(__m256i w, __m256i a) {
#if defined(LMP_QX86_VNNI)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
#else
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (BITS == 8) {
    const __m256i ws = _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80)));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(ws), _mm256_sign_epi8(a, ws)), ones);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones);
  }
#endif
}

inline __m256 bcast2(const float* lo, const float* hi) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(lo)), _mm_broadcast_ss(hi), 1);
}

// ---- R rows x T tokens over all blocks (prefill) --------------------------------------------------
// ft holds, per block b and row i, the factors scale * d[t] of the tile's tokens (prefill_factors
// below): computed before the loop, so the broadcasts never wait on a store.
// One block of R rows x T tokens into the accumulators (also the odd-block tail of tile4p).
template <int BITS, int R, int T, bool G16>
inline void tile_block(int64_t b, const uint8_t* const* wr, const float* ft, const int8_t* const* ar,
                       __m256 (&acc)[R][T]) {
  constexpr int BPB = qblock_bytes(BITS), TS = T <= 4 ? 4 : 8;
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    const __m256i w = unpack<BITS>(wr[i] + b * BPB);
    const float* fb = ft + (b * R + i) * (G16 ? 2 * TS : TS);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar[t] + b * kQBlock));
      const __m256 F = G16 ? bcast2(fb + t, fb + TS + t) : _mm256_broadcast_ss(fb + t);
      acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot<BITS>(w, a)), F, acc[i][t]);
    }
  }
}

template <int R, int T>
inline void tile_store(__m256 (&acc)[R][T], float (&out)[R][T]) {
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[i][t] = hsum(acc[i][t]);
}

template <int BITS, int R, int T, bool G16>
inline void tile(int64_t nb, const uint8_t* const* wr, const float* ft, const int8_t* const* ar,
                 float (&out)[R][T]) {
  static_assert(T <= 8);
  __m256 acc[R][T];  // fully unrolled so the accumulators live in registers
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) tile_block<BITS, R, T, G16>(b, wr, ft, ar, acc);
  tile_store<R, T>(acc, out);
}

// ft[(b * R + i) * TS + t] = f[i][b] * d[b * n + t] for the tile's tokens, TS = 4 or 8 (group 16:
// two halves, [(b * R + i) * 2 * TS + h * TS + t]). d is padded, so lanes past the tile read
// harmless values.
template <int R, int T, bool G16>
inline void prefill_factors(int64_t nb, const float* const* f, const float* d, int64_t n, float* ft) {
  if constexpr (T <= 4) {
    for (int64_t b = 0; b < nb; ++b) {
      const __m128 D = _mm_loadu_ps(d + b * n);
      for (int i = 0; i < R; ++i) {
        if constexpr (G16) {
          _mm_storeu_ps(ft + (b * R + i) * 8, _mm_mul_ps(_mm_broadcast_ss(f[i] + 2 * b), D));
          _mm_storeu_ps(ft + (b * R + i) * 8 + 4, _mm_mul_ps(_mm_broadcast_ss(f[i] + 2 * b + 1), D));
        } else {
          _mm_storeu_ps(ft + (b * R + i) * 4, _mm_mul_ps(_mm_broadcast_ss(f[i] + b), D));
        }
      }
    }
  } else {
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 D = _mm256_loadu_ps(d + b * n);
      for (int i = 0; i < R; ++i) {
        if constexpr (G16) {
          _mm256_storeu_ps(ft + (b * R + i) * 16, _mm256_mul_ps(_mm256_broadcast_ss(f[i] + 2 * b), D));
          _mm256_storeu_ps(ft + (b * R + i) * 16 + 8, _mm256_mul_ps(_mm256_broadcast_ss(f[i] + 2 * b + 1), D));
        } else {
          _mm256_storeu_ps(ft + (b * R + i) * 8, _mm256_mul_ps(_mm256_broadcast_ss(f[i] + b), D));
        }
      }
    }
  }
}

// ---- 4-bit block pairs ---------------------------------------------------------------------------
// Two consecutive 4-bit blocks are 32 contiguous bytes: x & 15 = [b0 q0-15 | b1 q0-15],
// (x >> 4) & 15 = [b0 q16-31 | b1 q16-31]. With the activations of the pair reordered to match
// (pair_acts), one load, three ops and two maddubs feed 2 blocks (vs. 2 x (shift, mask, maddubs)).
// The dot lanes are [b0 x4 | b1 x4], so the factor vector is [F_b0 x4 | F_b1 x4].
// Activations, per pair p: [b0 a0-15 | b1 a0-15] at 64p, [b0 a16-31 | b1 a16-31] at 64p + 32;
// an odd last block stays in natural order.
inline void pair_acts(const int8_t* src, int64_t nb, int8_t* dst) {
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + b * kQBlock));
    const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + b * kQBlock + 32));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + b * kQBlock), _mm256_permute2x128_si256(a0, a1, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + b * kQBlock + 32), _mm256_permute2x128_si256(a0, a1, 0x31));
  }
  if (b < nb) std::memcpy(dst + b * kQBlock, src + b * kQBlock, kQBlock);
}

// ---- 2-bit block quads ----------------------------------------------------------------------------
// Four consecutive 2-bit blocks are 32 contiguous bytes, qword j = block j, and (x >> 2k) & 3 puts
// codes 8k..8k+7 of block j in qword j: one load and four shift/mask pairs unpack 4 blocks. The
// activations of the quad are reordered to match (quad_acts: a 4x4 transpose of qwords): vector k
// = [b0 a8k.. | b1 a8k.. | b2 a8k.. | b3 a8k..] at 128q + 32k; the last nb % 4 blocks stay natural.
inline void quad_acts(const int8_t* src, int64_t nb, int8_t* dst) {
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const __m256i* s = reinterpret_cast<const __m256i*>(src + b * kQBlock);
    const __m256i v0 = _mm256_loadu_si256(s), v1 = _mm256_loadu_si256(s + 1);
    const __m256i v2 = _mm256_loadu_si256(s + 2), v3 = _mm256_loadu_si256(s + 3);
    const __m256i t0 = _mm256_unpacklo_epi64(v0, v1), t1 = _mm256_unpackhi_epi64(v0, v1);
    const __m256i t2 = _mm256_unpacklo_epi64(v2, v3), t3 = _mm256_unpackhi_epi64(v2, v3);
    __m256i* d = reinterpret_cast<__m256i*>(dst + b * kQBlock);
    _mm256_storeu_si256(d, _mm256_permute2x128_si256(t0, t2, 0x20));
    _mm256_storeu_si256(d + 1, _mm256_permute2x128_si256(t1, t3, 0x20));
    _mm256_storeu_si256(d + 2, _mm256_permute2x128_si256(t0, t2, 0x31));
    _mm256_storeu_si256(d + 3, _mm256_permute2x128_si256(t1, t3, 0x31));
  }
  if (b < nb) std::memcpy(dst + b * kQBlock, src + b * kQBlock, size_t(nb - b) * kQBlock);
}

// i32 lanes [b0 b0 b1 b1 b2 b2 b3 b3] of a 2-bit quad (w: its 32 bytes, a: quad-ordered activations).
inline __m256i dot2_quad(const uint8_t* w, const int8_t* a) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i m2 = _mm256_set1_epi8(3);
  const __m256i* av = reinterpret_cast<const __m256i*>(a);
  const __m256i c0 = _mm256_and_si256(x, m2), c1 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m2);
  const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m2), c3 = _mm256_and_si256(_mm256_srli_epi16(x, 6), m2);
#if defined(LMP_QX86_VNNI)
  __m256i acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), c0, _mm256_loadu_si256(av));
  acc = _mm256_dpbusd_epi32(acc, c1, _mm256_loadu_si256(av + 1));
  acc = _mm256_dpbusd_epi32(acc, c2, _mm256_loadu_si256(av + 2));
  return _mm256_dpbusd_epi32(acc, c3, _mm256_loadu_si256(av + 3));
#else
  // 4 maddubs of 2 * 3 * 127 at most: the int16 sum stays below 2^12
  const __m256i s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, _mm256_loadu_si256(av)),
                                       _mm256_maddubs_epi16(c1, _mm256_loadu_si256(av + 1)));
  const __m256i s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, _mm256_loadu_si256(av + 2)),
                                       _mm256_maddubs_epi16(c3, _mm256_loadu_si256(av + 3)));
  return _mm256_madd_epi16(_mm256_add_epi16(s01, s23), _mm256_set1_epi16(1));
#endif
}

// i32 lanes [b0 x4 | b1 x4] of both halves (G16: low halves in lo, high halves in hi).
template <bool G16>
inline void dot4_pair(__m256i wl, __m256i wh, const int8_t* a, __m256i& lo, __m256i& hi) {
  const __m256i al = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  const __m256i ah = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32));
#if defined(LMP_QX86_VNNI)
  if constexpr (G16) {
    lo = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wl, al);
    hi = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wh, ah);
  } else {
    lo = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), wl, al), wh, ah);
  }
#else
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (G16) {
    lo = _mm256_madd_epi16(_mm256_maddubs_epi16(wl, al), ones);
    hi = _mm256_madd_epi16(_mm256_maddubs_epi16(wh, ah), ones);
  } else {
    // 15 * 127 * 2 per maddubs pair, two of them: < 2^13, the int16 sum is exact
    lo = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(wl, al), _mm256_maddubs_epi16(wh, ah)), ones);
  }
#endif
  (void)hi;
}

// R rows x T tokens of a 4-bit row slice of nb blocks, groups >= 32 (activations in pair order;
// ft per block/row/token as in tile()). An odd last block takes the single-block step.
template <int R, int T>
inline void tile4p(int64_t nb, const uint8_t* const* wr, const float* ft, const int8_t* const* ar,
                   float (&out)[R][T]) {
  constexpr int TS = T <= 4 ? 4 : 8;
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(15);
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr[i] + b * 16));
      const __m256i wl = _mm256_and_si256(x, m4), wh = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
      const float* f0 = ft + (b * R + i) * TS;  // block b, then block b+1 at + R * TS
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        __m256i lo, unused;
        dot4_pair<false>(wl, wh, ar[t] + b * kQBlock, lo, unused);
        acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), bcast2(f0 + t, f0 + R * TS + t), acc[i][t]);
      }
    }
  }
  if (b < nb) tile_block<4, R, T, false>(b, wr, ft, ar, acc);  // odd last block, natural order
  tile_store<R, T>(acc, out);
}

template <int BITS, int R, int T, bool G16>
inline void tile_any(int64_t nb, const uint8_t* const* wr, const float* ft, const int8_t* const* ar,
                     float (&out)[R][T]) {
  // (group-16 prefill keeps the single-block loop: two factor vectors per pair need more
  // registers than the tile has left)
  if constexpr (BITS == 4 && !G16)
    tile4p<R, T>(nb, wr, ft, ar, out);
  else
    tile<BITS, R, T, G16>(nb, wr, ft, ar, out);
}

inline float dot_f32(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Per-thread scratch of one row tile.
struct Scratch {
  std::vector<float> f;   // [R][units + 16]
  std::vector<float> sf;  // [groups + 8] f32 scales of one row
  std::vector<float> sz;  // [R][groups + 8]: s_g * (z_g - C)
  std::vector<float> ft;  // [nb][R][8 or 16]: prefill factors of one token tile
  std::vector<int8_t> pa;  // 4-bit: activations of a token chunk in pair order (pair_acts)
};
inline Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Prefill, per row r: f[u] = the f32 scale of unit u, 0 for a group-16 half past the last column
// (f has >= 8 floats of slack); sz[g] = s_g * (z_g - C).
inline void expand_row(const QWeights& w, int64_t r, int32_t C, float* sf, float* f, float* sz) {
  const int64_t G = w.groups, nb = w.nb;
  const uint16_t* s16 = w.scales + r * G;
  const uint8_t* z8 = w.zeros ? w.zeros + r * G : nullptr;
  const __m256 zc = _mm256_set1_ps(float(w.zero_sym - C)), cv = _mm256_set1_ps(float(C));
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) {
    const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s16 + g)));
    _mm256_storeu_ps(sf + g, sv);
    __m256 zv = zc;
    if (z8)
      zv = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z8 + g)))), cv);
    _mm256_storeu_ps(sz + g, _mm256_mul_ps(sv, zv));
  }
  for (; g < G; ++g) {
    sf[g] = _cvtsh_ss(s16[g]);
    sz[g] = sf[g] * float((z8 ? int32_t(z8[g]) : w.zero_sym) - C);
  }
  _mm256_storeu_ps(sf + G, _mm256_setzero_ps());  // units past the last group (group 16)
  if (w.g16()) {  // unit u = group u
    for (int64_t u = 0; u < 2 * nb; u += 8) _mm256_storeu_ps(f + u, _mm256_loadu_ps(sf + u));
    return;
  }
  const int64_t bpg = w.blocks_per_group();
  if (bpg == 1 || bpg == 2 || bpg == 4) {
    // f[b..b+8) = sf[b/bpg ..] spread bpg times (reads at most 8 floats of sf past b/bpg: slack)
    const __m256i idx = bpg == 1 ? _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
                        : bpg == 2 ? _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)
                                   : _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const int shift = bpg == 1 ? 0 : bpg == 2 ? 1 : 2;  // (a division here costs as much as the row's dots)
    for (int64_t b = 0; b < nb; b += 8) {
      const __m256 sv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf + (b >> shift)), idx);
      _mm256_storeu_ps(f + b, sv);
    }
  } else {
    for (int64_t b0 = 0, gi = 0; b0 < nb; b0 += bpg, ++gi) {  // whole row: one group
      const __m256 sv = _mm256_set1_ps(sf[gi]);
      for (int64_t b = b0; b < std::min(nb, b0 + bpg); b += 8)
        _mm256_storeu_ps(f + b, sv);
    }
  }
}

// Decode prefetch distance: whole rows, at least 8 KiB ahead of the row being read (one row ahead,
// 1 KiB for a 2048-column 4-bit row, was shorter than the memory latency at the stream's rate:
// session 12, w4g32 decode +15-20 %).
inline const uint8_t* decode_prefetch_base(const uint8_t* q, int64_t row_bytes) {
  constexpr int64_t kPfBytes = 8192;
  return q + row_bytes * std::max<int64_t>(1, (kPfBytes + row_bytes - 1) / row_bytes);
}

// Decode of one row, fused: the f16 scales, the activation scales and the zero-point correction
// are applied inside the block loop (8 blocks per step), so a row costs one pass over its bytes
// and nothing else (a separate per-row scale expansion cost ~30% of a 2048-column row).
// BPG = blocks per group (1, 2 or 4: groups of 32, 64, 128; 0: one group for the whole row);
// 4-bit activations in pair order, 2-bit in quad order.
//   y = sum_b s_g(b) d_b dot_b - sum_g s_g (z_g - C) X_g
template <int BITS, int BPG, bool ASYM>
inline float decode_row_fused(const QWeights& w, int64_t r, const int8_t* a, const float* d, const float* X) {
  constexpr int BPB = qblock_bytes(BITS);
  constexpr int32_t C = code_offset<BITS>();
  constexpr int GPS = BPG ? 8 / BPG : 0;  // groups per step
  const int64_t nb = w.nb, G = w.groups;
  const uint8_t* q = w.q + r * w.row_bytes;
  const uint16_t* s16 = w.scales + r * G;
  const uint8_t* z8 = ASYM ? w.zeros + r * G : nullptr;
  const uint8_t* pf = decode_prefetch_base(q, w.row_bytes);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 corr = _mm256_setzero_ps();  // sum_g s_g X_g (times z_g - C when asymmetric)
  const __m256i m4 = _mm256_set1_epi8(15);
  auto gi = [](int64_t blk) { return BPG ? blk / BPG : 0; };  // group of a block
  const __m256 srow = _mm256_set1_ps(_cvtsh_ss(s16[0]));   // (whole-row scale)
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
#pragma GCC unroll 8
    for (int l = 0; l < 8 * BPB; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + b * BPB + l), _MM_HINT_T0);
    const int64_t g = gi(b);  // BPG is a power of two: a shift
    // sg: the step's GPS group scales (lanes past GPS zero); s8: the scale of each of the 8 blocks
    __m256 sg, s8, xg;
    if constexpr (BPG == 0) {
      sg = xg = _mm256_setzero_ps();
      s8 = srow;
    } else if constexpr (BPG == 1) {
      sg = s8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s16 + g)));
      xg = _mm256_loadu_ps(X + g);
    } else if constexpr (BPG == 2) {
      sg = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s16 + g))));
      s8 = _mm256_permutevar8x32_ps(sg, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
      xg = _mm256_castps128_ps256(_mm_loadu_ps(X + g));
    } else {
      const __m128 s2 = _mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(reinterpret_cast<const uint8_t*>(s16 + g)))));
      sg = _mm256_castps128_ps256(s2);
      s8 = _mm256_permutevar8x32_ps(sg, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
      xg = _mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(X + g))));
    }
    if constexpr (BPG == 2 || BPG == 4) xg = _mm256_blend_ps(_mm256_setzero_ps(), xg, (1 << GPS) - 1);  // X past the step
    if constexpr (BPG == 0) {
      // the zero-point term of the single group is added after the loop
    } else if constexpr (ASYM) {
      __m128i zi;
      if constexpr (BPG == 1) zi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(z8 + g));
      else if constexpr (BPG == 2) zi = _mm_cvtsi32_si128(int(load_u32(z8 + g)));
      else zi = _mm_cvtsi32_si128(int(z8[g]) | int(z8[g + 1]) << 8);
      const __m256 zg = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(zi)), _mm256_set1_ps(float(C)));
      corr = _mm256_fmadd_ps(_mm256_mul_ps(sg, zg), xg, corr);
    } else {
      corr = _mm256_fmadd_ps(sg, xg, corr);
    }
    (void)sg, (void)xg;
    const __m256 f8 = _mm256_mul_ps(s8, _mm256_loadu_ps(d + b));
    if constexpr (BITS == 4) {
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m256 F = _mm256_permutevar8x32_ps(f8, _mm256_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1));
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16 + 32 * p));
        __m256i dp, unused;
        dot4_pair<false>(_mm256_and_si256(x, m4), _mm256_and_si256(_mm256_srli_epi16(x, 4), m4), a + b * kQBlock + 64 * p, dp, unused);
        if (p & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), F, acc1);
        else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), F, acc0);
      }
    } else if constexpr (BITS == 2) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256 F = _mm256_permutevar8x32_ps(f8, _mm256_setr_epi32(4 * h, 4 * h, 4 * h + 1, 4 * h + 1, 4 * h + 2, 4 * h + 2, 4 * h + 3, 4 * h + 3));
        const __m256 p = _mm256_cvtepi32_ps(dot2_quad(q + b * 8 + 32 * h, a + b * kQBlock + 128 * h));
        if (h) acc1 = _mm256_fmadd_ps(p, F, acc1);
        else acc0 = _mm256_fmadd_ps(p, F, acc0);
      }
    } else {
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) {
        const __m256 F = _mm256_permutevar8x32_ps(f8, _mm256_set1_epi32(u));
        const __m256i wv = unpack<BITS>(q + (b + u) * BPB);
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (b + u) * kQBlock));
        const __m256 p = _mm256_cvtepi32_ps(dot<BITS>(wv, av));
        if (u & 1) acc1 = _mm256_fmadd_ps(p, F, acc1);
        else acc0 = _mm256_fmadd_ps(p, F, acc0);
      }
    }
  }
  // tail: the last 1-7 blocks (4-bit: pairs in pair order, then an odd block in natural order;
  // 2-bit: a quad in quad order, then single blocks)
  for (; b < nb; ++b) {
    const float fb = _cvtsh_ss(s16[gi(b)]) * d[b];
    if (BITS == 2 && b + 4 <= nb) {
      const __m256 F = _mm256_setr_ps(fb, fb, _cvtsh_ss(s16[gi(b + 1)]) * d[b + 1], _cvtsh_ss(s16[gi(b + 1)]) * d[b + 1],
                                      _cvtsh_ss(s16[gi(b + 2)]) * d[b + 2], _cvtsh_ss(s16[gi(b + 2)]) * d[b + 2],
                                      _cvtsh_ss(s16[gi(b + 3)]) * d[b + 3], _cvtsh_ss(s16[gi(b + 3)]) * d[b + 3]);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot2_quad(q + b * 8, a + b * kQBlock)), F, acc0);
      b += 3;
    } else if (BITS == 4 && b + 2 <= nb) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16));
      __m256i lo, unused;
      dot4_pair<false>(_mm256_and_si256(x, m4), _mm256_and_si256(_mm256_srli_epi16(x, 4), m4), a + b * kQBlock, lo, unused);
      const __m256 F = _mm256_insertf128_ps(_mm256_set1_ps(fb), _mm_set1_ps(_cvtsh_ss(s16[gi(b + 1)]) * d[b + 1]), 1);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), F, acc0);
      ++b;
    } else {
      const __m256i wv = unpack<BITS>(q + b * BPB);
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot<BITS>(wv, av)), _mm256_set1_ps(fb), acc0);
    }
  }
  (void)m4;
  float c = hsum(corr);
  if constexpr (!ASYM) c *= float(w.zero_sym - C);
  for (int64_t g = BPG ? (nb / 8) * GPS : 0; g < G; ++g)
    c += _cvtsh_ss(s16[g]) * float((ASYM ? int32_t(z8[g]) : w.zero_sym) - C) * X[g];
  return hsum(_mm256_add_ps(acc0, acc1)) - c;
}

// Group-16 decode of one row (each block has two scales, one per 16-column half), fused like
// decode_row_fused: 4 blocks = 8 groups per step. 4-bit activations in pair order (dot4_pair gives
// the two halves separately), other widths natural order (dot lanes 0-3 = half 0, 4-7 = half 1).
template <int BITS, bool ASYM>
inline float decode_row_g16(const QWeights& w, int64_t r, const int8_t* a, const float* d, const float* X) {
  constexpr int BPB = qblock_bytes(BITS);
  constexpr int32_t C = code_offset<BITS>();
  const int64_t nb = w.nb, G = w.groups;  // G = 2 nb, or 2 nb - 1 when the last block has <= 16 columns
  const uint8_t* q = w.q + r * w.row_bytes;
  const uint16_t* s16 = w.scales + r * G;
  const uint8_t* z8 = ASYM ? w.zeros + r * G : nullptr;
  const uint8_t* pf = decode_prefetch_base(q, w.row_bytes);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  auto idx = [](int lo, int hi) { return _mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi); };
  int64_t b = 0;
  for (; b + 4 <= nb && 2 * (b + 4) <= G; b += 4) {
#pragma GCC unroll 4
    for (int l = 0; l < 4 * BPB; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + b * BPB + l), _MM_HINT_T0);
    const __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s16 + 2 * b)));
    const __m256 xg = _mm256_loadu_ps(X + 2 * b);
    if constexpr (ASYM) {
      const __m256i zi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z8 + 2 * b)));
      const __m256 zg = _mm256_sub_ps(_mm256_cvtepi32_ps(zi), _mm256_set1_ps(float(C)));
      corr = _mm256_fmadd_ps(_mm256_mul_ps(s8, zg), xg, corr);
    } else {
      corr = _mm256_fmadd_ps(s8, xg, corr);
    }
    // f8 = [b0h0 b0h1 b1h0 b1h1 b2h0 b2h1 b3h0 b3h1] factors
    const __m256 f8 = _mm256_mul_ps(s8, _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(d + b)), dup));
    if constexpr (BITS == 4) {
#pragma GCC unroll 2
      for (int p = 0; p < 2; ++p) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16 + 32 * p));
        __m256i lo, hi;
        dot4_pair<true>(_mm256_and_si256(x, m4), _mm256_and_si256(_mm256_srli_epi16(x, 4), m4), a + b * kQBlock + 64 * p, lo, hi);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_permutevar8x32_ps(f8, idx(4 * p, 4 * p + 2)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_permutevar8x32_ps(f8, idx(4 * p + 1, 4 * p + 3)), acc1);
      }
    } else {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const __m256i wv = unpack<BITS>(q + (b + u) * BPB);
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (b + u) * kQBlock));
        const __m256 p = _mm256_cvtepi32_ps(dot<BITS>(wv, av));
        if (u & 1) acc1 = _mm256_fmadd_ps(p, _mm256_permutevar8x32_ps(f8, idx(2 * u, 2 * u + 1)), acc1);
        else acc0 = _mm256_fmadd_ps(p, _mm256_permutevar8x32_ps(f8, idx(2 * u, 2 * u + 1)), acc0);
      }
    }
  }
  (void)m4;
  float c = hsum(corr);
  if constexpr (!ASYM) c *= float(w.zero_sym - C);
  for (int64_t g = 2 * b; g < G; ++g)
    c += _cvtsh_ss(s16[g]) * float((ASYM ? int32_t(z8[g]) : w.zero_sym) - C) * X[g];
  // tail blocks: per-half factors (a missing second half of a ragged last block has factor 0)
  auto half = [&](int64_t g, int64_t blk) { return g < G ? _cvtsh_ss(s16[g]) * d[blk] : 0.f; };
  for (; b < nb; ++b) {
    if (BITS == 4 && b + 2 <= nb) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16));
      __m256i lo, hi;
      dot4_pair<true>(_mm256_and_si256(x, m4), _mm256_and_si256(_mm256_srli_epi16(x, 4), m4), a + b * kQBlock, lo, hi);
      const __m256 Fl = _mm256_insertf128_ps(_mm256_set1_ps(half(2 * b, b)), _mm_set1_ps(half(2 * b + 2, b + 1)), 1);
      const __m256 Fh = _mm256_insertf128_ps(_mm256_set1_ps(half(2 * b + 1, b)), _mm_set1_ps(half(2 * b + 3, b + 1)), 1);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), Fl, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), Fh, acc1);
      ++b;
    } else {
      const __m256i wv = unpack<BITS>(q + b * BPB);
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
      const __m256 F = _mm256_insertf128_ps(_mm256_set1_ps(half(2 * b, b)), _mm_set1_ps(half(2 * b + 1, b)), 1);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot<BITS>(wv, av)), F, acc0);
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1)) - c;
}

template <int BITS>
inline void decode_rows_fused(const QWeights& w, int64_t r0, int64_t r1, const int8_t* a, const float* d,
                              const float* X, float* y) {
  const int64_t bpg = w.blocks_per_group();
  auto run = [&](auto bpg_c, auto asym_c) {
    for (int64_t r = r0; r < r1; ++r) y[r] = decode_row_fused<BITS, bpg_c.value, asym_c.value>(w, r, a, d, X);
  };
  using T = std::true_type;
  using F = std::false_type;
  const bool asym = w.zeros != nullptr;
  if (w.groups == 1) asym ? run(std::integral_constant<int, 0>(), T()) : run(std::integral_constant<int, 0>(), F());
  else if (bpg == 1) asym ? run(std::integral_constant<int, 1>(), T()) : run(std::integral_constant<int, 1>(), F());
  else if (bpg == 2) asym ? run(std::integral_constant<int, 2>(), T()) : run(std::integral_constant<int, 2>(), F());
  else asym ? run(std::integral_constant<int, 4>(), T()) : run(std::integral_constant<int, 4>(), F());
}

template <class Cfg, int BITS, bool G16>
void gemm_impl(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, G = w.groups, n = A.a.n;
  const int64_t units = G16 ? 2 * nb : nb;
  constexpr int32_t C = code_offset<BITS>();
  constexpr int BPB = qblock_bytes(BITS);
  Scratch& S = scratch();
  constexpr int RMAX = Cfg::RP;
  const int64_t fstride = units + 16, zstride = G + 8;
  S.f.resize(size_t(RMAX * fstride));
  S.sf.resize(size_t(zstride));
  S.sz.resize(size_t(RMAX * zstride));

  if (n == 1) {  // decode: one row at a time, scales fused into the block loop
    if constexpr (BITS == 4 || BITS == 2) S.pa.resize(size_t(A.a.a_stride));
    if constexpr (BITS == 4) pair_acts(A.a.qa, nb, S.pa.data());
    if constexpr (G16) {
      const int8_t* a = BITS == 4 ? S.pa.data() : A.a.qa;
      if (w.zeros)
        for (int64_t r = r0; r < r1; ++r) A.y[r] = decode_row_g16<BITS, true>(w, r, a, A.a.d, A.a.x);
      else
        for (int64_t r = r0; r < r1; ++r) A.y[r] = decode_row_g16<BITS, false>(w, r, a, A.a.d, A.a.x);
    } else {
      const int64_t bpg = w.blocks_per_group();
      LMP_ASSERT(bpg == 1 || bpg == 2 || bpg == 4 || w.groups == 1);  // groups 32/64/128/row
      if constexpr (BITS == 2) quad_acts(A.a.qa, nb, S.pa.data());
      decode_rows_fused<BITS>(w, r0, r1, BITS == 4 || BITS == 2 ? S.pa.data() : A.a.qa, A.a.d, A.a.x, A.y);
    }
    return;
  }

  // Prefill: token chunks sized so their activations stay in L2; inside, row tiles of RP rows
  // stay in L1 while TP-token tiles stream past them.
  constexpr int R = Cfg::RP, T = Cfg::TP;
  S.ft.resize(size_t(std::min<int64_t>(nb, Cfg::kSliceBlocks) * R * 16));
  const int64_t chunk = std::max<int64_t>(T, (Cfg::kChunkBytes / A.a.a_stride) / T * T);
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk);
    const int8_t* qa = A.a.qa + tc * A.a.a_stride;  // token tc's activations
    if constexpr (BITS == 4 && !G16) {  // pair order, see tile_any
      S.pa.resize(size_t(chunk * A.a.a_stride));
      for (int64_t t = tc; t < tce; ++t)
        pair_acts(A.a.qa + t * A.a.a_stride, nb, S.pa.data() + (t - tc) * A.a.a_stride);
      qa = S.pa.data();
    }
    for (int64_t r = r0; r < r1; r += R) {
      const int nr = int(std::min<int64_t>(R, r1 - r));
      const uint8_t* wr[R];
      const float* f[R];
      for (int i = 0; i < R; ++i) {
        const int k = i < nr ? i : nr - 1;
        wr[i] = w.q + (r + k) * w.row_bytes;
        f[i] = S.f.data() + k * fstride;
        if (i < nr) {
          float* sz = S.sz.data() + i * zstride;
          expand_row(w, r + i, C, S.sf.data(), S.f.data() + i * fstride, sz);
          for (int64_t t = tc; t < tce; ++t) A.y[t * A.ldy + r + i] = -dot_f32(sz, A.a.x + t * G, G);
        }
      }
      // K slices keep a token tile's activations, the rows' blocks and the factors in L1 while
      // the tile is reused across rows and tokens.
      for (int64_t k0 = 0; k0 < nb; k0 += Cfg::kSliceBlocks) {
        const int64_t kn = std::min<int64_t>(Cfg::kSliceBlocks, nb - k0);
        const uint8_t* wk[R];
        const float* fk[R];
        for (int i = 0; i < R; ++i) {
          wk[i] = wr[i] + k0 * BPB;
          fk[i] = f[i] + (G16 ? 2 * k0 : k0);
        }
        for (int64_t t = tc; t < tce; t += T) {
          const int nt = int(std::min<int64_t>(T, tce - t));
          const int8_t* ar[T];
          for (int j = 0; j < T; ++j)
            ar[j] = qa + (t - tc + (j < nt ? j : nt - 1)) * A.a.a_stride + k0 * kQBlock;
          float out[R][T];
          prefill_factors<R, T, G16>(kn, fk, A.a.d + k0 * n + t, n, S.ft.data());
          tile_any<BITS, R, T, G16>(kn, wk, S.ft.data(), ar, out);
          for (int i = 0; i < nr; ++i)
            for (int j = 0; j < nt; ++j) A.y[(t + j) * A.ldy + r + i] += out[i][j];
        }
      }
    }
  }
}

template <class Cfg, int BITS>
void gemm_bits(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (A.w.g16())
    gemm_impl<Cfg, BITS, true>(A, r0, r1, t0, t1);
  else
    gemm_impl<Cfg, BITS, false>(A, r0, r1, t0, t1);
}

template <class Cfg>
void gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  switch (A.w.bits) {
    case 2: return gemm_bits<Cfg, 2>(A, r0, r1, t0, t1);
    case 3: return gemm_bits<Cfg, 3>(A, r0, r1, t0, t1);
    case 4: return gemm_bits<Cfg, 4>(A, r0, r1, t0, t1);
    case 5: return gemm_bits<Cfg, 5>(A, r0, r1, t0, t1);
    case 6: return gemm_bits<Cfg, 6>(A, r0, r1, t0, t1);
    case 8: return gemm_bits<Cfg, 8>(A, r0, r1, t0, t1);
    default: LMP_ASSERT(false);
  }
}

// ---- activations -----------------------------------------------------------------------------------
// Same arithmetic as the scalar reference (amax/127, x * (127/amax) rounded to nearest-even by
// cvtps2dq under the default MXCSR), so every level produces identical int8 activations.
inline void quantize_acts(const float* x, int64_t cols, int8_t* qa, float* d, int64_t d_stride, int32_t* hs) {
  const int64_t nb = (cols + kQBlock - 1) / kQBlock;
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  alignas(32) float tmp[kQBlock];
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t c0 = b * kQBlock, n = std::min<int64_t>(kQBlock, cols - c0);
    const float* src = x + c0;
    if (n < kQBlock) {
      std::memset(tmp, 0, sizeof tmp);
      std::memcpy(tmp, src, size_t(n) * 4);
      src = tmp;
    }
    __m256i v[4], m = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_castps_si256(_mm256_loadu_ps(src + 8 * k));
      m = _mm256_max_epi32(m, _mm256_and_si256(v[k], absmask));  // |x| bits: integer order = float order
    }
    __m128i m4 = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, 0x4e));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, 0xb1));
    const int32_t mbits = _mm_cvtsi128_si32(m4);
    int8_t* q = qa + c0;
    if (mbits >= 0x7f800000) {  // Inf or NaN in the block
      std::memset(q, 0, kQBlock);
      d[b * d_stride] = __builtin_nanf("");
      hs[2 * b] = hs[2 * b + 1] = 0;
      continue;
    }
    float amax;
    std::memcpy(&amax, &mbits, 4);
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    d[b * d_stride] = amax / 127.f;
    const __m256 idv = _mm256_set1_ps(id);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    __m256i qi[4];
    for (int k = 0; k < 4; ++k) {
      const __m256i t = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(v[k]), idv));
      qi[k] = _mm256_max_epi32(_mm256_min_epi32(t, lim), nlim);
    }
    const __m256i h0 = _mm256_add_epi32(qi[0], qi[1]), h1 = _mm256_add_epi32(qi[2], qi[3]);
    // (the 16-half sums: horizontal adds of two 8-lane vectors)
    const __m256i hh = _mm256_hadd_epi32(h0, h1);  // [h0 01,23 h1 01,23 | h0 45,67 h1 45,67]
    const __m256i hh2 = _mm256_hadd_epi32(hh, hh);  // [h0 0-3, h1 0-3, .. | h0 4-7, h1 4-7, ..]
    const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(hh2), _mm256_extracti128_si256(hh2, 1));
    hs[2 * b] = _mm_cvtsi128_si32(s);
    hs[2 * b + 1] = _mm_extract_epi32(s, 1);
    const __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]), p23 = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23),
                                                  _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p);
  }
}

// ---- dequantization --------------------------------------------------------------------------------
// s * float(q - z): exact in f32 (11-bit scale mantissa times an integer below 2^9), so every level
// gives the reference's bits.
template <int BITS>
void dequant_rows_t(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  constexpr int BPB = qblock_bytes(BITS);
  alignas(32) uint8_t q[kQBlock];
  alignas(32) float tmp[kQBlock];
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + (r - r0) * ldo;
    const uint16_t* s16 = w.scales + r * w.groups;
    const uint8_t* z8 = w.zeros ? w.zeros + r * w.groups : nullptr;
    for (int64_t b = 0; b < w.nb; ++b) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(q), unpack<BITS>(w.q + r * w.row_bytes + b * BPB));
      const int64_t c0 = b * kQBlock, n = std::min<int64_t>(kQBlock, w.cols - c0);
      float* dst = n == kQBlock ? o + c0 : tmp;
      for (int k = 0; k < 4; ++k) {
        const int64_t g = std::min(w.groups - 1, (c0 + 8 * k) / w.group);
        const __m256 s = _mm256_set1_ps(_cvtsh_ss(s16[g]));
        const __m256 z = _mm256_set1_ps(float(z8 ? z8[g] : w.zero_sym));
        const __m256 qf = _mm256_cvtepi32_ps(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * k))));
        _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(_mm256_sub_ps(qf, z), s));
      }
      if (n < kQBlock) std::memcpy(o + c0, tmp, size_t(n) * 4);
    }
  }
}

inline void dequant_rows(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  switch (w.bits) {
    case 2: return dequant_rows_t<2>(w, r0, r1, out, ldo);
    case 3: return dequant_rows_t<3>(w, r0, r1, out, ldo);
    case 4: return dequant_rows_t<4>(w, r0, r1, out, ldo);
    case 5: return dequant_rows_t<5>(w, r0, r1, out, ldo);
    case 6: return dequant_rows_t<6>(w, r0, r1, out, ldo);
    case 8: return dequant_rows_t<8>(w, r0, r1, out, ldo);
    default: LMP_ASSERT(false);
  }
}

}  // namespace
}  // namespace lmpress::kern
