// fp4g<G>: E2M1 floating point (sign, 2 exponent bits, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6)
// times an f16 scale per group, scale = absmax / 6. Code = sign << 3 | magnitude index. Stored as
// the int8 table 2 * E2M1 (exact) times scale / 2, so the kernels dot int8 values exactly.
#include <cmath>

#include "formats/traits.h"

namespace lmpress {

namespace fmt {
// 2 * E2M1 value of each code (shared with mxfp4).
extern const int8_t kE2M1x2[16];
const int8_t kE2M1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
}  // namespace fmt

namespace {

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::FP4 && s.bits == 4 && s.sym && s.group > 0 && fmt::group_code(s.group) > 0;
}
std::string name_of(const QuantSpec& s) { return "fp4" + fmt::group_suffix(s.group); }
bool parse(const std::string& n, QuantSpec* out) {
  if (n.rfind("fp4", 0) != 0) return false;
  QuantSpec s{4, 0, true, FormatFamily::FP4};
  if (!fmt::parse_group_suffix(n.substr(3), &s.group)) return false;
  *out = s;
  return true;
}
void list(std::vector<QuantSpec>& v) {
  for (int g : {16, 32, 64, 128}) v.push_back(QuantSpec{4, g, true, FormatFamily::FP4});
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 2, false); }
void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  fmt::pack_f16_scales(qm, g, out, where);
}
void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, QuantizedMatrix& qm) {
  fmt::unpack_f16_scales(data, g, qm);
}
void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, const std::string& where) {
  fmt::check_f16_scales(data, g, where);
}
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, fmt::kE2M1x2);
}

class FP4Grid final : public fmt::TableGrid {
 public:
  explicit FP4Grid(const QuantSpec& s) : TableGrid(s, fmt::kE2M1x2) {}
  GroupParams params(const float* w, int64_t n, float clip, const double*) const override {
    float amax = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(w[i])) fail("", "cannot quantize a non-finite weight (index " + std::to_string(i) + " of a group)");
      amax = std::fmax(amax, std::fabs(w[i]));
    }
    GroupParams p;
    p.table = fmt::kE2M1x2;
    if (amax * clip > 0.f) p.scale = round_scale_f16(amax * clip / 12.f);  // table max 12 = 2 * 6
    if (!std::isfinite(p.scale)) fail("", "weight range too large for an f16 scale (max |w| = " + std::to_string(amax) + ")");
    return p;
  }
};
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<FP4Grid>(s); }

}  // namespace

const FormatTraits fp4_format = {
    FormatFamily::FP4, "fp4", "E2M1 values times an f16 scale per group (scale = absmax / 6)",
    ActKind::Int8Blocks, fmt::kE2M1x2, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    LMP_TABLE_KERNELS,
};

}  // namespace lmpress
