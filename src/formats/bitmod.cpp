// bitmod<b>g<G>: BitMoD's mixture of datatypes (Chen et al. 2025, "BitMoD: Bit-serial
// Mixture-of-Datatype LLM Acceleration"). Every group of G weights picks one of four b-bit
// floating-point datatypes: FP4 (E2M1, values 0, 0.5 .. 6) or FP3 (0, 1, 2, 4 up to sign) whose
// redundant negative zero is re-used for one special value: extra resolution (ER: +-5 for FP4,
// +-3 for FP3, between the two largest magnitudes) or extra asymmetry (EA: +-8 / +-6, beyond the
// largest), on the positive or the negative side. The group stores a u8 selector (0 ER+, 1 ER-,
// 2 EA+, 3 EA-) and an f16 scale absmax / max|value| of its datatype (the reference's per-group
// scale). Tables are exact int8 multiples of the values (FP4 x 14: 2 x E2M1 x 7; FP3 x 21), so
// the table family's int8 kernels run it with a per-group table (QWeights::lut_sel).
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "formats/traits.h"

namespace lmpress {

namespace fmt {
// [datatype][code], ascending; 3-bit tables use the first 8 entries.
const int8_t kBitmod4[4][16] = {
    {-84, -56, -42, -28, -21, -14, -7, 0, 7, 14, 21, 28, 42, 56, 70, 84},   // ER+: +5 (x14)
    {-84, -70, -56, -42, -28, -21, -14, -7, 0, 7, 14, 21, 28, 42, 56, 84},  // ER-: -5
    {-84, -56, -42, -28, -21, -14, -7, 0, 7, 14, 21, 28, 42, 56, 84, 112},  // EA+: +8
    {-112, -84, -56, -42, -28, -21, -14, -7, 0, 7, 14, 21, 28, 42, 56, 84}, // EA-: -8
};
const int8_t kBitmod3[4][16] = {
    {-84, -42, -21, 0, 21, 42, 63, 84},    // ER+: +3 (x21)
    {-84, -63, -42, -21, 0, 21, 42, 84},   // ER-: -3
    {-84, -42, -21, 0, 21, 42, 84, 126},   // EA+: +6
    {-126, -84, -42, -21, 0, 21, 42, 84},  // EA-: -6
};
const int8_t* bitmod_table(int bits, int32_t sel) { return (bits == 4 ? kBitmod4 : kBitmod3)[sel & 3]; }
}  // namespace fmt

namespace {

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Bitmod && (s.bits == 3 || s.bits == 4) && s.sym &&
         (s.group == 32 || s.group == 64 || s.group == 128) && s.param == 0;
}
std::string name_of(const QuantSpec& s) { return "bitmod" + std::to_string(s.bits) + fmt::group_suffix(s.group); }
bool parse(const std::string& n, QuantSpec* out) {
  if (n.size() < 8 || n.rfind("bitmod", 0) != 0 || (n[6] != '3' && n[6] != '4')) return false;
  QuantSpec s{n[6] - '0', 0, true, FormatFamily::Bitmod};
  if (!fmt::parse_group_suffix(n.substr(7), &s.group)) return false;
  *out = s;
  return true;
}
void list(std::vector<QuantSpec>& v) {
  for (int b : {3, 4})
    for (int g : {32, 64, 128}) v.push_back(QuantSpec{b, g, true, FormatFamily::Bitmod});
}
// codes, f16 scales [rows][groups], u8 selectors [rows][groups] (zero_bytes).
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  PackedGeometry g = fmt::block_geometry(s, rows, cols, 2);
  g.zero_bytes = rows * g.groups_per_row;
  g.total_bytes += g.zero_bytes;
  return g;
}
void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  fmt::pack_f16_scales(qm, g, out, where);
  const int64_t n = g.rows * g.groups_per_row;
  if (int64_t(qm.zeros.size()) != n)
    fail(where, "bitmod selectors: " + std::to_string(qm.zeros.size()) + " values, expected " + std::to_string(n));
  uint8_t* sel = out + g.q_bytes + g.scale_bytes;
  for (int64_t k = 0; k < n; ++k) {
    const int32_t v = qm.zeros[size_t(k)];
    if (v < 0 || v > 3)
      fail(where, "bitmod datatype selector " + std::to_string(v) + " at row " + std::to_string(k / g.groups_per_row) +
                      ", group " + std::to_string(k % g.groups_per_row) + " (0..3)");
    sel[k] = uint8_t(v);
  }
}
void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, QuantizedMatrix& qm) {
  fmt::unpack_f16_scales(data, g, qm);
  const uint8_t* sel = data + g.q_bytes + g.scale_bytes;
  qm.zeros.assign(sel, sel + g.zero_bytes);
}
void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, const std::string& where) {
  fmt::check_f16_scales(data, g, where);
  const uint8_t* sel = data + g.q_bytes + g.scale_bytes;
  for (int64_t k = 0; k < g.zero_bytes; ++k)
    if (sel[k] > 3)
      fail(where, "bitmod datatype selector " + std::to_string(sel[k]) + " at row " + std::to_string(k / g.groups_per_row) +
                      ", group " + std::to_string(k % g.groups_per_row) + " (0..3)");
}
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w = fmt::table_view(base, s, g, fmt::bitmod_table(s.bits, 0));
  w.lut_sel = base + g.q_bytes + g.scale_bytes;
  return w;
}
const int8_t* group_table(const QuantSpec& s, int32_t sel) { return fmt::bitmod_table(s.bits, sel); }

// Per group: each datatype with its absmax scale, nearest values; the datatype of least
// (importance-weighted) squared error wins (first strict minimum: ER+ on ties).
class BitmodGrid final : public fmt::TableGrid {
 public:
  explicit BitmodGrid(const QuantSpec& s) : TableGrid(s, nullptr) {}
  GroupParams params(const float* w, int64_t n, float clip, const double* imp) const override {
    const float amax = fmt::group_absmax(w, n);
    GroupParams best;
    double best_err = INFINITY;
    bool any = false;
    for (int32_t t = 0; t < 4; ++t) {
      GroupParams p;
      p.table = fmt::bitmod_table(spec().bits, t);
      p.zero = t;
      int vmax = 0;
      for (int q = 0; q < n_codes(); ++q) vmax = std::max(vmax, std::abs(int(p.table[q])));
      // a datatype whose scale would pass the f16 range is out (the EA ones reach further)
      if (amax * clip > 0.f) p.scale = round_scale_f16(amax * clip / float(vmax));
      if (!std::isfinite(p.scale)) continue;
      any = true;
      double e = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = double(w[i]) - double(dequantize(quantize(w[i], p), p));
        e += (imp ? imp[i] : 1.0) * d * d;
      }
      if (e < best_err || best_err == INFINITY) best_err = e, best = p;
    }
    if (!any) fail("", "weight range too large for an f16 scale (max |w| = " + std::to_string(amax) + ")");
    return best;
  }
};
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<BitmodGrid>(s); }

}  // namespace

const FormatTraits bitmod_format = {
    FormatFamily::Bitmod, "bitmod", "per group one of four FP3/FP4 datatypes with a special value (u8 selector) times an f16 scale",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    LMP_TABLE_KERNELS, false, group_table,
};

}  // namespace lmpress
