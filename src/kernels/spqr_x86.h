// x86 kernels of the spqr family, one body for two ISA levels (like kernels/ggml_x86.h, whose
// half-factor row machinery they share). Included ONLY by x86_avx2/spqr.cpp and
// x86_avx512/spqr.cpp (the latter defines LMP_QX86_VNNI first); anonymous namespace, one copy per
// TU.
//
// A row is its b-bit code blocks (the int family's layouts: unpack<BITS>) and, per group of 16, 32
// or 64 columns, a scale s and offset m = s z decoded from the row's 6-bit statistic codes and its
// row group's second-level statistics: 8 groups per step (one u64 load, two variable shifts, four
// 8 x f16 loads, vcvtph2ps, two products, two sums and the product s z), a scalar tail
// (kernels/spqr_rows.h). The row's factors are decoded once into a small L1 buffer (2 floats per 16
// columns), then:
//  - decode (<= 3 tokens): ggml's fused row loop (gx::fused_row), steps of 8 blocks, the next row
//    prefetched;
//  - prefill: ggml's R rows x T tokens integer-dot tiles over decoded rows (gx::half_rows_gemm).
// The codes are unsigned (< 16), so maddubs / dpbusd dot them directly; the zero point is the
// offset term sum_h M[h] X[h]. dequant_rows: the scalar reference.
#pragma once
#include "kernels/ggml_x86.h"
#include "kernels/spqr_rows.h"

namespace lmpress::kern {
namespace {

namespace sx {

// 8 per-group values -> their HPG halves each, at out[0 .. 8 HPG).
template <int HPG>
inline void store_halves(float* out, __m256 v) {
  if constexpr (HPG == 1) {
    _mm256_storeu_ps(out, v);
  } else if constexpr (HPG == 2) {
    _mm256_storeu_ps(out, gx::dup_lo(v));
    _mm256_storeu_ps(out + 8, gx::dup_hi(v));
  } else {
    for (int q = 0; q < 4; ++q) {
      const __m256i idx = _mm256_setr_epi32(2 * q, 2 * q, 2 * q, 2 * q, 2 * q + 1, 2 * q + 1, 2 * q + 1, 2 * q + 1);
      _mm256_storeu_ps(out + 8 * q, _mm256_permutevar8x32_ps(v, idx));
    }
  }
}

inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Row r's per-half factors S, M (spqr_row_factors) for halves [0, fill_to) (0 past the groups;
// fill_to >= 2 nb; S and M hold at least max(fill_to, groups * HPG) floats).
template <int HPG>
inline void row_factors(const QWeights& w, int64_t r, float* S, float* M, int64_t fill_to) {
  const int64_t G = w.groups;
  const uint8_t* st = spqr::stat_codes(w, r);
  const uint16_t* p = spqr::stats2_of(w, r);
  int64_t g = 0;
  // Full steps of 8 groups: bytes 6k .. 6k + 5 of the codes (the u64 load reads 2 more: the next
  // row's codes or the second-level statistics after the last row, never past the tensor).
  for (; g + 8 <= G; g += 8) {
    uint64_t x;
    std::memcpy(&x, st + 6 * (g / 8), 8);
    const int lo = int(x & 0xffffff), hi = int((x >> 24) & 0xffffff);
    const __m256i f = _mm256_and_si256(_mm256_srlv_epi32(_mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi),
                                                         _mm256_setr_epi32(0, 6, 12, 18, 0, 6, 12, 18)),
                                       _mm256_set1_epi32(63));
    const __m256 cs = _mm256_cvtepi32_ps(_mm256_and_si256(f, _mm256_set1_epi32(7)));
    const __m256 cz = _mm256_cvtepi32_ps(_mm256_srli_epi32(f, 3));
    const __m256 s = _mm256_add_ps(load_f16x8(p + G + g), _mm256_mul_ps(load_f16x8(p + g), cs));
    const __m256 z = _mm256_add_ps(load_f16x8(p + 3 * G + g), _mm256_mul_ps(load_f16x8(p + 2 * G + g), cz));
    store_halves<HPG>(S + g * HPG, s);
    store_halves<HPG>(M + g * HPG, _mm256_mul_ps(s, z));
  }
  for (; g < G; ++g) {
    float s, m;
    spqr::group_factors(p, G, g, spqr::stat_code(st, G, g), &s, &m);
    for (int h = 0; h < HPG; ++h) S[g * HPG + h] = s, M[g * HPG + h] = m;
  }
  for (int64_t h = G * HPG; h < fill_to; ++h) S[h] = M[h] = 0.f;
}

// fused_row's steps over a decoded row's factors.
template <int BITS>
struct SpqrStep {
  static constexpr int BPB = qblock_bytes(BITS), STEP_BYTES = 8 * BPB;
  const uint8_t* row;
  const uint8_t* pf;
  const float* S;
  const float* M;
  void factors(int64_t s, int, __m256* Sv, __m256* Mv) const {
    for (int l = 0; l < STEP_BYTES; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + s * STEP_BYTES + l), _MM_HINT_T0);
    Sv[0] = _mm256_loadu_ps(S + 16 * s), Sv[1] = _mm256_loadu_ps(S + 16 * s + 8);
    Mv[0] = _mm256_loadu_ps(M + 16 * s), Mv[1] = _mm256_loadu_ps(M + 16 * s + 8);
  }
  __m256i lanes(int64_t s, int j) const { return unpack<BITS>(row + (8 * s + j) * BPB); }
};

// The spqr family for gx::half_rows_gemm: BITS-bit codes, groups of 16 HPG columns.
template <int BITS, int HPG>
struct SpqrRows {
  static constexpr bool SIGNED = false;
  static void decode(const QWeights& w, int64_t r, uint8_t* u, float* S, float* M) {
    const uint8_t* row = w.q + r * w.row_bytes;
    for (int64_t b = 0; b < w.nb; ++b)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + b * kQBlock), unpack<BITS>(row + b * qblock_bytes(BITS)));
    row_factors<HPG>(w, r, S, M, 2 * w.nb);
  }
  template <int NT>
  static void fused(const QWeights& w, int64_t r, const int8_t* const* a, const float* const* d, const float* const* X,
                    float* out) {
    thread_local std::vector<float> buf;
    const int64_t len = (std::max(2 * w.nb, w.groups * HPG) + 15) / 16 * 16;
    if (buf.size() < size_t(2 * len)) buf.resize(size_t(2 * len));
    float* S = buf.data();
    float* M = buf.data() + len;
    row_factors<HPG>(w, r, S, M, len);
    const uint8_t* row = w.q + r * w.row_bytes;
    gx::fused_row<NT, SIGNED>(w.nb, SpqrStep<BITS>{row, row + w.row_bytes, S, M}, a, d, X, out);
  }
};

template <class Cfg, int BITS>
void gemm_bits(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  switch (A.w.group) {
    case 16: return gx::half_rows_gemm<Cfg, SpqrRows<BITS, 1>>(A, r0, r1, t0, t1);
    case 32: return gx::half_rows_gemm<Cfg, SpqrRows<BITS, 2>>(A, r0, r1, t0, t1);
    default: return gx::half_rows_gemm<Cfg, SpqrRows<BITS, 4>>(A, r0, r1, t0, t1);
  }
}

}  // namespace sx

template <class Cfg>
void spqr_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  switch (A.w.bits) {
    case 2: return sx::gemm_bits<Cfg, 2>(A, r0, r1, t0, t1);
    case 3: return sx::gemm_bits<Cfg, 3>(A, r0, r1, t0, t1);
    default: return sx::gemm_bits<Cfg, 4>(A, r0, r1, t0, t1);
  }
}

// The scalar reference (called at run time, not copied at static init: no cross-TU order).
inline void spqr_dequant(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  spqr_kernels_scalar.dequant_rows(w, r0, r1, out, ldo);
}

}  // namespace
}  // namespace lmpress::kern
