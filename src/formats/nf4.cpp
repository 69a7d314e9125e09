// nf4g<G>: QLoRA's NormalFloat-4 (Dettmers et al. 2023): 16 values that are quantiles of N(0, 1)
// scaled to [-1, 1], times the group's absmax. Stored as int8 table values (NF4 * 127, rounded)
// times an f16 scale absmax / 127, so the kernels dot int8 values exactly (docs/formats.md; the
// rounding moves a value by at most 0.5/127 of the absmax: a documented deviation).
#include "formats/traits.h"

namespace lmpress {

namespace {

// round(127 * NF4[q]); NF4 from the QLoRA reference (bitsandbytes' create_normal_map).
constexpr int8_t kNF4[16] = {-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127};
constexpr QuantSpec kProto{4, 0, true, FormatFamily::NF4};

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::NF4 && s.bits == 4 && s.sym && s.group > 0 && fmt::group_code(s.group) > 0;
}
std::string name_of(const QuantSpec& s) { return "nf4" + fmt::group_suffix(s.group); }
bool parse(const std::string& n, QuantSpec* out) { return fmt::parse_prefixed(n, "nf4", kProto, out); }
void list(std::vector<QuantSpec>& v) {
  for (int g : {16, 32, 64, 128}) v.push_back(QuantSpec{4, g, true, FormatFamily::NF4});
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 2, false); }
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, kNF4);
}
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<fmt::AbsmaxTableGrid>(s, kNF4, 127.f); }

}  // namespace

const FormatTraits nf4_format = {
    FormatFamily::NF4, "nf4", "NormalFloat-4 values (int8 / 127) times an f16 absmax scale per group",
    ActKind::Int8Blocks, kNF4, valid, name_of, parse, list, geometry, fmt::pack_f16_scales, fmt::unpack_f16_params,
    fmt::check_f16_params, view, grid, LMP_TABLE_KERNELS,
};

}  // namespace lmpress
