// fp4g<G>: E2M1 floating point (sign, 2 exponent bits, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6)
// times an f16 scale per group, scale = absmax / 6. Code = sign << 3 | magnitude index. Stored as
// the int8 table 2 * E2M1 (exact) times scale / 2, so the kernels dot int8 values exactly.
#include "formats/traits.h"

namespace lmpress {

namespace fmt {
// 2 * E2M1 value of each code (shared with mxfp4).
extern const int8_t kE2M1x2[16];
const int8_t kE2M1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
}  // namespace fmt

namespace {

constexpr QuantSpec kProto{4, 0, true, FormatFamily::FP4};

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::FP4 && s.bits == 4 && s.sym && s.group > 0 && fmt::group_code(s.group) > 0;
}
std::string name_of(const QuantSpec& s) { return "fp4" + fmt::group_suffix(s.group); }
bool parse(const std::string& n, QuantSpec* out) { return fmt::parse_prefixed(n, "fp4", kProto, out); }
void list(std::vector<QuantSpec>& v) {
  for (int g : {16, 32, 64, 128}) v.push_back(QuantSpec{4, g, true, FormatFamily::FP4});
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 2, false); }
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, fmt::kE2M1x2);
}
// table max 12 = 2 * 6 (E2M1's largest magnitude)
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<fmt::AbsmaxTableGrid>(s, fmt::kE2M1x2, 12.f); }

}  // namespace

const FormatTraits fp4_format = {
    FormatFamily::FP4, "fp4", "E2M1 values times an f16 scale per group (scale = absmax / 6)",
    ActKind::Int8Blocks, fmt::kE2M1x2, valid, name_of, parse, list, geometry, fmt::pack_f16_scales,
    fmt::unpack_f16_params, fmt::check_f16_params, view, grid, LMP_TABLE_KERNELS,
};

}  // namespace lmpress
