// Shared layout of the table families (nf4, fp4, mxfp4, lut): docs/formats.md, "Table formats".
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

kern::QWeights table_view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g, const int8_t* fixed_table) {
  kern::QWeights w;
  w.q = base;
  if (g.scale_size == 2)
    w.scales = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  else
    w.e8m0 = base + g.q_bytes;
  w.rows = g.rows;
  w.cols = g.cols;
  w.nb = g.blocks_per_row;
  w.row_bytes = g.row_bytes;
  w.groups = g.groups_per_row;
  w.group = g.group;
  w.bits = s.bits;
  w.zero_sym = 0;
  if (fixed_table) {
    w.lut = fixed_table;
    w.lut_stride = 0;
  } else {
    w.lut = reinterpret_cast<const int8_t*>(base + g.q_bytes + g.scale_bytes);
    w.lut_stride = int64_t(1) << s.bits;
  }
  return w;
}

}  // namespace lmpress::fmt
