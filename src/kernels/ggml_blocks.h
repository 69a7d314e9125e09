// llama.cpp's (ggml's) quantized block types, as stored in GGUF files: the byte layouts (block
// structs with their size asserted), the type table, and the scalar reference decoder that every
// kernel level follows (docs/formats.md, "ggml block formats").
//
// Reference form of every type: a block of QK weights (32 or 256) decodes to int8 values v[QK]
// and, per 16-weight half-unit h, an f32 scale S[h] and an f32 offset M[h], with
//   w = S[h] * v - M[h]                     (M = 0 for the symmetric types)
// where S and M are the products ggml's own dequantization computes (f16 scale times an integer
// sub-scale: exact in f32). With int8 activations a (blocks of 32, scale d, per-16 integer sums hs,
// qkernels.h) the reference matmul is
//   y = sum_b d_b sum_{h in b} S[h] * (sum_{i in h} v_i a_i)  -  sum_h M[h] * X[h],  X[h] = d_b hs[h].
// SIMD levels may dot unsigned lanes u = v + C (C a per-type constant) and use M + C S instead of
// M: the same value up to float rounding.
#pragma once
#include <cstdint>
#include <cstring>

#include "lmpress/core.h"

namespace lmpress::kern::ggml {

// ggml_type values (ggml.h) of the supported types.
enum Type : uint32_t {
  kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ2_K = 10, kQ3_K = 11, kQ4_K = 12,
  kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23,
};

struct TypeInfo {
  uint32_t type;       // ggml_type
  const char* name;    // lmpress format name: "q4_0"
  const char* gname;   // ggml's name: "Q4_0"
  int qk;              // weights per block
  int bytes;           // bytes per block
  int n_f16;           // f16 fields of a block that must be finite (d, and dmin / m)
  int f16_off[2];      // their byte offsets in the block
  bool has_min;        // M != 0
};

// Block structs: byte-for-byte ggml's (little endian, no padding; f16 as uint16_t).
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };                       // d (q - 8), q 4-bit
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };                    // d q + m
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };        // d (q - 16), q 5-bit
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };     // d q + m
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };                        // d q, q int8
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
static_assert(sizeof(BlockQ4_0) == 2 + 16);
static_assert(sizeof(BlockQ4_1) == 4 + 16);
static_assert(sizeof(BlockQ5_0) == 2 + 4 + 16);
static_assert(sizeof(BlockQ5_1) == 4 + 4 + 16);
static_assert(sizeof(BlockQ8_0) == 2 + 32);
static_assert(sizeof(BlockQ2_K) == 16 + 64 + 4);            // 2.625 bpw
static_assert(sizeof(BlockQ3_K) == 32 + 64 + 12 + 2);       // 3.4375 bpw
static_assert(sizeof(BlockQ4_K) == 4 + 12 + 128);           // 4.5 bpw
static_assert(sizeof(BlockQ5_K) == 4 + 12 + 32 + 128);      // 5.5 bpw
static_assert(sizeof(BlockQ6_K) == 128 + 64 + 16 + 2);      // 6.5625 bpw
static_assert(sizeof(BlockIQ4_NL) == 2 + 16);
static_assert(sizeof(BlockIQ4_XS) == 2 + 2 + 4 + 128);      // 4.25 bpw

// IQ4_NL / IQ4_XS value table (non-uniform 4-bit grid, int8).
inline constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline constexpr TypeInfo kTypes[] = {
    {kQ8_0, "q8_0", "Q8_0", 32, 34, 1, {0, 0}, false},
    {kQ4_0, "q4_0", "Q4_0", 32, 18, 1, {0, 0}, false},
    {kQ4_1, "q4_1", "Q4_1", 32, 20, 2, {0, 2}, true},
    {kQ5_0, "q5_0", "Q5_0", 32, 22, 1, {0, 0}, false},
    {kQ5_1, "q5_1", "Q5_1", 32, 24, 2, {0, 2}, true},
    {kQ4_K, "q4_k", "Q4_K", 256, 144, 2, {0, 2}, true},
    {kQ6_K, "q6_k", "Q6_K", 256, 210, 1, {208, 0}, false},
    {kQ5_K, "q5_k", "Q5_K", 256, 176, 2, {0, 2}, true},
    {kQ3_K, "q3_k", "Q3_K", 256, 110, 1, {108, 0}, false},
    {kQ2_K, "q2_k", "Q2_K", 256, 84, 2, {80, 82}, true},
    {kIQ4_NL, "iq4_nl", "IQ4_NL", 32, 18, 1, {0, 0}, false},
    {kIQ4_XS, "iq4_xs", "IQ4_XS", 256, 136, 1, {0, 0}, false},
};

inline const TypeInfo* type_info(uint32_t t) {
  for (const TypeInfo& i : kTypes)
    if (i.type == t) return &i;
  return nullptr;
}

inline float h2f(uint16_t h) { return f16_to_f32(h); }

// 6-bit scale and min j (0..7) of Q4_K / Q5_K's 12 packed bytes: j < 4 in the low 6 bits of bytes
// j (scale) and j + 4 (min); j >= 4: low 4 bits from byte j + 4 (scale: low nibble, min: high
// nibble), high 2 bits from the top bits of bytes j - 4 (scale) and j (min).
inline void k4_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
    *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
  }
}
// 6-bit scale i (0..15) of Q3_K, minus 32: low 4 bits are nibble i / 8 of byte i % 8, high 2 bits
// are bits 2 (i / 4) of byte 8 + i % 4.
inline int q3k_scale(const uint8_t* s, int i) {
  const int lo = (s[i % 8] >> (4 * (i / 8))) & 15, hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (lo | hi << 4) - 32;
}
// 6-bit scale j (0..7) of IQ4_XS, minus 32.
inline int iq4xs_scale(const BlockIQ4_XS* b, int j) {
  return (((b->scales_l[j / 2] >> (4 * (j % 2))) & 15) | ((b->scales_h >> (2 * j)) & 3) << 4) - 32;
}

// Scales and offsets of one block: S[QK / 16], M[QK / 16] (the reference form above).
inline void block_factors(uint32_t type, const uint8_t* p, float* S, float* M) {
  auto fill = [&](int h0, int nh, float s, float m) {
    for (int h = h0; h < h0 + nh; ++h) S[h] = s, M[h] = m;
  };
  switch (type) {
    case kQ4_0: case kQ5_0: case kQ8_0: case kIQ4_NL: fill(0, 2, h2f(reinterpret_cast<const uint16_t*>(p)[0]), 0.f); break;
    case kQ4_1: case kQ5_1: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
      fill(0, 2, h2f(h[0]), -h2f(h[1]));
      break;
    }
    case kQ2_K: {
      const auto* b = reinterpret_cast<const BlockQ2_K*>(p);
      const float d = h2f(b->d), dm = h2f(b->dmin);
      for (int h = 0; h < 16; ++h) fill(h, 1, d * float(b->scales[h] & 15), dm * float(b->scales[h] >> 4));
      break;
    }
    case kQ3_K: {
      const auto* b = reinterpret_cast<const BlockQ3_K*>(p);
      const float d = h2f(b->d);
      for (int h = 0; h < 16; ++h) fill(h, 1, d * float(q3k_scale(b->scales, h)), 0.f);
      break;
    }
    case kQ4_K: case kQ5_K: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
      const float d = h2f(h[0]), dm = h2f(h[1]);
      for (int j = 0; j < 8; ++j) {
        int sc, m;
        k4_scale_min(p + 4, j, &sc, &m);
        fill(2 * j, 2, d * float(sc), dm * float(m));
      }
      break;
    }
    case kQ6_K: {
      const auto* b = reinterpret_cast<const BlockQ6_K*>(p);
      const float d = h2f(b->d);
      for (int h = 0; h < 16; ++h) fill(h, 1, d * float(b->scales[h]), 0.f);
      break;
    }
    case kIQ4_XS: {
      const auto* b = reinterpret_cast<const BlockIQ4_XS*>(p);
      const float d = h2f(b->d);
      for (int j = 0; j < 8; ++j) fill(2 * j, 2, d * float(iq4xs_scale(b, j)), 0.f);
      break;
    }
    default: LMP_ASSERT(false);
  }
}

// Signed int8 values v[QK] of one block, in weight order.
inline void block_values(uint32_t type, const uint8_t* p, int8_t* v) {
  // legacy 4-bit nibbles: weight i < 16 is the low nibble of byte i, weight i + 16 its high nibble
  auto nib = [](const uint8_t* qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; };
  switch (type) {
    case kQ4_0: for (int i = 0; i < 32; ++i) v[i] = int8_t(nib(p + 2, i) - 8); break;
    case kQ4_1: for (int i = 0; i < 32; ++i) v[i] = int8_t(nib(p + 4, i)); break;
    case kIQ4_NL: for (int i = 0; i < 32; ++i) v[i] = kIQ4Values[nib(p + 2, i)]; break;
    case kQ5_0: case kQ5_1: {
      const int off = type == kQ5_0 ? 2 : 4;
      uint32_t qh;
      std::memcpy(&qh, p + off, 4);
      for (int i = 0; i < 32; ++i)
        v[i] = int8_t((nib(p + off + 4, i) | int((qh >> i) & 1) << 4) - (type == kQ5_0 ? 16 : 0));
      break;
    }
    case kQ8_0: std::memcpy(v, p + 2, 32); break;
    case kQ2_K: case kQ3_K: {
      // weight 128 n + 32 j + l: 2-bit field j of byte 32 n + l of qs; Q3_K's high bit is bit
      // (weight / 32) of hmask[l], and a clear high bit means -4.
      const uint8_t* qs = p + (type == kQ2_K ? 16 : 32);
      for (int i = 0; i < 256; ++i) {
        const int n = i / 128, j = (i / 32) % 4, l = i % 32;
        int q = (qs[32 * n + l] >> (2 * j)) & 3;
        if (type == kQ3_K) q -= ((p[l] >> (i / 32)) & 1) ? 0 : 4;
        v[i] = int8_t(q);
      }
      break;
    }
    case kQ4_K: case kQ5_K: {
      // sub-block j (32 weights): nibble j % 2 of bytes 32 (j / 2) .. + 31; Q5_K's fifth bit is
      // bit j of qh[l]
      const uint8_t* qs = p + (type == kQ4_K ? 16 : 48);
      for (int i = 0; i < 256; ++i) {
        const int j = i / 32, l = i % 32;
        int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
        if (type == kQ5_K) q |= ((p[16 + l] >> j) & 1) << 4;
        v[i] = int8_t(q);
      }
      break;
    }
    case kQ6_K: {
      // weight 128 h + 32 j + l (j 0..3): low 4 bits = nibble j / 2 of ql[64 h + 32 (j % 2) + l],
      // high 2 bits = bits 2 j of qh[32 h + l]; value - 32
      const auto* b = reinterpret_cast<const BlockQ6_K*>(p);
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, j = (i / 32) % 4, l = i % 32;
        const int lo = (b->ql[64 * h + 32 * (j % 2) + l] >> (4 * (j / 2))) & 15;
        const int hi = (b->qh[32 * h + l] >> (2 * j)) & 3;
        v[i] = int8_t((lo | hi << 4) - 32);
      }
      break;
    }
    case kIQ4_XS: {
      // sub-block j: the legacy nibble order over bytes 16 j .. 16 j + 15
      const auto* b = reinterpret_cast<const BlockIQ4_XS*>(p);
      for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 32; ++i) v[32 * j + i] = kIQ4Values[nib(b->qs + 16 * j, i)];
      break;
    }
    default: LMP_ASSERT(false);
  }
}

}  // namespace lmpress::kern::ggml
