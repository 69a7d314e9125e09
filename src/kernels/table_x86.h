// x86 kernels of the table families (nf4, fp4, mxfp4, lut3, lut4) and of fp8, one body for two ISA
// levels, like kernels/qkernels_x86.h (whose unpackers, pair order and prefill factor helpers they
// reuse). Included ONLY by x86_avx2/table.cpp and x86_avx512/table.cpp (the latter defines
// LMP_QX86_VNNI first); everything is in an anonymous namespace, one copy per TU and its flags.
// The arithmetic is the scalar reference's (kernels/generic/table.cpp), up to f32 summation order.
//
// Table families: codes are 3/4-bit in the int family's 32-weight blocks; T_r is the row's int8
// table (|T| <= 127), broadcast to both 128-bit lanes of a register once per row so that one
// vpshufb turns 32 codes into 32 int8 values. The integer dot of values v and int8 activations a
// is signed x signed: maddubs / dpbusd take u8 x s8, so both levels use |v| x sign(a, v)
// (|v| <= 127, |a| <= 127: the maddubs pair sums stay below 2^15 and nothing saturates; AVX2
// widens each maddubs with madd before adding, since two pair sums could reach 2^16).
//   decode (<= 3 tokens): one row at a time, 8 blocks per step, scales and activation scales
//     applied in the block loop, next row prefetched (decode_row_fused's structure); 4-bit rows
//     in block pairs (pair_acts order: one 32-byte load and two vpshufb feed 64 weights);
//   prefill: R rows x T tokens tiles over K slices, the values and |v| of a block computed once
//     per row and used for all T tokens (qkernels_x86.h's tile / gemm_impl structure); on VNNI,
//     4-bit groups >= 32 use u8 values T + 128 and subtract the offset's term per (row, token)
//     instead (no per-token sign op, block pairs: the int family's tile4p).
// fp8: E4M3 bytes -> f16 bits (sign << 15 | magnitude << 7: exactly the value / 256, subnormals
//   included) -> vcvtph2ps, float FMA with the f32 activations; the 256 is folded into the scale.
//   Decode: one row at a time per token; prefill: R rows dequantized once into f32 (exact:
//   f16 scale x E4M3 value has 15 significant bits), then an R x T register-tiled f32 product.
// dequant_rows of both: products of an exact integer or E4M3 value and the scale, computed in
// f32 exactly as the reference does, hence bit-identical.
#pragma once
#include "kernels/qkernels_x86.h"

namespace lmpress::kern {
namespace {

// ---- table families: pieces --------------------------------------------------------------------
// The row's table in both lanes (3-bit: 8 entries, the upper 8 bytes zero and never indexed; the
// load stops at the table's end; 1-bit: 2 entries, tables of at least 8 readable bytes).
template <int BITS>
inline __m256i load_table(const int8_t* t) {
  if constexpr (BITS == 4) return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
  else return _mm256_broadcastsi128_si256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(t)));
}

// acc + lanes of 4 consecutive products v * a (signed int8 both, |v|, |a| <= 127).
inline __m256i sdot(__m256i acc, __m256i v, __m256i a) {
#if defined(LMP_QX86_VNNI)
  return _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(v), _mm256_sign_epi8(a, v));
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(a, v)),
                                                 _mm256_set1_epi16(1)));
#endif
}
inline __m256i sdot0(__m256i v, __m256i a) {
#if defined(LMP_QX86_VNNI)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(v), _mm256_sign_epi8(a, v));
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(a, v)), _mm256_set1_epi16(1));
#endif
}

// Lanes 0..N-1: the f32 scales of groups g..g+N-1 of row r (f16, or E8M0 2^(e-128) built in the
// exponent field as QWeights::scale does); loads exactly N entries. Lanes past N are garbage.
template <int N, bool E8>
inline __m256 scales_n(const QWeights& w, int64_t r, int64_t g) {
  if constexpr (E8) {
    const uint8_t* p = w.e8m0 + r * w.groups + g;
    __m128i e;
    if constexpr (N == 8) e = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    else if constexpr (N == 4) e = _mm_cvtsi32_si128(int(load_u32(p)));
    else e = _mm_cvtsi32_si128(int(p[0]) | int(p[1]) << 8);
    const __m256i ei = _mm256_cvtepu8_epi32(e);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(ei, _mm256_set1_epi32(1)), 23));
  } else {
    const uint16_t* p = w.scales + r * w.groups + g;
    __m128i h;
    if constexpr (N == 8) h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    else if constexpr (N == 4) h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    else h = _mm_cvtsi32_si128(int(load_u32(reinterpret_cast<const uint8_t*>(p))));
    return _mm256_cvtph_ps(h);
  }
}

// Scale of each of the 8 blocks b..b+7 (BPG blocks per group; 0: one group for the row).
template <int BPG, bool E8>
inline __m256 step_scales(const QWeights& w, int64_t r, int64_t b, __m256 srow) {
  if constexpr (BPG == 0) return srow;
  else if constexpr (BPG == 1) return scales_n<8, E8>(w, r, b);
  else if constexpr (BPG == 2)
    return _mm256_permutevar8x32_ps(scales_n<4, E8>(w, r, b / 2), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  else return _mm256_permutevar8x32_ps(scales_n<2, E8>(w, r, b / 4), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

// ---- table families: decode ----------------------------------------------------------------------
// One row, groups >= 32, one token: y = sum_b s_g(b) d_b sum_i T[q_i] a_i. 4-bit activations in
// pair order (pair_acts), 3-bit natural. SEL (bitmod, BPG 1/2/4): the table of each block is its
// group's (QWeights::lut_sel); a 4-bit pair holds block b in the low 128-bit lane and b + 1 in the
// high one, and pshufb looks up per lane, so a pair takes the two blocks' tables side by side.
template <int BITS, int BPG, bool E8, bool SEL = false>
inline float table_row(const QWeights& w, int64_t r, const int8_t* a, const float* d) {
  constexpr int BPB = qblock_bytes(BITS);
  const int64_t nb = w.nb;
  const uint8_t* q = w.q + r * w.row_bytes;
  const uint8_t* pf = decode_prefetch_base(q, w.row_bytes);
  const __m256i tab_row = SEL ? _mm256_setzero_si256() : load_table<BITS>(w.lut + r * w.lut_stride);
  const uint8_t* sel = SEL ? w.lut_sel + r * w.groups : nullptr;
  constexpr int kBpg = BPG > 0 ? BPG : 1;
  auto tab1 = [&](int64_t blk) -> __m256i {  // the table of block blk
    if constexpr (SEL) return load_table<BITS>(w.lut + 16 * sel[blk / kBpg]);
    else return tab_row;
  };
  auto tab2 = [&](int64_t b0) -> __m256i {  // 4-bit: blocks b0 (even) and b0 + 1
    if constexpr (SEL && BPG == 1)
      return _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.lut + 16 * sel[b0]))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.lut + 16 * sel[b0 + 1])), 1);
    else return tab1(b0);  // one group holds both (b0 even, groups of 2 or 4 blocks)
  };
  (void)sel;
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256 srow = BPG == 0 ? _mm256_set1_ps(w.scale(r, 0)) : _mm256_setzero_ps();
  auto sc = [&](int64_t blk) { return BPG == 0 ? w.scale(r, 0) : w.scale(r, blk / (BPG ? BPG : 1)); };
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
#pragma GCC unroll 2
    for (int l = 0; l < 8 * BPB; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + b * BPB + l), _MM_HINT_T0);
    const __m256 f8 = _mm256_mul_ps(step_scales<BPG, E8>(w, r, b, srow), _mm256_loadu_ps(d + b));
    if constexpr (BITS == 4) {
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m256 F = _mm256_permutevar8x32_ps(f8, _mm256_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1));
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16 + 32 * p));
        const __m256i tab = tab2(b + 2 * p);
        const __m256i vl = _mm256_shuffle_epi8(tab, _mm256_and_si256(x, m4));
        const __m256i vh = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
        const int8_t* ap = a + b * kQBlock + 64 * p;
        const __m256i dp = sdot(sdot0(vl, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap))), vh,
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + 32)));
        if (p & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), F, acc1);
        else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), F, acc0);
      }
    } else {
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) {
        const __m256 F = _mm256_permutevar8x32_ps(f8, _mm256_set1_epi32(u));
        const __m256i v = _mm256_shuffle_epi8(tab1(b + u), unpack<BITS>(q + (b + u) * BPB));
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (b + u) * kQBlock));
        const __m256 p = _mm256_cvtepi32_ps(sdot0(v, av));
        if (u & 1) acc1 = _mm256_fmadd_ps(p, F, acc1);
        else acc0 = _mm256_fmadd_ps(p, F, acc0);
      }
    }
  }
  // tail: 1-7 blocks (4-bit: pairs in pair order, then an odd last block in natural order)
  for (; b < nb; ++b) {
    const float fb = sc(b) * d[b];
    if (BITS == 4 && b + 2 <= nb) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16));
      const __m256i tab = tab2(b);
      const __m256i vl = _mm256_shuffle_epi8(tab, _mm256_and_si256(x, m4));
      const __m256i vh = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
      const int8_t* ap = a + b * kQBlock;
      const __m256i dp = sdot(sdot0(vl, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap))), vh,
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + 32)));
      const __m256 F = _mm256_insertf128_ps(_mm256_set1_ps(fb), _mm_set1_ps(sc(b + 1) * d[b + 1]), 1);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), F, acc0);
      ++b;
    } else {
      const __m256i v = _mm256_shuffle_epi8(tab1(b), unpack<BITS>(q + b * BPB));
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sdot0(v, av)), _mm256_set1_ps(fb), acc0);
    }
  }
  (void)m4, (void)srow;
  return hsum(_mm256_add_ps(acc0, acc1));
}

// One row, group 16 (two scales per block), one token: 4 blocks = 8 groups per step. 4-bit
// activations in pair order (x & 15 and x >> 4 are the two halves of a pair), 3-bit natural
// (dot lanes 0-3 = half 0, 4-7 = half 1).
template <int BITS, bool E8>
inline float table_row_g16(const QWeights& w, int64_t r, const int8_t* a, const float* d) {
  constexpr int BPB = qblock_bytes(BITS);
  const int64_t nb = w.nb, G = w.groups;  // G = 2 nb, or 2 nb - 1 when the last block has <= 16 columns
  const uint8_t* q = w.q + r * w.row_bytes;
  const uint8_t* pf = decode_prefetch_base(q, w.row_bytes);
  const __m256i tab = load_table<BITS>(w.lut + r * w.lut_stride);
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  auto idx = [](int lo, int hi) { return _mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi); };
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb && 2 * (b + 4) <= G; b += 4) {
    for (int l = 0; l < 4 * BPB; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + b * BPB + l), _MM_HINT_T0);
    // f8 = [b0h0 b0h1 b1h0 b1h1 b2h0 b2h1 b3h0 b3h1] factors
    const __m256 f8 = _mm256_mul_ps(scales_n<8, E8>(w, r, 2 * b),
                                    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(d + b)), dup));
    if constexpr (BITS == 4) {
#pragma GCC unroll 2
      for (int p = 0; p < 2; ++p) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16 + 32 * p));
        const __m256i vl = _mm256_shuffle_epi8(tab, _mm256_and_si256(x, m4));
        const __m256i vh = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
        const int8_t* ap = a + b * kQBlock + 64 * p;
        const __m256i lo = sdot0(vl, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap)));
        const __m256i hi = sdot0(vh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + 32)));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_permutevar8x32_ps(f8, idx(4 * p, 4 * p + 2)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_permutevar8x32_ps(f8, idx(4 * p + 1, 4 * p + 3)), acc1);
      }
    } else {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const __m256i v = _mm256_shuffle_epi8(tab, unpack<BITS>(q + (b + u) * BPB));
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (b + u) * kQBlock));
        const __m256 p = _mm256_cvtepi32_ps(sdot0(v, av));
        if (u & 1) acc1 = _mm256_fmadd_ps(p, _mm256_permutevar8x32_ps(f8, idx(2 * u, 2 * u + 1)), acc1);
        else acc0 = _mm256_fmadd_ps(p, _mm256_permutevar8x32_ps(f8, idx(2 * u, 2 * u + 1)), acc0);
      }
    }
  }
  // tail blocks: per-half factors (a missing second half of a ragged last block has factor 0)
  auto half = [&](int64_t g, int64_t blk) { return g < G ? w.scale(r, g) * d[blk] : 0.f; };
  for (; b < nb; ++b) {
    if (BITS == 4 && b + 2 <= nb) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * 16));
      const __m256i vl = _mm256_shuffle_epi8(tab, _mm256_and_si256(x, m4));
      const __m256i vh = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
      const int8_t* ap = a + b * kQBlock;
      const __m256i lo = sdot0(vl, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap)));
      const __m256i hi = sdot0(vh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + 32)));
      const __m256 Fl = _mm256_insertf128_ps(_mm256_set1_ps(half(2 * b, b)), _mm_set1_ps(half(2 * b + 2, b + 1)), 1);
      const __m256 Fh = _mm256_insertf128_ps(_mm256_set1_ps(half(2 * b + 1, b)), _mm_set1_ps(half(2 * b + 3, b + 1)), 1);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), Fl, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), Fh, acc1);
      ++b;
    } else {
      const __m256i v = _mm256_shuffle_epi8(tab, unpack<BITS>(q + b * BPB));
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * kQBlock));
      const __m256 F = _mm256_insertf128_ps(_mm256_set1_ps(half(2 * b, b)), _mm_set1_ps(half(2 * b + 1, b)), 1);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sdot0(v, av)), F, acc0);
    }
  }
  (void)m4;
  return hsum(_mm256_add_ps(acc0, acc1));
}

// f32 scales of the groups of row r (QWeights::scale, 8 at a time).
inline void row_scales(const QWeights& w, int64_t r, float* sf) {
  const int64_t G = w.groups;
  int64_t g = 0;
  if (w.e8m0)
    for (; g + 8 <= G; g += 8) _mm256_storeu_ps(sf + g, scales_n<8, true>(w, r, g));
  else
    for (; g + 8 <= G; g += 8) _mm256_storeu_ps(sf + g, scales_n<8, false>(w, r, g));
  for (; g < G; ++g) sf[g] = w.e8m0 ? w.scale(r, g) : _cvtsh_ss(w.scales[r * G + g]);
}

// Per-thread scratch of the table / fp8 kernels.
struct TableScratch {
  std::vector<int8_t> pa;  // decode: <= 3 tokens' activations (4-bit: pair order)
  std::vector<float> d;    // decode: <= 3 tokens' block scales, contiguous per token
  std::vector<float> f;    // prefill: [R][units + 16] f32 scale per unit of the tile's rows
  std::vector<float> ft;   // prefill: factors of one token tile (prefill_factors)
  std::vector<float> wf;   // fp8 prefill: [R][cols rounded up to 8] dequantized rows
  std::vector<float> sf;   // prefill: [R][groups + 8] f32 scales per group
  std::vector<float> x;    // VNNI prefill: [chunk][groups + 8] offset sums X (table_prefill)
};
inline TableScratch& table_scratch() {
  thread_local TableScratch s;
  return s;
}

// Decode of rows [r0, r1) x tokens [t0, t1) (<= 3 tokens: each row is streamed once and stays in
// L1 for the other tokens).
template <int BITS, bool G16, int BPG, bool E8, bool SEL = false>
void table_decode(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, n = A.a.n, nt = t1 - t0, as = A.a.a_stride;
  TableScratch& S = table_scratch();
  const int8_t* at[3];
  const float* dt[3];
  if (BITS == 4) S.pa.resize(size_t(3 * as));
  if (n > 1) S.d.resize(size_t(3 * (nb + 16)));
  for (int64_t j = 0; j < nt; ++j) {
    const int64_t t = t0 + j;
    if constexpr (BITS == 4) {
      pair_acts(A.a.qa + t * as, nb, S.pa.data() + j * as);
      at[j] = S.pa.data() + j * as;
    } else {
      at[j] = A.a.qa + t * as;
    }
    if (n == 1) {
      dt[j] = A.a.d;
    } else {
      float* dj = S.d.data() + j * (nb + 16);
      for (int64_t b = 0; b < nb; ++b) dj[b] = A.a.d[b * n + t];
      dt[j] = dj;
    }
  }
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t j = 0; j < nt; ++j) {
      float y;
      if constexpr (G16) y = table_row_g16<BITS, E8>(w, r, at[j], dt[j]);
      else y = table_row<BITS, BPG, E8, SEL>(w, r, at[j], dt[j]);
      A.y[(t0 + j) * A.ldy + r] = y;
    }
}

// ---- table families: prefill ---------------------------------------------------------------------
// R rows x T tokens over nb blocks: per (row, block) the values v and |v| once, per token sign(a, v)
// and the dot; ft holds scale * d per (block, row, token) as in qkernels_x86.h's tile().
// SEL (bitmod): the table of each (row, block) from the row's group selectors sels[i] (this slice's
// first group at sels[i][0]; sh: log2 blocks per group) instead of tabs[i].
template <int BITS, int R, int T, bool G16, bool SEL = false>
inline void table_tile(int64_t nb, const uint8_t* const* wr, const __m256i* tabs, const float* ft,
                       const int8_t* const* ar, float (&out)[R][T], const uint8_t* const* sels = nullptr,
                       const int8_t* lut = nullptr, int sh = 0) {
  constexpr int BPB = qblock_bytes(BITS), TS = T <= 4 ? 4 : 8;
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      __m256i tb = tabs[i];
      if constexpr (SEL) tb = load_table<BITS>(lut + 16 * sels[i][b >> sh]);
      const __m256i v = _mm256_shuffle_epi8(tb, unpack<BITS>(wr[i] + b * BPB));
      const __m256i av = _mm256_abs_epi8(v);
      const float* fb = ft + (b * R + i) * (G16 ? 2 * TS : TS);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m256i a = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar[t] + b * kQBlock)), v);
#if defined(LMP_QX86_VNNI)
        const __m256i dp = _mm256_dpbusd_epi32(_mm256_setzero_si256(), av, a);
#else
        const __m256i dp = _mm256_madd_epi16(_mm256_maddubs_epi16(av, a), _mm256_set1_epi16(1));
#endif
        const __m256 F = G16 ? bcast2(fb + t, fb + TS + t) : _mm256_broadcast_ss(fb + t);
        acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), F, acc[i][t]);
      }
    }
  }
  (void)sels, (void)lut, (void)sh;
  tile_store<R, T>(acc, out);
}

#if defined(LMP_QX86_VNNI)
// VNNI, 4-bit, groups >= 32: the values as u8 T + 128 (the table xor 0x80) go straight into
// dpbusd (u8 x s8 into i32, no saturation), so a token costs no sign op; block pairs as in
// tile4p (activations in pair order). The offset adds 128 * sum(a) per block, which
// table_prefill subtracts once per (row, token) from per-group activation sums, like the int
// family's zero-point term. An odd last block takes the natural-order single step.
template <int R, int T>
inline void table_tile4p(int64_t nb, const uint8_t* const* wr, const __m256i* tabs, const float* ft,
                         const int8_t* const* ar, float (&out)[R][T]) {
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
      const __m256i vl = _mm256_shuffle_epi8(tabs[i], _mm256_and_si256(x, m4));
      const __m256i vh = _mm256_shuffle_epi8(tabs[i], _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
      const float* f0 = ft + (b * R + i) * TS;  // block b, then block b+1 at + R * TS
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m256i* ap = reinterpret_cast<const __m256i*>(ar[t] + b * kQBlock);
        const __m256i dp = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), vl, _mm256_loadu_si256(ap)), vh,
                                               _mm256_loadu_si256(ap + 1));
        acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), bcast2(f0 + t, f0 + R * TS + t), acc[i][t]);
      }
    }
  }
  if (b < nb) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256i v = _mm256_shuffle_epi8(tabs[i], unpack4(wr[i] + b * 16));
      const float* fb = ft + (b * R + i) * TS;
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar[t] + b * kQBlock));
        acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), v, a)),
                                    _mm256_broadcast_ss(fb + t), acc[i][t]);
      }
    }
  }
  tile_store<R, T>(acc, out);
}
#endif

// Sum of a block's 32 int8 activations (sad on a xor 0x80 = a + 128, minus 32 * 128).
inline int32_t block_sum(const int8_t* a) {
  const __m256i s = _mm256_sad_epu8(
      _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)), _mm256_set1_epi8(char(0x80))), _mm256_setzero_si256());
  const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  return int32_t(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1)) - 32 * 128;
}

template <class Cfg, int BITS, bool G16, bool SEL = false>
void table_prefill(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, G = w.groups, n = A.a.n;
  const int64_t units = G16 ? 2 * nb : nb, fstride = units + 16, bpg = w.blocks_per_group();
  constexpr int R = Cfg::TRP, T = Cfg::TTP, BPB = qblock_bytes(BITS);
  // u8 values with the offset term (table_tile4p) where VNNI allows; else |v| x sign(a, v)
  constexpr bool kU8 = kVnni && BITS == 4 && !G16 && !SEL;
  const int64_t gstride = G + 8;
  TableScratch& S = table_scratch();
  S.f.resize(size_t(R * fstride));
  S.ft.resize(size_t(std::min<int64_t>(nb, Cfg::kSliceBlocks) * R * 16));
  S.sf.resize(size_t(R * gstride));
  const int sh = bpg == 2 ? 1 : bpg == 4 ? 2 : 0;
  // token chunks whose activations stay in L2; inside, row tiles stay in L1 while token tiles
  // stream past them
  const int64_t chunk = std::max<int64_t>(T, (Cfg::kChunkBytes / A.a.a_stride) / T * T);
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk);
    const int8_t* qa = A.a.qa + tc * A.a.a_stride;  // token tc's activations
    if constexpr (kU8) {
      // pair order, and X[t][g] = 128 * sum_{b in g} d_b sum(a in b): the offset's share
      S.pa.resize(size_t(chunk * A.a.a_stride));
      S.x.resize(size_t(chunk * gstride));
      for (int64_t t = tc; t < tce; ++t) {
        const int8_t* at = A.a.qa + t * A.a.a_stride;
        pair_acts(at, nb, S.pa.data() + (t - tc) * A.a.a_stride);
        float* X = S.x.data() + (t - tc) * gstride;
        for (int64_t g = 0; g < G; ++g) X[g] = 0.f;
        for (int64_t b = 0; b < nb; ++b) X[b / bpg] += A.a.d[b * n + t] * float(128 * block_sum(at + b * kQBlock));
      }
      qa = S.pa.data();
    }
    for (int64_t r = r0; r < r1; r += R) {
      const int nr = int(std::min<int64_t>(R, r1 - r));
      const uint8_t* wr[R];
      const uint8_t* sl[R];
      const float* f[R];
      __m256i tabs[R];
      for (int i = 0; i < R; ++i) {
        const int k = i < nr ? i : nr - 1;  // rows past the end repeat the last one
        wr[i] = w.q + (r + k) * w.row_bytes;
        sl[i] = SEL ? w.lut_sel + (r + k) * G : nullptr;
        f[i] = S.f.data() + k * fstride;
        tabs[i] = load_table<BITS>(w.lut + (r + k) * w.lut_stride);
        if (kU8) tabs[i] = _mm256_xor_si256(tabs[i], _mm256_set1_epi8(char(0x80)));
        if (i >= nr) continue;
        // the row's scale per unit (0 for a group-16 half past the last column)
        float* fi = S.f.data() + i * fstride;
        float* sf = S.sf.data() + i * gstride;
        row_scales(w, r + i, sf);
        if (G16)
          for (int64_t u = 0; u < fstride; ++u) fi[u] = u < G ? sf[u] : 0.f;
        else if (G == 1)
          for (int64_t u = 0; u < fstride; ++u) fi[u] = u < nb ? sf[0] : 0.f;
        else  // bpg = 1, 2 or 4: a shift (a division per unit cost as much as a slice of the dots)
          for (int64_t u = 0; u < fstride; ++u) fi[u] = u < nb ? sf[u >> sh] : 0.f;
        if constexpr (kU8) {
          for (int64_t t = tc; t < tce; ++t) A.y[t * A.ldy + r + i] = -dot_f32(sf, S.x.data() + (t - tc) * gstride, G);
        } else {
          for (int64_t t = tc; t < tce; ++t) A.y[t * A.ldy + r + i] = 0.f;
        }
      }
      for (int64_t k0 = 0; k0 < nb; k0 += Cfg::kSliceBlocks) {
        const int64_t kn = std::min<int64_t>(Cfg::kSliceBlocks, nb - k0);
        const uint8_t* wk[R];
        const uint8_t* sk[R];
        const float* fk[R];
        for (int i = 0; i < R; ++i) {
          wk[i] = wr[i] + k0 * BPB;
          sk[i] = SEL ? sl[i] + (k0 >> sh) : nullptr;
          fk[i] = f[i] + (G16 ? 2 * k0 : k0);
        }
        for (int64_t t = tc; t < tce; t += T) {
          const int nt = int(std::min<int64_t>(T, tce - t));
          const int8_t* ar[T];
          for (int j = 0; j < T; ++j) ar[j] = qa + (t - tc + (j < nt ? j : nt - 1)) * A.a.a_stride + k0 * kQBlock;
          float out[R][T];
          prefill_factors<R, T, G16>(kn, fk, A.a.d + k0 * n + t, n, S.ft.data());
#if defined(LMP_QX86_VNNI)
          if constexpr (kU8) table_tile4p<R, T>(kn, wk, tabs, S.ft.data(), ar, out);
          else
#endif
            table_tile<BITS, R, T, G16, SEL>(kn, wk, tabs, S.ft.data(), ar, out, sk, w.lut, sh);
          for (int i = 0; i < nr; ++i)
            for (int j = 0; j < nt; ++j) A.y[(t + j) * A.ldy + r + i] += out[i][j];
        }
      }
    }
  }
}

template <class Cfg, int BITS, bool E8>
void table_gemm_t(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  if constexpr (!E8 && BITS != 1) {
    if (w.lut_sel) {  // bitmod: a table per group (groups of 1, 2 or 4 blocks, checked by table_gemm)
      if (t1 - t0 <= 3) {
        const int64_t bpg = w.blocks_per_group();
        if (bpg == 1) return table_decode<BITS, false, 1, false, true>(A, r0, r1, t0, t1);
        if (bpg == 2) return table_decode<BITS, false, 2, false, true>(A, r0, r1, t0, t1);
        return table_decode<BITS, false, 4, false, true>(A, r0, r1, t0, t1);
      }
      return table_prefill<Cfg, BITS, false, true>(A, r0, r1, t0, t1);
    }
  }
  if (t1 - t0 <= 3) {
    if (w.g16()) return table_decode<BITS, true, 0, E8>(A, r0, r1, t0, t1);
    if (w.groups == 1) return table_decode<BITS, false, 0, E8>(A, r0, r1, t0, t1);
    switch (w.blocks_per_group()) {
      case 1: return table_decode<BITS, false, 1, E8>(A, r0, r1, t0, t1);
      case 2: return table_decode<BITS, false, 2, E8>(A, r0, r1, t0, t1);
      default: return table_decode<BITS, false, 4, E8>(A, r0, r1, t0, t1);
    }
  }
  if (w.g16()) table_prefill<Cfg, BITS, true>(A, r0, r1, t0, t1);
  else table_prefill<Cfg, BITS, false>(A, r0, r1, t0, t1);
}

template <class Cfg>
void table_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t bpg = w.blocks_per_group();
  // Layouts the families define today; anything else takes the scalar reference.
  const bool ok = (w.bits == 1 || w.bits == 3 || w.bits == 4) && (w.g16() || w.groups == 1 || bpg == 1 || bpg == 2 || bpg == 4) &&
                  !(w.lut_sel && (w.bits == 1 || w.g16() || w.e8m0 || !(bpg == 1 || bpg == 2 || bpg == 4)));
  if (!ok) return table_kernels_scalar.gemm(A, r0, r1, t0, t1);
  const bool e8 = w.e8m0 != nullptr;
  if (w.bits == 4) e8 ? table_gemm_t<Cfg, 4, true>(A, r0, r1, t0, t1) : table_gemm_t<Cfg, 4, false>(A, r0, r1, t0, t1);
  else if (w.bits == 3) e8 ? table_gemm_t<Cfg, 3, true>(A, r0, r1, t0, t1) : table_gemm_t<Cfg, 3, false>(A, r0, r1, t0, t1);
  else if (e8) table_kernels_scalar.gemm(A, r0, r1, t0, t1);  // no 1-bit E8M0 family
  else table_gemm_t<Cfg, 1, false>(A, r0, r1, t0, t1);
}

// scale * float(T[q]): the reference's product of two exactly representable f32 values.
template <int BITS>
void table_dequant_t(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  constexpr int BPB = qblock_bytes(BITS);
  alignas(32) int8_t v[kQBlock];
  alignas(32) float tmp[kQBlock];
  std::vector<float>& sf = table_scratch().sf;
  sf.resize(size_t(w.groups + 8));
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + (r - r0) * ldo;
    const __m256i tab = load_table<BITS>(w.lut + r * w.lut_stride);
    row_scales(w, r, sf.data());
    for (int64_t b = 0; b < w.nb; ++b) {
      const __m256i tb = w.lut_sel ? load_table<BITS>(w.group_lut(r, b * kQBlock / w.group)) : tab;
      _mm256_store_si256(reinterpret_cast<__m256i*>(v), _mm256_shuffle_epi8(tb, unpack<BITS>(w.q + r * w.row_bytes + b * BPB)));
      const int64_t c0 = b * kQBlock, nc = std::min<int64_t>(kQBlock, w.cols - c0);
      float* dst = nc == kQBlock ? o + c0 : tmp;
      for (int k = 0; k < 4; ++k) {
        const int64_t g = std::min(w.groups - 1, (c0 + 8 * k) / w.group);  // groups are multiples of 8 columns
        const __m256 vf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v + 8 * k))));
        _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(_mm256_set1_ps(sf[size_t(g)]), vf));
      }
      if (nc < kQBlock) std::memcpy(o + c0, tmp, size_t(nc) * 4);
    }
  }
}

void table_dequant(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  if (w.bits == 4) table_dequant_t<4>(w, r0, r1, out, ldo);
  else if (w.bits == 3) table_dequant_t<3>(w, r0, r1, out, ldo);
  else if (w.bits == 1) table_dequant_t<1>(w, r0, r1, out, ldo);
  else table_kernels_scalar.dequant_rows(w, r0, r1, out, ldo);
}

// ---- fp8 -----------------------------------------------------------------------------------------
// 8 E4M3 codes -> their values / 256 as f32. Sign-extending the byte and shifting left by 7 puts
// the magnitude in f16 bits 7..13 and copies the sign into bits 14 and 15; clearing bit 14 leaves
// sign << 15 | magnitude << 7, the f16 of value / 2^8 (exponent bias 15 vs 7; subnormals map to
// subnormals).
inline __m256 e4m3x8(const uint8_t* p) {
  const __m128i c = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(c, 7), _mm_set1_epi16(int16_t(0xBFFF))));
}

// Lanes i < rem of x (rem in 1..7): maskload never touches the masked-out lanes, so the last
// token's row can end anywhere.
inline __m256 load_tail(const float* x, int64_t rem) {
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_ps(x, m);
}

// 16 E4M3 codes -> f16 bits of value / 256 (see e4m3x8), widened 16 at a time: one extend, shift
// and mask per 16 codes instead of per 8.
inline __m256i e4m3x16_h(const uint8_t* p) {
  const __m256i c = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_slli_epi16(c, 7), _mm256_set1_epi16(int16_t(0xBFFF)));
}

// Accumulator of e4m3(q) * x over 16-column steps. AVX-512: one zmm conversion and FMA per 16
// columns (half the instructions of two ymm halves; the decode loop is bound by them, not by the
// bytes); AVX2: two ymm halves.
struct Acc16 {
#if defined(LMP_QX86_VNNI)
  __m512 v = _mm512_setzero_ps();
  // (maskz forms with full masks: GCC 12 warns about the plain forms' undefined pass-through)
  static __m512 cvt(const uint8_t* q) { return _mm512_maskz_cvtph_ps(__mmask16(0xffff), e4m3x16_h(q)); }
  void fma(const uint8_t* q, const float* x) { v = _mm512_fmadd_ps(cvt(q), _mm512_loadu_ps(x), v); }
  // columns [0, rem) only, rem in 1..15
  void fma_tail(const uint8_t* q, const float* x, int64_t rem) {
    v = _mm512_fmadd_ps(cvt(q), _mm512_maskz_loadu_ps(__mmask16((1u << rem) - 1), x), v);
  }
  __m256 sum8() const {
    const __m512d d = _mm512_castps_pd(v);
    return _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(__mmask8(0xf), d, 0)),
                         _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(__mmask8(0xf), d, 1)));
  }
#else
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  void fma(const uint8_t* q, const float* x) {
    const __m256i h = e4m3x16_h(q);
    a = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), _mm256_loadu_ps(x), a);
    b = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), _mm256_loadu_ps(x + 8), b);
  }
  void fma_tail(const uint8_t* q, const float* x, int64_t rem) {
    const __m256i h = e4m3x16_h(q);
    const __m256 lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    if (rem >= 8) {
      a = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x), a);
      if (rem > 8) b = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), load_tail(x + 8, rem - 8), b);
    } else {
      a = _mm256_fmadd_ps(lo, load_tail(x, rem), a);
    }
  }
  __m256 sum8() const { return _mm256_add_ps(a, b); }
#endif
};

// Columns [c0, c1) of a row into two accumulators (q readable up to the row's 32-byte padding,
// x only below c1; c0 a multiple of 16).
inline void fp8_span(const uint8_t* q, const float* x, int64_t c0, int64_t c1, Acc16& a0, Acc16& a1) {
  int64_t c = c0;
  for (; c + 32 <= c1; c += 32) {
    a0.fma(q + c, x + c);
    a1.fma(q + c + 16, x + c + 16);
  }
  if (c + 16 <= c1) {
    a0.fma(q + c, x + c);
    c += 16;
  }
  if (c < c1) a1.fma_tail(q + c, x + c, c1 - c);
}

// One row, one token. GS: group length (16, 32, 64, 128; 0 = whole row). Groups of 16/32 take 8
// scales per step (one f16 load + convert, a permute per group); longer groups one scalar
// convert per group, amortized over >= 64 weights.
template <int GS>
inline float fp8_row(const QWeights& w, int64_t r, const float* x) {
  const int64_t cols = w.cols, G = w.groups;
  const uint8_t* q = w.q + r * w.row_bytes;
  const uint8_t* pf = decode_prefetch_base(q, w.row_bytes);
  const uint16_t* s16 = w.scales + r * G;
  __m256 acc = _mm256_setzero_ps();
  if constexpr (GS == 0) {
    Acc16 a0, a1;
    int64_t c = 0;
    for (; c + 64 <= cols; c += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(pf + c), _MM_HINT_T0);
      fp8_span(q, x, c, c + 64, a0, a1);
    }
    fp8_span(q, x, c, cols, a0, a1);
    return hsum(_mm256_add_ps(a0.sum8(), a1.sum8())) * (_cvtsh_ss(s16[0]) * 256.f);
  } else {
    int64_t g = 0;
    if constexpr (GS <= 32) {
      for (; (g + 8) * GS <= cols; g += 8) {
        for (int l = 0; l < 8 * GS; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + g * GS + l), _MM_HINT_T0);
        const __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s16 + g)));
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
          const int64_t c = (g + k) * GS;
          Acc16 p;
          p.fma(q + c, x + c);
          if constexpr (GS == 32) p.fma(q + c + 16, x + c + 16);
          acc = _mm256_fmadd_ps(p.sum8(), _mm256_permutevar8x32_ps(s8, _mm256_set1_epi32(k)), acc);
        }
      }
    }
    for (; g < G; ++g) {
      const int64_t c0 = g * GS, c1 = std::min(cols, c0 + GS);
      if (GS >= 64) _mm_prefetch(reinterpret_cast<const char*>(pf + c0), _MM_HINT_T0);
      if (GS == 128) _mm_prefetch(reinterpret_cast<const char*>(pf + c0 + 64), _MM_HINT_T0);
      Acc16 a0, a1;
      fp8_span(q, x, c0, c1, a0, a1);
      acc = _mm256_fmadd_ps(_mm256_add_ps(a0.sum8(), a1.sum8()), _mm256_set1_ps(_cvtsh_ss(s16[g])), acc);
    }
    return hsum(acc) * 256.f;
  }
}

// R rows (dequantized, zero-padded to a multiple of 8 columns) x T tokens, f32 register tile.
template <int R, int T>
inline void fp8_tile(int64_t cols, const float* const* wf, const float* const* xt, float (&out)[R][T]) {
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  int64_t c = 0;
  auto step = [&](int64_t cc, bool tail) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) wv[i] = _mm256_loadu_ps(wf[i] + cc);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256 xv = tail ? load_tail(xt[t] + cc, cols - cc) : _mm256_loadu_ps(xt[t] + cc);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  };
  for (; c + 8 <= cols; c += 8) step(c, false);
  if (c < cols) step(c, true);
  tile_store<R, T>(acc, out);
}

// Dequantizes row r into o[0, nb*32): scale * e4m3 (exact; zeros past cols from the padding codes).
inline void fp8_dequant_row(const QWeights& w, int64_t r, float* o) {
  const uint8_t* q = w.q + r * w.row_bytes;
  for (int64_t c = 0; c < w.nb * kQBlock; c += 8) {
    const int64_t g = std::min(w.groups - 1, c / w.group);  // groups are multiples of 8 columns
    const __m256 s = _mm256_set1_ps(_cvtsh_ss(w.scales[r * w.groups + g]) * 256.f);
    _mm256_storeu_ps(o + c, _mm256_mul_ps(e4m3x8(q + c), s));
  }
}

template <class Cfg>
void fp8_prefill(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t cols = w.cols, wstride = w.nb * kQBlock + 16;
  constexpr int R = Cfg::RP, T = Cfg::TP;
  TableScratch& S = table_scratch();
  S.wf.resize(size_t(R * wstride));
  // token chunks whose activations stay in L2
  const int64_t chunk = std::max<int64_t>(T, (Cfg::kChunkBytes / (cols * 4)) / T * T);
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk);
    for (int64_t r = r0; r < r1; r += R) {
      const int nr = int(std::min<int64_t>(R, r1 - r));
      const float* wf[R];
      for (int i = 0; i < R; ++i) {
        wf[i] = S.wf.data() + (i < nr ? i : nr - 1) * wstride;
        if (i < nr) fp8_dequant_row(w, r + i, S.wf.data() + i * wstride);
      }
      for (int64_t t = tc; t < tce; t += T) {
        const int nt = int(std::min<int64_t>(T, tce - t));
        const float* xt[T];
        for (int j = 0; j < T; ++j) xt[j] = A.a.xf + (t + (j < nt ? j : nt - 1)) * cols;
        float out[R][T];
        fp8_tile<R, T>(cols, wf, xt, out);
        for (int i = 0; i < nr; ++i)
          for (int j = 0; j < nt; ++j) A.y[(t + j) * A.ldy + r + i] = out[i][j];
      }
    }
  }
}

template <int GS>
void fp8_decode(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = t0; t < t1; ++t) A.y[t * A.ldy + r] = fp8_row<GS>(A.w, r, A.a.xf + t * A.w.cols);
}

template <class Cfg>
void fp8_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  if (t1 - t0 >= 4) return fp8_prefill<Cfg>(A, r0, r1, t0, t1);
  if (w.groups == 1) return fp8_decode<0>(A, r0, r1, t0, t1);
  switch (w.group) {
    case 16: return fp8_decode<16>(A, r0, r1, t0, t1);
    case 32: return fp8_decode<32>(A, r0, r1, t0, t1);
    case 64: return fp8_decode<64>(A, r0, r1, t0, t1);
    case 128: return fp8_decode<128>(A, r0, r1, t0, t1);
    default: return fp8_kernels_scalar.gemm(A, r0, r1, t0, t1);
  }
}

void fp8_dequant(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  alignas(32) float tmp[kQBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* q = w.q + r * w.row_bytes;
    float* o = out + (r - r0) * ldo;
    for (int64_t c = 0; c < w.cols; c += 8) {
      const int64_t g = std::min(w.groups - 1, c / w.group);
      // (value / 256) * 256 is exact, so the product with the scale is the reference's
      const __m256 v = _mm256_mul_ps(e4m3x8(q + c), _mm256_set1_ps(256.f));
      const __m256 p = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(w.scales[r * w.groups + g])), v);
      if (c + 8 <= w.cols) {
        _mm256_storeu_ps(o + c, p);
      } else {
        _mm256_store_ps(tmp, p);
        std::memcpy(o + c, tmp, size_t(w.cols - c) * 4);
      }
    }
  }
}

}  // namespace
}  // namespace lmpress::kern
