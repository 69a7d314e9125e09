// Shared layout of the table families (nf4, fp4, mxfp4, lut): docs/formats.md, "Table formats".
#include <cmath>

#include "formats/traits.h"

namespace lmpress::fmt {

PackedGeometry table_geometry(const QuantSpec& s, int64_t rows, int64_t cols, int scale_size, bool row_table) {
  PackedGeometry g = block_geometry(s, rows, cols, scale_size);
  if (row_table) {
    g.table_bytes = rows * (int64_t(1) << s.bits);
    g.total_bytes += g.table_bytes;
  }
  return g;
}

kern::QWeights block_view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w;
  w.q = base;
  w.rows = g.rows;
  w.cols = g.cols;
  w.nb = g.blocks_per_row;
  w.row_bytes = g.row_bytes;
  w.groups = g.groups_per_row;
  w.group = g.group;
  w.bits = s.bits;
  w.zero_sym = 0;
  return w;
}

kern::QWeights table_view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g, const int8_t* fixed_table) {
  kern::QWeights w = block_view(base, s, g);
  if (g.scale_size == 2)
    w.scales = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  else
    w.e8m0 = base + g.q_bytes;
  if (fixed_table) {
    w.lut = fixed_table;
    w.lut_stride = 0;
  } else {
    w.lut = reinterpret_cast<const int8_t*>(base + g.q_bytes + g.scale_bytes);
    w.lut_stride = int64_t(1) << s.bits;
  }
  return w;
}

void unpack_f16_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, QuantizedMatrix& qm) {
  unpack_f16_scales(data, g, qm);
}

void check_f16_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, const std::string& where) {
  check_f16_scales(data, g, where);
}

bool parse_prefixed(const std::string& name, const char* prefix, const QuantSpec& proto, QuantSpec* out) {
  const std::string p(prefix);
  if (name.rfind(p, 0) != 0) return false;
  QuantSpec s = proto;
  if (!parse_group_suffix(name.substr(p.size()), &s.group)) return false;
  *out = s;
  return true;
}

float group_absmax(const float* w, int64_t n) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i])) fail("", "cannot quantize a non-finite weight (index " + std::to_string(i) + " of a group)");
    amax = std::fmax(amax, std::fabs(w[i]));
  }
  return amax;
}

float absmax_scale_f16(float amax, float clip, float vmax) {
  if (!(amax * clip > 0.f)) return 1.f;
  const float s = round_scale_f16(amax * clip / vmax);
  if (!std::isfinite(s)) fail("", "weight range too large for an f16 scale (max |w| = " + std::to_string(amax) + ")");
  return s;
}

}  // namespace lmpress::fmt
