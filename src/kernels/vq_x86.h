// x86 kernels of the vq family (formats/vq.h), one body for AVX2 and AVX-512 (x86_avx512/vq.cpp
// defines LMP_VQ_AVX512 first for its 512-bit prefill tile). Included only by those two TUs;
// everything is in an anonymous namespace, one copy per TU and its flags. The arithmetic is the
// scalar reference's (generic/vq.cpp) up to f32 summation order.
//
// The codebooks are expanded once to f32 (s * book) in a per-thread cache (checked against the
// tensor's int8 books, so another tensor is never served stale values); a v-float vector is then one
// load, and the codebooks should stay in L1 (v = 4, K = 256: 4 KiB): bigger ones cost L2 latency on
// every lookup (docs/results.md, "VPTQ").
//   decode (<= 3 tokens, one token at a time): per 16-row tile and column, the tile's 16 / v codes
//     from the stream and one FMA per vector: acc_i += x_c * B[idx_i] (v = 4: xmm, v = 8: ymm,
//     v = 2: two vectors per xmm), two or four columns in flight to hide the FMA latency; with a
//     column norm x_c is pre-scaled by colscale_c and sum_c x_c colbias_c is added to every row;
//   prefill: a 16-row tile decoded once into f32 [cols][16] (colscale and colbias applied, the
//     reference's formula), then a register-tiled product with the tokens (AVX-512: 8 tokens x one
//     zmm of 16 rows; AVX2: 4 tokens x two ymm).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/vq_rows.h"

namespace lmpress::kern {
namespace {

inline uint64_t vq_load_u64(const uint8_t* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

// The f32 codebooks of w, per thread, rebuilt when the int8 books or scales differ from the last
// tensor's.
struct VqBookCache {
  std::vector<int8_t> src;
  float s1 = 0.f, s2 = 0.f;
  int bits = 0, bits2 = 0, v = 0;
  std::vector<float> buf;  // the f32 books at a 64-byte aligned start (aligned vector loads)
  float* f = nullptr;
};
inline const float* vq_books(const QWeights& w) {
  thread_local VqBookCache c;
  const int64_t n = vq::books_floats(w);
  if (c.bits != w.bits || c.bits2 != w.vq_bits2 || c.v != w.vq_v || c.s1 != w.vq_s1 || c.s2 != w.vq_s2 ||
      int64_t(c.src.size()) != n || std::memcmp(c.src.data(), w.vq_book, size_t(n)) != 0) {
    c.src.assign(w.vq_book, w.vq_book + n);
    c.buf.resize(size_t(n + 16));
    c.f = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(c.buf.data()) + 63) / 64 * 64);
    vq::expand_books(w, c.f);
    c.s1 = w.vq_s1, c.s2 = w.vq_s2, c.bits = w.bits, c.bits2 = w.vq_bits2, c.v = w.vq_v;
  }
  return c.f;
}

// The T = 16 / V codes of tile-column k0 / T (k0 = its first code's index). CB > 0: the code width
// at compile time, for widths where a tile-column starts on a byte (T * CB a multiple of 8).
template <int V, int CB>
inline void vq_codes(const uint8_t* q, int64_t k0, int cb, uint32_t* out) {
  constexpr int T = vq::kTile / V;
  if constexpr (CB > 0) {
    static_assert(T * CB % 8 == 0);
    const uint8_t* p = q + k0 * CB / 8;
    constexpr uint64_t m = (uint64_t(1) << CB) - 1;
    for (int i = 0; i < T; ++i) out[i] = uint32_t((vq_load_u64(p + i * CB / 8) >> (i * CB % 8)) & m);
  } else {
    for (int i = 0; i < T; ++i) out[i] = vq::code_at(q, k0 + i, cb);
  }
}

// ---- decode: one token, tiles [tile0, tile1), rows [r0, r1) written ------------------------------
// The codes of a tile are a contiguous run of the stream (cols * 16 / v codes). They are turned into
// byte offsets into the f32 codebooks a chunk of columns at a time (SIMD where the width allows),
// so that each vector of the FMA loop costs one offset load and one FMA with a memory operand.
constexpr int kVqChunkCols = 64;

// Byte offsets of codes [k0, k0 + n) (n a multiple of 16 or the tail): off1 = idx1 * 4V, off2 = idx2 * 4V.
template <int V, bool R>
inline void vq_offsets(const uint8_t* q, int64_t k0, int64_t n, int cb, int b1, uint32_t* off1, uint32_t* off2) {
  constexpr int kSh = V == 2 ? 3 : V == 4 ? 4 : 5;  // log2(4 V)
  const uint32_t m1 = (uint32_t(1) << b1) - 1;
  int64_t j = 0;
#ifdef LMP_VQ_AVX512
  if (cb <= 16) {
    // 16 codes per step: the words holding each code gathered by vpermw (AVX512BW) into dword lanes,
    // then a variable shift. Code j of the step starts at bit p_j = rel + j cb from an even byte.
    const __m512i jcb = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(cb));
    const __m512i mask = _mm512_set1_epi32(int((uint32_t(1) << cb) - 1)), vm1 = _mm512_set1_epi32(int(m1));
    const __m512i one = _mm512_set1_epi32(1);
    const __m128i vb1 = _mm_cvtsi32_si128(b1);
    for (; j + 16 <= n; j += 16) {
      const int64_t bit = (k0 + j) * cb;
      const int64_t byte0 = (bit >> 3) & ~int64_t(1);
      const __m512i p = _mm512_add_epi32(jcb, _mm512_set1_epi32(int(bit - 8 * byte0)));
      const __m512i w = _mm512_srli_epi32(p, 4), sh = _mm512_and_si512(p, _mm512_set1_epi32(15));
      const __m512i idx = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_add_epi32(w, one), 16));
      const int nwords = int((bit - 8 * byte0 + 16 * cb) >> 4) + 2;
      const __m512i raw = _mm512_maskz_loadu_epi16(__mmask32((uint64_t(1) << nwords) - 1), q + byte0);
      const __m512i code = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi16(idx, raw), sh), mask);
      _mm512_store_si512(off1 + j, _mm512_slli_epi32(_mm512_and_si512(code, vm1), kSh));
      if constexpr (R) _mm512_store_si512(off2 + j, _mm512_slli_epi32(_mm512_srl_epi32(code, vb1), kSh));
    }
  }
#else
  if (cb == 8 || cb == 16) {  // byte / word codes: zero-extend 8 at a time
    const __m256i vm1 = _mm256_set1_epi32(int(m1));
    const __m128i vb1 = _mm_cvtsi32_si128(b1);
    for (; j + 8 <= n; j += 8) {
      const __m256i code = cb == 8 ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k0 + j)))
                                   : _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 2 * (k0 + j))));
      _mm256_store_si256(reinterpret_cast<__m256i*>(off1 + j), _mm256_slli_epi32(_mm256_and_si256(code, vm1), kSh));
      if constexpr (R)
        _mm256_store_si256(reinterpret_cast<__m256i*>(off2 + j), _mm256_slli_epi32(_mm256_srl_epi32(code, vb1), kSh));
    }
  }
#endif
  for (; j < n; ++j) {
    const uint32_t code = vq::code_at(q, k0 + j, cb);
    off1[j] = (code & m1) << kSh;
    if constexpr (R) off2[j] = (code >> b1) << kSh;
  }
}

// Byte offset of the 8-bit index at bit `pos` of u, scaled by 4V (= 1 << sh): ((u >> pos) & 255) << sh
// (pos and sh are constants once the callers' loops are unrolled).
inline uint64_t vq_boff(uint64_t u, int pos, int sh) {
  return pos >= sh ? (u >> (pos - sh)) & (uint64_t(255) << sh) : (u << (sh - pos)) & (uint64_t(255) << sh);
}
template <int V>
struct VqVec {
  using type = __m128;
};
template <>
struct VqVec<8> {
  using type = __m256;
};

// CB = 8 (one 8-bit stage) or 16 (two 8-bit stages): the codes are read as u64 words (8 or 4 codes
// per load) and the indices taken by constant shifts, so a vector costs one FMA with a memory
// operand and two ALU ops (a microbenchmark on a cache-resident 256 x 2048 vq4k8 tile: 18.5 Gweights/s
// vs 15.4 with the offset arrays below, on this machine's Zen 4 at 2.6 GHz: 4-wide FMAs bound it).
// CB = 0: any other width, through the offset arrays. Columns per iteration CPI: 4 for v = 8
// (4 x 2 ymm chains), 2 otherwise.
template <int V, int CB, bool R>
void vq_gemv(const QWeights& w, const float* B1, const float* B2, const float* xs, float beta, int64_t r0, int64_t r1,
             float* y) {
  constexpr int T = vq::kTile / V;
  constexpr int kSh = V == 2 ? 3 : V == 4 ? 4 : 5;  // log2(4 V)
  constexpr int CPI = V == 8 ? 4 : 2;
  constexpr int NA = V == 2 ? T / 2 : T;            // accumulators per column phase
  using Vec = typename VqVec<V>::type;
  const int64_t cols = w.cols;
  const int cb = w.bits + w.vq_bits2, b1 = w.bits;
  const char* P1 = reinterpret_cast<const char*>(B1);
  const char* P2 = reinterpret_cast<const char*>(B2);
  auto ld = [](const char* p) {
    if constexpr (V == 8) return _mm256_load_ps(reinterpret_cast<const float*>(p));
    else return _mm_load_ps(reinterpret_cast<const float*>(p));
  };
  auto ld2 = [](const char* lo, const char* hi) {  // v = 2: two vectors in one xmm
    const __m128 l = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(lo)));
    return _mm_loadh_pi(l, reinterpret_cast<const __m64*>(hi));
  };
  auto fma = [](Vec x, Vec a, Vec acc) {
    if constexpr (V == 8) return _mm256_fmadd_ps(x, a, acc);
    else return _mm_fmadd_ps(x, a, acc);
  };
  auto bcast = [](float f) {
    if constexpr (V == 8) return _mm256_set1_ps(f);
    else return _mm_set1_ps(f);
  };
  // Adds column x * (the T vectors at byte offsets o1[i] (+ o2[i])) into accumulators acc.
  auto add_col = [&](Vec* acc, float x, const uint64_t* o1, const uint64_t* o2) {
    const Vec xv = bcast(x);
    for (int i = 0; i < NA; ++i) {
      if constexpr (V == 2) {
        acc[i] = fma(xv, ld2(P1 + o1[2 * i], P1 + o1[2 * i + 1]), acc[i]);
        if constexpr (R) acc[i] = fma(xv, ld2(P2 + o2[2 * i], P2 + o2[2 * i + 1]), acc[i]);
      } else {
        acc[i] = fma(xv, ld(P1 + o1[i]), acc[i]);
        if constexpr (R) acc[i] = fma(xv, ld(P2 + o2[i]), acc[i]);
      }
    }
  };
  alignas(64) uint32_t off1[kVqChunkCols * T], off2[R ? kVqChunkCols * T : 16];
  const int64_t tile0 = r0 / vq::kTile, tile1 = (r1 + vq::kTile - 1) / vq::kTile;
  for (int64_t tile = tile0; tile < tile1; ++tile) {
    Vec a[CPI][NA];
    for (auto& p : a)
      for (auto& q : p) q = Vec{};
    const int64_t kt = tile * cols * T;
    int64_t c = 0;
    if constexpr (CB == 8 || CB == 16) {
      constexpr int NW = CPI * T * CB / 64;  // u64 words per iteration
      static_assert(NW >= 1 && CPI * T * CB % 64 == 0);
      const uint8_t* qt = w.q + kt * CB / 8;
      for (; c + CPI <= cols; c += CPI) {
        uint64_t u[NW];
        std::memcpy(u, qt + c * T * CB / 8, sizeof u);
#pragma GCC unroll 4
        for (int ph = 0; ph < CPI; ++ph) {
          uint64_t o1[T], o2[T];
#pragma GCC unroll 8
          for (int i = 0; i < T; ++i) {
            const int bit = (ph * T + i) * CB;
            o1[i] = vq_boff(u[bit / 64], bit % 64, kSh);
            if constexpr (R) o2[i] = vq_boff(u[bit / 64], bit % 64 + 8, kSh);
          }
          add_col(a[ph], xs[c + ph], o1, o2);
        }
      }
    }
    // (CB = 0, or the last columns) offset arrays, a chunk of columns at a time
    for (int64_t c0 = c; c0 < cols; c0 += kVqChunkCols) {
      const int nc = int(std::min<int64_t>(kVqChunkCols, cols - c0));
      vq_offsets<V, R>(w.q, kt + c0 * T, nc * T, cb, b1, off1, off2);
      auto col = [&](Vec* acc, int k) {
        uint64_t o1[T], o2[T];
        for (int i = 0; i < T; ++i) {
          o1[i] = off1[k * T + i];
          if constexpr (R) o2[i] = off2[k * T + i];
        }
        add_col(acc, xs[c0 + k], o1, o2);
      };
      int k = 0;
      for (; k + CPI <= nc; k += CPI)  // (constant accumulator indices: they stay in registers)
#pragma GCC unroll 4
        for (int ph = 0; ph < CPI; ++ph) col(a[ph], k + ph);
      for (; k < nc; ++k) col(a[0], k);
    }
    alignas(64) float out[vq::kTile];
    for (int i = 0; i < NA; ++i) {
      if constexpr (V == 8)
        _mm256_store_ps(out + 8 * i, _mm256_add_ps(_mm256_add_ps(a[0][i], a[1][i]), _mm256_add_ps(a[2][i], a[3][i])));
      else
        _mm_store_ps(out + 4 * i, _mm_add_ps(a[0][i], a[1][i]));
    }
    const int64_t lo = std::max(r0, tile * vq::kTile), hi = std::min(r1, tile * vq::kTile + vq::kTile);
    for (int64_t r = lo; r < hi; ++r) y[r] = out[r - tile * vq::kTile] + beta;
  }
}

// ---- a tile decoded to f32 [cols][16] (the reference's formula, colscale / colbias applied) -----
template <int V, int CB, bool R>
void vq_decode_tile(const QWeights& w, const float* B1, const float* B2, const float* cs, const float* cbias,
                    int64_t tile, float* out) {
  constexpr int T = vq::kTile / V;
  const int cb = w.bits + w.vq_bits2, b1 = w.bits;
  const uint32_t m1 = (uint32_t(1) << w.bits) - 1;
  const int64_t kt = tile * w.cols * T;
  uint32_t code[T];
  for (int64_t c = 0; c < w.cols; ++c) {
    vq_codes<V, CB>(w.q, kt + c * T, cb, code);
    float* o = out + c * vq::kTile;
    for (int i = 0; i < T; ++i) {
      const float* p1 = B1 + (code[i] & m1) * V;
      if constexpr (R) {
        const float* p2 = B2 + (code[i] >> b1) * V;
        for (int l = 0; l < V; ++l) o[i * V + l] = p1[l] + p2[l];
      } else {
        for (int l = 0; l < V; ++l) o[i * V + l] = p1[l];
      }
    }
    if (cs) {
      const __m256 s = _mm256_set1_ps(cs[c]), b = _mm256_set1_ps(cbias[c]);
      for (int h = 0; h < 2; ++h)
        _mm256_storeu_ps(o + 8 * h, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(o + 8 * h), s), b));
    }
  }
}

// The tile's rows times tokens [t0, t1): y[t][r] for r in [r0, r1) of the tile.
template <int NT>
inline void vq_tile_tokens(const float* wt, int64_t cols, const float* x, int64_t t, float* y, int64_t ldy,
                           int64_t row0, int64_t lo, int64_t hi) {
#ifdef LMP_VQ_AVX512
  __m512 a[NT];
  for (auto& v : a) v = _mm512_setzero_ps();
  for (int64_t c = 0; c < cols; ++c) {
    const __m512 wv = _mm512_load_ps(wt + c * vq::kTile);
    for (int k = 0; k < NT; ++k) a[k] = _mm512_fmadd_ps(_mm512_set1_ps(x[(t + k) * cols + c]), wv, a[k]);
  }
  const __mmask16 m = __mmask16(((1u << (hi - lo)) - 1) << (lo - row0));
  for (int k = 0; k < NT; ++k) _mm512_mask_storeu_ps(y + (t + k) * ldy + row0, m, a[k]);
#else
  __m256 a[NT][2];
  for (auto& v : a) v[0] = v[1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < cols; ++c) {
    const __m256 w0 = _mm256_load_ps(wt + c * vq::kTile), w1 = _mm256_load_ps(wt + c * vq::kTile + 8);
    for (int k = 0; k < NT; ++k) {
      const __m256 xv = _mm256_set1_ps(x[(t + k) * cols + c]);
      a[k][0] = _mm256_fmadd_ps(xv, w0, a[k][0]);
      a[k][1] = _mm256_fmadd_ps(xv, w1, a[k][1]);
    }
  }
  for (int k = 0; k < NT; ++k) {
    alignas(32) float o[vq::kTile];
    _mm256_store_ps(o, a[k][0]);
    _mm256_store_ps(o + 8, a[k][1]);
    for (int64_t r = lo; r < hi; ++r) y[(t + k) * ldy + r] = o[r - row0];
  }
#endif
}

#ifdef LMP_VQ_AVX512
constexpr int kVqNT = 8;
#else
constexpr int kVqNT = 4;
#endif

// Per-thread buffers: the decoded tile (64-byte aligned), the column norm in f32, scaled activations.
struct VqBuffers {
  std::vector<float> tile, cs, cbias, xs;
  float* tile_ptr(int64_t cols) {
    tile.resize(size_t(cols * vq::kTile + 16));
    const uintptr_t p = reinterpret_cast<uintptr_t>(tile.data());
    return reinterpret_cast<float*>((p + 63) / 64 * 64);
  }
};
inline VqBuffers& vq_buffers() {
  thread_local VqBuffers b;
  return b;
}

template <int V, int CB, bool R>
void vq_gemm_impl(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t cols = w.cols;
  const float* B1 = vq_books(w);
  const float* B2 = B1 + (int64_t(1) << w.bits) * V;
  VqBuffers& buf = vq_buffers();
  const float *cs = nullptr, *cbias = nullptr;
  if (w.col_scale) {
    buf.cs.resize(size_t(cols));
    buf.cbias.resize(size_t(cols));
    for (int64_t c = 0; c < cols; ++c) buf.cs[size_t(c)] = f16_to_f32(w.col_scale[c]), buf.cbias[size_t(c)] = f16_to_f32(w.col_bias[c]);
    cs = buf.cs.data();
    cbias = buf.cbias.data();
  }
  if (t1 - t0 <= 3) {  // decode
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = A.a.xf + t * cols;
      const float* xs = x;
      float beta = 0.f;
      if (cs) {
        buf.xs.resize(size_t(cols));
        for (int64_t c = 0; c < cols; ++c) buf.xs[size_t(c)] = x[c] * cs[c], beta += x[c] * cbias[c];
        xs = buf.xs.data();
      }
      // the u64-word path needs whole 8-bit indices: vq<v>k8, vq<v>k8r8
      if constexpr (CB == 8 && !R) vq_gemv<V, 8, R>(w, B1, B2, xs, beta, r0, r1, A.y + t * A.ldy);
      else if constexpr (CB == 16 && R) {
        if (w.bits == 8) vq_gemv<V, 16, R>(w, B1, B2, xs, beta, r0, r1, A.y + t * A.ldy);
        else vq_gemv<V, 0, R>(w, B1, B2, xs, beta, r0, r1, A.y + t * A.ldy);
      } else {
        vq_gemv<V, 0, R>(w, B1, B2, xs, beta, r0, r1, A.y + t * A.ldy);
      }
    }
    return;
  }
  float* wt = buf.tile_ptr(cols);
  for (int64_t tile = r0 / vq::kTile; tile * vq::kTile < r1; ++tile) {
    vq_decode_tile<V, CB, R>(w, B1, B2, cs, cbias, tile, wt);
    const int64_t row0 = tile * vq::kTile, lo = std::max(r0, row0), hi = std::min(r1, row0 + vq::kTile);
    int64_t t = t0;
    for (; t + kVqNT <= t1; t += kVqNT) vq_tile_tokens<kVqNT>(wt, cols, A.a.xf, t, A.y, A.ldy, row0, lo, hi);
    for (; t < t1; ++t) vq_tile_tokens<1>(wt, cols, A.a.xf, t, A.y, A.ldy, row0, lo, hi);
  }
}

template <int V, int CB, bool R>
void vq_dequant_impl(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  const int64_t cols = w.cols;
  const float* B1 = vq_books(w);
  const float* B2 = B1 + (int64_t(1) << w.bits) * V;
  VqBuffers& buf = vq_buffers();
  const float *cs = nullptr, *cbias = nullptr;
  if (w.col_scale) {
    buf.cs.resize(size_t(cols));
    buf.cbias.resize(size_t(cols));
    for (int64_t c = 0; c < cols; ++c) buf.cs[size_t(c)] = f16_to_f32(w.col_scale[c]), buf.cbias[size_t(c)] = f16_to_f32(w.col_bias[c]);
    cs = buf.cs.data();
    cbias = buf.cbias.data();
  }
  float* wt = buf.tile_ptr(cols);
  for (int64_t tile = r0 / vq::kTile; tile * vq::kTile < r1; ++tile) {
    vq_decode_tile<V, CB, R>(w, B1, B2, cs, cbias, tile, wt);
    const int64_t row0 = tile * vq::kTile, lo = std::max(r0, row0), hi = std::min(r1, row0 + vq::kTile);
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t c = 0; c < cols; ++c) out[(r - r0) * ldo + c] = wt[c * vq::kTile + (r - row0)];
  }
}

// Dispatch on (v, code width, residual): widths 8, 12 and 16 at compile time where a tile-column
// starts on a byte, any other width through the generic extraction.
using VqGemmFn = void (*)(const QGemmArgs&, int64_t, int64_t, int64_t, int64_t);
using VqDequantFn = void (*)(const QWeights&, int64_t, int64_t, float*, int64_t);

template <int V, bool R>
void vq_pick(int cb, VqGemmFn* g, VqDequantFn* d) {
  switch (cb) {
    case 8: *g = vq_gemm_impl<V, 8, R>, *d = vq_dequant_impl<V, 8, R>; return;
    case 12:
      if constexpr ((vq::kTile / V) * 12 % 8 == 0) {
        *g = vq_gemm_impl<V, 12, R>, *d = vq_dequant_impl<V, 12, R>;
        return;
      }
      break;
    case 16: *g = vq_gemm_impl<V, 16, R>, *d = vq_dequant_impl<V, 16, R>; return;
    default: break;
  }
  *g = vq_gemm_impl<V, 0, R>, *d = vq_dequant_impl<V, 0, R>;
}

void vq_pick_all(const QWeights& w, VqGemmFn* g, VqDequantFn* d) {
  const int cb = w.bits + w.vq_bits2;
  const bool r = w.vq_bits2 != 0;
  switch (w.vq_v) {
    case 2: r ? vq_pick<2, true>(cb, g, d) : vq_pick<2, false>(cb, g, d); break;
    case 4: r ? vq_pick<4, true>(cb, g, d) : vq_pick<4, false>(cb, g, d); break;
    default: r ? vq_pick<8, true>(cb, g, d) : vq_pick<8, false>(cb, g, d); break;
  }
}

void vq_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  VqGemmFn g;
  VqDequantFn d;
  vq_pick_all(A.w, &g, &d);
  g(A, r0, r1, t0, t1);
}

void vq_dequant(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  VqGemmFn g;
  VqDequantFn d;
  vq_pick_all(w, &g, &d);
  d(w, r0, r1, out, ldo);
}

}  // namespace
}  // namespace lmpress::kern
