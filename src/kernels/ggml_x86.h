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
// Decode (n <= 3 tokens): R = 1 row at a time, the next row prefetched while decoding; prefill:
// R rows x T tokens over token chunks that stay in L2. dequant_rows: the scalar reference (used
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

// Row r of w -> lanes u[cols], S[cols / 16], M'[cols / 16]; prefetches the next row.
template <uint32_t T>
inline void decode_row(const QWeights& w, int64_t r, uint8_t* u, float* S, float* M) {
  using D = Dec<T>;
  const int64_t nblk = w.cols / D::QK;
  const uint8_t* row = w.q + r * w.row_bytes;
  const uint8_t* pf = row + w.row_bytes;
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

// Per-thread buffers: R decoded rows.
struct GgmlScratch {
  std::vector<uint8_t> u;
  std::vector<float> S, M;
};
inline GgmlScratch& ggml_scratch() {
  thread_local GgmlScratch s;
  return s;
}

template <class Cfg, uint32_t T>
void gemm_t(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  using D = Dec<T>;
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
    // decode: one row at a time (a single sequential stream per thread)
    for (int64_t r = r0; r < r1; ++r) {
      decode_row<T>(w, r, Sc.u.data(), Sc.S.data(), Sc.M.data());
      const uint8_t* u[1] = {Sc.u.data()};
      const float* S[1] = {Sc.S.data()};
      for (int64_t t = t0; t < t1; ++t) {
        const int8_t* a[1] = {A.a.qa + t * A.a.a_stride};
        const float* d[1] = {A.a.d + t};
        float out[1][1];
        dot_tile<1, 1, D::SIGNED>(nb, u, S, a, d, n, out);
        finish(r, 0, t, out[0][0]);
      }
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
        if (i < nr) decode_row<T>(w, r + i, Sc.u.data() + i * ustride, Sc.S.data() + i * hstride, Sc.M.data() + i * hstride);
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
        dot_tile<R, TT, D::SIGNED>(nb, u, S, a, d, n, out);
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
    case kQ4_0: return gx::gemm_t<Cfg, kQ4_0>(A, r0, r1, t0, t1);
    case kQ4_1: return gx::gemm_t<Cfg, kQ4_1>(A, r0, r1, t0, t1);
    case kQ5_0: return gx::gemm_t<Cfg, kQ5_0>(A, r0, r1, t0, t1);
    case kQ5_1: return gx::gemm_t<Cfg, kQ5_1>(A, r0, r1, t0, t1);
    case kQ8_0: return gx::gemm_t<Cfg, kQ8_0>(A, r0, r1, t0, t1);
    case kQ2_K: return gx::gemm_t<Cfg, kQ2_K>(A, r0, r1, t0, t1);
    case kQ3_K: return gx::gemm_t<Cfg, kQ3_K>(A, r0, r1, t0, t1);
    case kQ4_K: return gx::gemm_t<Cfg, kQ4_K>(A, r0, r1, t0, t1);
    case kQ5_K: return gx::gemm_t<Cfg, kQ5_K>(A, r0, r1, t0, t1);
    case kQ6_K: return gx::gemm_t<Cfg, kQ6_K>(A, r0, r1, t0, t1);
    case kIQ4_NL: return gx::gemm_t<Cfg, kIQ4_NL>(A, r0, r1, t0, t1);
    case kIQ4_XS: return gx::gemm_t<Cfg, kIQ4_XS>(A, r0, r1, t0, t1);
    default: return ggml_kernels_scalar.gemm(A, r0, r1, t0, t1);
  }
}

// The scalar reference (a function, not the scalar table's pointer: no cross-TU static init order).
void ggml_dequant(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  ggml_kernels_scalar.dequant_rows(w, r0, r1, out, ldo);
}

}  // namespace
}  // namespace lmpress::kern
