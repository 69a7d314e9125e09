// spqr<b>g<G>[r<R>]: SpQR's format (formats/spqr.h). Per row: the b-bit codes in the int family's
// 32-weight blocks, then the row's 6-bit statistic codes (scale code | zero code << 3 per group);
// after all rows, per row group of R rows: [4][groups] f16 second-level values (scale step, scale
// low, zero step, zero low). Sparse outliers (+s) are the generic part after that.
// A weight is s * q - m (kernels/spqr_rows.h decodes s and m); the kernels are the ggml family's
// half-factor machinery with the statistics decoded per row (kernels/spqr_x86.h).
#include "formats/spqr.h"

#include <algorithm>
#include <cmath>

#include "formats/traits.h"
#include "kernels/spqr_rows.h"

namespace lmpress {

namespace spqr {

Stats1 minmax_stats(const float* w, int64_t n, int bits) {
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i]))
      fail("", "cannot quantize a non-finite weight (" + std::to_string(w[i]) + " at index " + std::to_string(i) + " of a group)");
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  Stats1 st;
  if (n == 0 || (lo == 0.f && hi == 0.f)) return st;
  const float maxq = float((1 << bits) - 1);
  auto fit = [&](float a, float b) {
    st.scale = (b - a) / maxq;
    st.zero = -a / st.scale;
  };
  if (hi > lo) fit(lo, hi);
  if (!(hi > lo) || !(std::fabs(st.zero) <= 1024.f)) fit(std::min(lo, 0.f), std::max(hi, 0.f));
  if (!std::isfinite(st.scale) || !std::isfinite(st.zero))
    fail("", "weight range too large for SpQR's statistics (max |w| = " + std::to_string(std::max(-lo, hi)) + ")");
  return st;
}

void quantize_stat(const float* v, int64_t n, uint8_t* codes, float* low, float* step) {
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < n; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
  const float l = f16_to_f32(f32_to_f16(lo));
  const float st = hi > l ? round_scale_f16((hi - l) / float(kStatMax)) : 0.f;
  if (!std::isfinite(l) || !std::isfinite(st))
    fail("", "SpQR statistic beyond the f16 range (" + std::to_string(lo) + " .. " + std::to_string(hi) + ")");
  for (int64_t i = 0; i < n; ++i) {
    const float q = st > 0.f ? std::nearbyint((v[i] - l) / st) : 0.f;
    codes[i] = uint8_t(std::clamp(q, 0.f, float(kStatMax)));
  }
  *low = l;
  *step = st;
}

Factors factors(const QuantizedMatrix& qm, int64_t r, int64_t gi) {
  const int64_t rg = r / qm.spec.group2;
  const uint32_t code = uint32_t(qm.zeros[size_t(r * qm.groups() + gi)]);
  Factors f;
  f.s = qm.stats2[stats2_index(qm, rg, 1, gi)] + qm.stats2[stats2_index(qm, rg, 0, gi)] * float(code & 7);
  f.z = qm.stats2[stats2_index(qm, rg, 3, gi)] + qm.stats2[stats2_index(qm, rg, 2, gi)] * float(code >> 3);
  f.m = f.s * f.z;
  return f;
}

void set_group(QuantizedMatrix& qm, int64_t r0, int64_t r1, int64_t gi, const float* scale, const float* zero) {
  const int64_t n = r1 - r0, rg = r0 / qm.spec.group2, G = qm.groups();
  uint8_t cs[64], cz[64];
  LMP_ASSERT(n <= 64 && r0 % qm.spec.group2 == 0);
  quantize_stat(scale, n, cs, &qm.stats2[stats2_index(qm, rg, 1, gi)], &qm.stats2[stats2_index(qm, rg, 0, gi)]);
  quantize_stat(zero, n, cz, &qm.stats2[stats2_index(qm, rg, 3, gi)], &qm.stats2[stats2_index(qm, rg, 2, gi)]);
  for (int64_t i = 0; i < n; ++i) {
    qm.zeros[size_t((r0 + i) * G + gi)] = int32_t(cs[i] | cz[i] << 3);
    qm.scales[size_t((r0 + i) * G + gi)] = factors(qm, r0 + i, gi).s;
  }
}

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s) {
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  const int64_t g = s.group, G = qm.groups(), R = s.group2;
  const int32_t maxq = (1 << s.bits) - 1;
  std::vector<float> sc(static_cast<size_t>(R)), ze(static_cast<size_t>(R));
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int64_t r1 = std::min(rows, r0 + R);
    for (int64_t gi = 0; gi < G; ++gi) {
      const int64_t c0 = gi * g, c1 = std::min(cols, c0 + g);
      for (int64_t r = r0; r < r1; ++r) {
        Stats1 st;
        try {
          st = minmax_stats(w + r * cols + c0, c1 - c0, s.bits);
        } catch (const Error& e) {
          fail("", std::string(e.what()) + " (row " + std::to_string(r) + ", columns " + std::to_string(c0) + ".." +
                       std::to_string(c1 - 1) + ")");
        }
        sc[size_t(r - r0)] = st.scale;
        ze[size_t(r - r0)] = st.zero;
      }
      set_group(qm, r0, r1, gi, sc.data(), ze.data());
      for (int64_t r = r0; r < r1; ++r) {
        const Factors f = factors(qm, r, gi);
        for (int64_t c = c0; c < c1; ++c) qm.q[size_t(r * cols + c)] = quantize(w[r * cols + c], f, maxq);
      }
    }
  }
  return qm;
}

std::vector<float> dequantize_dense(const QuantizedMatrix& qm) {
  const int64_t g = qm.group_len(), G = qm.groups();
  std::vector<float> out(size_t(qm.rows * qm.cols));
  for (int64_t r = 0; r < qm.rows; ++r)
    for (int64_t gi = 0; gi < G; ++gi) {
      const Factors f = factors(qm, r, gi);
      for (int64_t c = gi * g; c < std::min(qm.cols, (gi + 1) * g); ++c)
        out[size_t(r * qm.cols + c)] = value(qm.q[size_t(r * qm.cols + c)], f);
    }
  return out;
}

}  // namespace spqr

namespace {

bool allowed_group(int g) { return g == 16 || g == 32 || g == 64; }

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Spqr && s.bits >= 2 && s.bits <= 4 && allowed_group(s.group) &&
         allowed_group(s.group2) && !s.sym;
}
std::string name_of(const QuantSpec& s) {
  std::string n = "spqr";  // (appends: GCC 12 warns falsely on "x" + std::string)
  n += std::to_string(s.bits);
  n += 'g';
  n += std::to_string(s.group);
  if (s.group2 != 16) {
    n += 'r';
    n += std::to_string(s.group2);
  }
  return n;
}
// spqr<b> (= spqr<b>g16), spqr<b>g<G>, spqr<b>g<G>r<R>
bool parse(const std::string& n, QuantSpec* out) {
  if (n.size() < 5 || n.compare(0, 4, "spqr") != 0 || n[4] < '0' || n[4] > '9') return false;
  QuantSpec s{n[4] - '0', 16, false, FormatFamily::Spqr};
  s.group2 = 16;
  size_t i = 5;
  auto number = [&](char tag, int* v) {
    if (i >= n.size() || n[i] != tag) return true;
    size_t j = i + 1;
    while (j < n.size() && j - i <= 3 && n[j] >= '0' && n[j] <= '9') ++j;
    if (j == i + 1 || n[i + 1] == '0') return false;
    *v = std::stoi(n.substr(i + 1, j - i - 1));
    i = j;
    return true;
  };
  if (!number('g', &s.group) || !number('r', &s.group2) || i != n.size()) return false;
  *out = s;
  return true;
}
void list(std::vector<QuantSpec>& v) {
  for (int b : {2, 3, 4})
    for (int g : {16, 32, 64})
      for (int r : {16, 32, 64}) {
        QuantSpec s{b, g, false, FormatFamily::Spqr};
        s.group2 = r;
        v.push_back(s);
      }
}

PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.blocks_per_row = (cols + kern::kQBlock - 1) / kern::kQBlock;
  g.group = s.group;
  g.groups_per_row = (cols + s.group - 1) / s.group;
  g.row_bytes = g.blocks_per_row * kern::qblock_bytes(s.bits) + kern::spqr::stat_bytes(g.groups_per_row);
  g.q_bytes = rows * g.row_bytes;
  g.scale_size = 2;
  g.scale_bytes = spqr::row_groups(s, rows) * 4 * g.groups_per_row * 2;
  g.total_bytes = g.q_bytes + g.scale_bytes;
  return g;
}

uint8_t* stat_row(uint8_t* base, const PackedGeometry& g, const QuantSpec& s, int64_t r) {
  return base + r * g.row_bytes + g.blocks_per_row * kern::qblock_bytes(s.bits);
}

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  const QuantSpec& s = qm.spec;
  const int64_t G = g.groups_per_row, n2 = spqr::row_groups(s, g.rows) * 4 * G;
  if (int64_t(qm.zeros.size()) != g.rows * G)
    fail(where, "spqr statistic codes: " + std::to_string(qm.zeros.size()) + " values, expected " + std::to_string(g.rows * G));
  if (int64_t(qm.stats2.size()) != n2)
    fail(where, "spqr second-level statistics: " + std::to_string(qm.stats2.size()) + " values, expected " + std::to_string(n2));
  for (int64_t r = 0; r < g.rows; ++r) {
    uint8_t* st = stat_row(out, g, s, r);
    for (int64_t gi = 0; gi < G; ++gi) {
      const int32_t c = qm.zeros[size_t(r * G + gi)];
      if (c < 0 || c > 63)
        fail(where, "spqr statistic code " + std::to_string(c) + " at row " + std::to_string(r) + ", group " +
                        std::to_string(gi) + " (two 3-bit codes: 0..63)");
      const int64_t bit = 6 * gi;
      st[bit / 8] = uint8_t(st[bit / 8] | c << (bit % 8));
      if (bit % 8 > 2) st[bit / 8 + 1] = uint8_t(st[bit / 8 + 1] | c >> (8 - bit % 8));
    }
  }
  uint16_t* dst = reinterpret_cast<uint16_t*>(out + g.q_bytes);
  for (int64_t k = 0; k < n2; ++k) {
    const float v = qm.stats2[size_t(k)];
    const uint16_t h = f32_to_f16(v);
    if (!std::isfinite(v) || f16_to_f32(h) != v)
      fail(where, "spqr second-level statistic " + std::to_string(v) + " (entry " + std::to_string(k) +
                      ") is not a finite f16 value");
    dst[k] = h;
  }
}

kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w = fmt::block_view(base, s, g);
  w.stats2 = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  w.stat_rows = s.group2;
  return w;
}

void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  const kern::QWeights w = view(data, s, g);
  const int64_t G = g.groups_per_row;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t gi = 0; gi < G; ++gi)
      qm.zeros[size_t(r * G + gi)] = int32_t(kern::spqr::stat_code(kern::spqr::stat_codes(w, r), G, gi));
  for (size_t k = 0; k < qm.stats2.size(); ++k) qm.stats2[k] = f16_to_f32(w.stats2[k]);
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t gi = 0; gi < G; ++gi) qm.scales[size_t(r * G + gi)] = spqr::factors(qm, r, gi).s;
}

void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(data + g.q_bytes);
  const int64_t n2 = g.scale_bytes / 2, per_group = 4 * g.groups_per_row;
  for (int64_t k = 0; k < n2; ++k)
    if ((p[k] & 0x7c00) == 0x7c00)
      fail(where, "non-finite f16 spqr statistic in row group " + std::to_string(k / per_group) + " (rows " +
                      std::to_string(k / per_group * s.group2) + "..), entry " + std::to_string(k % per_group));
}

std::unique_ptr<Grid> grid(const QuantSpec& s) {
  fail("", format_name(s) + ": an spqr format's statistics are shared by groups of rows, so it has no per-group "
                            "grid; only the spqr method quantizes to it (recipe spqr:" + format_name(s) + ")");
}

}  // namespace

const FormatTraits spqr_format = {
    FormatFamily::Spqr, "spqr", "b-bit codes, scale and zero per small group as 3-bit codes over groups of rows (SpQR)",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    {&kern::spqr_kernels_scalar, &kern::spqr_kernels_avx2, &kern::spqr_kernels_avx512},
};

}  // namespace lmpress
