// THE table of format families (kFormats) and the generic format API over it: ids, names,
// geometry, exact bits per weight, grids. Each family's row lives in its own file.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "formats/traits.h"

namespace lmpress {

namespace {

// One line per family. Order = FormatFamily value (checked below).
const std::vector<const FormatTraits*> kFormats = {
    &int_format,    // w<b>g<G>[a]: integers with f16 scale (and u8 zero)
    &nf4_format,    // nf4g<G>: NormalFloat-4
    &fp4_format,    // fp4g<G>: E2M1, f16 scale
    &mxfp4_format,  // mxfp4: E2M1, E8M0 scale per 32
    &fp8_format,    // fp8row / fp8g<G>: E4M3, f16 scale
    &lut_format,    // lut3 / lut4: per-row tables
    &ggml_format,   // q4_0, q4_k, ...: llama.cpp's block types, GGUF bytes as they are
    &spqr_format,   // spqr3g16, ...: SpQR, 3-bit statistics of small groups
    &binary_format, // b1g128, b1row: one bit per weight (PB-LLM)
    &pow_format,    // pow4g64 / pow4a0.60g64: NUPES power grid, exponent stored in the tensor
    &bitmod_format, // bitmod4g128: BitMoD, one of four FP3/FP4 tables per group
    &trellis_format, // trellis2/3/4: QTIP bitshift trellis, 16 x 16 tail-biting tiles (formats/trellis.h)
    &vq_format,     // vq4k8, vq4k8r8n, ...: VPTQ, vectors of a column's rows into a per-tensor codebook
    &mix_format,    // mixw4g64a_w8row_p100: MixLLM, rows in two int formats (formats/composite.h)
    &slim_format,   // slim2g128: SliM-LLM, column groups at N-1 / N / N+1 bits (formats/composite.h)
};

// The row of a family value (null: none; the table may have gaps, see kFormats).
const FormatTraits* find_traits(uint32_t fam) {
  for (const FormatTraits* t : kFormats)
    if (uint32_t(t->family) == fam) return t;
  return nullptr;
}

// The family's own validity; only spqr has second-level groups (vq: its residual stage's bits),
// only pow a parameter (its exponent), only vq a column norm and no sparse outliers.
bool spec_valid(const QuantSpec& s) {
  const FormatTraits* t = find_traits(uint32_t(s.family));
  const bool vq = s.family == FormatFamily::Vq;
  const bool mix = s.family == FormatFamily::Mix;
  return t && (s.variant == 0 || s.family == FormatFamily::FP4 || s.family == FormatFamily::Trellis) && (s.group2 == 0 || s.family == FormatFamily::Spqr || vq) && (s.param == 0 || s.family == FormatFamily::Pow) &&
         (!s.colnorm || vq) && (!vq || s.sparse == 0) &&
         (mix || (s.hi_bits == 0 && s.hi_group == 0 && s.hi_sym && s.share == 0)) && t->valid(s);
}

std::string spec_str(const QuantSpec& s) {
  return "family=" + std::to_string(int(s.family)) + " bits=" + std::to_string(s.bits) +
         " group=" + std::to_string(s.group) + (s.sym ? " sym" : " asym");
}

}  // namespace

const std::vector<const FormatTraits*>& all_format_traits() {
  static const bool ordered = [] {
    for (size_t i = 1; i < kFormats.size(); ++i) LMP_ASSERT(kFormats[i - 1]->family < kFormats[i]->family);
    return true;
  }();
  (void)ordered;
  return kFormats;
}

const FormatTraits& format_traits(FormatFamily f) {
  const FormatTraits* t = find_traits(uint32_t(f));
  if (!t) fail("", "unknown format family " + std::to_string(int(f)));
  return *t;
}

const FormatTraits& format_traits(const QuantSpec& s) { return format_traits(s.family); }

const char* family_name(FormatFamily f) { return format_traits(f).name; }

uint32_t format_id(const QuantSpec& s) {
  if (!spec_valid(s))
    fail("", "unsupported quantization format (" + spec_str(s) +
                 "): int bits must be 2, 3, 4, 5, 6 or 8 and group 16, 32, 64, 128 or 0 (whole row); "
                 "see docs/formats.md for the other families");
  if (s.sparse < 0 || s.sparse > 127)
    fail("", "sparse outlier fraction " + std::to_string(s.sparse) + " (in 0.01%) out of range 0..127");
  if (s.rht > 2) fail("", "bad randomized Hadamard transform kind " + std::to_string(int(s.rht)));
  if (s.family == FormatFamily::Mix || s.family == FormatFamily::Slim) {  // composites: no outliers, no RHT
    if (s.sparse || s.rht) fail("", std::string(family_name(s.family)) + " formats take no sparse outliers (+s) nor RHT (+h)");
    if (s.family == FormatFamily::Slim) return uint32_t(s.bits) | uint32_t(fmt::group_code(s.group)) << 8 | uint32_t(s.family) << 24;
    // low part: bits - 1 | group code << 3 | sym << 6; high part the same << 7; share (permille) << 14
    return uint32_t(s.bits - 1) | uint32_t(fmt::group_code(s.group)) << 3 | uint32_t(s.sym) << 6 |
           uint32_t(s.hi_bits - 1) << 7 | uint32_t(fmt::group_code(s.hi_group)) << 10 | uint32_t(s.hi_sym) << 13 |
           uint32_t(s.share) << 14 | uint32_t(s.family) << 24;
  }
  if (s.family == FormatFamily::Vq)  // bits | b2 << 4, log2(v) in bits 8..11, column norm bit 13, RHT bit 15
    return uint32_t(s.bits) | uint32_t(s.group2) << 4 | uint32_t(std::countr_zero(unsigned(s.group))) << 8 |
           uint32_t(s.colnorm) << 13 | uint32_t(s.rht == 2 ? 1 : 0) << 14 | uint32_t(s.rht ? 1 : 0) << 15 | 1u << 16 |
           uint32_t(s.family) << 24;
  // group2 (spqr's second-level groups) in the group byte's high nibble; 0 for every other family
  // (the fp family's exponent bits in the same place: it has no second-level groups)
  const uint32_t gc = uint32_t(fmt::group_code(s.group)) | uint32_t(s.group2 ? fmt::group_code(s.group2) : 0) << 4 |
                      uint32_t(s.variant) << 4;
  return uint32_t(s.bits) | gc << 8 | uint32_t(s.rht == 2 ? 1 : 0) << 14 | uint32_t(s.rht ? 1 : 0) << 15 | uint32_t(s.sym ? 1 : 0) << 16 |
         uint32_t(s.sparse) << 17 | uint32_t(s.family) << 24;
}

namespace {
bool decode_id(uint32_t id, QuantSpec* out) {
  const uint32_t bits = id & 0xff, in_only = (id >> 14) & 1, gc = (id >> 8) & 0xff, sym = (id >> 16) & 1, sparse = (id >> 17) & 0x7f,
                 fam = id >> 24;
  if (!find_traits(fam)) return false;
  if (fam == uint32_t(FormatFamily::Mix)) {
    QuantSpec s{int(id & 7) + 1, fmt::group_of_code(int((id >> 3) & 7)), ((id >> 6) & 1) != 0, FormatFamily::Mix};
    s.hi_bits = int((id >> 7) & 7) + 1;
    s.hi_group = fmt::group_of_code(int((id >> 10) & 7));
    s.hi_sym = ((id >> 13) & 1) != 0;
    s.share = int((id >> 14) & 1023);
    if (s.group < 0 || s.hi_group < 0 || !spec_valid(s)) return false;
    *out = s;
    return true;
  }
  if (fam == uint32_t(FormatFamily::Slim)) {
    const QuantSpec s{int(id & 0xff), fmt::group_of_code(int((id >> 8) & 0xff)), false, FormatFamily::Slim};
    if ((id & 0x00ff0000u) || !spec_valid(s) || format_id(s) != id) return false;
    *out = s;
    return true;
  }
  if (fam == uint32_t(FormatFamily::Vq)) {  // its own layout (format_id); bit 15 (gc's bit 7): the RHT flag
    if ((gc & ~0xe0u) > 3 || sparse || (in_only && !((gc >> 7) & 1))) return false;
    QuantSpec s{int(bits & 15), 1 << (gc & 3), sym != 0, FormatFamily::Vq};
    s.group2 = int(bits >> 4);
    s.colnorm = (gc & 0x20) != 0;
    if (!spec_valid(s)) return false;
    s.rht = uint8_t((gc >> 7) & 1 ? (in_only ? 2 : 1) : 0);
    *out = s;
    return true;
  }
  const uint32_t gc2 = (gc >> 4) & 3;  // bit 14: input-side-only RHT, bit 15 (gc's bit 7): the RHT flag
  const bool fp = fam == uint32_t(FormatFamily::FP4) || fam == uint32_t(FormatFamily::Trellis);  // variant in gc2
  const int g = fmt::group_of_code(int(gc & 15)), g2 = gc2 && !fp ? fmt::group_of_code(int(gc2)) : 0;
  if (g < 0 || g2 < 0) return false;
  QuantSpec s;
  s.bits = int(bits);
  s.group = g;
  s.group2 = g2;
  s.variant = fp ? int(gc2) : 0;
  s.sym = sym != 0;
  s.family = FormatFamily(fam);
  if (!spec_valid(s)) return false;
  s.sparse = int(sparse);
  s.rht = uint8_t((gc >> 7) & 1 ? (in_only ? 2 : 1) : 0);
  if (in_only && !s.rht) return false;
  if (s.family == FormatFamily::Trellis && s.sparse) return false;  // no sparse outliers
  *out = s;
  return true;
}
}  // namespace

bool format_id_valid(uint32_t id) {
  QuantSpec s;
  return decode_id(id, &s);
}

QuantSpec format_spec(uint32_t id) {
  QuantSpec s;
  if (!decode_id(id, &s)) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", id);
    fail("", std::string("unknown quantized format id ") + buf +
                 " (written by a newer lmpress, or a corrupt file)");
  }
  return s;
}

int64_t sparse_count(const QuantSpec& s, int64_t rows, int64_t cols) {
  return rows * cols * int64_t(s.sparse) / 10000;
}

std::string format_name(const QuantSpec& s) {
  format_id(s);  // validates
  std::string n = format_traits(s).name_of(s);
  if (s.sparse) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "+s%d.%02d", s.sparse / 100, s.sparse % 100);
    n += buf;
  }
  if (s.rht) n += s.rht == 2 ? "+hi" : "+h";
  return n;
}

QuantSpec parse_format_name(const std::string& name_in) {
  // "+h" / "+hi" last: randomized Hadamard transform (both sides / the input side only)
  auto ends = [&](const char* suf) {
    const size_t k = std::strlen(suf);
    return name_in.size() > k && name_in.compare(name_in.size() - k, k, suf) == 0;
  };
  const uint8_t rht = ends("+h") ? 1 : ends("+hi") ? 2 : 0;
  const std::string name = rht ? name_in.substr(0, name_in.size() - (rht == 1 ? 2 : 3)) : name_in;
  // "+sP": sparse outliers, P percent in steps of 0.01 (e.g. lut3+s0.45)
  const size_t plus = name.find("+s");
  int sparse = 0;
  if (plus != std::string::npos) {
    const std::string p = name.substr(plus + 2);
    double v = -1;
    size_t used = 0;
    try {
      v = std::stod(p, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    const double h = v * 100.0;
    if (p.empty() || used != p.size() || !(h >= 1 && h <= 127) || std::fabs(h - std::nearbyint(h)) > 1e-6)
      fail("", "bad sparse outlier suffix '+s" + p + "' in '" + name +
                   "': a percentage from 0.01 to 1.27 in steps of 0.01 (e.g. lut3+s0.45)");
    sparse = int(std::nearbyint(h));
  }
  const std::string base = plus == std::string::npos ? name : name.substr(0, plus);
  for (const FormatTraits* t : all_format_traits()) {
    QuantSpec s;
    if (t->parse(base, &s) && spec_valid(s)) {
      if (sparse && (s.family == FormatFamily::Vq || s.family == FormatFamily::Trellis))
        fail("", "'" + name + "': " + family_name(s.family) + " formats have no sparse outliers (+s)");
      if ((sparse || rht) && format_traits(s).composite)
        fail("", "'" + name_in + "': " + family_name(s.family) + " formats take no sparse outliers (+s) nor RHT (+h)");
      s.sparse = sparse;
      s.rht = rht;
      return s;
    }
  }
  fail("", "bad quantization format '" + name +
               "': expected w<bits>g<group>[a] or w<bits>row[a] (bits 2,3,4,5,6,8; group "
               "16,32,64,128; e.g. w4g32, w4g128a, w8row), nf4g<group>, fp4g<group>, mxfp4, "
               "fp8row, fp8g<group>, lut3 or lut4, or a llama.cpp type (q8_0, q4_0, q4_1, q5_0, q5_1, "
               "q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs), spqr<bits>g<group>[r<rows>] (bits 2,3,4; "
               "group 16,32,64; rows 16,32,64; e.g. spqr3g16), b1g<group> or b1row (binary), pow<3|4>[a<A>]g<group> "
               "(NUPES; A 0.20..2.00), bitmod<3|4>g<32|64|128>, trellis<2|3|4>[h] (QTIP), vq<v>k<b>[r<b2>][n] (VPTQ vectors: v 2,4,8; "
               "index bits b, b2 4..12; n: column norm; e.g. vq4k8, vq8k8r8n), mix<int>_<int>_p<permille> (MixLLM rows: "
               "e.g. mixw4g64a_w8row_p100), slim<N>g<32|64|128> (SliM-LLM groups, N 2..5); lmpress's own formats with sparse outliers "
               "+s<percent>; any of them with a randomized Hadamard transform: suffix +h (both sides) or +hi (input side "
               "only), last");
}

std::vector<QuantSpec> all_formats() {
  std::vector<QuantSpec> v;
  for (const FormatTraits* t : all_format_traits()) t->list(v);
  return v;
}

PackedGeometry packed_geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  format_id(s);
  if (rows < 0 || cols < 0) fail("", "negative tensor shape");
  if (s.sparse && rows * cols > int64_t(UINT32_MAX))
    fail("", "sparse outliers need rows * cols < 2^32 (u32 positions), got " + fmt::shape_str(rows, cols));
  return fmt::with_sparse(format_traits(s).geometry(s, rows, cols), s);
}

double packed_bpw(const QuantSpec& s, int64_t rows, int64_t cols) {
  const PackedGeometry g = packed_geometry(s, rows, cols);
  if (rows * cols == 0) return 0.0;
  return double(g.total_bytes) * 8.0 / double(rows * cols);
}

std::unique_ptr<Grid> make_grid(const QuantSpec& s) {
  format_id(s);
  return format_traits(s).grid(s);
}

// ---- shared pieces ------------------------------------------------------------------------------
namespace fmt {

int group_code(int group) {
  switch (group) {
    case 16: return 1;
    case 32: return 2;
    case 64: return 3;
    case 128: return 4;
    case 0: return 5;
    default: return -1;
  }
}

int group_of_code(int code) {
  static constexpr int kGroups[] = {16, 32, 64, 128, 0};
  return code >= 1 && code <= 5 ? kGroups[code - 1] : -1;
}

bool parse_group_suffix(const std::string& s, int* group) {
  if (s == "row") {
    *group = 0;
    return true;
  }
  if (s == "g16" || s == "g32" || s == "g64" || s == "g128") {
    *group = std::stoi(s.substr(1));
    return true;
  }
  return false;
}

std::string group_suffix(int group) {
  if (group == 0) return "row";
  std::string g(1, 'g');  // (appends: GCC 12 warns falsely on "g" + std::string)
  g += std::to_string(group);
  return g;
}

std::string shape_str(int64_t rows, int64_t cols) {
  std::string s(1, '[');  // (appends: GCC 12 warns falsely on "[" + std::string)
  s += std::to_string(rows);
  s += ", ";
  s += std::to_string(cols);
  s += ']';
  return s;
}

PackedGeometry with_sparse(PackedGeometry g, const QuantSpec& s) {
  if (s.sparse) {
    g.sparse_nnz = sparse_count(s, g.rows, g.cols);
    g.sparse_offset = (g.total_bytes + 3) / 4 * 4;
    g.total_bytes = g.sparse_offset + 6 * g.sparse_nnz;
  }
  if (s.rht) {  // sign bits of the input then (both sides) the output channels
    g.rht_offset = g.total_bytes;
    g.total_bytes += (g.cols + 7) / 8 + (s.rht == 1 ? (g.rows + 7) / 8 : 0);
  }
  return g;
}

PackedGeometry block_geometry(const QuantSpec& s, int64_t rows, int64_t cols, int scale_size) {
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.blocks_per_row = (cols + kern::kQBlock - 1) / kern::kQBlock;
  g.row_bytes = g.blocks_per_row * kern::qblock_bytes(s.bits);
  g.group = s.group == 0 ? cols : s.group;
  g.groups_per_row = g.group == 0 ? 0 : (cols + g.group - 1) / g.group;
  g.q_bytes = rows * g.row_bytes;
  g.scale_size = scale_size;
  g.scale_bytes = rows * g.groups_per_row * scale_size;
  g.total_bytes = g.q_bytes + g.scale_bytes;
  return g;
}

void pack_f16_scales(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* data, const std::string& where) {
  uint16_t* sdst = reinterpret_cast<uint16_t*>(data + g.q_bytes);
  const int64_t G = g.groups_per_row;
  for (int64_t k = 0; k < g.rows * G; ++k) {
    const float sc = qm.scales[size_t(k)];
    const int64_t r = k / G, gi = k % G;
    if (!std::isfinite(sc))
      fail(where, "non-finite scale " + std::to_string(sc) + " at row " + std::to_string(r) + ", group " +
                      std::to_string(gi));
    const uint16_t h = f32_to_f16(sc);
    if (f16_to_f32(h) != sc)
      fail(where, "scale " + std::to_string(sc) + " at row " + std::to_string(r) + ", group " +
                      std::to_string(gi) +
                      " is not f16-representable: pass it through round_scale_f16 before quantizing with it");
    sdst[k] = h;
  }
}

void unpack_f16_scales(const uint8_t* data, const PackedGeometry& g, QuantizedMatrix& qm) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(data + g.q_bytes);
  qm.scales.resize(size_t(g.rows * g.groups_per_row));
  for (int64_t k = 0; k < g.rows * g.groups_per_row; ++k) qm.scales[size_t(k)] = f16_to_f32(s[k]);
}

void check_f16_scales(const uint8_t* data, const PackedGeometry& g, const std::string& where) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(data + g.q_bytes);
  for (int64_t k = 0; k < g.rows * g.groups_per_row; ++k)
    if ((s[k] & 0x7c00) == 0x7c00)
      fail(where, "non-finite f16 scale at row " + std::to_string(k / g.groups_per_row) + ", group " +
                      std::to_string(k % g.groups_per_row));
}

TableGrid::TableGrid(const QuantSpec& s, const int8_t* table) : Grid(s), table_(table) {
  if (!table) return;
  const int n = n_codes();
  std::vector<std::pair<float, int32_t>> v;
  for (int q = 0; q < n; ++q) v.emplace_back(float(table[q]), q);
  std::stable_sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (auto& [val, q] : v) {
    if (!sorted_.empty() && sorted_.back() == val) continue;  // e.g. +0 and -0 of fp4: first code
    sorted_.push_back(val);
    code_of_.push_back(q);
  }
  for (size_t i = 0; i + 1 < sorted_.size(); ++i) mid_.push_back(0.5f * (sorted_[i] + sorted_[i + 1]));
}

int32_t TableGrid::quantize(float w, const GroupParams& p) const {
  const float x = w / p.scale;
  if (table_) {
    // first midpoint >= x: values at or below a midpoint go to the lower value
    const size_t i = size_t(std::lower_bound(mid_.begin(), mid_.end(), x) - mid_.begin());
    return code_of_[i];
  }
  // per-row table: ascending int8 values in p.table
  const int n = n_codes();
  int lo = 0, hi = n - 1;
  while (lo < hi) {  // first index whose value >= x
    const int m = (lo + hi) / 2;
    if (float(p.tab()[m]) < x)
      lo = m + 1;
    else
      hi = m;
  }
  if (lo > 0 && x - float(p.tab()[lo - 1]) <= float(p.tab()[lo]) - x) return lo - 1;
  return lo;
}

}  // namespace fmt

}  // namespace lmpress
