// Randomized Hadamard transform kernel body (formats/hadamard.cpp is the front end), written once in
// plain C++ and compiled in one translation unit per ISA level (generic/rht.cpp, x86_avx2/rht.cpp,
// x86_avx512/rht.cpp) with that level's flags, so the butterflies and the +-1 base rows vectorize
// to the level's width; the scalar level's unit is the reference.
#pragma once
#include <cstdint>
#include <cstring>

#include "lmpress/core.h"

namespace lmpress::kern {
// Internal linkage: each level's unit keeps its own copy (one inline definition shared by units
// compiled with different -m flags would let the linker pick any of them).
namespace {

// In-place unnormalized Walsh-Hadamard transform (Sylvester order) of x[0, p), p a power of two.
inline void fwht(float* __restrict x, int64_t p) {
  int64_t h = 1;
  if (p >= 4) {  // the first two stages per group of 4 in registers
    for (int64_t i = 0; i < p; i += 4) {
      const float a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
      const float s0 = a + b, s1 = a - b, s2 = c + d, s3 = c - d;
      x[i] = s0 + s2;
      x[i + 1] = s1 + s3;
      x[i + 2] = s0 - s2;
      x[i + 3] = s1 - s3;
    }
    h = 4;
  }
  for (; h < p; h *= 2)
    for (int64_t i = 0; i < p; i += 2 * h) {
      float* __restrict u = x + i;
      float* __restrict v = x + i + h;
      for (int64_t j = 0; j < h; ++j) {
        const float a = u[j], b = v[j];
        u[j] = a + b;
        v[j] = a - b;
      }
    }
}

// x[n] (n = blocks * m * p) <- scale * (I_blocks (x) H_m (x) H_p) x (transpose: H_m^T), with the sign
// flips of D before (forward) or after (backward) the transform; tmp holds m * p floats.
inline void rht_apply(const int8_t* base, int64_t m, int64_t p, int64_t blocks, float scale,
                      const uint8_t* signs, bool backward, float* __restrict x, float* __restrict tmp) {
  const int64_t blk = m * p, n = blocks * blk;
  auto flip = [&] {
    for (int64_t i = 0; i < n; i += 8) {
      const unsigned s = signs[i >> 3];
      const int64_t e = n - i < 8 ? n - i : 8;
      for (int64_t k = 0; k < e; ++k) x[i + k] = (s >> k) & 1 ? -x[i + k] : x[i + k];
    }
  };
  if (!backward && signs) flip();
  for (int64_t b = 0; b < blocks; ++b) {
    float* xb = x + b * blk;
    for (int64_t a = 0; a < m; ++a) fwht(xb + a * p, p);
    if (m > 1) {
      for (int64_t a = 0; a < m; ++a) {
        float* __restrict out = tmp + a * p;
        for (int64_t j = 0; j < p; ++j) out[j] = 0.f;
        for (int64_t a2 = 0; a2 < m; ++a2) {
          const int8_t h = backward ? base[a2 * m + a] : base[a * m + a2];
          const float* __restrict in = xb + a2 * p;
          if (h > 0)
            for (int64_t j = 0; j < p; ++j) out[j] += in[j];
          else
            for (int64_t j = 0; j < p; ++j) out[j] -= in[j];
        }
      }
      for (int64_t j = 0; j < blk; ++j) xb[j] = tmp[j] * scale;
    } else {
      for (int64_t j = 0; j < blk; ++j) xb[j] *= scale;
    }
  }
  if (backward && signs) flip();
}

}  // namespace

struct RhtKernel {
  SimdLevel level;
  void (*apply)(const int8_t* base, int64_t m, int64_t p, int64_t blocks, float scale, const uint8_t* signs,
                bool backward, float* x, float* tmp);
};
extern const RhtKernel rht_kernel_scalar, rht_kernel_avx2, rht_kernel_avx512;

}  // namespace lmpress::kern
