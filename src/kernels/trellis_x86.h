// x86 kernels of the trellis family (formats/trellis.h, kernels/trellis_rows.h), one body for AVX2
// and AVX-512 (x86_avx512/trellis.cpp defines LMP_TRELLIS_AVX512 first). Included only by those two
// TUs; everything is in an anonymous namespace, one copy per TU and its flags. Integer parts are
// exactly the scalar reference's; only the f32 summation order differs.
//
// State extraction: column c of a tile is weights 16 c .. 16 c + 15, whose states start at bit
// 16 k c = byte 2 k c of the tile's stream and span at most 10 bytes. Without VBMI the stream is
// copied once per tile into a buffer followed by its first 16 bytes (the tail-biting wrap), so a
// column is one 16-byte load broadcast to every 128-bit lane, one vpshufb gathering the three bytes
// of each row's state into its 32-bit lane, one variable shift and one mask; with VBMI the columns
// are read in place (below). Then x = (a s + b) & 0x3f3f3f3f and (AVX-512) one vpdpbusd of x's
// bytes against the token's activation replicated into four bytes (the sum of the bytes is
// u = value + 126); AVX2: vpmaddubsw + vpmaddwd on two 8-row halves.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/trellis_rows.h"

namespace lmpress::kern {
namespace {

using namespace trellis;

// The hashed-table code's u = value + 127 per hash, as int32 (the gather paths) and bytes (VBMI).
struct HashU {
  alignas(64) int32_t v[256];
  alignas(64) uint8_t b[256];
  constexpr HashU() : v(), b() {
    for (int i = 0; i < 256; ++i) {
      v[i] = kHashTable[i] + kBiasH;
      b[i] = uint8_t(kHashTable[i] + kBiasH);
    }
  }
};
inline constexpr HashU kHashU32{};

#ifdef LMP_TRELLIS_AVX512
constexpr int kLanes = 16;  // rows per vector
#else
constexpr int kLanes = 8;
#endif

// Per lane j (row j of a column): the byte offset of its state's first byte and the shift.
struct ColShuffle {
  alignas(64) uint8_t shuf[2][32];  // AVX2: two 8-row halves; per 128-bit lane 4 rows x 4 bytes
  alignas(64) uint8_t shuf16[64];   // AVX-512: 16 rows
  alignas(64) int32_t shift[16];
};
inline const ColShuffle& col_shuffle(int k) {
  static const ColShuffle* built = [] {
    static ColShuffle t[3];
    for (int kk = 2; kk <= 4; ++kk) {
      ColShuffle& c = t[kk - 2];
      for (int j = 0; j < 16; ++j) {
        const int bit = kk * j, b = bit / 8;
        c.shift[j] = bit % 8;
        for (int q = 0; q < 4; ++q) {
          const uint8_t idx = q < 3 ? uint8_t(b + q) : uint8_t(0x80);
          c.shuf16[4 * j + q] = idx;
          c.shuf[j / 8][4 * (j % 8) + q] = idx;
        }
      }
    }
    return t;
  }();
  return built[k - 2];
}

// The tile's stream followed by its first 16 bytes.
inline void load_tile(const uint8_t* t, int k, uint8_t* buf) {
  const int n = tile_bytes(k);
  std::memcpy(buf, t, size_t(n));
  std::memcpy(buf + n, t, 16);
}

inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

#if defined(LMP_TRELLIS_AVX512) && defined(LMP_TRELLIS_VBMI)
// AVX512-VBMI (x86_avx512/trellis_vbmi.cpp): vpmultishiftqb takes any 8 bits of a qword per byte,
// so a row's dword gets its state twice, s | s << 16, with no shift and no mask; and
// A' (s | s << 16) = A' * 65537 * s = A s mod 2^32 for A' = A * 65537^-1 (65537^-1 = 0xffff0001).
// k = 2, 3: a column's 16 states lie in one qword (bits 0 .. 16 + 15 k <= 61), broadcast from
// memory; k = 4: rows 0-7 and 8-15 read the qwords at bytes 0 and 4 of the column (a broadcast
// and a masked broadcast).
// The columns are read from the tile's stream in place; only the last one wraps around (tail-biting),
// its bytes are assembled from the stream's end and start in registers.
constexpr bool kTileBuffer = false;
struct Consts {
  __m512i ctrl, A, B, mask, ones;
  explicit Consts(int k) {
    alignas(64) uint8_t c[64];
    for (int j = 0; j < 16; ++j) {
      const int q = j / 2, base = k == 4 ? (q < 4 ? 0 : 32) : 0, o = k * j - base;
      for (int b = 0; b < 4; ++b) c[4 * j + b] = uint8_t(o + 8 * (b & 1));
    }
    ctrl = _mm512_load_si512(c);
    A = _mm512_set1_epi32(int32_t(kMulA * 0xffff0001u));
    B = _mm512_set1_epi32(int32_t(kAddB));
    mask = _mm512_set1_epi32(int32_t(kMask));
    ones = _mm512_set1_epi8(1);
  }
};
// The masked state words of column c's 16 rows; t is the tile's stream.
template <int KB, int CODE>
inline __m512i column_words(const Consts& K, const uint8_t* t, int c) {
  static_assert(CODE == 0, "VBMI: the hashed-table code takes the four-column path (decode_rows_h)");
  constexpr int n = tile_bytes(KB);
  __m512i q;
  if constexpr (KB == 4) {
    // qwords 0-3 from byte 8c, 4-7 from byte 8c + 4 (a masked broadcast: no shuffle-port uop)
    const uint64_t lo = c < kTile - 1 ? load_u64(t + 8 * c) : load_u64(t + n - 8);
    const uint64_t hi = c < kTile - 1 ? load_u64(t + 8 * c + 4) : load_u64(t + n - 8) >> 32 | load_u64(t) << 32;
    q = _mm512_mask_set1_epi64(_mm512_set1_epi64(int64_t(lo)), 0xf0, int64_t(hi));
  } else {
    // the last column: bytes n - 2k .. n - 1, then the stream's first 8 - 2k bytes
    const uint64_t v = c < kTile - 1 ? load_u64(t + 2 * KB * c) : load_u64(t + n - 8) >> (64 - 16 * KB) | load_u64(t) << 16 * KB;
    q = _mm512_set1_epi64(int64_t(v));
  }
  const __m512i s2 = _mm512_multishift_epi64_epi8(K.ctrl, q);
  return _mm512_and_si512(_mm512_add_epi32(_mm512_mullo_epi32(s2, K.A), K.B), K.mask);
}
// The hashed-table code (code 1) with VBMI: four columns (64 weights) at a time into one vector whose
// dword r holds row r's u of the four columns, which is both the decode's vpdpbusd operand (against
// the four columns' int8 activations) and a column-quad vector of the repacked layout (qrepack.h).
// Per quad: one vpermi2b gathers the four columns' source qwords from the tile's stream (held in two
// registers; indices mod the stream length: the tail-biting wrap) into X = [c0, c0, c1, c1, c2, c2,
// c3, c3] (k = 2, 3: a column's 16 states lie in the qword at byte 2 k c; k = 4: rows 0-7 at byte 8 c,
// rows 8-15 at 8 c + 4, a second gather), two vpmultishiftqb cut 32 16-bit states each (vector A rows
// 0-7, B rows 8-15; qword j: column j / 2, rows 4 (j % 2) .. + 3), two vpmullw hash them, one vpermt2b
// collects the 64 high bytes in row order, and one vpermi2b looks u up in the first half of the
// odd-symmetric table (the second half: 254 - u of the mirrored index, by two masked subtractions).
struct HConsts {
  __m512i prep[4][2];  // per quad of the tile: the source gathers of A and (k = 4) B
  __m512i ctrl[2], mul, pack, t[2];
  explicit HConsts(int k) {
    const int n = tile_bytes(k);
    alignas(64) uint8_t b[64];
    for (int q = 0; q < 4; ++q)
      for (int v = 0; v < 2; ++v) {
        for (int j = 0; j < 8; ++j) {
          const int c = 4 * q + j / 2, start = 2 * k * c + (k == 4 ? 4 * v : 0);
          for (int e = 0; e < 8; ++e) b[8 * j + e] = uint8_t((start + e) % n);
        }
        prep[q][v] = _mm512_loadu_si512(b);
      }
    for (int v = 0; v < 2; ++v) {
      for (int j = 0; j < 8; ++j)
        for (int m = 0; m < 4; ++m) {
          const int r = 8 * v + 4 * (j % 2) + m, off = k == 4 ? 4 * (r - 8 * v) : k * r;
          b[8 * j + 2 * m] = uint8_t(off);
          b[8 * j + 2 * m + 1] = uint8_t(off + 8);
        }
      ctrl[v] = _mm512_loadu_si512(b);
    }
    mul = _mm512_set1_epi16(int16_t(kHashMul));
    for (int r = 0; r < 16; ++r)
      for (int e = 0; e < 4; ++e)  // the high byte of word (column e, row r) of A (r < 8) or B
        b[4 * r + e] = uint8_t((r < 8 ? 0 : 64) + 8 * (2 * e + (r % 8) / 4) + 2 * (r % 4) + 1);
    pack = _mm512_loadu_si512(b);
    for (int i = 0; i < 2; ++i) t[i] = _mm512_loadu_si512(kHashU32.b + 64 * i);
  }
};
// The tile's stream in two registers (k = 3: 96 bytes, the second register half filled).
template <int KB>
inline void load_stream(const uint8_t* t, __m512i& s0, __m512i& s1) {
  s0 = _mm512_loadu_si512(t);
  if constexpr (KB == 2) s1 = s0;
  else if constexpr (KB == 3) s1 = _mm512_maskz_loadu_epi8(0xffffffffull, t + 64);
  else s1 = _mm512_loadu_si512(t + 64);
}
// u of columns 4q .. 4q + 3 of the tile, row r in dword r.
template <int KB>
inline __m512i hash_quad(const HConsts& H, __m512i s0, __m512i s1, int q) {
  const __m512i xa = _mm512_permutex2var_epi8(s0, H.prep[q][0], s1);
  const __m512i xb = KB == 4 ? _mm512_permutex2var_epi8(s0, H.prep[q][1], s1) : xa;
  const __m512i ha = _mm512_mullo_epi16(_mm512_multishift_epi64_epi8(H.ctrl[0], xa), H.mul);
  const __m512i hb = _mm512_mullo_epi16(_mm512_multishift_epi64_epi8(H.ctrl[1], xb), H.mul);
  const __m512i h = _mm512_permutex2var_epi8(ha, H.pack, hb);
  // the table is odd-symmetric (T[255 - h] = -T[h]): for h >= 128, u = 254 - U[255 - h] with U the first half's u
  const __mmask64 m = _mm512_movepi8_mask(h);
  const __m512i idx = _mm512_mask_sub_epi8(h, m, _mm512_set1_epi8(-1), h);
  const __m512i t = _mm512_permutex2var_epi8(H.t[0], idx, H.t[1]);
  return _mm512_mask_sub_epi8(t, m, _mm512_set1_epi8(int8_t(-2)), t);
}
inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// Decode with code 1: tokens [t0, t0 + NT) x the 16 rows of tile row rt; a 32-column block's two
// tiles in two accumulator chains.
template <int KB, int NT>
void decode_rows_h(const QGemmArgs& A, int64_t rt, int64_t t0, const HConsts& H) {
  const QWeights& w = A.w;
  const QActs& a = A.a;
  const int64_t cts = w.cols / kTile;
  const uint8_t* tp = tile_ptr(w, rt, 0);
  __m512 y[NT];
  for (int t = 0; t < NT; ++t) y[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b * 2 < cts; ++b) {
    __m512i acc[NT][2];
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
    const int8_t* qa = a.qa + t0 * a.a_stride + 2 * b * kTile;
    if (2 * b + 1 < cts) {  // both tiles of the block (the usual case: straight-line, registers only)
      __m512i s00, s01, s10, s11;
      load_stream<KB>(tp + 2 * b * tile_bytes(KB), s00, s01);
      load_stream<KB>(tp + (2 * b + 1) * tile_bytes(KB), s10, s11);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const __m512i u0 = hash_quad<KB>(H, s00, s01, q), u1 = hash_quad<KB>(H, s10, s11, q);
#pragma GCC unroll 3
        for (int t = 0; t < NT; ++t) {
          const int8_t* at = qa + t * a.a_stride + 4 * q;
          acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], u0, _mm512_set1_epi32(load_i32(at)));
          acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], u1, _mm512_set1_epi32(load_i32(at + kTile)));
        }
      }
    } else {  // a last lone tile
      __m512i s00, s01;
      load_stream<KB>(tp + 2 * b * tile_bytes(KB), s00, s01);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const __m512i u0 = hash_quad<KB>(H, s00, s01, q);
#pragma GCC unroll 3
        for (int t = 0; t < NT; ++t)
          acc[t][q & 1] = _mm512_dpbusd_epi32(acc[t][q & 1], u0, _mm512_set1_epi32(load_i32(qa + t * a.a_stride + 4 * q)));
      }
    }
    for (int t = 0; t < NT; ++t)
      y[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[t][0], acc[t][1])), _mm512_set1_ps(a.d[b * a.n + t0 + t]), y[t]);
  }
  const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + rt * kTile)));
  for (int t = 0; t < NT; ++t) {
    const __m512 v = _mm512_mul_ps(sc, _mm512_sub_ps(y[t], _mm512_set1_ps(float(kBiasH) * a.x[t0 + t])));
    _mm512_storeu_ps(A.y + (t0 + t) * A.ldy + rt * kTile, v);
  }
}
// Row tile rt into one repacked tile (code 1): each quad's vector is the layout's column-quad vector.
template <int KB>
void repack_tile_h(const QWeights& w, int64_t rt, const QRepacked& p, uint8_t* out, const HConsts& H) {
  const int64_t cts = w.cols / kTile;
  if (w.cols % kQBlock) std::memset(out + (w.nb - 1) * 8 * 64, 0, 8 * 64);
  for (int64_t ct = 0; ct < cts; ++ct) {
    __m512i s0, s1;
    load_stream<KB>(tile_ptr(w, rt, ct), s0, s1);
    for (int q = 0; q < 4; ++q) {
      const int64_t c = ct * kTile + 4 * q, b = c / kQBlock, j = (c % kQBlock) / 4;
      _mm512_storeu_si512(out + b * 8 * 64 + j * 64, hash_quad<KB>(H, s0, s1, q));
    }
  }
  uint16_t* sc = reinterpret_cast<uint16_t*>(out + p.code_bytes);
  float* corr = reinterpret_cast<float*>(out + p.code_bytes + p.scale_bytes);
  for (int i = 0; i < kTile; ++i) {
    const int64_t r = rt * kTile + i;
    for (int64_t b = 0; b < w.nb; ++b) sc[b * kTile + i] = w.scales[r];
    corr[i] = -(w.scale(r, 0) * float(kBiasH));
  }
}
#elif defined(LMP_TRELLIS_AVX512)
constexpr bool kTileBuffer = true;
struct Consts {
  __m512i shuf, shift, m16, A, B, mask, ones;
  explicit Consts(int k) {
    const ColShuffle& c = col_shuffle(k);
    shuf = _mm512_load_si512(c.shuf16);
    shift = _mm512_load_si512(c.shift);
    m16 = _mm512_set1_epi32(0xffff);
    A = _mm512_set1_epi32(int32_t(kMulA));
    B = _mm512_set1_epi32(int32_t(kAddB));
    mask = _mm512_set1_epi32(int32_t(kMask));
    ones = _mm512_set1_epi8(1);
  }
};
// The masked state words of column c's 16 rows; buf is the tile's stream and its wrap (load_tile).
template <int KB, int CODE>
inline __m512i column_words(const Consts& K, const uint8_t* buf, int c) {
  const __m512i win = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + 2 * KB * c)));
  __m512i s = _mm512_and_si512(_mm512_srlv_epi32(_mm512_shuffle_epi8(win, K.shuf), K.shift), K.m16);
  if constexpr (CODE == 1) {  // hashed table: u = T[(s * M mod 2^16) >> 8] + 127 in the dword's low byte
    const __m512i h = _mm512_srli_epi32(_mm512_mullo_epi16(s, _mm512_set1_epi32(kHashMul)), 8);
    return _mm512_i32gather_epi32(h, kHashU32.v, 4);
  }
  return _mm512_and_si512(_mm512_add_epi32(_mm512_mullo_epi32(s, K.A), K.B), K.mask);
}
#else
constexpr bool kTileBuffer = true;
struct Consts {
  __m256i shuf[2], shift[2], m16, A, B, mask, ones8, ones16;
  explicit Consts(int k) {
    const ColShuffle& c = col_shuffle(k);
    for (int h = 0; h < 2; ++h) {
      shuf[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(c.shuf[h]));
      shift[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(c.shift + 8 * h));
    }
    m16 = _mm256_set1_epi32(0xffff);
    A = _mm256_set1_epi32(int32_t(kMulA));
    B = _mm256_set1_epi32(int32_t(kAddB));
    mask = _mm256_set1_epi32(int32_t(kMask));
    ones8 = _mm256_set1_epi8(1);
    ones16 = _mm256_set1_epi16(1);
  }
};
template <int KB, int CODE>
inline __m256i column_words(const Consts& K, const uint8_t* buf, int c, int h) {
  const __m256i win = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + 2 * KB * c)));
  __m256i s = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(win, K.shuf[h]), K.shift[h]), K.m16);
  if constexpr (CODE == 1) {
    const __m256i hh = _mm256_srli_epi32(_mm256_mullo_epi16(s, _mm256_set1_epi32(kHashMul)), 8);
    return _mm256_i32gather_epi32(kHashU32.v, hh, 4);
  }
  return _mm256_and_si256(_mm256_add_epi32(_mm256_mullo_epi32(s, K.A), K.B), K.mask);
}
#endif

// Where a tile's columns are read: the stream itself (VBMI) or a copy followed by its wrap.
template <int KB>
inline const uint8_t* tile_source(const uint8_t* t, uint8_t* buf) {
  if constexpr (!kTileBuffer) return t;
  load_tile(t, KB, buf);
  return buf;
}

// Activations replicated into four bytes, per token: a4[t][c] = a_c * 0x01010101 (per call).
inline const int32_t* replicate_acts(const QActs& a, int64_t cols, int64_t t0, int64_t t1) {
  thread_local std::vector<int32_t> buf;
  const int64_t nbc = (cols + kQBlock - 1) / kQBlock * kQBlock;
  buf.resize(size_t((t1 - t0) * nbc));
  for (int64_t t = t0; t < t1; ++t) {
    const int8_t* qa = a.qa + t * a.a_stride;
    int32_t* o = buf.data() + (t - t0) * nbc;
    for (int64_t c = 0; c < nbc; ++c) o[c] = int32_t(uint32_t(uint8_t(qa[c])) * 0x01010101u);
  }
  return buf.data();
}

// Decode: tokens [t0, t1) (few) x the 16 rows of tile row rt. An activation block (32 columns) is
// two tiles; their columns are interleaved into two accumulator chains per token, so that the
// column's state-word arithmetic of one tile overlaps the dot-product latency of the other.
template <int KB, int NT, int CODE>
void decode_rows(const QGemmArgs& A, const int32_t* a4, int64_t nbc, int64_t rt, int64_t t0, const Consts& K) {
  const QWeights& w = A.w;
  const QActs& a = A.a;
  const int64_t cts = w.cols / kTile;
  alignas(64) uint8_t buf[2][tile_bytes(KB) + 16];
  const uint8_t* tp = tile_ptr(w, rt, 0);
#ifdef LMP_TRELLIS_AVX512
  __m512 y[NT];
  for (int t = 0; t < NT; ++t) y[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b * 2 < cts; ++b) {
    __m512i acc[NT][2];
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
    const int32_t* ab = a4 + 2 * b * kTile;
    const uint8_t* s0 = tile_source<KB>(tp + 2 * b * tile_bytes(KB), buf[0]);
    if (2 * b + 1 < cts) {
      const uint8_t* s1 = tile_source<KB>(tp + (2 * b + 1) * tile_bytes(KB), buf[1]);
#pragma GCC unroll 16
      for (int c = 0; c < kTile; ++c) {
        const __m512i x0 = column_words<KB, CODE>(K, s0, c), x1 = column_words<KB, CODE>(K, s1, c);
        for (int t = 0; t < NT; ++t) {
          acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], x0, _mm512_set1_epi32(ab[t * nbc + c]));
          acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], x1, _mm512_set1_epi32(ab[t * nbc + kTile + c]));
        }
      }
    } else {  // a last lone tile: even / odd columns
#pragma GCC unroll 16
      for (int c = 0; c < kTile; ++c) {
        const __m512i x = column_words<KB, CODE>(K, s0, c);
        for (int t = 0; t < NT; ++t) acc[t][c & 1] = _mm512_dpbusd_epi32(acc[t][c & 1], x, _mm512_set1_epi32(ab[t * nbc + c]));
      }
    }
    for (int t = 0; t < NT; ++t)
      y[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[t][0], acc[t][1])), _mm512_set1_ps(a.d[b * a.n + t0 + t]), y[t]);
  }
  const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + rt * kTile)));
  for (int t = 0; t < NT; ++t) {
    const __m512 v = _mm512_mul_ps(sc, _mm512_sub_ps(y[t], _mm512_set1_ps(float(code_bias(CODE)) * a.x[t0 + t])));
    _mm512_storeu_ps(A.y + (t0 + t) * A.ldy + rt * kTile, v);
  }
#else
  __m256 y[NT][2];
  for (int t = 0; t < NT; ++t) y[t][0] = y[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b * 2 < cts; ++b) {
    __m256i acc[NT][2];
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_si256();
    const int nct = int(std::min<int64_t>(2, cts - 2 * b));
    for (int h = 0; h < nct; ++h) {
      const uint8_t* src = tile_source<KB>(tp + (2 * b + h) * tile_bytes(KB), buf[h]);
      const int64_t c0 = (2 * b + h) * kTile;
      for (int c = 0; c < kTile; ++c) {
        for (int half = 0; half < 2; ++half) {
          const __m256i x = column_words<KB, CODE>(K, src, c, half);
          for (int t = 0; t < NT; ++t) {
            const __m256i p = _mm256_maddubs_epi16(x, _mm256_set1_epi32(a4[t * nbc + c0 + c]));
            acc[t][half] = _mm256_add_epi32(acc[t][half], _mm256_madd_epi16(p, K.ones16));
          }
        }
      }
    }
    for (int t = 0; t < NT; ++t)
      for (int half = 0; half < 2; ++half)
        y[t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t][half]), _mm256_set1_ps(a.d[b * a.n + t0 + t]), y[t][half]);
  }
  for (int half = 0; half < 2; ++half) {
    const __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + rt * kTile + 8 * half)));
    for (int t = 0; t < NT; ++t) {
      const __m256 v = _mm256_mul_ps(sc, _mm256_sub_ps(y[t][half], _mm256_set1_ps(float(code_bias(CODE)) * a.x[t0 + t])));
      _mm256_storeu_ps(A.y + (t0 + t) * A.ldy + rt * kTile + 8 * half, v);
    }
  }
#endif
}

// Row tile rt into one repacked tile (qrepack.h: per 32-column block 8 vectors, lane i = row i's
// codes 4j .. 4j + 3): the bytes of a column's u (0..252) come from a byte sum of its words, four
// columns are merged by shifts.
template <int KB, int CODE>
void repack_tile(const QWeights& w, int64_t rt, const QRepacked& p, uint8_t* out, const Consts& K) {
  const int64_t cts = w.cols / kTile;
  alignas(64) uint8_t buf[tile_bytes(KB) + 16];
  uint8_t* codes = out;
  if (w.cols % kQBlock) std::memset(codes + (w.nb - 1) * 8 * 64, 0, 8 * 64);
  for (int64_t ct = 0; ct < cts; ++ct) {
    const uint8_t* src = tile_source<KB>(tile_ptr(w, rt, ct), buf);
    for (int q = 0; q < kTile / 4; ++q) {  // column quads of the tile
      const int64_t c = ct * kTile + 4 * q, b = c / kQBlock, j = (c % kQBlock) / 4;
      uint8_t* dst = codes + b * 8 * 64 + j * 64;
#ifdef LMP_TRELLIS_AVX512
      // u of column 4q + e into byte e: the last column first, each byte sum accumulated into the
      // previous sums shifted up by one byte (u <= 252: no carries)
      __m512i v = _mm512_dpbusd_epi32(_mm512_setzero_si512(), column_words<KB, CODE>(K, src, 4 * q + 3), K.ones);
      for (int e = 2; e >= 0; --e) v = _mm512_dpbusd_epi32(_mm512_slli_epi32(v, 8), column_words<KB, CODE>(K, src, 4 * q + e), K.ones);
      _mm512_storeu_si512(dst, v);
#else
      for (int half = 0; half < 2; ++half) {
        __m256i v = _mm256_setzero_si256();
        for (int e = 0; e < 4; ++e) {
          const __m256i x = column_words<KB, CODE>(K, src, 4 * q + e, half);
          const __m256i u = _mm256_madd_epi16(_mm256_maddubs_epi16(x, K.ones8), K.ones16);
          v = _mm256_or_si256(v, _mm256_slli_epi32(u, 8 * e));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 * half), v);
      }
#endif
    }
  }
  uint16_t* sc = reinterpret_cast<uint16_t*>(out + p.code_bytes);
  float* corr = reinterpret_cast<float*>(out + p.code_bytes + p.scale_bytes);
  for (int i = 0; i < kTile; ++i) {
    const int64_t r = rt * kTile + i;
    for (int64_t b = 0; b < w.nb; ++b) sc[b * kTile + i] = w.scales[r];
    corr[i] = -(w.scale(r, 0) * float(code_bias(CODE)));
  }
}

RepackedGemmFn level_repacked_gemm() {
#ifdef LMP_TRELLIS_AVX512
  if (amx_active()) return repacked_gemm_amx;
  return repacked_gemm_avx512;
#else
  return avxvnni_active() ? repacked_gemm_avxvnni : repacked_gemm_avx2;
#endif
}

constexpr int64_t kMaxDecodeTokens = 3;

template <int KB, int CODE>
void trellis_gemm_k(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const Consts K(KB);
#if defined(LMP_TRELLIS_AVX512) && defined(LMP_TRELLIS_VBMI)
  static const HConsts H(CODE == 1 ? KB : 2);  // built once (a decode product is many calls of few rows)
#endif
  if (t1 - t0 <= kMaxDecodeTokens) {
#if defined(LMP_TRELLIS_AVX512) && defined(LMP_TRELLIS_VBMI)
    if constexpr (CODE == 1) {
      for (int64_t rt = r0 / kTile; rt * kTile < r1; ++rt) {
        switch (t1 - t0) {
          case 1: decode_rows_h<KB, 1>(A, rt, t0, H); break;
          case 2: decode_rows_h<KB, 2>(A, rt, t0, H); break;
          default: decode_rows_h<KB, 3>(A, rt, t0, H); break;
        }
      }
      return;
    } else
#endif
    {
      const int64_t nbc = w.nb * kQBlock;
      const int32_t* a4 = replicate_acts(A.a, w.cols, t0, t1);
      for (int64_t rt = r0 / kTile; rt * kTile < r1; ++rt) {
        switch (t1 - t0) {
          case 1: decode_rows<KB, 1, CODE>(A, a4, nbc, rt, t0, K); break;
          case 2: decode_rows<KB, 2, CODE>(A, a4, nbc, rt, t0, K); break;
          default: decode_rows<KB, 3, CODE>(A, a4, nbc, rt, t0, K); break;
        }
      }
      return;
    }
  }
  // Prefill: a chunk of tiles decoded into the repacked layout, then the repacked GEMM over them.
  const QRepacked p1 = trellis_repack_geometry(w);
  constexpr int64_t kChunkTiles = 8;
  thread_local std::vector<uint8_t, std::allocator<uint8_t>> raw;
  raw.resize(size_t(kChunkTiles * p1.tile_bytes + 64));
  uint8_t* buf = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw.data()) + 63) / 64 * 64);
  const RepackedGemmFn gemm = level_repacked_gemm();
  for (int64_t rt0 = r0 / kTile; rt0 * kTile < r1; rt0 += kChunkTiles) {
    const int64_t nt = std::min<int64_t>(kChunkTiles, (r1 + kTile - 1) / kTile - rt0);
    for (int64_t i = 0; i < nt; ++i) {
#if defined(LMP_TRELLIS_AVX512) && defined(LMP_TRELLIS_VBMI)
      if constexpr (CODE == 1)
        repack_tile_h<KB>(w, rt0 + i, p1, buf + i * p1.tile_bytes, H);
      else
#endif
        repack_tile<KB, CODE>(w, rt0 + i, p1, buf + i * p1.tile_bytes, K);
    }
    QRepacked p = p1;
    p.data = buf;
    p.rows = nt * kTile;
    p.tiles = nt;
    gemm(p, A.a, A.y + rt0 * kTile, A.ldy, 0, nt * kTile, t0, t1);
  }
}

void trellis_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const bool h = A.w.trellis_code == 1;
  switch (A.w.bits) {
    case 2: h ? trellis_gemm_k<2, 1>(A, r0, r1, t0, t1) : trellis_gemm_k<2, 0>(A, r0, r1, t0, t1); break;
    case 3: h ? trellis_gemm_k<3, 1>(A, r0, r1, t0, t1) : trellis_gemm_k<3, 0>(A, r0, r1, t0, t1); break;
    default: h ? trellis_gemm_k<4, 1>(A, r0, r1, t0, t1) : trellis_gemm_k<4, 0>(A, r0, r1, t0, t1); break;
  }
}

}  // namespace
}  // namespace lmpress::kern
