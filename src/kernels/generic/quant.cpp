// Scalar reference of the packed formats: the block bit layout (pack_qblock / unpack_qblock) and
// the quantized matmul arithmetic of qkernels.h. This is the specification the SIMD levels are
// tested against; it is also the run-time fallback on CPUs without AVX2.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/qkernels.h"

namespace lmpress::kern {

// ---- block layout (docs/formats.md) ------------------------------------------------------------
// 2-bit plane (8 B):  byte j = p[j] | p[j+8]<<2 | p[j+16]<<4 | p[j+24]<<6      (j = 0..7)
// 4-bit plane (16 B): byte j = p[j] | p[j+16]<<4                              (j = 0..15)
// 1-bit plane (4 B):  u32 little endian, bit i = p[i]                         (i = 0..31)
namespace {

void pack2(const uint8_t* p, uint8_t* o) {
  for (int j = 0; j < 8; ++j)
    o[j] = uint8_t((p[j] & 3) | (p[j + 8] & 3) << 2 | (p[j + 16] & 3) << 4 | (p[j + 24] & 3) << 6);
}
void unpack2(const uint8_t* o, uint8_t* p) {
  for (int j = 0; j < 8; ++j)
    for (int k = 0; k < 4; ++k) p[j + 8 * k] = (o[j] >> (2 * k)) & 3;
}
void pack4(const uint8_t* p, uint8_t* o) {
  for (int j = 0; j < 16; ++j) o[j] = uint8_t((p[j] & 15) | (p[j + 16] & 15) << 4);
}
void unpack4(const uint8_t* o, uint8_t* p) {
  for (int j = 0; j < 16; ++j) {
    p[j] = o[j] & 15;
    p[j + 16] = o[j] >> 4;
  }
}
void pack1(const uint8_t* p, int shift, uint8_t* o) {
  uint32_t h = 0;
  for (int i = 0; i < 32; ++i) h |= uint32_t((p[i] >> shift) & 1) << i;
  for (int k = 0; k < 4; ++k) o[k] = uint8_t(h >> (8 * k));
}
// p[i] |= bit i << shift
void unpack1_or(const uint8_t* o, int shift, uint8_t* p) {
  const uint32_t h = uint32_t(o[0]) | uint32_t(o[1]) << 8 | uint32_t(o[2]) << 16 | uint32_t(o[3]) << 24;
  for (int i = 0; i < 32; ++i) p[i] = uint8_t(p[i] | ((h >> i) & 1) << shift);
}

}  // namespace

void pack_qblock(int bits, const uint8_t* q, uint8_t* out) {
  uint8_t hi[kQBlock];
  switch (bits) {
    case 1: pack1(q, 0, out); return;
    case 2: pack2(q, out); return;
    case 3: pack2(q, out); pack1(q, 2, out + 8); return;
    case 4: pack4(q, out); return;
    case 5: pack4(q, out); pack1(q, 4, out + 16); return;
    case 6:
      pack4(q, out);
      for (int i = 0; i < kQBlock; ++i) hi[i] = q[i] >> 4;
      pack2(hi, out + 16);
      return;
    case 8: std::memcpy(out, q, kQBlock); return;
    default: LMP_ASSERT(false);
  }
}

void unpack_qblock(int bits, const uint8_t* in, uint8_t* q) {
  uint8_t hi[kQBlock];
  switch (bits) {
    case 1: std::memset(q, 0, kQBlock); unpack1_or(in, 0, q); return;
    case 2: unpack2(in, q); return;
    case 3: unpack2(in, q); unpack1_or(in + 8, 2, q); return;
    case 4: unpack4(in, q); return;
    case 5: unpack4(in, q); unpack1_or(in + 16, 4, q); return;
    case 6:
      unpack4(in, q);
      unpack2(in + 16, hi);
      for (int i = 0; i < kQBlock; ++i) q[i] = uint8_t(q[i] | hi[i] << 4);
      return;
    case 8: std::memcpy(q, in, kQBlock); return;
    default: LMP_ASSERT(false);
  }
}

// ---- reference kernels ---------------------------------------------------------------------------
namespace {

void quantize_acts(const float* x, int64_t cols, int8_t* qa, float* d, int64_t d_stride, int32_t* hs) {
  const int64_t nb = (cols + kQBlock - 1) / kQBlock;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t c0 = b * kQBlock, n = std::min<int64_t>(kQBlock, cols - c0);
    float amax = 0.f;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
      const float v = std::fabs(x[c0 + i]);
      finite = finite && v <= 3.40282347e38f;  // false for Inf and NaN
      amax = v > amax ? v : amax;
    }
    int8_t* q = qa + c0;
    if (!finite) {
      std::memset(q, 0, kQBlock);
      d[b * d_stride] = std::nanf("");
      hs[2 * b] = hs[2 * b + 1] = 0;
      continue;
    }
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    d[b * d_stride] = amax / 127.f;
    int32_t s[2] = {0, 0};
    for (int64_t i = 0; i < kQBlock; ++i) {
      int32_t v = 0;
      if (i < n) {
        v = int32_t(std::nearbyint(x[c0 + i] * id));
        v = v > 127 ? 127 : v < -127 ? -127 : v;
      }
      q[i] = int8_t(v);
      s[i >> 4] += v;
    }
    hs[2 * b] = s[0];
    hs[2 * b + 1] = s[1];
  }
}

void gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, G = w.groups, bpg = w.blocks_per_group();
  const int bpb = qblock_bytes(w.bits);
  std::vector<uint8_t> q(size_t(nb * kQBlock));
  std::vector<float> sf(static_cast<size_t>(G));
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t b = 0; b < nb; ++b) unpack_qblock(w.bits, w.q + r * w.row_bytes + b * bpb, &q[size_t(b * kQBlock)]);
    for (int64_t g = 0; g < G; ++g) sf[size_t(g)] = f16_to_f32(w.scales[r * G + g]);
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* a = A.a.qa + t * A.a.a_stride;
      double acc = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        const float db = A.a.d[b * A.a.n + t];
        int32_t dot[2] = {0, 0};
        for (int i = 0; i < kQBlock; ++i)
          dot[i >> 4] += int32_t(q[size_t(b * kQBlock + i)]) * int32_t(a[b * kQBlock + i]);
        if (w.g16()) {
          for (int h = 0; h < 2; ++h)
            if (2 * b + h < G) acc += double(sf[size_t(2 * b + h)]) * db * dot[h];
        } else {
          acc += double(sf[size_t(b / bpg)]) * db * (dot[0] + dot[1]);
        }
      }
      const float* X = A.a.x + t * G;
      for (int64_t g = 0; g < G; ++g) {
        const int32_t z = w.zeros ? w.zeros[r * G + g] : w.zero_sym;
        acc -= double(sf[size_t(g)]) * z * X[g];
      }
      A.y[t * A.ldy + r] = float(acc);
    }
  }
}

void dequant_rows(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  const int bpb = qblock_bytes(w.bits);
  uint8_t q[kQBlock];
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + (r - r0) * ldo;
    for (int64_t b = 0; b < w.nb; ++b) {
      unpack_qblock(w.bits, w.q + r * w.row_bytes + b * bpb, q);
      const int64_t c0 = b * kQBlock, n = std::min<int64_t>(kQBlock, w.cols - c0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t g = (c0 + i) / w.group;
        const float s = f16_to_f32(w.scales[r * w.groups + g]);
        const int32_t z = w.zeros ? w.zeros[r * w.groups + g] : w.zero_sym;
        o[c0 + i] = s * float(int32_t(q[i]) - z);
      }
    }
  }
}

}  // namespace

const QuantOps qops_scalar = {SimdLevel::Scalar, quantize_acts, gemm, dequant_rows};

const QuantOps& qops_at(SimdLevel l) {
  switch (l) {
    case SimdLevel::AVX512: return qops_avx512;
    case SimdLevel::AVX2: return qops_avx2;
    default: return qops_scalar;
  }
}

const QuantOps& qops() { return qops_at(active_simd_level()); }

}  // namespace lmpress::kern
