// The vq family's code stream and value formula for the kernels (formats/vq.h has the layout):
// shared by the scalar reference (generic/vq.cpp) and the x86 levels (vq_x86.h).
#pragma once
#include <cstring>

#include "kernels/qkernels.h"

namespace lmpress::kern::vq {

constexpr int kTile = 16;  // rows per tile of the stream

// Code k of the stream (b + b2 <= 24 bits; the stream ends with 8 slack bytes).
inline uint32_t code_at(const uint8_t* q, int64_t k, int cb) {
  const int64_t bit = k * cb;
  uint64_t x;
  std::memcpy(&x, q + bit / 8, 8);
  return uint32_t((x >> (bit % 8)) & ((uint64_t(1) << cb) - 1));
}

// Code of vector i of tile t, column c.
inline uint32_t code_of(const QWeights& w, int64_t tile, int64_t c, int i) {
  const int T = kTile / w.vq_v;
  return code_at(w.q, (tile * w.cols + c) * T + i, w.bits + w.vq_bits2);
}

// f32 codebooks s * book [K][v] (stage 2 after stage 1, empty without one) into out.
inline void expand_books(const QWeights& w, float* out) {
  const int64_t n1 = (int64_t(1) << w.bits) * w.vq_v, n2 = w.vq_bits2 ? (int64_t(1) << w.vq_bits2) * w.vq_v : 0;
  for (int64_t i = 0; i < n1; ++i) out[i] = w.vq_s1 * float(w.vq_book[i]);
  for (int64_t i = 0; i < n2; ++i) out[n1 + i] = w.vq_s2 * float(w.vq_book[n1 + i]);
}
inline int64_t books_floats(const QWeights& w) {
  return ((int64_t(1) << w.bits) + (w.vq_bits2 ? int64_t(1) << w.vq_bits2 : 0)) * w.vq_v;
}

// Weight (r, c): the specification (formats/vq.h): u = s1 b1 (+ s2 b2), then u * colscale + colbias.
inline float value(const QWeights& w, int64_t r, int64_t c) {
  const int v = w.vq_v;
  const uint32_t code = code_of(w, r / kTile, c, int(r % kTile) / v);
  const int l = int(r % v);
  const uint32_t i1 = code & ((uint32_t(1) << w.bits) - 1), i2 = code >> w.bits;
  float u = w.vq_s1 * float(w.vq_book[int64_t(i1) * v + l]);
  if (w.vq_bits2) {
    const float p2 = w.vq_s2 * float(w.vq_book[((int64_t(1) << w.bits) + i2) * v + l]);
    u = u + p2;
  }
  if (w.col_scale) {
    const float p = u * f16_to_f32(w.col_scale[c]);
    u = p + f16_to_f32(w.col_bias[c]);
  }
  return u;
}

}  // namespace lmpress::kern::vq
