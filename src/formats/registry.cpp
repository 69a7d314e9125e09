// THE table of packed formats: one row per bit width (block layout of 32 weights), the format id
// encoding, names, and the exact geometry / bits per weight of a packed tensor.
#include <cstdio>

#include "kernels/qkernels.h"
#include "lmpress/formats.h"

namespace lmpress {

namespace {

// Full bit layout: docs/formats.md, "Packed weight formats". Reference (un)packer:
// src/kernels/generic/quant.cpp (pack_qblock / unpack_qblock).
constexpr BitLayout kLayouts[] = {
    {2, 8, "8 B: byte j = q[j] | q[j+8]<<2 | q[j+16]<<4 | q[j+24]<<6"},
    {3, 12, "8 B 2-bit plane of q&3 (as w2) + u32 LE, bit i = bit 2 of q[i]"},
    {4, 16, "16 B: byte j = q[j] | q[j+16]<<4"},
    {5, 20, "16 B 4-bit plane of q&15 (as w4) + u32 LE, bit i = bit 4 of q[i]"},
    {6, 24, "16 B 4-bit plane of q&15 (as w4) + 8 B 2-bit plane of q>>4 (as w2)"},
    {8, 32, "32 B: byte i = q[i]"},
};
static_assert(sizeof(kLayouts) / sizeof(kLayouts[0]) == 6);
constexpr bool layouts_match_kernels() {
  for (const auto& l : kLayouts)
    if (l.bytes_per_block != kern::qblock_bytes(l.bits)) return false;
  return true;
}
static_assert(layouts_match_kernels(), "bytes_per_block must equal bits * 32 / 8");

constexpr int kGroups[] = {16, 32, 64, 128, 0};

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

bool bits_valid(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8; }

std::string spec_str(const QuantSpec& s) {
  return "bits=" + std::to_string(s.bits) + " group=" + std::to_string(s.group) +
         (s.sym ? " sym" : " asym");
}

}  // namespace

const BitLayout& bit_layout(int bits) {
  for (const auto& l : kLayouts)
    if (l.bits == bits) return l;
  fail("", "unsupported bit width " + std::to_string(bits) + " (supported: 2, 3, 4, 5, 6, 8)");
}

uint32_t format_id(const QuantSpec& s) {
  const int gc = group_code(s.group);
  if (!bits_valid(s.bits) || gc < 0)
    fail("", "unsupported quantization format (" + spec_str(s) +
                 "): bits must be 2, 3, 4, 5, 6 or 8 and group 16, 32, 64, 128 or 0 (whole row)");
  return uint32_t(s.bits) | uint32_t(gc) << 8 | uint32_t(s.sym ? 1 : 0) << 16;
}

bool format_id_valid(uint32_t id) {
  const uint32_t bits = id & 0xff, gc = (id >> 8) & 0xff, sym = id >> 16;
  return bits_valid(int(bits)) && gc >= 1 && gc <= 5 && sym <= 1;
}

QuantSpec format_spec(uint32_t id) {
  if (!format_id_valid(id)) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%06x", id);
    fail("", std::string("unknown quantized format id ") + buf +
                 " (written by a newer lmpress, or a corrupt file)");
  }
  QuantSpec s;
  s.bits = int(id & 0xff);
  s.group = kGroups[((id >> 8) & 0xff) - 1];
  s.sym = (id >> 16) != 0;
  return s;
}

std::string format_name(const QuantSpec& s) {
  format_id(s);  // validates
  std::string n(1, 'w');  // (appends: GCC 12 warns falsely on "w" + std::string)
  n += std::to_string(s.bits);
  if (s.group == 0) {
    n += "row";
  } else {
    n += 'g';
    n += std::to_string(s.group);
  }
  if (!s.sym) n += 'a';
  return n;
}

QuantSpec parse_format_name(const std::string& name) {
  auto bad = [&]() -> QuantSpec {
    fail("", "bad quantization format '" + name +
                 "': expected w<bits>g<group>[a] or w<bits>row[a], e.g. w4g32, w4g128a, w8row "
                 "(bits 2,3,4,5,6,8; group 16,32,64,128)");
  };
  if (name.size() < 3 || name[0] != 'w') return bad();
  size_t i = 1;
  if (name[i] < '0' || name[i] > '9') return bad();
  QuantSpec s;
  s.bits = name[i++] - '0';
  std::string rest = name.substr(i);
  s.sym = true;
  if (!rest.empty() && rest.back() == 'a') {
    s.sym = false;
    rest.pop_back();
  }
  if (rest == "row") {
    s.group = 0;
  } else if (rest.size() >= 2 && rest[0] == 'g') {
    const std::string g = rest.substr(1);
    if (g != "16" && g != "32" && g != "64" && g != "128") return bad();
    s.group = std::stoi(g);
  } else {
    return bad();
  }
  if (!bits_valid(s.bits)) return bad();
  return s;
}

std::vector<QuantSpec> all_formats() {
  std::vector<QuantSpec> v;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int g : kGroups)
      for (bool sym : {true, false}) v.push_back(QuantSpec{bits, g, sym});
  return v;
}

PackedGeometry packed_geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  format_id(s);
  if (rows < 0 || cols < 0) fail("", "negative tensor shape");
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.blocks_per_row = (cols + kern::kQBlock - 1) / kern::kQBlock;
  g.row_bytes = g.blocks_per_row * bit_layout(s.bits).bytes_per_block;
  g.group = s.group == 0 ? cols : s.group;
  g.groups_per_row = g.group == 0 ? 0 : (cols + g.group - 1) / g.group;
  g.q_bytes = rows * g.row_bytes;
  g.scale_bytes = rows * g.groups_per_row * 2;
  g.zero_bytes = s.sym ? 0 : rows * g.groups_per_row;
  g.total_bytes = g.q_bytes + g.scale_bytes + g.zero_bytes;
  return g;
}

double packed_bpw(const QuantSpec& s, int64_t rows, int64_t cols) {
  const PackedGeometry g = packed_geometry(s, rows, cols);
  if (rows * cols == 0) return 0.0;
  return double(g.total_bytes) * 8.0 / double(rows * cols);
}

}  // namespace lmpress
