// The int family: w<b>g<G>[a] / w<b>row[a]. Codes q in [0, 2^b - 1] in 32-weight blocks (the bit
// layouts of kLayouts, reference packer src/kernels/generic/quant.cpp), f16 scales [rows][groups],
// then (asymmetric) u8 zeros [rows][groups]; w = scale * (q - zero), symmetric zero = 2^(b-1).
// Kernels: kern::QuantOps (qkernels.h), chosen per ISA level by the matmul front end.
#include <cmath>

#include "formats/traits.h"

namespace lmpress {

namespace {

// Full bit layout: docs/formats.md, "Packed weight formats".
constexpr BitLayout kLayouts[] = {
    {2, 8, "8 B: byte j = q[j] | q[j+8]<<2 | q[j+16]<<4 | q[j+24]<<6"},
    {3, 12, "8 B 2-bit plane of q&3 (as w2) + u32 LE, bit i = bit 2 of q[i]"},
    {4, 16, "16 B: byte j = q[j] | q[j+16]<<4"},
    {5, 20, "16 B 4-bit plane of q&15 (as w4) + u32 LE, bit i = bit 4 of q[i]"},
    {6, 24, "16 B 4-bit plane of q&15 (as w4) + 8 B 2-bit plane of q>>4 (as w2)"},
    {8, 32, "32 B: byte i = q[i]"},
};
constexpr bool layouts_match_kernels() {
  for (const auto& l : kLayouts)
    if (l.bytes_per_block != kern::qblock_bytes(l.bits)) return false;
  return true;
}
static_assert(layouts_match_kernels(), "bytes_per_block must equal bits * 32 / 8");

bool bits_valid(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8; }

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Int && bits_valid(s.bits) && fmt::group_code(s.group) > 0;
}

std::string name_of(const QuantSpec& s) {
  std::string n(1, 'w');  // (appends: GCC 12 warns falsely on "w" + std::string)
  n += std::to_string(s.bits);
  n += fmt::group_suffix(s.group);
  if (!s.sym) n += 'a';
  return n;
}

bool parse(const std::string& name, QuantSpec* out) {
  if (name.size() < 3 || name[0] != 'w' || name[1] < '0' || name[1] > '9') return false;
  QuantSpec s;
  s.bits = name[1] - '0';
  std::string rest = name.substr(2);
  if (!rest.empty() && rest.back() == 'a') {
    s.sym = false;
    rest.pop_back();
  }
  if (!fmt::parse_group_suffix(rest, &s.group)) return false;
  *out = s;
  return true;
}

void list(std::vector<QuantSpec>& v) {
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int g : {16, 32, 64, 128, 0})
      for (bool sym : {true, false}) v.push_back(QuantSpec{bits, g, sym});
}

PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  PackedGeometry g = fmt::block_geometry(s, rows, cols, 2);
  g.zero_bytes = s.sym ? 0 : rows * g.groups_per_row;
  g.total_bytes += g.zero_bytes;
  return g;
}

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  fmt::pack_f16_scales(qm, g, out, where);
  const QuantSpec& s = qm.spec;
  const int32_t zsym = 1 << (s.bits - 1);
  uint8_t* zdst = out + g.q_bytes + g.scale_bytes;
  const int64_t G = g.groups_per_row;
  if (qm.zeros.empty()) return;  // symmetric only (the front end checked)
  for (int64_t k = 0; k < g.rows * G; ++k) {
    const int32_t z = qm.zeros[size_t(k)];
    const std::string at = " at row " + std::to_string(k / G) + ", group " + std::to_string(k % G);
    if (s.sym && z != zsym)
      fail(where, "symmetric format with zero " + std::to_string(z) + at + " (must be " + std::to_string(zsym) + ")");
    if (!s.sym) {
      if (z < 0 || z > 255) fail(where, "zero " + std::to_string(z) + at + " outside the u8 range 0..255");
      zdst[k] = uint8_t(z);
    }
  }
}

void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  fmt::unpack_f16_scales(data, g, qm);
  const int64_t n = g.rows * g.groups_per_row;
  qm.zeros.resize(size_t(n));
  const uint8_t* z = data + g.q_bytes + g.scale_bytes;
  for (int64_t k = 0; k < n; ++k) qm.zeros[size_t(k)] = s.sym ? 1 << (s.bits - 1) : z[k];
}

void check(const uint8_t*, const PackedGeometry&, const QuantSpec&, const std::string&) {
  // Any f16 scale and u8 zero is a valid int tensor (non-finite scales give non-finite outputs,
  // which the engine reports).
}

kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w = fmt::block_view(base, s, g);
  w.scales = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  w.zeros = s.sym ? nullptr : base + g.q_bytes + g.scale_bytes;
  w.zero_sym = 1 << (s.bits - 1);
  return w;
}

// GPTQ's min-max grid (minmax_params), shrunk by `clip`; w = scale * (q - zero).
class IntGrid final : public Grid {
 public:
  explicit IntGrid(const QuantSpec& s) : Grid(s), maxq_((1 << s.bits) - 1) {}
  GroupParams params(const float* w, int64_t n, float clip, const double*) const override {
    GroupParams p = minmax_params(w, n, spec(), clip);
    p.scale = round_scale_f16(p.scale);
    return p;
  }
  int32_t quantize(float w, const GroupParams& p) const override { return quantize_value(w, p, maxq_); }
  float dequantize(int32_t q, const GroupParams& p) const override { return p.scale * float(q - p.zero); }

 private:
  int32_t maxq_;
};

std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<IntGrid>(s); }

}  // namespace

const BitLayout& bit_layout(int bits) {
  for (const auto& l : kLayouts)
    if (l.bits == bits) return l;
  fail("", "unsupported bit width " + std::to_string(bits) + " (supported: 2, 3, 4, 5, 6, 8)");
}

const FormatTraits int_format = {
    FormatFamily::Int,
    "int",
    "b-bit integers, w = scale * (q - zero); f16 scale per group, u8 zero (asymmetric)",
    ActKind::Int8Blocks, nullptr,
    valid,
    name_of,
    parse,
    list,
    geometry,
    pack,
    unpack_params,
    check,
    view,
    grid,
    {nullptr, nullptr, nullptr},
};

}  // namespace lmpress
