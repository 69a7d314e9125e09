// b1g<G> / b1row: binary weights (PB-LLM's binarized part, Shang et al. 2023): w = alpha_g * (2q - 1),
// one bit per weight, one f16 scale alpha per group. A table family whose int8 table is {-1, +1}
// (codes in 1-bit block planes: u32 LE per 32 weights, bit i = q[i]), so the table kernels of every
// ISA level run it (docs/formats.md, "binary family"). With sparse outliers (`b1g128+s1.00`) it
// holds PB-LLM's salient weights apart in f16.
#include <cmath>

#include "formats/traits.h"

namespace lmpress {

namespace {

// {-1, +1}; 16 bytes so the SIMD table load (8 bytes) stays inside the array.
alignas(16) constexpr int8_t kBin[16] = {-1, 1};
constexpr QuantSpec kProto{1, 0, true, FormatFamily::Binary};

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Binary && s.bits == 1 && s.sym && fmt::group_code(s.group) > 0;
}
std::string name_of(const QuantSpec& s) { return "b1" + fmt::group_suffix(s.group); }
bool parse(const std::string& n, QuantSpec* out) { return fmt::parse_prefixed(n, "b1", kProto, out); }
void list(std::vector<QuantSpec>& v) {
  for (int g : {16, 32, 64, 128, 0}) v.push_back(QuantSpec{1, g, true, FormatFamily::Binary});
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 2, false); }
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, kBin);
}

// The code is the sign (w > 0 -> +alpha; 0 and below -> -alpha), whatever alpha is. alpha is the
// least-squares scale for those signs: argmin_a sum_i imp_i (w_i - a sign_i)^2 = sum imp |w| / sum imp
// (imp = 1 without importance; PB-LLM's alpha = mean |w|), times `clip` for range searches, rounded
// to the nearest f16. An all-zero group gets alpha = 0 (every weight decodes to 0).
class BinaryGrid : public fmt::TableGrid {
 public:
  explicit BinaryGrid(const QuantSpec& s) : TableGrid(s, kBin) {}
  GroupParams params(const float* w, int64_t n, float clip, const double* imp) const override {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(w[i])) fail("", "cannot quantize a non-finite weight (index " + std::to_string(i) + " of a group)");
      const double k = imp ? imp[i] : 1.0;
      num += k * std::fabs(double(w[i]));
      den += k;
    }
    GroupParams p;
    p.table = kBin;
    const float a = den > 0 ? float(num / den * double(clip)) : 0.f;
    p.scale = f16_to_f32(f32_to_f16(a));
    if (!std::isfinite(p.scale)) fail("", "weight range too large for an f16 scale (mean |w| = " + std::to_string(a) + ")");
    return p;
  }
  int32_t quantize(float w, const GroupParams&) const override { return w > 0.f ? 1 : 0; }
};

std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<BinaryGrid>(s); }

}  // namespace

const FormatTraits binary_format = {
    FormatFamily::Binary, "binary", "one bit per weight, w = alpha * (2q - 1), f16 alpha per group (PB-LLM's binarized part)",
    ActKind::Int8Blocks, kBin, valid, name_of, parse, list, geometry, fmt::pack_f16_scales, fmt::unpack_f16_params,
    fmt::check_f16_params, view, grid, LMP_TABLE_KERNELS,
};

}  // namespace lmpress
