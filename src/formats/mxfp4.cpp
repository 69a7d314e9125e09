// mxfp4: the OCP Microscaling MXFP4 format: groups of 32 E2M1 values sharing an E8M0 scale 2^X,
// X = floor(log2(absmax)) - 2 (the largest E2M1 exponent), values beyond +-6 saturate. Stored
// as the int8 table 2 * E2M1 (fp4.cpp) and the byte E = X + 127 (OCP's E8M0 encoding of 2^X),
// so value = 2^(E-128) * T[q] = 2^X * E2M1; E is kept in [2, 253] (X in [-125, 126]; a group
// whose absmax needs a smaller scale is stored with the smallest one).
#include <cmath>

#include "formats/traits.h"

namespace lmpress {

namespace fmt {
extern const int8_t kE2M1x2[16];
}

namespace {

bool valid(const QuantSpec& s) { return s.family == FormatFamily::MXFP4 && s.bits == 4 && s.sym && s.group == 32; }
std::string name_of(const QuantSpec&) { return "mxfp4"; }
bool parse(const std::string& n, QuantSpec* out) {
  if (n != "mxfp4") return false;
  *out = QuantSpec{4, 32, true, FormatFamily::MXFP4};
  return true;
}
void list(std::vector<QuantSpec>& v) { v.push_back(QuantSpec{4, 32, true, FormatFamily::MXFP4}); }
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 1, false); }

// The stored byte of a power-of-two scale 2^k (k = E - 128); -1 if the scale is not one.
int e8m0_of(float scale) {
  int e = 0;
  const float m = std::frexp(scale, &e);  // scale = m * 2^e, m in [0.5, 1)
  if (m != 0.5f) return -1;
  const int E = e - 1 + 128;
  return E >= 2 && E <= 254 ? E : -1;
}

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  uint8_t* dst = out + g.q_bytes;
  for (int64_t k = 0; k < g.rows * g.groups_per_row; ++k) {
    const int E = e8m0_of(qm.scales[size_t(k)]);
    if (E < 0)
      fail(where, "mxfp4 scale " + std::to_string(qm.scales[size_t(k)]) + " at row " +
                      std::to_string(k / g.groups_per_row) + " is not a power of two in 2^-126..2^126");
    dst[k] = uint8_t(E);
  }
}
void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, QuantizedMatrix& qm) {
  qm.scales.resize(size_t(g.rows * g.groups_per_row));
  for (int64_t k = 0; k < g.rows * g.groups_per_row; ++k) qm.scales[size_t(k)] = std::ldexp(1.f, int(data[g.q_bytes + k]) - 128);
}
void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, const std::string& where) {
  for (int64_t k = 0; k < g.rows * g.groups_per_row; ++k) {
    const int E = data[g.q_bytes + k];
    if (E < 2 || E > 254)
      fail(where, "mxfp4 scale byte " + std::to_string(E) + " at row " + std::to_string(k / g.groups_per_row) +
                      ", group " + std::to_string(k % g.groups_per_row) + " outside 2..254");
  }
}
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, fmt::kE2M1x2);
}

class MXFP4Grid final : public fmt::TableGrid {
 public:
  explicit MXFP4Grid(const QuantSpec& s) : TableGrid(s, fmt::kE2M1x2) {}
  GroupParams params(const float* w, int64_t n, float clip, const double*) const override {
    const float amax = fmt::group_absmax(w, n) * clip;
    GroupParams p;
    p.table = fmt::kE2M1x2;
    int X = -125;  // all-zero (or tiny) group: the smallest stored scale
    if (amax > 0.f) X = std::ilogb(amax) - 2;
    X = X < -125 ? -125 : X > 126 ? 126 : X;
    p.scale = std::ldexp(1.f, X - 1);  // 2^X * E2M1 = 2^(X-1) * T
    return p;
  }
};
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<MXFP4Grid>(s); }

}  // namespace

const FormatTraits mxfp4_format = {
    FormatFamily::MXFP4, "mxfp4", "OCP MXFP4: E2M1 values, groups of 32 share a power-of-two E8M0 scale",
    ActKind::Int8Blocks, fmt::kE2M1x2, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    LMP_TABLE_KERNELS,
};

}  // namespace lmpress
