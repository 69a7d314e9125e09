// Repacked int-family layout (kernels/qrepack.h): geometry, the builder (from the reference block
// unpacking, so the copy holds exactly the stored codes and scales) and a scalar product over the
// repacked layout, which checks the layout independently of any SIMD kernel.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/ggml_blocks.h"
#include "kernels/qrepack.h"

namespace lmpress::kern {

namespace {
// Group shapes the layout's units cover: group 16 (two units per block), the whole row, or multiples of 32.
bool units_fit(const QWeights& w) {
  if (w.rows < 1 || w.cols < 1 || w.groups < 1) return false;
  if (w.group == 16) return w.groups == (w.cols + 15) / 16;
  if (w.groups == 1) return true;  // whole row (or one group covering it)
  return w.group % 32 == 0 && w.groups == (w.cols + w.group - 1) / w.group;
}
// The geometry of w's groups in a container of cw bits per code, scales f16 (or f32).
QRepacked unit_geometry(const QWeights& w, int cw, int code_max, int code_offset, bool sf32) {
  QRepacked p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.nb = w.nb;
  p.groups = w.groups;
  p.bits = w.bits;
  p.cw = cw;
  p.code_max = code_max;
  p.code_offset = code_offset;
  p.units = w.g16() ? 2 : 1;
  p.sf32 = sf32;
  p.tiles = (w.rows + kRepackRows - 1) / kRepackRows;
  p.code_bytes = p.nb * p.cw * 64;
  p.scale_bytes = (p.nb * p.units * kRepackRows * (sf32 ? 4 : 2) + 63) / 64 * 64;
  p.corr_bytes = (p.groups * kRepackRows * 4 + 63) / 64 * 64;
  p.tile_bytes = p.code_bytes + p.scale_bytes + p.corr_bytes;
  return p;
}
// The group holding unit u of block b (>= groups past the row's last group).
int64_t unit_group(const QWeights& w, int64_t b, int u) {
  if (w.g16()) return 2 * b + u;
  if (w.groups == 1) return 0;
  return (b * kQBlock) / w.group;
}
// f16 scale of the group holding unit u of block b (0 past the row's groups).
uint16_t unit_scale(const QWeights& w, int64_t r, int64_t b, int u) {
  const int64_t g = unit_group(w, b, u);
  return g < w.groups ? w.scales[r * w.groups + g] : uint16_t(0);
}
}  // namespace

bool repack_supported(const QWeights& w) {
  return !w.lut && !w.e8m0 && !w.stats2 && w.scales && repack_cw(w.bits) != 0 && units_fit(w);
}

QRepacked repack_geometry(const QWeights& w) {
  return unit_geometry(w, repack_cw(w.bits), (1 << w.bits) - 1, w.zeros ? 0 : w.zero_sym, false);
}

namespace {
// The 32 codes of one row's block into its lane (dst = the block's first vector + 4 * row).
template <int CW>
inline void place_codes_t(const uint8_t* q, uint8_t* dst) {
  for (int j = 0; j < 8; ++j)
    for (int k = 0; k < 4; ++k) dst[(j % CW) * 64 + k] |= uint8_t(q[4 * j + k] << ((j / CW) * CW));
}
inline void place_codes(int cw, const uint8_t* q, uint8_t* dst) {
  if (cw == 2) place_codes_t<2>(q, dst);
  else if (cw == 4) place_codes_t<4>(q, dst);
  else place_codes_t<8>(q, dst);
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
      place_codes(cw, q, codes + b * cw * 64 + i * 4);
      for (int u = 0; u < p.units; ++u) sc[(b * p.units + u) * kRepackRows + i] = unit_scale(w, r, b, u);
    }
    for (int64_t g = 0; g < w.groups; ++g) {
      const float s = f16_to_f32(w.scales[r * w.groups + g]);
      const int32_t z = w.zeros ? int32_t(w.zeros[r * w.groups + g]) : w.zero_sym;
      corr[g * kRepackRows + i] = -(s * float(z));  // exact: 11-bit mantissa times z < 2^9
    }
  }
}

bool repack_table_supported(const QWeights& w) {
  return w.lut && !w.stats2 && !w.vq_book && (w.scales || w.e8m0) && w.bits >= 1 && w.bits <= 4 && units_fit(w);
}

QRepacked repack_geometry_table(const QWeights& w) {
  // the range of every table the tensor uses (one, one per row, or the groups' selections)
  const int ncodes = 1 << w.bits;
  int lo = 127, hi = -128;
  auto scan = [&](const int8_t* T) {
    for (int q = 0; q < ncodes; ++q) lo = std::min(lo, int(T[q])), hi = std::max(hi, int(T[q]));
  };
  if (w.lut_sel) {
    for (int64_t i = 0; i < w.rows * w.groups; ++i) scan(w.lut + 16 * int64_t(w.lut_sel[i]));
  } else if (w.lut_stride) {
    for (int64_t r = 0; r < w.rows; ++r) scan(w.lut + r * w.lut_stride);
  } else {
    scan(w.lut);
  }
  const int C = std::max(0, -lo), umax = std::max(0, hi) + C;  // <= 255: int8 tables
  // (E8M0 scales of mxfp4 go in as f32)
  return unit_geometry(w, umax <= 3 ? 2 : umax <= 15 ? 4 : 8, umax, C, w.scales == nullptr);
}

void repack_table_tiles(const QWeights& w, const QRepacked& p, uint8_t* out, int64_t k0, int64_t k1) {
  std::memset(out + k0 * p.tile_bytes, 0, size_t((k1 - k0) * p.tile_bytes));
  const int BPB = qblock_bytes(w.bits), C = p.code_offset;
  uint8_t q[kQBlock], u[kQBlock];
  for (int64_t r = k0 * kRepackRows; r < std::min(w.rows, k1 * kRepackRows); ++r) {
    const int64_t k = r / kRepackRows, i = r % kRepackRows;
    uint8_t* codes = out + k * p.tile_bytes;
    uint8_t* sc = codes + p.code_bytes;
    float* corr = reinterpret_cast<float*>(codes + p.code_bytes + p.scale_bytes);
    for (int64_t b = 0; b < w.nb; ++b) {
      unpack_qblock(w.bits, w.q + r * w.row_bytes + b * BPB, q);
      for (int j = 0; j < kQBlock; ++j) {
        const int64_t c = std::min(b * kQBlock + j, w.cols - 1);  // padding: any code (its activation is 0)
        const int64_t g = w.g16() ? c / 16 : w.groups == 1 ? 0 : c / w.group;
        u[j] = uint8_t(int(w.group_lut(r, g)[q[j]]) + C);
      }
      place_codes(p.cw, u, codes + b * p.cw * 64 + i * 4);
      for (int un = 0; un < p.units; ++un) {
        const int64_t g = unit_group(w, b, un);
        const size_t at = size_t((b * p.units + un) * kRepackRows + i);
        if (p.sf32) reinterpret_cast<float*>(sc)[at] = g < w.groups ? w.scale(r, g) : 0.f;
        else reinterpret_cast<uint16_t*>(sc)[at] = g < w.groups ? w.scales[r * w.groups + g] : uint16_t(0);
      }
    }
    for (int64_t g = 0; g < w.groups; ++g) corr[g * kRepackRows + i] = -(w.scale(r, g) * float(C));  // exact: C <= 255
  }
}

namespace {
// C: code offset; cw: container; umax: the largest code v + C of the type (decoded values are
// bounded by the block format; the builder checks it anyway); merged: one unit per 32-block;
// mins: the type has block minimums M (else corr = -C S exactly, QRepacked::code_offset = C).
struct GgmlRepack {
  uint32_t type;
  int C, cw, umax;
  bool merged, mins;
};
constexpr GgmlRepack kGgmlRepack[] = {
    {ggml::kQ4_0, 8, 4, 15, true, false},     {ggml::kQ4_1, 0, 4, 15, true, true},
    {ggml::kQ5_0, 16, 8, 31, true, false},    {ggml::kQ5_1, 0, 8, 31, true, true},
    {ggml::kQ8_0, 128, 8, 255, true, false},  {ggml::kIQ4_NL, 128, 8, 255, true, false},
    {ggml::kQ4_K, 0, 4, 15, true, true},      {ggml::kQ5_K, 0, 8, 31, true, true},
    {ggml::kIQ4_XS, 128, 8, 255, true, false}, {ggml::kQ2_K, 0, 2, 3, false, true},
    {ggml::kQ3_K, 4, 4, 7, false, false},     {ggml::kQ6_K, 32, 8, 63, false, false},
};
const GgmlRepack* ggml_repack(const QWeights& w) {
  for (const auto& e : kGgmlRepack)
    if (e.type == uint32_t(w.bits)) return &e;
  return nullptr;
}
}  // namespace

bool repack_ggml_supported(const QWeights& w) {
  const ggml::TypeInfo* t = ggml_repack(w) ? ggml::type_info(uint32_t(w.bits)) : nullptr;
  return t && w.rows >= 1 && w.cols >= t->qk && w.cols % t->qk == 0 && w.nb * kQBlock == w.cols;
}

QRepacked repack_geometry_ggml(const QWeights& w) {
  const GgmlRepack& e = *ggml_repack(w);
  QRepacked p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.nb = w.nb;
  p.bits = w.bits;
  p.cw = e.cw;
  p.code_max = e.umax;
  p.code_offset = e.mins ? 0 : e.C;
  p.units = e.merged ? 1 : 2;
  p.groups = e.merged ? w.nb : 2 * w.nb;
  p.sf32 = true;
  p.xsum = e.merged ? 2 : 1;
  p.tiles = (w.rows + kRepackRows - 1) / kRepackRows;
  p.code_bytes = p.nb * p.cw * 64;
  p.scale_bytes = p.nb * p.units * kRepackRows * 4;
  p.corr_bytes = p.groups * kRepackRows * 4;
  p.tile_bytes = p.code_bytes + p.scale_bytes + p.corr_bytes;
  return p;
}

bool repack_ggml_tiles(const QWeights& w, uint8_t* out, int64_t k0, int64_t k1) {
  const GgmlRepack& e = *ggml_repack(w);
  const ggml::TypeInfo* ti = ggml::type_info(uint32_t(w.bits));
  const QRepacked p = repack_geometry_ggml(w);
  std::memset(out + k0 * p.tile_bytes, 0, size_t((k1 - k0) * p.tile_bytes));
  const int cw = p.cw;
  std::vector<int8_t> v(size_t(w.cols));
  std::vector<float> S(size_t(2 * w.nb)), M(size_t(2 * w.nb));
  for (int64_t r = k0 * kRepackRows; r < std::min(w.rows, k1 * kRepackRows); ++r) {
    const int64_t k = r / kRepackRows, i = r % kRepackRows;
    const uint8_t* row = w.q + r * w.row_bytes;
    for (int64_t blk = 0; blk < w.cols / ti->qk; ++blk) {
      ggml::block_values(ti->type, row + blk * ti->bytes, v.data() + blk * ti->qk);
      ggml::block_factors(ti->type, row + blk * ti->bytes, S.data() + blk * (ti->qk / 16), M.data() + blk * (ti->qk / 16));
    }
    uint8_t* codes = out + k * p.tile_bytes;
    float* sc = reinterpret_cast<float*>(codes + p.code_bytes);
    float* corr = reinterpret_cast<float*>(codes + p.code_bytes + p.scale_bytes);
    for (int64_t b = 0; b < w.nb; ++b) {
      uint8_t uq[kQBlock];
      for (int c = 0; c < kQBlock; ++c) {
        const int u = int(v[size_t(b * kQBlock + c)]) + e.C;
        if (u < 0 || u > e.umax) return false;
        uq[c] = uint8_t(u);
      }
      place_codes(cw, uq, codes + b * cw * 64 + i * 4);
      for (int un = 0; un < p.units; ++un) {
        const size_t h = size_t(2 * b + un);
        if (e.merged && (S[h] != S[h + 1] || M[h] != M[h + 1])) return false;
        if (!e.mins && M[h] != 0.f) return false;  // (code_offset promises corr = -C S)
        sc[(b * p.units + un) * kRepackRows + i] = S[h];
        corr[(b * p.units + un) * kRepackRows + i] = -(M[h] + float(e.C) * S[h]);
      }
    }
  }
  return true;
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
          const int64_t si = (b * p.units + u) * kRepackRows + i;
          const float S = p.sf32 ? reinterpret_cast<const float*>(sc)[si] : f16_to_f32(sc[si]);
          acc += S * a.d[b * a.n + t] * float(dot);
        }
      }
      for (int64_t g = 0; g < p.groups; ++g) {
        float X = 0.f;
        for (int h = 0; h < p.xsum; ++h) X += a.x[(t * p.groups + g) * p.xsum + h];
        acc += corr[g * kRepackRows + i] * X;
      }
      y[t * ldy + r] = acc;
    }
  }
}

void build_act_panel(const int8_t* qa, int64_t stride, int64_t n, int64_t nb, int8_t* panel, int64_t tb0,
                     int64_t tb1) {
  for (int64_t tb = tb0; tb < tb1; ++tb)
    for (int64_t j = 0; j < 16; ++j) {
      const int64_t t = tb * 16 + j;
      int8_t* dst = panel + tb * nb * 512 + j * 32;
      if (t >= n) {
        for (int64_t b = 0; b < nb; ++b) std::memset(dst + b * 512, 0, 32);
        continue;
      }
      const int8_t* src = qa + t * stride;
      for (int64_t b = 0; b < nb; ++b) std::memcpy(dst + b * 512, src + b * 32, 32);
    }
}

void fill_token_panels(const QRepacked& p, const QActs& a, int64_t tc, int64_t tce, int kt, int8_t* qa, float* d,
                       float* x) {
  const int64_t nb = p.nb, G = p.groups, n = a.n, ntt = (tce - tc + kt - 1) / kt;
  for (int64_t tt = 0; tt < ntt; ++tt)
    for (int j = 0; j < kt; ++j) {
      const int64_t t = std::min(tce - 1, tc + tt * kt + j);
      const int8_t* src = a.qa + t * a.a_stride;
      int8_t* dst = qa + tt * nb * kt * 32 + j * 32;
      for (int64_t b = 0; b < nb; ++b) std::memcpy(dst + b * kt * 32, src + b * 32, 32);
      float* dd = d + tt * nb * kt + j;
      for (int64_t b = 0; b < nb; ++b) dd[b * kt] = a.d[b * n + t];
      float* xd = x + tt * G * kt + j;
      if (p.xsum == 2) {
        for (int64_t g = 0; g < G; ++g) xd[g * kt] = a.x[(t * G + g) * 2] + a.x[(t * G + g) * 2 + 1];
      } else {
        for (int64_t g = 0; g < G; ++g) xd[g * kt] = a.x[t * G + g];
      }
    }
}

}  // namespace lmpress::kern
