// Quantizing to llama.cpp's block types (the ggml family): the grid every lmpress method rounds
// onto, and pack / unpack between QuantizedMatrix and the blocks' bytes.
//
// A group is one block of the type (32 or 256 weights). Its params are fitted first, from the
// group's weights (weighted by the caller's importance, e.g. diag(H), else by the weights' own
// magnitude): per sub-block (32 or 16 weights, or the whole block for the single-scale types) a
// continuous scale (and min) by a weighted least-squares search over candidate scales, then the
// block's f16 super-scales d (and dmin) and the integer sub-scales (and mins) that minimise the
// weighted error of each sub-block among the neighbouring integers. The method (RTN, GPTQ,
// QuantEase ...) then chooses every code with those params fixed: GPTQ's Hessian-aware rounding on
// llama.cpp's own grids, exported to GGUF byte for byte. docs/formats.md ("ggml family") and
// docs/methods.md ("llama.cpp's types as targets").
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/ggml_family.h"
#include "formats/traits.h"
#include "kernels/ggml_blocks.h"

namespace lmpress {

namespace kg = kern::ggml;

namespace {

// How a type's codes and params are laid out for quantization.
struct QDesc {
  uint32_t type;
  int qk;          // weights per block
  int sub;         // weights per sub-block with its own integer scale (qk: one f16 scale only)
  int ncode;       // codes 0 .. ncode - 1
  int off;         // signed value v = code - off; -1: v = kIQ4Values[code]
  bool affine;     // value = S v - M with a fitted min M (k-quants: M = dmin * m, m >= 0)
  int sc_lo, sc_hi;  // integer sub-scale range (sub < qk)
  int m_hi;          // integer sub-min range 0 .. m_hi (affine k-quants)
};

constexpr QDesc kDescs[] = {
    {kg::kQ4_0, 32, 32, 16, 8, false, 0, 0, 0},
    {kg::kQ4_1, 32, 32, 16, 0, true, 0, 0, 0},
    {kg::kQ5_0, 32, 32, 32, 16, false, 0, 0, 0},
    {kg::kQ5_1, 32, 32, 32, 0, true, 0, 0, 0},
    {kg::kQ8_0, 32, 32, 256, 128, false, 0, 0, 0},
    {kg::kIQ4_NL, 32, 32, 16, -1, false, 0, 0, 0},
    {kg::kQ2_K, 256, 16, 4, 0, true, 0, 15, 15},
    {kg::kQ3_K, 256, 16, 8, 4, false, -32, 31, 0},
    {kg::kQ4_K, 256, 32, 16, 0, true, 0, 63, 63},
    {kg::kQ5_K, 256, 32, 32, 0, true, 0, 63, 63},
    {kg::kQ6_K, 256, 16, 64, 32, false, -128, 127, 0},
    {kg::kIQ4_XS, 256, 32, 16, -1, false, -32, 31, 0},
};

const QDesc& desc(uint32_t type) {
  for (const QDesc& d : kDescs)
    if (d.type == type) return d;
  LMP_ASSERT(false);
  return kDescs[0];
}

inline float value_of(const QDesc& t, int code) {
  return t.off < 0 ? float(kg::kIQ4Values[code]) : float(code - t.off);
}
inline float vmin_of(const QDesc& t) { return t.off < 0 ? -127.f : float(-t.off); }
inline float vmax_of(const QDesc& t) { return t.off < 0 ? 113.f : float(t.ncode - 1 - t.off); }

// Nearest code to x under value = S v - M (S may be negative or zero).
int nearest_code(const QDesc& t, float x, float S, float M) {
  if (S == 0.f) {  // every code gives -M: the one of value 0 (or the smallest |v|)
    if (t.off >= 0) return t.off;
    return 8;  // kIQ4Values[8] = 1
  }
  const float u = (x + M) / S;
  if (t.off >= 0) {
    float v = std::nearbyint(u);
    v = std::min(std::max(v, vmin_of(t)), vmax_of(t));
    return int(v) + t.off;
  }
  // table: the sorted values' nearest (ties to the lower value)
  int lo = 0;
  while (lo < 15 && u > 0.5f * (float(kg::kIQ4Values[lo]) + float(kg::kIQ4Values[lo + 1]))) ++lo;
  return lo;
}

// Weighted squared error of a sub-block x[0..n) under (S, M) with nearest codes.
double sub_error(const QDesc& t, const float* x, const float* wt, int n, float S, float M) {
  double e = 0;
  for (int i = 0; i < n; ++i) {
    const float p = S * value_of(t, nearest_code(t, x[i], S, M));
    const double d = double(x[i]) - double(p - M);
    e += double(wt[i]) * d * d;
  }
  return e;
}

struct SubFit {
  float s = 0.f;  // scale (signed for the symmetric types)
  float m = 0.f;  // min (value = s v - m); 0 for the symmetric types
};

// Continuous fit of one sub-block: symmetric types search scales mapping the largest-magnitude
// weight near either end of the value range, each refined by the weighted least-squares scale for
// its codes; affine types search llama.cpp-style ranges (make_qkx2-like steps) with a weighted
// least-squares (scale, min) refit, min >= 0 for the k-quants (value = s q - m).
SubFit fit_sub(const QDesc& t, const float* x, const float* wt, int n, bool free_min) {
  SubFit best;
  double best_err = std::numeric_limits<double>::infinity();
  auto consider = [&](float s, float m) {
    if (!std::isfinite(s) || !std::isfinite(m)) return;
    const double e = sub_error(t, x, wt, n, s, m);
    if (e < best_err) best_err = e, best = SubFit{s, m};
  };
  if (!t.affine) {
    float xm = 0.f;
    for (int i = 0; i < n; ++i)
      if (std::fabs(x[i]) > std::fabs(xm)) xm = x[i];
    if (xm == 0.f) return best;
    for (float E : {vmin_of(t), vmax_of(t)}) {
      for (int k = -8; k <= 8; ++k) {
        const float s0 = xm / (E * (1.f + 0.02f * float(k)));
        // least-squares scale for these codes
        double sxv = 0, svv = 0;
        for (int i = 0; i < n; ++i) {
          const double v = value_of(t, nearest_code(t, x[i], s0, 0.f));
          sxv += double(wt[i]) * x[i] * v;
          svv += double(wt[i]) * v * v;
        }
        consider(s0, 0.f);
        if (svv > 0) consider(float(sxv / svv), 0.f);
      }
    }
    return best;
  }
  float xmin = x[0], xmax = x[0];
  for (int i = 1; i < n; ++i) xmin = std::min(xmin, x[i]), xmax = std::max(xmax, x[i]);
  if (!free_min) xmin = std::min(xmin, 0.f);
  const float nmax = float(t.ncode - 1);
  if (xmax == xmin) {
    consider(0.f, -xmin);
    return best;
  }
  consider((xmax - xmin) / nmax, -xmin);
  for (int k = 0; k <= 20; ++k) {
    const float iscale = (nmax - 1.f + 0.1f * float(k)) / (xmax - xmin);
    double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      const double q = std::min(std::max(std::nearbyint(iscale * (x[i] - xmin)), 0.f), nmax);
      const double w = wt[i];
      sw += w, sq += w * q, sqq += w * q * q, sx += w * x[i], sqx += w * q * x[i];
    }
    const double D = sw * sqq - sq * sq;
    if (!(D > 0)) continue;
    double s = (sw * sqx - sq * sx) / D, b = (sqq * sx - sq * sqx) / D;  // x ~ s q + b
    if (!free_min && b > 0) b = 0, s = sqq > 0 ? sqx / sqq : 0;
    if (s > 0) consider(float(s), float(-b));
  }
  return best;
}

uint16_t f16_bits(float v, const std::string& where) {
  const uint16_t h = f32_to_f16(v);
  if ((h & 0x7c00) == 0x7c00) fail(where, "block scale " + std::to_string(v) + " is beyond the f16 range");
  return h;
}

class GgmlGrid : public Grid {
 public:
  explicit GgmlGrid(const QuantSpec& s) : Grid(s), t_(desc(uint32_t(s.bits))) {}

  GroupParams params(const float* w, int64_t n, float, const double* imp) const override {
    const QDesc& t = t_;
    if (n != t.qk)
      fail("", std::string(kg::type_info(t.type)->name) + " quantizes whole blocks of " + std::to_string(t.qk) +
                   " weights, got a group of " + std::to_string(n));
    float wt[256];
    const int nsub = t.qk / t.sub;
    for (int j = 0; j < nsub; ++j) {
      const float* x = w + j * t.sub;
      double ss = 0, si = 0;
      for (int i = 0; i < t.sub; ++i) {
        if (!std::isfinite(x[i])) fail("", "non-finite weight " + std::to_string(x[i]));
        ss += double(x[i]) * x[i];
        if (imp) si += imp[j * t.sub + i];
      }
      const float rms = float(std::sqrt(ss / t.sub));
      for (int i = 0; i < t.sub; ++i)
        wt[j * t.sub + i] = imp && si > 0 ? float(imp[j * t.sub + i]) : rms + std::fabs(x[i]);
    }
    GroupParams p;
    const uint32_t type = t.type;
    if (t.sub == t.qk) {  // one f16 scale (and q4_1 / q5_1's f16 m: value = d q + m)
      const SubFit f = fit_sub(t, w, wt, t.qk, true);
      p.gd = f16_bits(f.s, "");
      if (t.affine) p.gdmin = f16_bits(-f.m, "");
      ggml_set_factors(type, p);
      return p;
    }
    SubFit f[16];
    float smax = 0.f, mmax = 0.f;
    for (int j = 0; j < nsub; ++j) {
      f[j] = fit_sub(t, w + j * t.sub, wt + j * t.sub, t.sub, false);
      if (t.affine) {
        f[j].s = std::max(f[j].s, 0.f);
        smax = std::max(smax, f[j].s), mmax = std::max(mmax, f[j].m);
      } else if (std::fabs(f[j].s) > std::fabs(smax)) {
        smax = f[j].s;  // signed: the largest-magnitude scale maps onto the negative end
      }
    }
    // Super-scale candidates around the one mapping the largest sub-scale onto the range's end;
    // per candidate the best neighbouring integers per sub-block; the lowest total error wins.
    const float d0 = t.affine ? smax / float(t.sc_hi) : smax / float(t.sc_lo);
    const float dm = t.affine ? f16_to_f32(f16_bits(mmax / float(t.m_hi), "")) : 0.f;
    double best_total = std::numeric_limits<double>::infinity();
    GroupParams cand;
    for (int k = -3; k <= 3; ++k) {
      const float dc = f16_to_f32(f16_bits(d0 * (1.f + 0.01f * float(k)), ""));
      if (k != 0 && dc == f16_to_f32(f16_bits(d0, ""))) continue;
      cand.gd = f32_to_f16(dc);
      cand.gdmin = f32_to_f16(dm);
      double total = 0;
      for (int j = 0; j < nsub; ++j) {
        const float* x = w + j * t.sub;
        const float* wj = wt + j * t.sub;
        const float us = dc != 0.f ? f[j].s / dc : 0.f, um = dm != 0.f ? f[j].m / dm : 0.f;
        double be = std::numeric_limits<double>::infinity();
        int bs = 0, bm = 0;
        for (int a = 0; a < 2; ++a)
          for (int b = 0; b < (t.affine ? 2 : 1); ++b) {
            const int sc = std::clamp(int(std::floor(us)) + a, t.sc_lo, t.sc_hi);
            const int m = t.affine ? std::clamp(int(std::floor(um)) + b, 0, t.m_hi) : 0;
            const float S = dc * float(sc), M = dm * float(m);
            const double e = sub_error(t, x, wj, t.sub, S, M);
            if (e < be) be = e, bs = sc, bm = m;
          }
        cand.gsc[j] = static_cast<int8_t>(static_cast<uint8_t>(bs));  // unsigned 4/6-bit or signed
        cand.gm[j] = uint8_t(bm);
        total += be;
      }
      if (total < best_total) best_total = total, p = cand;
    }
    ggml_set_factors(type, p);
    return p;
  }

  int32_t quantize(float w, const GroupParams& p) const override { return quantize_at(w, p, 0); }
  float dequantize(int32_t q, const GroupParams& p) const override { return dequantize_at(q, p, 0); }
  int32_t quantize_at(float w, const GroupParams& p, int64_t j) const override {
    return nearest_code(t_, w, p.S[j / 16], p.M[j / 16]);
  }
  float dequantize_at(int32_t q, const GroupParams& p, int64_t j) const override {
    const float v = p.S[j / 16] * value_of(t_, q);  // ggml's dequantization: one product, one difference
    return v - p.M[j / 16];
  }
  bool has_range() const override { return false; }

 private:
  const QDesc& t_;
};

// 4-bit pairs of the legacy layout: byte j holds code j (low nibble) and code j + 16 (high).
void put_nibbles(const uint8_t* c, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((c[j] & 15) | (c[j + 16] & 15) << 4);
}
void put_f16(uint8_t* b, uint16_t h) { std::memcpy(b, &h, 2); }

// One block from its codes (c[qk]) and params.
void encode_block(const QDesc& t, const uint8_t* c, const GroupParams& p, uint8_t* b) {
  std::memset(b, 0, size_t(kg::type_info(t.type)->bytes));
  switch (t.type) {
    case kg::kQ4_0: case kg::kIQ4_NL: put_f16(b, p.gd); put_nibbles(c, b + 2); break;
    case kg::kQ4_1: put_f16(b, p.gd); put_f16(b + 2, p.gdmin); put_nibbles(c, b + 4); break;
    case kg::kQ5_0: case kg::kQ5_1: {
      const int off = t.type == kg::kQ5_0 ? 2 : 4;
      put_f16(b, p.gd);
      if (t.type == kg::kQ5_1) put_f16(b + 2, p.gdmin);
      uint32_t qh = 0;
      for (int i = 0; i < 32; ++i) qh |= uint32_t(c[i] >> 4) << i;
      std::memcpy(b + off, &qh, 4);
      put_nibbles(c, b + off + 4);
      break;
    }
    case kg::kQ8_0:
      put_f16(b, p.gd);
      for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(int(c[i]) - 128));
      break;
    case kg::kQ2_K: case kg::kQ3_K: {
      auto* q2 = reinterpret_cast<kg::BlockQ2_K*>(b);
      auto* q3 = reinterpret_cast<kg::BlockQ3_K*>(b);
      uint8_t* qs = t.type == kg::kQ2_K ? q2->qs : q3->qs;
      for (int i = 0; i < 256; ++i) {
        const int n = i / 128, j = (i / 32) % 4, l = i % 32;
        qs[32 * n + l] |= uint8_t((c[i] & 3) << (2 * j));
        if (t.type == kg::kQ3_K && c[i] >= 4) q3->hmask[l] |= uint8_t(1 << (i / 32));
      }
      if (t.type == kg::kQ2_K) {
        for (int h = 0; h < 16; ++h) q2->scales[h] = uint8_t((uint8_t(p.gsc[h]) & 15) | (p.gm[h] & 15) << 4);
        q2->d = p.gd, q2->dmin = p.gdmin;
      } else {
        for (int h = 0; h < 16; ++h) {
          const int u = int(p.gsc[h]) + 32;
          q3->scales[h % 8] |= uint8_t((u & 15) << (4 * (h / 8)));
          q3->scales[8 + h % 4] |= uint8_t((u >> 4) << (2 * (h / 4)));
        }
        q3->d = p.gd;
      }
      break;
    }
    case kg::kQ4_K: case kg::kQ5_K: {
      put_f16(b, p.gd);
      put_f16(b + 2, p.gdmin);
      uint8_t* s = b + 4;
      for (int k = 0; k < 4; ++k) {
        const int sc = uint8_t(p.gsc[k]), sc4 = uint8_t(p.gsc[k + 4]);
        s[k] = uint8_t((sc & 63) | (sc4 >> 4) << 6);
        s[k + 4] = uint8_t((p.gm[k] & 63) | (p.gm[k + 4] >> 4) << 6);
        s[k + 8] = uint8_t((sc4 & 15) | (p.gm[k + 4] & 15) << 4);
      }
      uint8_t* qs = b + (t.type == kg::kQ4_K ? 16 : 48);
      for (int i = 0; i < 256; ++i) {
        const int j = i / 32, l = i % 32;
        qs[32 * (j / 2) + l] |= uint8_t((c[i] & 15) << (4 * (j % 2)));
        if (t.type == kg::kQ5_K) b[16 + l] |= uint8_t((c[i] >> 4) << j);
      }
      break;
    }
    case kg::kQ6_K: {
      auto* q = reinterpret_cast<kg::BlockQ6_K*>(b);
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, j = (i / 32) % 4, l = i % 32;
        q->ql[64 * h + 32 * (j % 2) + l] |= uint8_t((c[i] & 15) << (4 * (j / 2)));
        q->qh[32 * h + l] |= uint8_t((c[i] >> 4) << (2 * j));
      }
      for (int h = 0; h < 16; ++h) q->scales[h] = p.gsc[h];
      q->d = p.gd;
      break;
    }
    case kg::kIQ4_XS: {
      auto* q = reinterpret_cast<kg::BlockIQ4_XS*>(b);
      q->d = p.gd;
      for (int j = 0; j < 8; ++j) {
        const int u = int(p.gsc[j]) + 32;
        q->scales_l[j / 2] |= uint8_t((u & 15) << (4 * (j % 2)));
        q->scales_h = uint16_t(q->scales_h | (u >> 4) << (2 * j));
        put_nibbles(c + 32 * j, q->qs + 16 * j);
      }
      break;
    }
    default: LMP_ASSERT(false);
  }
}

// Params and codes of one block (the inverse of encode_block).
void decode_block(const QDesc& t, const uint8_t* b, uint8_t* c, GroupParams& p) {
  int8_t v[256];
  kg::block_values(t.type, b, v);
  for (int i = 0; i < t.qk; ++i) {
    if (t.off >= 0) {
      c[i] = uint8_t(int(v[i]) + t.off);
    } else {
      int k = 0;
      while (kg::kIQ4Values[k] != v[i]) ++k;
      c[i] = uint8_t(k);
    }
  }
  switch (t.type) {
    case kg::kQ4_0: case kg::kQ5_0: case kg::kQ8_0: case kg::kIQ4_NL: std::memcpy(&p.gd, b, 2); break;
    case kg::kQ4_1: case kg::kQ5_1: std::memcpy(&p.gd, b, 2), std::memcpy(&p.gdmin, b + 2, 2); break;
    case kg::kQ2_K: {
      const auto* q = reinterpret_cast<const kg::BlockQ2_K*>(b);
      for (int h = 0; h < 16; ++h) p.gsc[h] = int8_t(q->scales[h] & 15), p.gm[h] = uint8_t(q->scales[h] >> 4);
      p.gd = q->d, p.gdmin = q->dmin;
      break;
    }
    case kg::kQ3_K: {
      const auto* q = reinterpret_cast<const kg::BlockQ3_K*>(b);
      for (int h = 0; h < 16; ++h) p.gsc[h] = int8_t(kg::q3k_scale(q->scales, h));
      p.gd = q->d;
      break;
    }
    case kg::kQ4_K: case kg::kQ5_K: {
      std::memcpy(&p.gd, b, 2), std::memcpy(&p.gdmin, b + 2, 2);
      for (int j = 0; j < 8; ++j) {
        int sc, m;
        kg::k4_scale_min(b + 4, j, &sc, &m);
        p.gsc[j] = int8_t(uint8_t(sc)), p.gm[j] = uint8_t(m);
      }
      break;
    }
    case kg::kQ6_K: {
      const auto* q = reinterpret_cast<const kg::BlockQ6_K*>(b);
      for (int h = 0; h < 16; ++h) p.gsc[h] = q->scales[h];
      p.gd = q->d;
      break;
    }
    case kg::kIQ4_XS: {
      const auto* q = reinterpret_cast<const kg::BlockIQ4_XS*>(b);
      for (int j = 0; j < 8; ++j) p.gsc[j] = int8_t(kg::iq4xs_scale(q, j));
      p.gd = q->d;
      break;
    }
    default: LMP_ASSERT(false);
  }
  ggml_set_factors(t.type, p);
}

}  // namespace

void ggml_set_factors(uint32_t type, GroupParams& p) {
  const float d = f16_to_f32(p.gd), dm = f16_to_f32(p.gdmin);
  p.scale = d;
  auto fill = [&](int h0, int nh, float s, float m) {
    for (int h = h0; h < h0 + nh; ++h) p.S[h] = s, p.M[h] = m;
  };
  switch (type) {
    case kg::kQ4_0: case kg::kQ5_0: case kg::kQ8_0: case kg::kIQ4_NL: fill(0, 2, d, 0.f); break;
    case kg::kQ4_1: case kg::kQ5_1: fill(0, 2, d, -dm); break;
    case kg::kQ2_K:
      for (int h = 0; h < 16; ++h) fill(h, 1, d * float(uint8_t(p.gsc[h])), dm * float(p.gm[h]));
      break;
    case kg::kQ3_K: case kg::kQ6_K:
      for (int h = 0; h < 16; ++h) fill(h, 1, d * float(p.gsc[h]), 0.f);
      break;
    case kg::kQ4_K: case kg::kQ5_K:
      for (int j = 0; j < 8; ++j) fill(2 * j, 2, d * float(uint8_t(p.gsc[j])), dm * float(p.gm[j]));
      break;
    case kg::kIQ4_XS:
      for (int j = 0; j < 8; ++j) fill(2 * j, 2, d * float(p.gsc[j]), 0.f);
      break;
    default: LMP_ASSERT(false);
  }
}

std::unique_ptr<Grid> make_ggml_grid(const QuantSpec& s) { return std::make_unique<GgmlGrid>(s); }

void ggml_pack_blocks(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  const QDesc& t = desc(uint32_t(qm.spec.bits));
  const int bytes = kg::type_info(t.type)->bytes;
  const int64_t nblk = g.cols / t.qk;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t k = 0; k < nblk; ++k) {
      const uint8_t* c = qm.q.data() + r * g.cols + k * t.qk;
      for (int i = 0; i < t.qk; ++i)
        if (c[i] >= t.ncode)
          fail(where, std::string(kg::type_info(t.type)->name) + ": code " + std::to_string(c[i]) + " at row " +
                          std::to_string(r) + ", column " + std::to_string(k * t.qk + i) + " exceeds " +
                          std::to_string(t.ncode - 1));
      const GroupParams p = qm.params(r, k);
      auto bad = [&](const std::string& what) {
        fail(where, std::string(kg::type_info(t.type)->name) + ": " + what + " in block " + std::to_string(k) +
                        " of row " + std::to_string(r));
      };
      if ((p.gd & 0x7c00) == 0x7c00 || (p.gdmin & 0x7c00) == 0x7c00) bad("non-finite f16 scale");
      if (t.sub < t.qk)
        for (int j = 0; j < t.qk / t.sub; ++j) {
          const int sc = t.affine ? int(uint8_t(p.gsc[j])) : int(p.gsc[j]);
          if (sc < t.sc_lo || sc > t.sc_hi) bad("sub-block scale " + std::to_string(sc) + " out of range");
          if (p.gm[j] > t.m_hi) bad("sub-block min " + std::to_string(p.gm[j]) + " out of range");
        }
      encode_block(t, c, p, out + (r * nblk + k) * bytes);
    }
}

void ggml_unpack_blocks(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  const QDesc& t = desc(uint32_t(s.bits));
  const int bytes = kg::type_info(t.type)->bytes;
  const int64_t nblk = g.cols / t.qk;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t k = 0; k < nblk; ++k) {
      GroupParams p;
      decode_block(t, data + (r * nblk + k) * bytes, qm.q.data() + r * g.cols + k * t.qk, p);
      qm.set_params(r, k, p);
    }
}

}  // namespace lmpress
