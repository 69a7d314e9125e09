// pow<b>g<G> / pow<b>a<A>g<G>: the non-uniform grid of NUPES (Yvinec et al. 2023, "Non-Uniform
// Post-Training Quantization via Power Exponent Search"): a weight w is mapped to sign(w)|w|^a,
// quantized uniformly and mapped back, so the grid is sign(u)|u|^(1/a) for uniform levels u. Here
// u runs over k / 2^(b-1) for k = -2^(b-1) .. -1, 0 and k / (2^(b-1) - 1) for k = 1 .. 2^(b-1) - 1
// (both ends reach +-1; NF4's split of 2^b codes around an exact zero), and the grid is stored as
// the int8 table round(127 sign(u)|u|^(1/a)) times an f16 absmax scale per group (absmax / 127),
// so the table family's int8 kernels run it unchanged. The exponent a (0.20 .. 2.00 in steps of
// 0.01) is a parameter of the tensor, not of the format id: a method (nupes) searches it per
// tensor and the packed tensor stores it (docs/formats.md "pow").
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "formats/traits.h"

namespace lmpress {

namespace fmt {
constexpr int kPowMin = 20, kPowMax = 200, kPowDefault = 75;  // exponent a in hundredths
int pow_effective(const QuantSpec& s) { return s.param == 0 ? kPowDefault : s.param; }
// The table of (bits, exponent in hundredths): ascending, codes 0 .. 2^bits - 1. Static storage.
const int8_t* pow_table(int bits, int param) {
  static const auto tables = [] {
    std::vector<std::array<int8_t, 16>> t(size_t(2 * (kPowMax + 1)));
    for (int b : {3, 4})
      for (int p = kPowMin; p <= kPowMax; ++p) {
        std::array<int8_t, 16>& T = t[size_t((b - 3) * (kPowMax + 1) + p)];
        T.fill(0);
        const int half = 1 << (b - 1);
        const double inv = 100.0 / double(p);
        for (int q = 0; q < 2 * half; ++q) {
          const int k = q - half;
          const double u = k < 0 ? double(k) / half : double(k) / (half - 1);
          const double v = std::copysign(std::pow(std::fabs(u), inv), u);
          T[size_t(q)] = int8_t(std::nearbyint(127.0 * v));
        }
      }
    return t;
  }();
  return tables[size_t((bits - 3) * (kPowMax + 1) + param)].data();
}
}  // namespace fmt

namespace {

constexpr QuantSpec kProto4{4, 0, true, FormatFamily::Pow}, kProto3{3, 0, true, FormatFamily::Pow};

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Pow && (s.bits == 3 || s.bits == 4) && s.sym && s.group > 0 &&
         fmt::group_code(s.group) > 0 && (s.param == 0 || (s.param >= fmt::kPowMin && s.param <= fmt::kPowMax));
}
std::string name_of(const QuantSpec& s) {
  std::string n = "pow" + std::to_string(s.bits);
  if (s.param) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "a%d.%02d", s.param / 100, s.param % 100);
    n += buf;
  }
  return n + fmt::group_suffix(s.group);
}
// pow4g64, pow3g128, pow4a0.60g64 (two decimals; the default 0.75 reads as no exponent).
bool parse(const std::string& n, QuantSpec* out) {
  if (n.size() < 5 || n.rfind("pow", 0) != 0 || (n[3] != '3' && n[3] != '4')) return false;
  QuantSpec s = n[3] == '4' ? kProto4 : kProto3;
  std::string rest = n.substr(4);
  if (!rest.empty() && rest[0] == 'a') {
    if (rest.size() < 5 || !std::isdigit((unsigned char)rest[1]) || rest[2] != '.' || !std::isdigit((unsigned char)rest[3]) ||
        !std::isdigit((unsigned char)rest[4]))
      return false;
    const int p = (rest[1] - '0') * 100 + (rest[3] - '0') * 10 + (rest[4] - '0');
    if (p < fmt::kPowMin || p > fmt::kPowMax) return false;
    s.param = p == fmt::kPowDefault ? 0 : p;
    rest = rest.substr(5);
  }
  if (!fmt::parse_group_suffix(rest, &s.group) || s.group == 0) return false;
  *out = s;
  return true;
}
void list(std::vector<QuantSpec>& v) {
  for (int b : {3, 4})
    for (int g : {16, 32, 64, 128}) v.push_back(QuantSpec{b, g, true, FormatFamily::Pow});
}
// codes, f16 scales [rows][groups], then the tensor's table [2^bits] int8 and its exponent (u8,
// hundredths): table_bytes = 2^bits + 1.
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  PackedGeometry g = fmt::block_geometry(s, rows, cols, 2);
  g.table_bytes = (int64_t(1) << s.bits) + 1;
  g.total_bytes += g.table_bytes;
  return g;
}
void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  fmt::pack_f16_scales(qm, g, out, where);
  const int p = fmt::pow_effective(qm.spec);
  const int T = 1 << qm.spec.bits;
  std::memcpy(out + g.q_bytes + g.scale_bytes, fmt::pow_table(qm.spec.bits, p), size_t(T));
  out[g.q_bytes + g.scale_bytes + T] = uint8_t(p);
}
void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  fmt::unpack_f16_scales(data, g, qm);
  const int p = data[g.q_bytes + g.scale_bytes + (int64_t(1) << s.bits)];
  qm.spec.param = p == fmt::kPowDefault ? 0 : p;
}
void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where) {
  fmt::check_f16_scales(data, g, where);
  const int T = 1 << s.bits;
  const uint8_t* t = data + g.q_bytes + g.scale_bytes;
  const int p = t[T];
  if (p < fmt::kPowMin || p > fmt::kPowMax)
    fail(where, "pow exponent byte " + std::to_string(p) + " out of range " + std::to_string(fmt::kPowMin) + ".." +
                    std::to_string(fmt::kPowMax) + " (hundredths)");
  if (std::memcmp(t, fmt::pow_table(s.bits, p), size_t(T)) != 0)
    fail(where, "pow table does not match its exponent " + std::to_string(p / 100) + "." + std::to_string(p % 100 / 10) +
                    std::to_string(p % 10) + " (corrupt tensor)");
}
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, reinterpret_cast<const int8_t*>(base + g.q_bytes + g.scale_bytes));
}
const int8_t* group_table(const QuantSpec& s, int32_t) { return fmt::pow_table(s.bits, fmt::pow_effective(s)); }
std::unique_ptr<Grid> grid(const QuantSpec& s) {
  return std::make_unique<fmt::AbsmaxTableGrid>(s, group_table(s, 0), 127.f);
}

}  // namespace

const FormatTraits pow_format = {
    FormatFamily::Pow, "pow", "NUPES power grid sign(u)|u|^(1/a) (int8 / 127) times an f16 absmax scale per group; a stored per tensor",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    LMP_TABLE_KERNELS, false, group_table,
};

}  // namespace lmpress
