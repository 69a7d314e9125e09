// The fp family: 3- and 4-bit minifloats (sign, E exponent bits, M mantissa bits, E + M = bits - 1)
// times an f16 scale per group, scale = absmax / (largest magnitude). Code = sign << (bits - 1) |
// magnitude index; magnitude i is the format's value with exponent bias 2^(E-1) - 1 and
// subnormals, scaled by 2^(bias - 1 + M) so that every magnitude is an exact small integer and the
// kernels dot int8 values exactly (the table families' kernels; a real-valued exponent bias, as
// LLM-FP4 searches, is the group's f16 scale).
//   fp4g<G>     E2M1: 0, 1, 2, 3, 4, 6, 8, 12    (= 2 x {0, 0.5, 1, 1.5, 2, 3, 4, 6}; OCP's FP4)
//   fp4e3m0g<G> E3M0: 0, 1, 2, 4, 8, 16, 32, 64  (powers of two only)
//   fp4e1m2g<G> E1M2: 0, 1, 2, ..., 7            (uniform: int4 in sign-magnitude)
//   fp3g<G>     E2M0: 0, 1, 2, 4
//   fp3e1m1g<G> E1M1: 0, 1, 2, 3
// QuantSpec::variant holds E when it is not the default split (E2), 0 otherwise.
#include <cctype>

#include "formats/traits.h"

namespace lmpress {

namespace fmt {
// 2 * E2M1 value of each code (shared with mxfp4).
extern const int8_t kE2M1x2[16];
const int8_t kE2M1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
}  // namespace fmt

namespace {

constexpr int8_t kE3M0[16] = {0, 1, 2, 4, 8, 16, 32, 64, 0, -1, -2, -4, -8, -16, -32, -64};
constexpr int8_t kE1M2[16] = {0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7};
// 3-bit tables; the kernels read 16 entries per table (codes stay below 8)
constexpr int8_t kE2M0[16] = {0, 1, 2, 4, 0, -1, -2, -4};
constexpr int8_t kE1M1[16] = {0, 1, 2, 3, 0, -1, -2, -3};

int ebits_of(const QuantSpec& s) { return s.variant ? s.variant : 2; }
const int8_t* table_of(const QuantSpec& s) {
  const int e = ebits_of(s);
  if (s.bits == 4) return e == 3 ? kE3M0 : e == 1 ? kE1M2 : fmt::kE2M1x2;
  return e == 1 ? kE1M1 : kE2M0;
}
float vmax_of(const QuantSpec& s) { return float(table_of(s)[(1 << (s.bits - 1)) - 1]); }

bool valid(const QuantSpec& s) {
  if (s.family != FormatFamily::FP4 || !s.sym || s.group <= 0 || fmt::group_code(s.group) <= 0) return false;
  if (s.bits == 4) return s.variant == 0 || s.variant == 1 || s.variant == 3;
  if (s.bits == 3) return s.variant == 0 || s.variant == 1;
  return false;
}
std::string name_of(const QuantSpec& s) {
  std::string n = "fp" + std::to_string(s.bits);
  if (s.variant) n += "e" + std::to_string(s.variant) + "m" + std::to_string(s.bits - 1 - s.variant);
  return n + fmt::group_suffix(s.group);
}
// fp<B>[e<E>m<M>]g<G>: E + M = B - 1; e2m1 (4 bits) / e2m0 (3 bits) name the default split
bool parse(const std::string& n, QuantSpec* out) {
  if (n.size() < 4 || n.compare(0, 2, "fp") != 0 || (n[2] != '3' && n[2] != '4')) return false;
  QuantSpec s{n[2] - '0', 0, true, FormatFamily::FP4};
  size_t i = 3;
  if (i + 3 < n.size() && n[i] == 'e' && n[i + 2] == 'm' && std::isdigit(static_cast<unsigned char>(n[i + 1])) &&
      std::isdigit(static_cast<unsigned char>(n[i + 3]))) {
    const int e = n[i + 1] - '0', m = n[i + 3] - '0';
    if (e < 1 || e + m != s.bits - 1) return false;
    s.variant = e == 2 ? 0 : e;
    i += 4;
  }
  if (!fmt::parse_group_suffix(n.substr(i), &s.group) || !valid(s)) return false;
  *out = s;
  return true;
}
void list(std::vector<QuantSpec>& v) {
  for (int bits : {4, 3})
    for (int e : {0, 1, 3})
      for (int g : {16, 32, 64, 128}) {
        QuantSpec s{bits, g, true, FormatFamily::FP4};
        s.variant = e;
        if (valid(s)) v.push_back(s);
      }
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 2, false); }
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, table_of(s));
}
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<fmt::AbsmaxTableGrid>(s, table_of(s), vmax_of(s)); }
const int8_t* group_table(const QuantSpec& s, int32_t) { return table_of(s); }

}  // namespace

const FormatTraits fp4_format = {
    FormatFamily::FP4, "fp4", "3/4-bit minifloat (E2M1 default; E3M0, E1M2, E2M0, E1M1) times an f16 scale per group",
    ActKind::Int8Blocks, fmt::kE2M1x2, valid, name_of, parse, list, geometry, fmt::pack_f16_scales,
    fmt::unpack_f16_params, fmt::check_f16_params, view, grid, LMP_TABLE_KERNELS, false, group_table,
};

}  // namespace lmpress
