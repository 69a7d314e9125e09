// Repacked int-family layout (kernels/qrepack.h): geometry, the builder (from the reference block
// unpacking, so the copy holds exactly the stored codes and scales) and a scalar product over the
// repacked layout, which checks the layout independently of any SIMD kernel.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/qrepack.h"

namespace lmpress::kern {

bool repack_supported(const QWeights& w) {
  if (w.lut || w.e8m0 || w.stats2 || !w.scales || repack_cw(w.bits) == 0) return false;
  if (w.rows < 1 || w.cols < 1 || w.groups < 1) return false;
  if (w.group == 16) return w.groups == (w.cols + 15) / 16;
  if (w.groups == 1) return true;  // whole row (or one group covering it)
  return w.group % 32 == 0 && w.groups == (w.cols + w.group - 1) / w.group;
}

QRepacked repack_geometry(const QWeights& w) {
  QRepacked p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.nb = w.nb;
  p.groups = w.groups;
  p.bits = w.bits;
  p.cw = repack_cw(w.bits);
  p.units = w.g16() ? 2 : 1;
  p.tiles = (w.rows + kRepackRows - 1) / kRepackRows;
  p.code_bytes = p.nb * p.cw * 64;
  p.scale_bytes = (p.nb * p.units * kRepackRows * 2 + 63) / 64 * 64;
  p.corr_bytes = (p.groups * kRepackRows * 4 + 63) / 64 * 64;
  p.tile_bytes = p.code_bytes + p.scale_bytes + p.corr_bytes;
  return p;
}

namespace {
// f16 scale of the group holding unit u of block b (0 past the row's groups).
uint16_t unit_scale(const QWeights& w, int64_t r, int64_t b, int u) {
  int64_t g;
  if (w.g16()) g = 2 * b + u;
  else if (w.groups == 1) g = 0;
  else g = (b * kQBlock) / w.group;
  return g < w.groups ? w.scales[r * w.groups + g] : uint16_t(0);
}
}  // namespace

void repack_int_tiles(const QWeights& w, uint8_t* out, int64_t k0, int64_t k1) {
  const QRepacked p = repack_geometry(w);
  std::memset(out + k0 * p.tile_bytes, 0, size_t((k1 - k0) * p.tile_bytes));
  const int cw = p.cw, BPB = qblock_bytes(w.bits);
  uint8_t q[kQBlock];
  for (int64_t r = k0 * kRepackRows; r < std::min(w.rows, k1 * kRepackRows); ++r) {
    const int64_t k = r / kRepackRows, i = r % kRepackRows;
    uint8_t* codes = out + k * p.tile_bytes;
    uint16_t* sc = reinterpret_cast<uint16_t*>(codes + p.code_bytes);
    float* corr = reinterpret_cast<float*>(codes + p.code_bytes + p.scale_bytes);
    for (int64_t b = 0; b < w.nb; ++b) {
      unpack_qblock(w.bits, w.q + r * w.row_bytes + b * BPB, q);
      for (int c = 0; c < kQBlock; ++c) {
        const int j = c / 4, pv = j % cw, shift = (j / cw) * cw;
        codes[(b * cw + pv) * 64 + i * 4 + c % 4] |= uint8_t(q[c] << shift);
      }
      for (int u = 0; u < p.units; ++u) sc[(b * p.units + u) * kRepackRows + i] = unit_scale(w, r, b, u);
    }
    for (int64_t g = 0; g < w.groups; ++g) {
      const float s = f16_to_f32(w.scales[r * w.groups + g]);
      const int32_t z = w.zeros ? int32_t(w.zeros[r * w.groups + g]) : w.zero_sym;
      corr[g * kRepackRows + i] = -(s * float(z));  // exact: 11-bit mantissa times z < 2^9
    }
  }
}

void repacked_gemm_scalar(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                          int64_t t0, int64_t t1) {
  const int cw = p.cw, mask = (1 << cw) - 1, ulen = kQBlock / p.units;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t k = r / kRepackRows, i = r % kRepackRows;
    const uint8_t* codes = p.tile(k);
    const uint16_t* sc = reinterpret_cast<const uint16_t*>(codes + p.code_bytes);
    const float* corr = reinterpret_cast<const float*>(codes + p.code_bytes + p.scale_bytes);
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* at = a.qa + t * a.a_stride;
      float acc = 0.f;
      for (int64_t b = 0; b < p.nb; ++b) {
        for (int u = 0; u < p.units; ++u) {
          int32_t dot = 0;
          for (int c = u * ulen; c < (u + 1) * ulen; ++c) {
            const int j = c / 4, pv = j % cw, shift = (j / cw) * cw;
            const int q = (codes[(b * cw + pv) * 64 + i * 4 + c % 4] >> shift) & mask;
            dot += q * at[b * kQBlock + c];
          }
          acc += f16_to_f32(sc[(b * p.units + u) * kRepackRows + i]) * a.d[b * a.n + t] * float(dot);
        }
      }
      for (int64_t g = 0; g < p.groups; ++g) acc += corr[g * kRepackRows + i] * a.x[t * p.groups + g];
      y[t * ldy + r] = acc;
    }
  }
}

}  // namespace lmpress::kern
