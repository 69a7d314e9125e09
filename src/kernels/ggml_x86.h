// x86 kernels of the ggml family (llama.cpp's block types), one body for two ISA levels like
// kernels/table_x86.h. Included ONLY by x86_avx2/ggml.cpp and x86_avx512/ggml.cpp (the latter
// defines LMP_QX86_VNNI first); everything is in an anonymous namespace, one copy per TU.
//
// Structure: per type a decoder (Dec<T>) turns one 32-weight sub-block into 32 int8 lanes with
// one AVX2 load and a few shifts / masks / a vpshufb, and a block's header into f32 scales S and
// offsets M per 16-weight half (scalar: 2 to 16 values per block). A row is decoded once into
// per-thread buffers (lanes, S, M; a 5632-column row is 7 KB, it stays in L1), then one shared
// integer-dot tile multiplies R decoded rows with T tokens' int8 activation blocks:
//   acc[i][j] += cvt(dot(lanes_i(b), a_j(b))) * ([S_i(2b) x4 | S_i(2b+1) x4] * d_j(b))
//   y[i][j] = hsum(acc[i][j]) - sum_h M'_i(h) X_j(h)
// Lanes are unsigned u = v + C where the type allows (maddubs needs u <= 128; VNNI's dpbusd any
// u8) and M' = M + C S folds the offset back (C S is exact in f32: S has at most 17 significant
// bits, C at most 8). AVX2 q8_0 / iq4_* lanes are signed and use |v| x sign(a, v) instead.
// Decode (n <= 3 tokens) is fused instead, without buffers: one row at a time (next row
// prefetched), in steps of 256 weights (8 legacy blocks or one super-block): the step's 16 scales
// and offsets as two vectors each (vector unpacking of the 6-bit sub-scales), multiplied by the
// activation scales once per step, then per sub-block lanes -> dot -> one FMA with a permuted
// factor; the offset term is two FMAs per step with X. Prefill: R rows x T tokens over token
// chunks that stay in L2. dequant_rows: the scalar reference (used
// for embedding rows and the dequantize + sgemm oracle only).
#pragma once
#include "kernels/ggml_blocks.h"
#include "kernels/qkernels_x86.h"

namespace lmpress::kern {
namespace {

namespace gx {

using namespace ggml;

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256i srl16(__m256i x, int n) { return _mm256_srl_epi16(x, _mm_cvtsi32_si128(n)); }
inline __m256i and8(__m256i x, int m) { return _mm256_and_si256(x, _mm256_set1_epi8(char(m))); }
// 16 bytes of 4-bit table indices in the legacy nibble order -> table values (vpshufb).
inline __m256i iq4_lanes(const uint8_t* qs, bool offset128) {
  alignas(16) static constexpr int8_t kS[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  __m128i t = _mm_load_si128(reinterpret_cast<const __m128i*>(kS));
  if (offset128) t = _mm_xor_si128(t, _mm_set1_epi8(char(0x80)));  // v + 128 as u8
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), unpack4(qs));
}

// Decoders. QK / BYTES: the block; C: lane offset (u = v + C); SIGNED: lanes are v (signed dot).
// lanes(blk, j): sub-block j (weights 32 j .. 32 j + 31) in weight order. factors(blk, S, M):
// S[h] and M'[h] = M[h] + C S[h] for the block's QK / 16 halves.
template <uint32_t T>
struct Dec;

template <uint32_t T, int C>
inline void k_factors(const uint8_t* blk, float* S, float* M) {
  block_factors(T, blk, S, M);
  if constexpr (C != 0)
    for (int h = 0; h < 16; ++h) M[h] += float(C) * S[h];
}
inline float hf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

template <>
struct Dec<kQ4_0> {
  static constexpr int QK = 32, BYTES = 18, C = 8;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int) { return unpack4(b + 2); }
  static void factors(const uint8_t* b, float* S, float* M) { S[0] = S[1] = hf(b), M[0] = M[1] = 8.f * S[0]; }
};
template <>
struct Dec<kQ4_1> {
  static constexpr int QK = 32, BYTES = 20, C = 0;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int) { return unpack4(b + 4); }
  static void factors(const uint8_t* b, float* S, float* M) { S[0] = S[1] = hf(b), M[0] = M[1] = -hf(b + 2); }
};
template <>
struct Dec<kQ5_0> {
  static constexpr int QK = 32, BYTES = 22, C = 16;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int) { return add_bit_plane(unpack4(b + 6), b + 2, 16); }
  static void factors(const uint8_t* b, float* S, float* M) { S[0] = S[1] = hf(b), M[0] = M[1] = 16.f * S[0]; }
};
template <>
struct Dec<kQ5_1> {
  static constexpr int QK = 32, BYTES = 24, C = 0;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int) { return add_bit_plane(unpack4(b + 8), b + 4, 16); }
  static void factors(const uint8_t* b, float* S, float* M) { S[0] = S[1] = hf(b), M[0] = M[1] = -hf(b + 2); }
};
template <>
struct Dec<kQ8_0> {
  static constexpr int QK = 32, BYTES = 34, C = kVnni ? 128 : 0;
  static constexpr bool SIGNED = !kVnni;
  static __m256i lanes(const uint8_t* b, int) {
    const __m256i x = load32(b + 2);
    return kVnni ? _mm256_xor_si256(x, _mm256_set1_epi8(char(0x80))) : x;
  }
  static void factors(const uint8_t* b, float* S, float* M) { S[0] = S[1] = hf(b), M[0] = M[1] = float(C) * S[0]; }
};
template <>
struct Dec<kIQ4_NL> {
  static constexpr int QK = 32, BYTES = 18, C = kVnni ? 128 : 0;
  static constexpr bool SIGNED = !kVnni;
  static __m256i lanes(const uint8_t* b, int) { return iq4_lanes(b + 2, kVnni); }
  static void factors(const uint8_t* b, float* S, float* M) { S[0] = S[1] = hf(b), M[0] = M[1] = float(C) * S[0]; }
};
template <>
struct Dec<kQ2_K> {
  static constexpr int QK = 256, BYTES = 84, C = 0;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int j) { return and8(srl16(load32(b + 16 + 32 * (j / 4)), 2 * (j % 4)), 3); }
  static void factors(const uint8_t* b, float* S, float* M) { k_factors<kQ2_K, C>(b, S, M); }
};
template <>
struct Dec<kQ3_K> {
  static constexpr int QK = 256, BYTES = 110, C = 4;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int j) {
    const __m256i lo = and8(srl16(load32(b + 32 + 32 * (j / 4)), 2 * (j % 4)), 3);
    const __m256i hi = _mm256_slli_epi16(and8(srl16(load32(b), j), 1), 2);
    return _mm256_or_si256(lo, hi);
  }
  static void factors(const uint8_t* b, float* S, float* M) { k_factors<kQ3_K, C>(b, S, M); }
};
template <>
struct Dec<kQ4_K> {
  static constexpr int QK = 256, BYTES = 144, C = 0;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int j) { return and8(srl16(load32(b + 16 + 32 * (j / 2)), 4 * (j % 2)), 15); }
  static void factors(const uint8_t* b, float* S, float* M) { k_factors<kQ4_K, C>(b, S, M); }
};
template <>
struct Dec<kQ5_K> {
  static constexpr int QK = 256, BYTES = 176, C = 0;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int j) {
    const __m256i lo = and8(srl16(load32(b + 48 + 32 * (j / 2)), 4 * (j % 2)), 15);
    const __m256i hi = _mm256_slli_epi16(and8(srl16(load32(b + 16), j), 1), 4);
    return _mm256_or_si256(lo, hi);
  }
  static void factors(const uint8_t* b, float* S, float* M) { k_factors<kQ5_K, C>(b, S, M); }
};
template <>
struct Dec<kQ6_K> {
  static constexpr int QK = 256, BYTES = 210, C = 32;
  static constexpr bool SIGNED = false;
  static __m256i lanes(const uint8_t* b, int j) {
    const int h = j / 4, jj = j % 4;
    const __m256i lo = and8(srl16(load32(b + 64 * h + 32 * (jj % 2)), 4 * (jj / 2)), 15);
    const __m256i hi = _mm256_slli_epi16(and8(srl16(load32(b + 128 + 32 * h), 2 * jj), 3), 4);
    return _mm256_or_si256(lo, hi);
  }
  static void factors(const uint8_t* b, float* S, float* M) { k_factors<kQ6_K, C>(b, S, M); }
};
template <>
struct Dec<kIQ4_XS> {
  static constexpr int QK = 256, BYTES = 136, C = kVnni ? 128 : 0;
  static constexpr bool SIGNED = !kVnni;
  static __m256i lanes(const uint8_t* b, int j) { return iq4_lanes(b + 8 + 16 * j, kVnni); }
  static void factors(const uint8_t* b, float* S, float* M) { k_factors<kIQ4_XS, C>(b, S, M); }
};

// Row r of w -> lanes u[cols], S[cols / 16], M'[cols / 16]; prefetches >= 8 KiB ahead (whole rows).
template <uint32_t T>
inline void decode_row(const QWeights& w, int64_t r, uint8_t* u, float* S, float* M) {
  using D = Dec<T>;
  const int64_t nblk = w.cols / D::QK;
  const uint8_t* row = w.q + r * w.row_bytes;
  const uint8_t* pf = decode_prefetch_base(row, w.row_bytes);
  int64_t next_pf = 0;
  for (int64_t k = 0; k < nblk; ++k) {
    const uint8_t* b = row + k * D::BYTES;
    for (; next_pf < (k + 1) * D::BYTES; next_pf += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + next_pf), _MM_HINT_T0);
#pragma GCC unroll 8
    for (int j = 0; j < D::QK / 32; ++j)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + k * D::QK + 32 * j), D::lanes(b, j));
    D::factors(b, S + k * (D::QK / 16), M + k * (D::QK / 16));
  }
}

// 8 lanes of int32 partial dots of a block (lanes 0-3: half 0, 4-7: half 1).
template <bool SIGNED>
inline __m256i bdot(__m256i w, __m256i a) {
  if constexpr (SIGNED) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w)), _mm256_set1_epi16(1));
  } else {
#if defined(LMP_QX86_VNNI)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
#endif
  }
}

// R decoded rows x T tokens: out[i][j] = sum_b dot * S * d (the offset term comes after).
template <int R, int T, bool SIGNED>
inline void dot_tile(int64_t nb, const uint8_t* const* u, const float* const* S, const int8_t* const* a,
                     const float* const* d, int64_t dstride, float (&out)[R][T]) {
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i av[T];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) av[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[j] + b * kQBlock));
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u[i] + b * kQBlock));
      const __m256 F = bcast2(S[i] + 2 * b, S[i] + 2 * b + 1);
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        const __m256 p = _mm256_cvtepi32_ps(bdot<SIGNED>(w, av[j]));
        acc[i][j] = _mm256_fmadd_ps(p, _mm256_mul_ps(F, _mm256_broadcast_ss(d[j] + b * dstride)), acc[i][j]);
      }
    }
  }
  tile_store<R, T>(acc, out);
}

// ---- decode (<= 3 tokens): fused, no buffers ------------------------------------------------------
// A step is 256 weights: 8 consecutive 32-weight blocks of a legacy type, or one super-block.
// step_factors: the step's 16 per-half scales S and offsets M' (M + C S) as two vectors each
// (halves 0-7, 8-15); k = blocks in a partial legacy step (the row's last, k < 8: the rest zero).
inline __m256 dup_lo(__m256 v) { return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)); }
inline __m256 dup_hi(__m256 v) { return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7)); }
inline uint16_t ld16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}
// f16 fields at p + off + k * stride of blocks 0..n-1 (n <= 8; missing lanes 0) as f32.
// (built in registers: eight 2-byte stores then a 16-byte load would stall store forwarding)
template <int STRIDE>
inline __m256 gather_f16(const uint8_t* p, int n) {
  if (n == 8) {
    auto q = [&](int k) {
      return uint64_t(ld16(p + k * STRIDE)) | uint64_t(ld16(p + (k + 1) * STRIDE)) << 16 |
             uint64_t(ld16(p + (k + 2) * STRIDE)) << 32 | uint64_t(ld16(p + (k + 3) * STRIDE)) << 48;
    };
    return _mm256_cvtph_ps(_mm_set_epi64x(int64_t(q(4)), int64_t(q(0))));
  }
  uint64_t lo = 0, hi = 0;
  for (int k = 0; k < n; ++k) (k < 4 ? lo : hi) |= uint64_t(ld16(p + k * STRIDE)) << (16 * (k % 4));
  return _mm256_cvtph_ps(_mm_set_epi64x(int64_t(hi), int64_t(lo)));
}
// Per-block f32 values (8 lanes) -> per-half vectors.
inline void halves(__m256 v8, __m256* out) { out[0] = dup_lo(v8), out[1] = dup_hi(v8); }

template <uint32_t T>
inline void step_factors(const uint8_t* p, int k, __m256* S, __m256* M) {
  using D = Dec<T>;
  constexpr float C = float(D::C);
  if constexpr (D::QK == 32) {
    halves(gather_f16<D::BYTES>(p, k), S);
    if constexpr (T == kQ4_1 || T == kQ5_1) {
      halves(_mm256_sub_ps(_mm256_setzero_ps(), gather_f16<D::BYTES>(p + 2, k)), M);
    } else {
      M[0] = _mm256_mul_ps(_mm256_set1_ps(C), S[0]);
      M[1] = _mm256_mul_ps(_mm256_set1_ps(C), S[1]);
    }
  } else if constexpr (T == kQ4_K || T == kQ5_K) {
    // 6-bit scales / mins from three u32 words (ggml_blocks.h k4_scale_min, 4 at a time)
    uint32_t w[3];
    std::memcpy(w, p + 4, 12);
    const uint32_t sc_lo = w[0] & 0x3f3f3f3f, m_lo = w[1] & 0x3f3f3f3f;
    const uint32_t sc_hi = (w[2] & 0x0f0f0f0f) | ((w[0] >> 2) & 0x30303030);
    const uint32_t m_hi = ((w[2] >> 4) & 0x0f0f0f0f) | ((w[1] >> 2) & 0x30303030);
    const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_setr_epi32(int(sc_lo), int(sc_hi), 0, 0)));
    const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_setr_epi32(int(m_lo), int(m_hi), 0, 0)));
    halves(_mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(ld16(p))), sc), S);
    halves(_mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(ld16(p + 2))), m), M);
  } else if constexpr (T == kQ6_K) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(ld16(p + 208)));
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192));
    S[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
    S[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
    M[0] = _mm256_mul_ps(_mm256_set1_ps(C), S[0]);
    M[1] = _mm256_mul_ps(_mm256_set1_ps(C), S[1]);
  } else if constexpr (T == kQ3_K) {
    // 16 6-bit scales: low nibbles from bytes 0..7, 2-bit tops from bytes 8..11 (q3k_scale)
    uint32_t w[3];
    std::memcpy(w, p + 96, 12);
    const uint32_t s0 = (w[0] & 0x0f0f0f0f) | ((w[2] & 0x03030303) << 4);
    const uint32_t s1 = (w[1] & 0x0f0f0f0f) | (((w[2] >> 2) & 0x03030303) << 4);
    const uint32_t s2 = ((w[0] >> 4) & 0x0f0f0f0f) | (((w[2] >> 4) & 0x03030303) << 4);
    const uint32_t s3 = ((w[1] >> 4) & 0x0f0f0f0f) | (((w[2] >> 6) & 0x03030303) << 4);
    const __m128i s = _mm_sub_epi8(_mm_setr_epi32(int(s0), int(s1), int(s2), int(s3)), _mm_set1_epi8(32));
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(ld16(p + 108)));
    S[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s)));
    S[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s, 8))));
    M[0] = _mm256_mul_ps(_mm256_set1_ps(C), S[0]);
    M[1] = _mm256_mul_ps(_mm256_set1_ps(C), S[1]);
  } else if constexpr (T == kQ2_K) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i sc = _mm_and_si128(x, _mm_set1_epi8(15)), m = _mm_and_si128(_mm_srli_epi16(x, 4), _mm_set1_epi8(15));
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(ld16(p + 80))), dm = _mm256_set1_ps(_cvtsh_ss(ld16(p + 82)));
    S[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sc)));
    S[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sc, 8))));
    M[0] = _mm256_mul_ps(dm, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m)));
    M[1] = _mm256_mul_ps(dm, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(m, 8))));
  } else {  // kIQ4_XS: nibble j % 2 of scales_l[j / 2], bits 2j of scales_h on top, minus 32
    uint32_t l;
    std::memcpy(&l, p + 4, 4);
    const __m128i lv = _mm_cvtsi32_si128(int(l));
    const __m128i lo = _mm_unpacklo_epi8(_mm_and_si128(lv, _mm_set1_epi8(15)), _mm_and_si128(_mm_srli_epi16(lv, 4), _mm_set1_epi8(15)));
    const uint64_t hi = _pdep_u64(ld16(p + 2), 0x0303030303030303ull);
    const __m128i s = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(_mm_cvtsi64_si128(int64_t(hi)), 4)), _mm_set1_epi8(32));
    halves(_mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(ld16(p))), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s))), S);
    M[0] = _mm256_mul_ps(_mm256_set1_ps(C), S[0]);
    M[1] = _mm256_mul_ps(_mm256_set1_ps(C), S[1]);
  }
}

// Lanes of sub-block j of a step starting at p.
template <uint32_t T>
inline __m256i step_lanes(const uint8_t* p, int j) {
  using D = Dec<T>;
  if constexpr (D::QK == 32) return D::lanes(p + j * D::BYTES, 0);
  else return D::lanes(p, j);
}

// One row, NT tokens (d: per token contiguous block scales, X: per token per-half X), in steps of 8
// blocks: `step.factors(s, k, S, M)` gives step s's per-half factors (k = its blocks, < 8 only in a
// row's last step: the rest zero), `step.lanes(s, j)` the lanes of its block j.
template <int NT, bool SIGNED, class Step>
inline void fused_row(int64_t nb, const Step& step, const int8_t* const* a, const float* const* d,
                      const float* const* X, float* out) {
  const int64_t nsteps = (nb + 7) / 8;
  __m256 acc[NT], accm[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps(), accm[t] = _mm256_setzero_ps();
  for (int64_t s = 0; s < nsteps; ++s) {
    const int k = int(std::min<int64_t>(8, nb - 8 * s));
    __m256 S[2], M[2];
    step.factors(s, k, S, M);
    __m256 SD[NT][2];
    alignas(32) float dt[8], xt[16];
    for (int t = 0; t < NT; ++t) {
      __m256 dd, x0, x1;
      if (k == 8) {
        dd = _mm256_loadu_ps(d[t] + 8 * s);
        x0 = _mm256_loadu_ps(X[t] + 16 * s);
        x1 = _mm256_loadu_ps(X[t] + 16 * s + 8);
      } else {
        for (int i = 0; i < 8; ++i) dt[i] = i < k ? d[t][8 * s + i] : 0.f;
        for (int i = 0; i < 16; ++i) xt[i] = i < 2 * k ? X[t][16 * s + i] : 0.f;
        dd = _mm256_load_ps(dt), x0 = _mm256_load_ps(xt), x1 = _mm256_load_ps(xt + 8);
      }
      SD[t][0] = _mm256_mul_ps(S[0], dup_lo(dd));
      SD[t][1] = _mm256_mul_ps(S[1], dup_hi(dd));
      accm[t] = _mm256_fmadd_ps(M[0], x0, accm[t]);
      accm[t] = _mm256_fmadd_ps(M[1], x1, accm[t]);
    }
    auto sub = [&](int j) {
      const __m256i wv = step.lanes(s, j);
      const __m256i idx = _mm256_setr_epi32(2 * (j % 4), 2 * (j % 4), 2 * (j % 4), 2 * (j % 4), 2 * (j % 4) + 1,
                                            2 * (j % 4) + 1, 2 * (j % 4) + 1, 2 * (j % 4) + 1);
      for (int t = 0; t < NT; ++t) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t] + (8 * s + j) * kQBlock));
        const __m256 pr = _mm256_cvtepi32_ps(bdot<SIGNED>(wv, av));
        acc[t] = _mm256_fmadd_ps(pr, _mm256_permutevar8x32_ps(SD[t][j / 4], idx), acc[t]);
      }
    };
    if (k == 8) {
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) sub(j);
    } else {
      for (int j = 0; j < k; ++j) sub(j);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) - hsum(accm[t]);
}

// A ggml row as fused_row's steps (256 weights: 8 legacy blocks or one super-block), prefetching
// the next row.
template <uint32_t T>
struct GgmlStep {
  static constexpr int STEP_BYTES = Dec<T>::QK == 32 ? 8 * Dec<T>::BYTES : Dec<T>::BYTES;
  const uint8_t* row;
  const uint8_t* pf;
  void factors(int64_t s, int k, __m256* S, __m256* M) const {
    for (int l = 0; l < STEP_BYTES; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + s * STEP_BYTES + l), _MM_HINT_T0);
    step_factors<T>(row + s * STEP_BYTES, k, S, M);
  }
  __m256i lanes(int64_t s, int j) const { return step_lanes<T>(row + s * STEP_BYTES, j); }
};

// The ggml family for half_rows_gemm below.
template <uint32_t T>
struct GgmlRows {
  static constexpr bool SIGNED = Dec<T>::SIGNED;
  static void decode(const QWeights& w, int64_t r, uint8_t* u, float* S, float* M) { decode_row<T>(w, r, u, S, M); }
  template <int NT>
  static void fused(const QWeights& w, int64_t r, const int8_t* const* a, const float* const* d, const float* const* X,
                    float* out) {
    const uint8_t* row = w.q + r * w.row_bytes;
    fused_row<NT, SIGNED>(w.nb, GgmlStep<T>{row, row + w.row_bytes}, a, d, X, out);
  }
};

// Per-thread buffers: R decoded rows.
struct GgmlScratch {
  std::vector<uint8_t> u;
  std::vector<float> S, M;
};
inline GgmlScratch& ggml_scratch() {
  thread_local GgmlScratch s;
  return s;
}

// Prefill tiles of half_rows_gemm: AVX2 2 rows x 4 tokens (8 accumulators of 16 registers), AVX-512
// 4 x 4 (32 registers); token chunks of activations that stay in L2.
struct HalfRowsCfg {
  static constexpr int GR = kVnni ? 4 : 2, GT = 4;
  static constexpr int64_t kChunkBytes = kVnni ? (384 << 10) : (192 << 10);
};

// Rows whose blocks decode to lanes and per-half factors (w = S v - M): Rows gives SIGNED,
// decode(w, r, u, S, M) (a row into lanes u[nb * 32], S, M[2 nb]; prefill) and fused<NT> (decode).
template <class Cfg, class Rows>
void half_rows_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, cols = w.cols, nh = 2 * nb, n = A.a.n;
  constexpr int R = Cfg::GR, TT = Cfg::GT;
  GgmlScratch& Sc = ggml_scratch();
  const int64_t ustride = cols + 64, hstride = nh + 16;
  Sc.u.resize(size_t(R * ustride));
  Sc.S.resize(size_t(R * hstride));
  Sc.M.resize(size_t(R * hstride));
  auto finish = [&](int64_t r, int i, int64_t t, float v) {
    A.y[t * A.ldy + r] = v - dot_f32(Sc.M.data() + i * hstride, A.a.x + t * nh, nh);
  };
  if (t1 - t0 <= 3) {
    // decode: one row at a time (a single sequential stream per thread), fused; the tokens' block
    // scales made contiguous first (QActs::d is token-minor)
    const int64_t nt = t1 - t0;
    if (Sc.S.size() < size_t(3 * (nb + 8))) Sc.S.resize(size_t(3 * (nb + 8)));
    const int8_t* a[3];
    const float* d[3];
    const float* X[3];
    for (int64_t t = 0; t < nt; ++t) {
      float* dt = Sc.S.data() + t * (nb + 8);
      for (int64_t b = 0; b < nb; ++b) dt[b] = A.a.d[b * n + t0 + t];
      a[t] = A.a.qa + (t0 + t) * A.a.a_stride;
      d[t] = dt;
      X[t] = A.a.x + (t0 + t) * nh;
    }
    for (int64_t r = r0; r < r1; ++r) {
      float y[3];
      if (nt == 1) Rows::template fused<1>(w, r, a, d, X, y);
      else if (nt == 2) Rows::template fused<2>(w, r, a, d, X, y);
      else Rows::template fused<3>(w, r, a, d, X, y);
      for (int64_t t = 0; t < nt; ++t) A.y[(t0 + t) * A.ldy + r] = y[t];
    }
    return;
  }
  const int64_t chunk = std::max<int64_t>(TT, (Cfg::kChunkBytes / std::max<int64_t>(cols, 1)) / TT * TT);
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk);
    for (int64_t r = r0; r < r1; r += R) {
      const int nr = int(std::min<int64_t>(R, r1 - r));
      const uint8_t* u[R];
      const float* S[R];
      for (int i = 0; i < R; ++i) {
        const int ii = i < nr ? i : nr - 1;
        if (i < nr) Rows::decode(w, r + i, Sc.u.data() + i * ustride, Sc.S.data() + i * hstride, Sc.M.data() + i * hstride);
        u[i] = Sc.u.data() + ii * ustride;
        S[i] = Sc.S.data() + ii * hstride;
      }
      for (int64_t t = tc; t < tce; t += TT) {
        const int nt = int(std::min<int64_t>(TT, tce - t));
        const int8_t* a[TT];
        const float* d[TT];
        for (int j = 0; j < TT; ++j) {
          const int64_t tj = t + (j < nt ? j : nt - 1);
          a[j] = A.a.qa + tj * A.a.a_stride;
          d[j] = A.a.d + tj;
        }
        float out[R][TT];
        dot_tile<R, TT, Rows::SIGNED>(nb, u, S, a, d, n, out);
        for (int i = 0; i < nr; ++i)
          for (int j = 0; j < nt; ++j) finish(r + i, i, t + j, out[i][j]);
      }
    }
  }
}

}  // namespace gx

template <class Cfg>
void ggml_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  using namespace ggml;
  switch (uint32_t(A.w.bits)) {
    case kQ4_0: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ4_0>>(A, r0, r1, t0, t1);
    case kQ4_1: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ4_1>>(A, r0, r1, t0, t1);
    case kQ5_0: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ5_0>>(A, r0, r1, t0, t1);
    case kQ5_1: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ5_1>>(A, r0, r1, t0, t1);
    case kQ8_0: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ8_0>>(A, r0, r1, t0, t1);
    case kQ2_K: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ2_K>>(A, r0, r1, t0, t1);
    case kQ3_K: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ3_K>>(A, r0, r1, t0, t1);
    case kQ4_K: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ4_K>>(A, r0, r1, t0, t1);
    case kQ5_K: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ5_K>>(A, r0, r1, t0, t1);
    case kQ6_K: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kQ6_K>>(A, r0, r1, t0, t1);
    case kIQ4_NL: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kIQ4_NL>>(A, r0, r1, t0, t1);
    case kIQ4_XS: return gx::half_rows_gemm<Cfg, gx::GgmlRows<kIQ4_XS>>(A, r0, r1, t0, t1);
    default: return ggml_kernels_scalar.gemm(A, r0, r1, t0, t1);
  }
}

// The scalar reference (a function, not the scalar table's pointer: no cross-TU static init order).
inline void ggml_dequant(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  ggml_kernels_scalar.dequant_rows(w, r0, r1, out, ldo);
}

}  // namespace
}  // namespace lmpress::kern
