// Packed weight formats and quantized kernels:
//  Formats.*      ids/names, exact bits per weight, block layout goldens, round trips, edge cases,
//                 validation;
//  QuantKernels.* one table-driven parity test (every format x ISA level x awkward sizes, decode
//                 and prefill) against a double-precision product of the reference-dequantized
//                 weights with the unquantized activations, and fast == scalar reference.
// ISA levels the CPU lacks are skipped loudly (per level, so the others still count as passed).
#include <cmath>
#include <cstring>
#include <random>
#include <map>
#include <set>

#include "engine/matmul_ext.h"
#include "formats/composite.h"
#include "formats/formats_internal.h"
#include "formats/ggml_family.h"
#include "formats/spqr.h"
#include "formats/trellis.h"
#include "kernels/ggml_blocks.h"
#include "formats/traits.h"
#include "kernels/qkernels.h"
#include "kernels/qrepack.h"
#include "lmpress/engine.h"
#include "lmpress/formats.h"
#include "test_util.h"

using namespace lmpress;

namespace {

using test::randn;

const uint8_t* bytes_of(const Tensor& t) { return static_cast<const uint8_t*>(t.data); }

// Reference: 32 codes -> packed block, written straight from the docs/formats.md formulas.
std::vector<uint8_t> doc_pack(int bits, const uint8_t* q) {
  std::vector<uint8_t> o(size_t(bits * 4), 0);
  auto plane2 = [&](int off, int shift) {
    for (int j = 0; j < 8; ++j)
      for (int k = 0; k < 4; ++k) o[size_t(off + j)] |= uint8_t(((q[j + 8 * k] >> shift) & 3) << (2 * k));
  };
  auto plane4 = [&]() {
    for (int j = 0; j < 16; ++j) o[size_t(j)] = uint8_t((q[j] & 15) | (q[j + 16] & 15) << 4);
  };
  auto plane1 = [&](int off, int shift) {
    for (int i = 0; i < 32; ++i) o[size_t(off + i / 8)] |= uint8_t(((q[i] >> shift) & 1) << (i % 8));
  };
  switch (bits) {
    case 2: plane2(0, 0); break;
    case 3: plane2(0, 0); plane1(8, 2); break;
    case 4: plane4(); break;
    case 5: plane4(); plane1(16, 4); break;
    case 6: plane4(); plane2(16, 4); break;
    case 8: std::memcpy(o.data(), q, 32); break;
  }
  return o;
}

std::vector<SimdLevel> all_levels() { return {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}; }

bool is_int(const QuantSpec& s) { return s.family == FormatFamily::Int; }

// Fast dequantization of a packed tensor's rows at one level (the family's kernels).
void dequant_rows_at(SimdLevel l, const Tensor& t, float* out) {
  const QuantSpec s = format_spec(t.format);
  const auto v = detail::packed_view(t);
  if (is_int(s)) {
    kern::qops_at(l).dequant_rows(v, 0, t.rows(), out, t.cols());
  } else {
    const auto& tr = format_traits(s);
    int k = int(l);
    while (k > 0 && !tr.kernels[k]) --k;
    tr.kernels[k]->dequant_rows(v, 0, t.rows(), out, t.cols());
  }
}

// Families whose tensors come from codes and per-group params through a grid (pack_tensor); the
// ggml family's blocks are opaque (imported from GGUF): its tests are in test_ggml.cpp and, here, in
// the parity table; the spqr family's statistics are shared by row groups (no per-group grid): its
// own tests below (Formats.Spqr*) and the parity table.
// The vq family's codebooks come from k-means and its bytes hold no code planes: tests/test_vq.cpp.
bool is_spqr(const QuantSpec& s) { return s.family == FormatFamily::Spqr; }
std::vector<QuantSpec> code_formats() {
  std::vector<QuantSpec> v;
  for (const auto& s : all_formats())
    if (!format_traits(s).opaque_blocks && !is_spqr(s) && !format_traits(s).codebook) v.push_back(s);
  return v;
}
bool is_ggml(const QuantSpec& s) { return s.family == FormatFamily::Ggml; }
// The trellis family takes multiples of 16 rows and columns only (16 x 16 tiles): tests/test_trellis.cpp.
bool is_trellis(const QuantSpec& s) { return s.family == FormatFamily::Trellis; }
int64_t ggml_qk(const QuantSpec& s) { return kern::ggml::type_info(uint32_t(s.bits))->qk; }
// A ggml tensor of random blocks (random codes and sub-scales, f16 scales near 0.02).
Tensor ggml_tensor(const QuantSpec& s, int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<uint8_t> bytes(size_t(packed_geometry(s, rows, cols).total_bytes));
  ggml_random_blocks(uint32_t(s.bits), rows, cols, seed, 0.02f, bytes.data());
  return make_owned_tensor("w", DType::Q, {rows, cols}, std::move(bytes), format_id(s));
}

// Bytes of a packed [rows, cols] tensor, written straight from the docs/formats.md layouts.
int64_t doc_bytes(const QuantSpec& s, int64_t rows, int64_t cols) {
  const int64_t nb = (cols + 31) / 32, grp = s.group ? s.group : cols, G = (cols + grp - 1) / grp;
  switch (s.family) {
    case FormatFamily::Int: return rows * (nb * 4 * s.bits + G * (s.sym ? 2 : 3));
    case FormatFamily::NF4: return rows * (nb * 16 + G * 2);
    case FormatFamily::FP4: return rows * (nb * 4 * s.bits + G * 2);
    case FormatFamily::MXFP4: return rows * (nb * 16 + G * 1);
    case FormatFamily::FP8: return rows * (nb * 32 + G * 2);
    case FormatFamily::Lut: return rows * (nb * 4 * s.bits + 2 + (1 << s.bits));
    case FormatFamily::Pow: return rows * (nb * 4 * s.bits + G * 2) + (1 << s.bits) + 1;  // + the tensor's table, exponent
    case FormatFamily::Bitmod: return rows * (nb * 4 * s.bits + G * 3);                    // f16 scale + u8 selector
    case FormatFamily::Ggml: {
      // ggml's block sizes (weights, bytes) by ggml_type: docs/formats.md
      const std::map<int, std::pair<int64_t, int64_t>> kBlocks = {
          {2, {32, 18}},   {3, {32, 20}},   {6, {32, 22}},   {7, {32, 24}},   {8, {32, 34}},    {10, {256, 84}},
          {11, {256, 110}}, {12, {256, 144}}, {13, {256, 176}}, {14, {256, 210}}, {20, {32, 18}}, {23, {256, 136}}};
      const auto [qk, bytes] = kBlocks.at(s.bits);
      return rows * (cols / qk) * bytes;
    }
    case FormatFamily::Binary: return rows * (nb * 4 + G * 2);  // a u32 bit plane per block, f16 alpha
    case FormatFamily::Spqr: {
      // per row: codes, 6 bits of statistic codes per group (even bytes); per row group: 4 f16 per group
      const int64_t stat = (6 * G + 15) / 16 * 2, row_groups = (rows + s.group2 - 1) / s.group2;
      return rows * (nb * 4 * s.bits + stat) + row_groups * 4 * G * 2;
    }
    case FormatFamily::Vq: {
      // f32 scales, int8 codebooks, f16 column norm, codes of (16 / v) vectors per 16-row tile and
      // column, 8 slack bytes
      const int64_t K = (int64_t(1) << s.bits) + (s.group2 ? int64_t(1) << s.group2 : 0);
      const int64_t vecs = (rows + 15) / 16 * (16 / s.group) * cols;
      return 8 + K * s.group + (s.colnorm ? 4 * cols : 0) + (vecs * (s.bits + s.group2) + 7) / 8 + 8;
    }
    case FormatFamily::Trellis: return rows * cols * s.bits / 8 + 2 * rows;  // 256 k bits per tile, f16 per row
    case FormatFamily::Mix:
    case FormatFamily::Slim: return -1;  // composites: not in all_formats(); their bytes in test_mixed.cpp
  }
  return -1;
}

// The parity test's entry per family: whether its kernels read int8-quantized activations (else
// f32 ones, and the product is exact up to float rounding) and its float rounding slack
// (relative to the magnitude of the terms). Every family of the traits table must have one.
struct ParityEntry {
  FormatFamily family;
  bool int8_acts;
  double slack;
};
constexpr ParityEntry kParity[] = {
    {FormatFamily::Int, true, 3e-5},  {FormatFamily::NF4, true, 3e-5}, {FormatFamily::FP4, true, 3e-5},
    {FormatFamily::MXFP4, true, 3e-5}, {FormatFamily::FP8, false, 3e-5}, {FormatFamily::Lut, true, 3e-5},
    // ggml: SIMD levels dot offset lanes v + C (up to 128) and subtract C S X: larger float terms
    {FormatFamily::Ggml, true, 3e-4},
    // spqr: w = s q - s z, the zero term s z X apart from the codes' dot (like ggml's offsets)
    {FormatFamily::Spqr, true, 3e-4},
    {FormatFamily::Binary, true, 3e-5},
    {FormatFamily::Pow, true, 3e-5}, {FormatFamily::Bitmod, true, 3e-5},
    // vq: f32 activations; the column norm's colscale is folded into x and sum x colbias added
    // apart (terms up to |x colbias| beside |x w|)
    {FormatFamily::Vq, false, 1e-4},
    // trellis: integer block dots of u = value + 126 and -126 scale X apart (terms up to 126 |scale| |x|)
    {FormatFamily::Trellis, true, 1e-4},
    // composites (mix, slim): their parts' int / binary kernels; not in all_formats() (test_mixed.cpp)
    {FormatFamily::Mix, true, 3e-5}, {FormatFamily::Slim, true, 3e-5},
};
const ParityEntry& parity_entry(const QuantSpec& s) {
  for (const auto& e : kParity)
    if (e.family == s.family) return e;
  ADD_FAILURE() << "no parity entry for family " << family_name(s.family);
  return kParity[0];
}

}  // namespace

// ---- registry -------------------------------------------------------------------------------------

TEST(Formats, IdsAndNames) {
  const auto fmts = all_formats();
  // int: 6 widths x 5 groups x sym/asym; nf4: 4 groups; fp: 5 minifloats x 4 groups; mxfp4; fp8: 5 groups; lut3/4; 12 ggml types;
  // spqr: 3 widths x 3 groups x 3 row groups; binary: 5 groups; pow3/4: 4 groups; bitmod3/4: 3 groups;
  // vq: 9 representatives (test_vq.cpp); trellis2/3/4 and trellis2h/3h/4h
  const size_t n_formats = 60 + 4 + 20 + 1 + 5 + 2 + 12 + 27 + 5 + 8 + 6 + 9 + 6;
  EXPECT_EQ(fmts.size(), n_formats);
  std::set<uint32_t> ids;
  std::set<std::string> names;
  for (const auto& s : fmts) {
    const uint32_t id = format_id(s);
    EXPECT_TRUE(format_id_valid(id));
    EXPECT_EQ(format_spec(id), s);
    const std::string n = format_name(s);
    EXPECT_EQ(parse_format_name(n), s) << n;
    ids.insert(id);
    names.insert(n);
  }
  EXPECT_EQ(ids.size(), n_formats);
  EXPECT_EQ(names.size(), n_formats);
  for (const char* n : {"nf4g64", "fp4g32", "mxfp4", "fp8row", "fp8g128", "lut3", "lut4", "fp4e3m0g64", "fp4e1m2g16",
                        "fp3g32", "fp3e1m1g128"})
    EXPECT_EQ(format_name(parse_format_name(n)), n);
  // the default splits' long names; E2M1 keeps the id fp4 files had before the other splits
  EXPECT_EQ(parse_format_name("fp4e2m1g64"), parse_format_name("fp4g64"));
  EXPECT_EQ(parse_format_name("fp3e2m0g64"), parse_format_name("fp3g64"));
  EXPECT_EQ(format_id(parse_format_name("fp4g64")), 4u | 3u << 8 | 1u << 16 | 2u << 24);
  EXPECT_EQ(format_id(parse_format_name("fp4e3m0g64")), 4u | (3u | 3u << 4) << 8 | 1u << 16 | 2u << 24);
  for (const char* bad : {"fp4e2m2g64", "fp4e0m3g64", "fp3e3m0g64", "fp5g64", "fp2g64", "fp4e1m2", "fp3row", "fp4e1g64"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  EXPECT_FALSE(format_id_valid(4u | (3u | 2u << 4) << 8 | 1u << 16 | 2u << 24));  // E2 is the default: stored as 0
  EXPECT_FALSE(format_id_valid(3u | (3u | 3u << 4) << 8 | 1u << 16 | 2u << 24));  // no E3M-1
  EXPECT_EQ(format_id(parse_format_name("nf4g64")), 4u | 3u << 8 | 1u << 16 | 1u << 24);
  for (const char* bad : {"nf4", "nf3g32", "fp4row", "mxfp4g64", "fp8", "lut2", "lut4g32", "lut"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  // ids of one family with another family's parameters are invalid
  EXPECT_FALSE(format_id_valid(3u | 5u << 8 | 1u << 16 | 1u << 24));  // nf with 3 bits
  EXPECT_FALSE(format_id_valid(4u | 2u << 8 | 1u << 16 | 11u << 24));  // trellis has no groups
  EXPECT_FALSE(format_id_valid(4u | 2u << 8 | 1u << 16 | 15u << 24));  // nor 15
  // family numbers are file format: spqr 7, binary 8, pow 9, bitmod 10 (pow/bitmod were 7/8 on
  // their branch before spqr and binary landed)
  EXPECT_EQ(format_id(parse_format_name("pow4g64")), 4u | 3u << 8 | 1u << 16 | 9u << 24);
  EXPECT_EQ(format_id(parse_format_name("bitmod3g128")), 3u | 4u << 8 | 1u << 16 | 10u << 24);
  EXPECT_EQ(format_spec(4u | 2u << 8 | 1u << 16 | 10u << 24).family, FormatFamily::Bitmod);
  EXPECT_FALSE(format_id_valid(4u | 1u << 8 | 1u << 16 | 10u << 24));  // bitmod has no groups of 16
  // every family of the table has a parity entry
  for (const FormatTraits* t : all_format_traits()) {
    bool found = false;
    for (const auto& e : kParity) found = found || e.family == t->family;
    EXPECT_TRUE(found) << t->name;
  }
  EXPECT_EQ(format_name({4, 32, true}), "w4g32");
  EXPECT_EQ(format_name({4, 128, false}), "w4g128a");
  EXPECT_EQ(format_name({8, 0, true}), "w8row");
  EXPECT_EQ(format_id({4, 32, true}), 4u | 2u << 8 | 1u << 16);
  for (const char* bad : {"", "w", "w4", "w7g32", "w4g48", "w4g32b", "q4g32", "w4rowx", "w10g32", "w4g"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  for (uint32_t id : {0u, 4u, 4u | 6u << 8, 7u | 2u << 8, 4u | 2u << 8 | 0x3fu << 24, 0xffffffffu})
    EXPECT_FALSE(format_id_valid(id)) << id;
  // Sparse outliers: any family, "+s<percent>" in 0.01 steps, stored in the id's bits 17..23.
  const QuantSpec sp = parse_format_name("lut3+s0.45");
  EXPECT_EQ(sp.family, FormatFamily::Lut);
  EXPECT_EQ(sp.sparse, 45);
  EXPECT_EQ(format_name(sp), "lut3+s0.45");
  EXPECT_EQ(format_spec(format_id(sp)), sp);
  EXPECT_EQ(format_id(parse_format_name("w4g32a+s1.27")), 4u | 2u << 8 | 127u << 17);
  EXPECT_EQ(format_name(parse_format_name("w3g64+s0.1")), "w3g64+s0.10");
  for (const char* bad : {"lut3+s", "lut3+s0", "lut3+s1.28", "lut3+s0.005", "lut3+sx", "lut3+s0.45x", "lut5+s0.1"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  // Geometry: the family's bytes, 4-byte aligned, then 4 + 2 bytes per outlier.
  {
    const auto dense = packed_geometry(parse_format_name("lut3"), 10, 100);
    const auto g = packed_geometry(sp, 10, 100);
    EXPECT_EQ(g.sparse_nnz, 4);  // floor(1000 * 0.45%)
    EXPECT_EQ(g.sparse_offset, (dense.total_bytes + 3) / 4 * 4);
    EXPECT_EQ(g.total_bytes, g.sparse_offset + 24);
  }
  EXPECT_THROW(format_spec(7u | 2u << 8), Error);
  EXPECT_THROW(format_id({7, 32, true}), Error);
  EXPECT_THROW(format_id({4, 48, true}), Error);
  EXPECT_THROW(bit_layout(7), Error);
  for (int b : {2, 3, 4, 5, 6, 8}) EXPECT_EQ(bit_layout(b).bytes_per_block, b * 4);
}

TEST(Formats, BitsPerWeightExact) {
  // w4g32 symmetric on a multiple of 32 columns: 16 B codes + 2 B scale per 32 = 4.5 bpw, and the
  // same bytes as llama.cpp's Q4_0 (18 B per 32 weights).
  for (int64_t cols : {32, 2048, 5632}) {
    EXPECT_EQ(packed_bpw({4, 32, true}, 7, cols), 4.5);
    EXPECT_EQ(packed_geometry({4, 32, true}, 7, cols).total_bytes, 7 * cols / 32 * 18);
  }
  // Exact formula (int: (ceil(cols/32) * 4*bits + groups * (2 + asym)) * 8 / cols; doc_bytes).
  for (const auto& s : all_formats()) {
    for (int64_t cols : {1, 31, 33, 352, 2048}) {
      if (is_ggml(s) && cols % ggml_qk(s) != 0) {
        EXPECT_THROW(packed_geometry(s, 3, cols), Error) << format_name(s);  // rows are whole blocks
        continue;
      }
      if (is_trellis(s)) {  // whole 16 x 16 tiles only
        EXPECT_THROW(packed_geometry(s, 3, cols), Error) << format_name(s);
        const int64_t c16 = std::max<int64_t>(16, cols / 16 * 16);
        EXPECT_EQ(packed_geometry(s, 48, c16).total_bytes, doc_bytes(s, 48, c16)) << format_name(s);
        continue;
      }
      const int64_t rows = 3;
      const int64_t bytes = doc_bytes(s, rows, cols);
      const auto g = packed_geometry(s, rows, cols);
      EXPECT_EQ(g.total_bytes, bytes) << format_name(s) << " cols=" << cols;
      EXPECT_EQ(g.q_bytes + g.scale_bytes + g.zero_bytes + g.table_bytes, g.total_bytes);
      EXPECT_DOUBLE_EQ(packed_bpw(s, rows, cols), double(bytes) * 8.0 / double(rows * cols));
    }
  }
  EXPECT_EQ(packed_bpw({4, 128, false}, 1, 4096), (64.0 + 2 + 1) * 8 / 128);
  EXPECT_EQ(packed_bpw({8, 0, true}, 1, 4096), 8.0 + 16.0 / 4096);
  EXPECT_EQ(packed_bpw({2, 16, true}, 1, 1024), 3.0);
  EXPECT_EQ(packed_bpw(parse_format_name("mxfp4"), 1, 4096), 4.25);  // as OCP MXFP4
  EXPECT_EQ(packed_bpw(parse_format_name("nf4g64"), 1, 4096), 4.25);
  EXPECT_EQ(packed_bpw(parse_format_name("lut3"), 1, 4096), 3.0 + (8 + 2) * 8.0 / 4096);
}

// ---- block layout -------------------------------------------------------------------------------

TEST(Formats, BlockLayoutGolden) {
  std::mt19937 rng(3);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (int trial = 0; trial < 200; ++trial) {
      uint8_t q[32], back[32];
      for (auto& v : q) v = uint8_t(rng() & ((1u << bits) - 1));
      if (trial == 0) std::memset(q, 0, 32);
      if (trial == 1) std::memset(q, (1 << bits) - 1, 32);
      std::vector<uint8_t> packed(size_t(bits * 4));
      kern::pack_qblock(bits, q, packed.data());
      ASSERT_EQ(packed, doc_pack(bits, q)) << "bits=" << bits;
      kern::unpack_qblock(bits, packed.data(), back);
      ASSERT_EQ(0, std::memcmp(q, back, 32)) << "bits=" << bits;
    }
  }
  // Spot values: code i = i % 4 in 2 bits: byte j = j%4 | (j%4)<<2 | (j%4)<<4 | (j%4)<<6.
  uint8_t q[32];
  for (int i = 0; i < 32; ++i) q[i] = uint8_t(i % 4);
  uint8_t p[8];
  kern::pack_qblock(2, q, p);
  EXPECT_EQ(p[0], 0x00);
  EXPECT_EQ(p[1], 0x55);
  EXPECT_EQ(p[3], 0xff);
  // 3-bit: only code 5 has bit 2 set -> plane u32 = 1 << 5.
  std::memset(q, 0, 32);
  q[5] = 4;
  uint8_t p3[12];
  kern::pack_qblock(3, q, p3);
  EXPECT_EQ(p3[8], 0x20);
  EXPECT_EQ(p3[9] | p3[10] | p3[11], 0);
  // 4-bit: code 0 = 1, code 16 = 2 -> byte 0 = 0x21.
  std::memset(q, 0, 32);
  q[0] = 1;
  q[16] = 2;
  uint8_t p4[16];
  kern::pack_qblock(4, q, p4);
  EXPECT_EQ(p4[0], 0x21);
}

// ---- round trips ----------------------------------------------------------------------------------

TEST(Formats, RoundTripAllFormats) {
  for (const auto& s : code_formats()) {
    const auto grid = make_grid(s);
    for (int64_t cols : {1, 33, 352}) {
      const int64_t rows = 3;
      auto w = randn(size_t(rows * cols), uint32_t(cols * 131 + s.bits));
      const QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, s);
      const Tensor t = pack_tensor("w", qm);
      ASSERT_EQ(t.dtype, DType::Q);
      ASSERT_EQ(t.format, format_id(s));
      ASSERT_EQ(int64_t(t.nbytes), packed_geometry(s, rows, cols).total_bytes);
      // pack -> unpack is exact.
      const QuantizedMatrix u = unpack_tensor(t);
      ASSERT_EQ(u.spec, s);
      ASSERT_EQ(u.q, qm.q) << format_name(s);
      ASSERT_EQ(u.scales, qm.scales) << format_name(s);
      if (is_int(s)) {
        ASSERT_EQ(u.zeros, qm.zeros) << format_name(s);
      }
      ASSERT_EQ(u.table, qm.table) << format_name(s);
      // encode(decode(encode)) == encode: re-packing the unpacked matrix gives the same bytes.
      const Tensor t2 = pack_tensor("w", u);
      ASSERT_EQ(0, std::memcmp(t.data, t2.data, t.nbytes)) << format_name(s);
      // Dequantize: the grid's value of each code; each code is the nearest the grid has (int:
      // within scale/2, min-max range, nothing clipped); re-quantizing gives the same codes.
      const std::vector<float> dq = dequantize_ref(t);
      ASSERT_EQ(dq, dequantize_matrix(qm)) << format_name(s);
      const int64_t grp = s.group ? s.group : cols, G = (cols + grp - 1) / grp;
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row_ref(t, r, row.data());
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = size_t(r * cols + c), gi = size_t(r * G + c / grp);
          ASSERT_EQ(row[size_t(c)], dq[i]);
          const GroupParams p = qm.params(r, int64_t(c / grp));
          ASSERT_EQ(dq[i], grid->dequantize(qm.q[i], p));
          if (is_int(s)) {
            const float sc = qm.scales[gi];
            ASSERT_LE(std::fabs(dq[i] - w[i]), sc * 0.5f * (1 + 1e-5f)) << format_name(s) << " c=" << c;
            ASSERT_EQ(dq[i], sc * float(int32_t(qm.q[i]) - qm.zeros[gi]));
            ASSERT_EQ(quantize_value(dq[i], p, (1 << s.bits) - 1), qm.q[i]);
          }
          for (int32_t k = 0; k < grid->n_codes(); ++k) {
            if (s.family == FormatFamily::FP8 && (k & 0x7f) == 0x7f) continue;  // NaN codes
            ASSERT_LE(std::fabs(dq[i] - w[i]), std::fabs(grid->dequantize(k, p) - w[i]) * (1 + 1e-6f))
                << format_name(s) << " c=" << c << " code " << int(qm.q[i]) << " vs " << k;
          }
          ASSERT_EQ(grid->dequantize(grid->quantize(dq[i], p), p), dq[i]) << format_name(s);
        }
      }
      // Fast dequantization (every level the CPU has) is bit-exact, and so is tensor_row_f32.
      for (SimdLevel l : all_levels()) {
        if (l > cpu_simd_level()) continue;
        std::vector<float> fast(dq.size());
        dequant_rows_at(l, t, fast.data());
        ASSERT_EQ(0, std::memcmp(fast.data(), dq.data(), dq.size() * 4)) << format_name(s) << " " << simd_level_name(l);
      }
      tensor_row_f32(t, rows - 1, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), dq.data() + (rows - 1) * cols, size_t(cols) * 4));
    }
  }
}

TEST(Formats, MinMaxParams) {
  const float w[4] = {-1.f, 0.5f, 2.f, 0.f};
  auto a = minmax_params(w, 4, {4, 32, false});
  EXPECT_EQ(a.scale, round_scale_f16(3.f / 15));
  EXPECT_GE(a.scale, 3.f / 15);
  EXPECT_EQ(a.zero, int32_t(std::nearbyint(1.f / a.scale)));
  auto s = minmax_params(w, 4, {4, 32, true});
  EXPECT_EQ(s.scale, round_scale_f16(4.f / 15));
  EXPECT_EQ(s.zero, 8);
  auto c = minmax_params(w, 4, {4, 32, true}, 0.5f);
  EXPECT_EQ(c.scale, round_scale_f16(2.f / 15));
  // Round up to f16 (never below the value; the next f16 at most one ulp above).
  for (float v : {1e-3f, 0.1f, 0.2f, 1.f / 3, 7.77f, 60000.f}) {
    const float r = round_scale_f16(v);
    EXPECT_GE(r, v);
    EXPECT_EQ(f16_to_f32(f32_to_f16(r)), r);
    EXPECT_LE(r, v * (1 + 1.f / 1024));
  }
  EXPECT_EQ(round_scale_f16(1e-12f), std::ldexp(1.f, -24));
  EXPECT_TRUE(std::isinf(round_scale_f16(70000.f)));
}

TEST(Formats, GoldenEdgeCases) {
  for (const auto& s : code_formats()) {
    const auto grid = make_grid(s);
    const int64_t rows = 2, cols = 70;
    // All zeros: dequantizes to exact zeros (int: scale 1, codes at the zero point).
    std::vector<float> z(size_t(rows * cols), 0.f);
    auto qm = quantize_rtn_ref(z.data(), rows, cols, s);
    if (is_int(s)) {
      for (float sc : qm.scales) EXPECT_EQ(sc, 1.f);
    }
    for (float v : dequantize_ref(pack_tensor("z", qm))) ASSERT_EQ(v, 0.f) << format_name(s);
    // Constants (positive and negative rows): int within scale/2; every family: the nearest code.
    std::vector<float> k(size_t(rows * cols));
    for (int64_t i = 0; i < rows * cols; ++i) k[size_t(i)] = i < cols ? 0.37f : -123.25f;
    qm = quantize_rtn_ref(k.data(), rows, cols, s);
    auto dq = dequantize_ref(pack_tensor("k", qm));
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (is_int(s)) {
        ASSERT_LE(std::fabs(dq[size_t(i)] - k[size_t(i)]), qm.scales[size_t(i / cols * qm.scales.size() / rows)] * 0.5f * 1.0001f)
            << format_name(s);
      }
      // a constant group's absmax is one of the grid's values (lut: a centroid), up to f16 scale
      // rounding (mxfp4: OCP's scale choice saturates the absmax at 6/8 of its power of two)
      if (!is_int(s)) {
        ASSERT_LE(std::fabs(dq[size_t(i)] - k[size_t(i)]), std::fabs(k[size_t(i)]) * (s.family == FormatFamily::MXFP4 ? 0.25f : 0.02f))
            << format_name(s) << " " << dq[size_t(i)];
      }
    }
    // Huge range (f16 scales up to 65504 cover it) mixed with tiny values; tiny-only groups.
    std::vector<float> h = randn(size_t(rows * cols), 11, 1e-3f);
    const float vmax = s.family == FormatFamily::Int ? float((1 << s.bits) - 1) / 2
                       : s.family == FormatFamily::FP8 ? 448.f
                       : s.family == FormatFamily::FP4 ? (s.bits == 3 ? (s.variant ? 3.f : 4.f) : s.variant == 3 ? 64.f : s.variant == 1 ? 7.f : 12.f)
                       : s.family == FormatFamily::Binary ? 1.f
                       : s.family == FormatFamily::Bitmod ? 84.f  // the ER datatypes' largest value
                                                        : 127.f;
    h[3] = 6.0e4f * vmax * 0.99f;
    h[cols + 5] = -h[3];
    for (int64_t c = 40; c < cols; ++c) h[size_t(c)] = 1e-9f * float(c);
    qm = quantize_rtn_ref(h.data(), rows, cols, s);
    const auto t = pack_tensor("h", qm);
    dq = dequantize_ref(t);
    const int64_t grp = s.group ? s.group : cols, G = (cols + grp - 1) / grp;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float sc = qm.scales[size_t((i / cols) * G + (i % cols) / grp)];
      ASSERT_TRUE(std::isfinite(sc));
      ASSERT_TRUE(std::isfinite(dq[size_t(i)]));
      if (is_int(s)) {
        ASSERT_LE(std::fabs(dq[size_t(i)] - h[size_t(i)]), sc * 0.5f * 1.0001f) << format_name(s) << " i=" << i;
      }
    }
    // Beyond the f16 scale range (not mxfp4: its E8M0 scales reach 2^126), NaN and Inf: Error.
    std::vector<float> bad = k;
    bad[7] = 1e30f;
    if (s.family != FormatFamily::MXFP4) {
      EXPECT_THROW(quantize_rtn_ref(bad.data(), rows, cols, s), Error) << format_name(s);
    }
    for (float v : {std::nanf(""), INFINITY, -INFINITY}) {
      bad = k;
      bad[9] = v;
      EXPECT_THROW(quantize_rtn_ref(bad.data(), rows, cols, s), Error);
      EXPECT_THROW(grid->params(bad.data(), cols, 1.f, nullptr), Error);
    }
  }
}

TEST(Formats, PackRejectsBadInput) {
  const QuantSpec s{4, 32, false};
  auto w = randn(3 * 64, 5);
  const auto good = quantize_rtn_ref(w.data(), 3, 64, s);
  EXPECT_NO_THROW(pack_tensor("ok", good));
  auto expect_bad = [&](auto mutate, const char* what) {
    QuantizedMatrix q = good;
    mutate(q);
    EXPECT_THROW(pack_tensor("bad", q), Error) << what;
  };
  expect_bad([](QuantizedMatrix& q) { q.scales[1] = std::nanf(""); }, "nan scale");
  expect_bad([](QuantizedMatrix& q) { q.scales[1] = INFINITY; }, "inf scale");
  expect_bad([](QuantizedMatrix& q) { q.scales[1] = 0.1f; }, "scale not f16-representable");
  expect_bad([](QuantizedMatrix& q) { q.q[5] = 16; }, "code > maxq");
  expect_bad([](QuantizedMatrix& q) { q.zeros[0] = 256; }, "zero > 255");
  expect_bad([](QuantizedMatrix& q) { q.zeros[0] = -1; }, "zero < 0");
  expect_bad([](QuantizedMatrix& q) { q.q.pop_back(); }, "codes size");
  expect_bad([](QuantizedMatrix& q) { q.scales.pop_back(); }, "scales size");
  expect_bad([](QuantizedMatrix& q) { q.zeros.pop_back(); }, "zeros size");
  expect_bad([](QuantizedMatrix& q) { q.spec.bits = 7; }, "bits");
  expect_bad([](QuantizedMatrix& q) { q.rows = 0; q.q.clear(); q.scales.clear(); q.zeros.clear(); }, "empty");
  // Symmetric: zeros may be omitted, or must all be 2^(bits-1).
  QuantizedMatrix sq = quantize_rtn_ref(w.data(), 3, 64, {4, 32, true});
  const Tensor a = pack_tensor("s", sq);
  sq.zeros.clear();
  const Tensor b = pack_tensor("s", sq);
  EXPECT_EQ(0, std::memcmp(a.data, b.data, a.nbytes));
  sq.zeros.assign(sq.scales.size(), 8);
  sq.zeros[2] = 7;
  EXPECT_THROW(pack_tensor("s", sq), Error);
  // Other families' params.
  auto bad_family = [&](const char* fmt, auto mutate, const char* what) {
    QuantizedMatrix q = quantize_rtn_ref(w.data(), 3, 64, parse_format_name(fmt));
    EXPECT_NO_THROW(pack_tensor("ok", q)) << fmt;
    mutate(q);
    EXPECT_THROW(pack_tensor("bad", q), Error) << fmt << ": " << what;
  };
  bad_family("nf4g32", [](QuantizedMatrix& q) { q.scales[0] = std::nanf(""); }, "nan scale");
  bad_family("nf4g32", [](QuantizedMatrix& q) { q.q[0] = 16; }, "code > 15");
  // the fp minifloats (3- and 4-bit) and binary: code ranges and scales at pack time, f16 scales at load time
  bad_family("fp3g32", [](QuantizedMatrix& q) { q.q[0] = 8; }, "code > 7");
  bad_family("fp3e1m1g32", [](QuantizedMatrix& q) { q.scales[1] = std::nanf(""); }, "nan scale");
  bad_family("fp4e3m0g32", [](QuantizedMatrix& q) { q.scales[0] = INFINITY; }, "inf scale");
  bad_family("fp4e1m2g32", [](QuantizedMatrix& q) { q.q[3] = 16; }, "code > 15");
  bad_family("b1g32", [](QuantizedMatrix& q) { q.q[0] = 2; }, "binary code > 1");
  bad_family("b1g32", [](QuantizedMatrix& q) { q.scales[0] = std::nanf(""); }, "nan scale");
  for (const char* fmt : {"fp3g32", "fp4e3m0g32", "b1g32"}) {
    const Tensor t = pack_tensor("ok", quantize_rtn_ref(w.data(), 3, 64, parse_format_name(fmt)));
    const PackedGeometry g = packed_geometry(parse_format_name(fmt), 3, 64);
    std::vector<uint8_t> bytes(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes);
    bytes[size_t(g.q_bytes) + 1] = 0x7e;  // the first scale's high byte: an f16 NaN
    bytes[size_t(g.q_bytes)] = 0x00;
    const Tensor bad = make_owned_tensor("corrupt.weight", DType::Q, {3, 64}, std::move(bytes), t.format);
    try {
      validate_packed(bad, "corrupt.weight");
      ADD_FAILURE() << fmt << ": a NaN scale was accepted at load";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("corrupt.weight"), std::string::npos) << e.what();
    }
  }
  bad_family("mxfp4", [](QuantizedMatrix& q) { q.scales[0] = 0.3f; }, "scale not a power of two");
  bad_family("mxfp4", [](QuantizedMatrix& q) { q.scales[0] = std::ldexp(1.f, -127); }, "scale below 2^-126");
  bad_family("lut4", [](QuantizedMatrix& q) { q.table[3] = -128; }, "table value -128");
  bad_family("lut4", [](QuantizedMatrix& q) { std::swap(q.table[3], q.table[9]); }, "table not ascending");
  bad_family("lut3", [](QuantizedMatrix& q) { q.table.pop_back(); }, "table size");
  bad_family("fp8row", [](QuantizedMatrix& q) { q.q[2] = 0x7f; }, "NaN code");
  bad_family("fp8row", [](QuantizedMatrix& q) { q.q[2] = 0xff; }, "-NaN code");
}

// ---- spqr (SpQR's format: statistics shared by row groups, no per-group grid) ---------------------

TEST(Formats, SpqrNamesIdsAndBytes) {
  const QuantSpec a = parse_format_name("spqr3");
  EXPECT_EQ(a.family, FormatFamily::Spqr);
  EXPECT_EQ(a.bits, 3);
  EXPECT_EQ(a.group, 16);
  EXPECT_EQ(a.group2, 16);
  EXPECT_EQ(format_name(a), "spqr3g16");
  const QuantSpec b = parse_format_name("spqr2g32r64+s0.30");
  EXPECT_EQ(format_name(b), "spqr2g32r64+s0.30");
  // id: bits | (group code | row-group code << 4) << 8 | sparse << 17 | 7 << 24 (asymmetric: no sym bit)
  EXPECT_EQ(format_id(parse_format_name("spqr3g32r32")), 3u | (2u | 2u << 4) << 8 | 7u << 24);
  EXPECT_EQ(format_spec(format_id(b)), b);
  for (const char* bad : {"spqr", "spqr5", "spqr1g16", "spqr3g8", "spqr3g128", "spqr3g16r8", "spqr3g16r", "spqr3g016",
                          "spqr3r16g16", "spqr3g16x", "spqr3g16r16r16"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  // second-level groups only for spqr; spqr only with them
  EXPECT_FALSE(format_id_valid(4u | (2u | 1u << 4) << 8 | 1u << 16));
  EXPECT_FALSE(format_id_valid(3u | 1u << 8 | 7u << 24));
  EXPECT_FALSE(format_id_valid(3u | (1u | 5u << 4) << 8 | 7u << 24));  // row groups of "row"
  // bits per weight: b + 6 / G + 64 / (G R) when the shape divides (the paper's formula)
  EXPECT_EQ(packed_bpw(a, 256, 256), 3.0 + 6.0 / 16 + 64.0 / 256);
  EXPECT_EQ(packed_bpw(parse_format_name("spqr3g32r32"), 256, 768), 3.25);
  EXPECT_EQ(packed_bpw(parse_format_name("spqr4g64r64"), 64, 512), 4.0 + 6.0 / 64 + 64.0 / 4096);
  EXPECT_THROW(make_grid(a), Error);
}

// Every byte re-derived from the docs/formats.md layout: codes in the int family's blocks, each
// row's 6-bit statistic codes after its blocks, [row groups][4][groups] f16 after the rows; values
// w = s q - s z in double match the reference dequantization to f32 rounding.
TEST(Formats, SpqrLayoutGolden) {
  for (const char* name : {"spqr3g16", "spqr2g32r32", "spqr4g64r64", "spqr3g16r32"}) {
    const QuantSpec s = parse_format_name(name);
    for (int64_t rows : {1, 17, 40})
      for (int64_t cols : {1, 33, 100, 256}) {
        const auto w = randn(size_t(rows * cols), uint32_t(rows * 7 + cols));
        const QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, s);
        const Tensor t = pack_tensor("w", qm);
        const uint8_t* p = bytes_of(t);
        const int64_t nb = (cols + 31) / 32, G = (cols + s.group - 1) / s.group;
        const int64_t stat = (6 * G + 15) / 16 * 2, row_bytes = nb * 4 * s.bits + stat;
        const int64_t rgs = (rows + s.group2 - 1) / s.group2;
        ASSERT_EQ(int64_t(t.nbytes), rows * row_bytes + rgs * 4 * G * 2) << name;
        const auto dq = dequantize_ref(t);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t b = 0; b < nb; ++b) {
            uint8_t q[32] = {};
            for (int i = 0; i < 32 && b * 32 + i < cols; ++i) q[i] = qm.q[size_t(r * cols + b * 32 + i)];
            ASSERT_EQ(0, std::memcmp(doc_pack(s.bits, q).data(), p + r * row_bytes + b * 4 * s.bits, size_t(4 * s.bits)));
          }
          const uint8_t* st = p + r * row_bytes + nb * 4 * s.bits;
          for (int64_t g = 0; g < G; ++g) {
            uint32_t code = 0;
            for (int k = 0; k < 6; ++k) code |= uint32_t((st[(6 * g + k) / 8] >> ((6 * g + k) % 8)) & 1) << k;
            ASSERT_EQ(int32_t(code), qm.zeros[size_t(r * G + g)]) << name;
            double v2[4];
            for (int k = 0; k < 4; ++k) {
              uint16_t h;
              std::memcpy(&h, p + rows * row_bytes + (((r / s.group2) * 4 + k) * G + g) * 2, 2);
              v2[k] = f16_to_f32(h);
              ASSERT_EQ(float(v2[k]), qm.stats2[size_t(((r / s.group2) * 4 + k) * G + g)]);
            }
            const double sc = v2[1] + v2[0] * (code & 7), z = v2[3] + v2[2] * (code >> 3);
            for (int64_t c = g * s.group; c < std::min(cols, (g + 1) * s.group); ++c) {
              const double ref = sc * qm.q[size_t(r * cols + c)] - sc * z;
              ASSERT_NEAR(dq[size_t(r * cols + c)], ref, 1e-6 * (std::fabs(sc) * (15 + std::fabs(z)) + 1e-30)) << name;
            }
          }
        }
      }
  }
}

TEST(Formats, SpqrRoundTrip) {
  for (const auto& s : all_formats()) {
    if (!is_spqr(s)) continue;
    for (int64_t rows : {3, 40})
      for (int64_t cols : {1, 33, 352}) {
        const auto w = randn(size_t(rows * cols), uint32_t(cols * 131 + rows + s.bits));
        const QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, s);
        const Tensor t = pack_tensor("w", qm);
        ASSERT_EQ(int64_t(t.nbytes), packed_geometry(s, rows, cols).total_bytes);
        const QuantizedMatrix u = unpack_tensor(t);
        ASSERT_EQ(u.spec, s);
        ASSERT_EQ(u.q, qm.q) << format_name(s);
        ASSERT_EQ(u.zeros, qm.zeros) << format_name(s);
        ASSERT_EQ(u.stats2, qm.stats2) << format_name(s);
        ASSERT_EQ(u.scales, qm.scales) << format_name(s);
        const Tensor t2 = pack_tensor("w", u);
        ASSERT_EQ(0, std::memcmp(t.data, t2.data, t.nbytes)) << format_name(s);
        const std::vector<float> dq = dequantize_ref(t);
        ASSERT_EQ(dq, dequantize_matrix(qm)) << format_name(s);
        const int32_t maxq = (1 << s.bits) - 1;
        const int64_t G = qm.groups(), R = s.group2;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t g = 0; g < G; ++g) {
            // the decoded first-level scale / zero are within half a second-level step of the
            // rows' own min-max statistics (codes 0..7 nearest)
            const int64_t c0 = g * s.group, c1 = std::min(cols, c0 + s.group), rg = r / R;
            const spqr::Stats1 st = spqr::minmax_stats(w.data() + r * cols + c0, c1 - c0, s.bits);
            const spqr::Factors f = spqr::factors(qm, r, g);
            const float sstep = qm.stats2[spqr::stats2_index(qm, rg, 0, g)], zstep = qm.stats2[spqr::stats2_index(qm, rg, 2, g)];
            ASSERT_LE(std::fabs(f.s - st.scale), sstep * 0.5f * 1.001f + 1e-3f * std::fabs(st.scale)) << format_name(s);
            ASSERT_LE(std::fabs(f.z - st.zero), zstep * 0.5f * 1.001f + 1e-3f * std::fabs(st.zero) + 1e-3f) << format_name(s);
            for (int64_t c = c0; c < c1; ++c) {
              const size_t i = size_t(r * cols + c);
              ASSERT_EQ(dq[i], spqr::value(qm.q[i], f));
              for (int32_t k = 0; k <= maxq; ++k)  // each code is the nearest under the decoded statistics
                ASSERT_LE(std::fabs(dq[i] - w[i]), std::fabs(spqr::value(uint8_t(k), f) - w[i]) * (1 + 1e-6f) + 1e-7f)
                    << format_name(s) << " c=" << c << " code " << int(qm.q[i]) << " vs " << k;
            }
          }
        for (SimdLevel l : all_levels()) {
          if (l > cpu_simd_level()) continue;
          std::vector<float> fast(dq.size());
          dequant_rows_at(l, t, fast.data());
          ASSERT_EQ(0, std::memcmp(fast.data(), dq.data(), dq.size() * 4)) << format_name(s) << " " << simd_level_name(l);
        }
        std::vector<float> row(static_cast<size_t>(cols));
        tensor_row_f32(t, rows - 1, row.data());
        ASSERT_EQ(0, std::memcmp(row.data(), dq.data() + (rows - 1) * cols, size_t(cols) * 4));
      }
  }
}

TEST(Formats, SpqrEdgeCasesAndBadInput) {
  const QuantSpec s = parse_format_name("spqr3g16");
  const int64_t rows = 2, cols = 70;
  std::vector<float> z(size_t(rows * cols), 0.f);
  for (float v : dequantize_ref(pack_tensor("z", quantize_rtn_ref(z.data(), rows, cols, s)))) ASSERT_EQ(v, 0.f);
  // constant rows (far from 0: the range is widened to 0) come back within f16 / 3-bit rounding
  std::vector<float> k(size_t(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i) k[size_t(i)] = i < cols ? 0.37f : -123.25f;
  auto dq = dequantize_ref(pack_tensor("k", quantize_rtn_ref(k.data(), rows, cols, s)));
  for (int64_t i = 0; i < rows * cols; ++i) ASSERT_NEAR(dq[size_t(i)], k[size_t(i)], 0.02 * std::fabs(k[size_t(i)]));
  // a group far from 0 relative to its width, and a huge-but-finite one
  std::vector<float> h = randn(size_t(rows * cols), 5, 1e-3f);
  for (int64_t c = 0; c < 16; ++c) h[size_t(c)] = 100.f + 1e-3f * float(c);
  h[cols + 3] = 3e4f;
  dq = dequantize_ref(pack_tensor("h", quantize_rtn_ref(h.data(), rows, cols, s)));
  for (float v : dq) ASSERT_TRUE(std::isfinite(v));
  for (int64_t c = 0; c < 16; ++c) ASSERT_NEAR(dq[size_t(c)], h[size_t(c)], 100.0 / 7 / 2 * 1.01);
  for (float v : {std::nanf(""), INFINITY, 1e38f}) {
    std::vector<float> bad = k;
    bad[9] = v;
    EXPECT_THROW(quantize_rtn_ref(bad.data(), rows, cols, s), Error) << v;
  }
  // pack refuses codes, statistic codes and second-level values it cannot store
  auto w = randn(size_t(20 * 64), 3);
  const QuantizedMatrix good = quantize_rtn_ref(w.data(), 20, 64, s);
  auto expect_bad = [&](auto mutate, const char* what) {
    QuantizedMatrix q = good;
    mutate(q);
    EXPECT_THROW(pack_tensor("bad", q), Error) << what;
  };
  expect_bad([](QuantizedMatrix& q) { q.q[5] = 8; }, "code > 7");
  expect_bad([](QuantizedMatrix& q) { q.zeros[3] = 64; }, "statistic code > 63");
  expect_bad([](QuantizedMatrix& q) { q.zeros[3] = -1; }, "statistic code < 0");
  expect_bad([](QuantizedMatrix& q) { q.stats2[1] = 0.1f; }, "not f16");
  expect_bad([](QuantizedMatrix& q) { q.stats2[1] = INFINITY; }, "inf");
  expect_bad([](QuantizedMatrix& q) { q.stats2.pop_back(); }, "stats2 size");
  expect_bad([](QuantizedMatrix& q) { q.zeros.pop_back(); }, "codes size");
  // load-time check: a non-finite statistic, named by row group; wrong byte counts
  const Tensor t = pack_tensor("blk.0.ffn_up.weight", good);
  const PackedGeometry g = packed_geometry(s, 20, 64);
  std::vector<uint8_t> b(bytes_of(t), bytes_of(t) + t.nbytes);
  const uint16_t inf16 = 0x7c00;
  std::memcpy(b.data() + g.q_bytes + 2 * (4 * g.groups_per_row + 2), &inf16, 2);
  try {
    validate_packed(make_owned_tensor(t.name, DType::Q, t.shape, b, t.format), "m.lmp");
    ADD_FAILURE() << "accepted a non-finite statistic";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row group 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("m.lmp"), std::string::npos) << e.what();
  }
  for (int64_t delta : {int64_t(-1), int64_t(2)}) {
    std::vector<uint8_t> b2(bytes_of(t), bytes_of(t) + t.nbytes);
    b2.resize(size_t(int64_t(b2.size()) + delta));
    EXPECT_THROW(validate_packed(make_owned_tensor(t.name, DType::Q, t.shape, b2, t.format), "m.lmp"), Error);
  }
}

TEST(Formats, ValidatePackedRejectsWrongSizes) {
  auto w = randn(5 * 100, 9);
  for (const auto& s : code_formats()) {
    const Tensor t = pack_tensor("blk.0.ffn_up.weight", quantize_rtn_ref(w.data(), 5, 100, s));
    EXPECT_NO_THROW(validate_packed(t, "model.gguf"));
    std::vector<uint8_t> bytes(bytes_of(t), bytes_of(t) + t.nbytes);
    for (int64_t delta : {int64_t(-1), int64_t(1), -int64_t(t.nbytes) / 2}) {
      std::vector<uint8_t> b2 = bytes;
      b2.resize(size_t(int64_t(b2.size()) + delta));
      const Tensor bad = make_owned_tensor(t.name, DType::Q, t.shape, b2, t.format);
      try {
        validate_packed(bad, "model.gguf");
        ADD_FAILURE() << "size " << b2.size() << " accepted for " << format_name(s);
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("model.gguf"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("ffn_up"), std::string::npos) << e.what();
      }
    }
  }
  const Tensor t = pack_tensor("t", quantize_rtn_ref(w.data(), 5, 100, {4, 32, true}));
  Tensor b = t;
  b.format = 0x123;
  EXPECT_THROW(validate_packed(b, "f"), Error);
  b = t;
  b.dtype = DType::F16;
  EXPECT_THROW(validate_packed(b, "f"), Error);
  b = t;
  b.shape = {500};
  EXPECT_THROW(validate_packed(b, "f"), Error);
  b = t;
  b.shape = {4, 125};  // different geometry
  EXPECT_THROW(validate_packed(b, "f"), Error);
  b = t;
  b.data = nullptr;
  EXPECT_THROW(validate_packed(b, "f"), Error);
  b = t;
  b.shape = {5, 0};
  EXPECT_THROW(validate_packed(b, "f"), Error);
  // The engine's entry points validate too.
  ThreadPool pool(1);
  std::vector<float> x(100), y(5);
  b = t;
  b.nbytes -= 1;
  EXPECT_THROW(matmul(b, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(tensor_row_f32(b, 0, y.data()), Error);
  EXPECT_THROW(tensor_row_f32(t, 5, x.data()), Error);
  // Content the kernels rely on is checked at load (validate_packed), once.
  {
    const Tensor m = pack_tensor("m", quantize_rtn_ref(w.data(), 5, 100, parse_format_name("mxfp4")));
    std::vector<uint8_t> b2(bytes_of(m), bytes_of(m) + m.nbytes);
    b2[packed_geometry(parse_format_name("mxfp4"), 5, 100).q_bytes] = 255;
    EXPECT_THROW(validate_packed(make_owned_tensor("m", DType::Q, m.shape, b2, m.format), "f"), Error);
    const Tensor l = pack_tensor("l", quantize_rtn_ref(w.data(), 5, 100, parse_format_name("lut4")));
    std::vector<uint8_t> b3(bytes_of(l), bytes_of(l) + l.nbytes);
    b3.back() = 0x80;
    EXPECT_THROW(validate_packed(make_owned_tensor("l", DType::Q, l.shape, b3, l.format), "f"), Error);
    const Tensor f = pack_tensor("f", quantize_rtn_ref(w.data(), 5, 100, parse_format_name("fp8g32")));
    std::vector<uint8_t> b4(bytes_of(f), bytes_of(f) + f.nbytes);
    b4[3] = 0x7f;
    EXPECT_THROW(validate_packed(make_owned_tensor("f", DType::Q, f.shape, b4, f.format), "f"), Error);
  }
}

// ---- kernels ---------------------------------------------------------------------------------------

class QuantKernels : public ::testing::TestWithParam<SimdLevel> {
 protected:
  void SetUp() override {
    if (GetParam() > cpu_simd_level())
      GTEST_SKIP() << "SKIPPED: ISA level " << simd_level_name(GetParam())
                   << " not supported by this CPU (" << cpu_feature_string() << ")";
  }
};

// Activation quantization is bit-identical across levels (the integer dot products then are too).
TEST_P(QuantKernels, ActivationQuantizationMatchesReference) {
  const auto& K = kern::qops_at(GetParam());
  for (int64_t cols : {1, 7, 31, 32, 33, 127, 352, 1023}) {
    auto x = randn(size_t(cols), uint32_t(cols), 3.f);
    if (cols > 40) {
      for (int i = 32; i < 64 && i < cols; ++i) x[size_t(i)] = 0.f;  // an all-zero block
      x[size_t(cols - 1)] = 1e4f;                                    // an outlier
    }
    const int64_t nb = (cols + 31) / 32;
    std::vector<int8_t> qa(size_t(nb * 32), 99), qr(size_t(nb * 32), 77);
    std::vector<float> d(size_t(nb * 2)), dr(size_t(nb * 2));
    std::vector<int32_t> hs(size_t(nb * 2)), hr(size_t(nb * 2));
    K.quantize_acts(x.data(), cols, qa.data(), d.data(), 2, hs.data());
    kern::qops_scalar.quantize_acts(x.data(), cols, qr.data(), dr.data(), 2, hr.data());
    ASSERT_EQ(qa, qr) << cols;
    ASSERT_EQ(hs, hr) << cols;
    for (int64_t b = 0; b < nb; ++b) {
      ASSERT_EQ(d[size_t(2 * b)], dr[size_t(2 * b)]);
      int32_t s[2] = {0, 0};
      for (int i = 0; i < 32; ++i) {
        const int64_t c = b * 32 + i;
        ASSERT_LE(std::abs(qr[size_t(c)]), 127);
        if (c >= cols) {
          ASSERT_EQ(qr[size_t(c)], 0);
        } else {
          ASSERT_LE(std::fabs(x[size_t(c)] - dr[size_t(2 * b)] * qr[size_t(c)]), dr[size_t(2 * b)] * 0.5f * 1.0001f);
        }
        s[i / 16] += qr[size_t(c)];
      }
      ASSERT_EQ(hr[size_t(2 * b)], s[0]);
      ASSERT_EQ(hr[size_t(2 * b + 1)], s[1]);
    }
    // A non-finite value poisons its block's scale (NaN) instead of producing garbage codes.
    for (float bad : {std::nanf(""), INFINITY}) {
      auto xb = x;
      xb[0] = bad;
      K.quantize_acts(xb.data(), cols, qa.data(), d.data(), 2, hs.data());
      EXPECT_TRUE(std::isnan(d[0]));
      for (int i = 0; i < 32; ++i) EXPECT_EQ(qa[size_t(i)], 0);
    }
  }
}

// The parity table: every format x awkward sizes x decode/prefill token counts.
TEST_P(QuantKernels, MatmulParityAllFormats) {
  const SimdLevel level = GetParam();
  // Two threads only where the rows or tokens split (wake-ups dominate tiny products otherwise).
  ThreadPool pool1(1), pool2(2);
  const int64_t nmax = 16;
  int cases = 0;
  int ggml_sizes = 0;
  for (const auto& s : all_formats()) {
    for (int64_t cols0 : {1, 7, 31, 33, 112, 127, 191, 352, 415, 1023, 2048}) {
      // ggml rows are whole blocks: the awkward sizes become multiples of the block (1..8 blocks of
      // 256, 1..64 of 32) so block counts stay odd / prime / large
      // (trellis: whole 16 x 16 tiles, random codes: encoding is tested in test_trellis.cpp)
      const int64_t cols = is_ggml(s)      ? std::max<int64_t>(1, cols0 / (ggml_qk(s) == 256 ? 256 : 32)) * ggml_qk(s)
                           : is_trellis(s) ? std::max<int64_t>(1, cols0 / 16) * 16
                                           : cols0;
      ggml_sizes += is_ggml(s);
      for (int64_t rows0 : {1, 3, 17}) {
        const int64_t rows = is_trellis(s) ? 16 * rows0 : rows0;
        const uint32_t seed = uint32_t(cols * 7919 + rows * 31 + format_id(s));
        auto w = randn(size_t(rows * cols), seed);
        const Tensor t = is_ggml(s)      ? ggml_tensor(s, rows, cols, seed)
                         : is_trellis(s) ? pack_tensor("w", trellis::random_matrix(s, rows, cols, seed))
                                         : pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, s));
        const std::vector<float> wd = dequantize_ref(t);
        // Activations: normal with per-token scale, an outlier and an all-zero block.
        auto x = randn(size_t(nmax * cols), seed + 1);
        for (int64_t tk = 0; tk < nmax; ++tk) {
          for (int64_t c = 0; c < cols; ++c) x[size_t(tk * cols + c)] *= 0.25f + float(tk % 5);
          if (cols > 64) {
            x[size_t(tk * cols + (tk * 37) % cols)] = 40.f;
            for (int64_t c = 32; c < 64; ++c) x[size_t(tk * cols + c)] = 0.f;
          }
        }
        // Per token: exact product, the activation-quantization bound sum |w| d_b / 2, and the
        // magnitude of the float terms the kernels add (for rounding slack).
        const QuantizedMatrix qm = is_ggml(s) ? QuantizedMatrix{} : unpack_tensor(t);
        const ParityEntry& pe = parity_entry(s);
        const int64_t grp = s.group ? s.group : cols, G = (cols + grp - 1) / grp;
        std::vector<double> exact(size_t(nmax * rows)), bound(size_t(nmax * rows)), mag(size_t(nmax * rows));
        for (int64_t tk = 0; tk < nmax; ++tk) {
          const float* xt = x.data() + tk * cols;
          std::vector<double> db(size_t((cols + 31) / 32));
          for (int64_t b = 0; b < int64_t(db.size()); ++b) {
            float amax = 0.f;
            for (int64_t c = b * 32; c < std::min(cols, b * 32 + 32); ++c) amax = std::max(amax, std::fabs(xt[c]));
            db[size_t(b)] = amax / 127.0;
          }
          for (int64_t r = 0; r < rows; ++r) {
            double e = 0, bd = 0, m = 0;
            for (int64_t c = 0; c < cols; ++c) {
              const double wv = wd[size_t(r * cols + c)];
              const size_t gi = size_t(r * G + c / grp);
              e += wv * xt[c];
              if (!pe.int8_acts) {
                m += std::fabs(wv * xt[c]);
                continue;
              }
              bd += std::fabs(wv) * db[size_t(c / 32)] * 0.5;
              if (is_int(s))
                m += double(qm.scales[gi]) * (qm.q[size_t(r * cols + c)] + qm.zeros[gi] + (s.bits == 8 ? 128 : 0)) *
                     (std::fabs(xt[c]) + db[size_t(c / 32)]);
              else
                m += std::fabs(wv) * (std::fabs(xt[c]) + db[size_t(c / 32)]);
            }
            exact[size_t(tk * rows + r)] = e;
            bound[size_t(tk * rows + r)] = bd;
            mag[size_t(tk * rows + r)] = m;
          }
        }
        for (int64_t n : {1, 3, 5, 16}) {  // 3: the multi-token decode path
          // rows split (17 rows x 2048) and tokens split (3 rows x 16 tokens) over two threads
          ThreadPool& pool = (rows == 17 && cols == 2048 && n != 5) || (rows == 3 && n == 16 && cols == 127) ? pool2 : pool1;
          std::vector<float> y(size_t(n * rows), -1.f), yref(size_t(n * rows), -2.f);
          {
            ScopedSimdLevel sl(SimdLevel::Scalar);
            matmul(t, x.data(), n, yref.data(), pool1);
          }
          {
            ScopedSimdLevel sl(level);
            ASSERT_EQ(active_simd_level(), level);
            matmul(t, x.data(), n, y.data(), pool);
          }
          for (int64_t i = 0; i < n * rows; ++i) {
            const double round_slack = pe.slack * mag[size_t(i)] + 1e-30;
            const std::string where = format_name(s) + " " + simd_level_name(level) +
                                      " cols=" + std::to_string(cols) + " rows=" + std::to_string(rows) +
                                      " n=" + std::to_string(n) + " i=" + std::to_string(i);
            ASSERT_NEAR(y[size_t(i)], exact[size_t(i)], bound[size_t(i)] + round_slack) << where;
            ASSERT_NEAR(yref[size_t(i)], exact[size_t(i)], bound[size_t(i)] + round_slack) << where;
            ASSERT_NEAR(y[size_t(i)], yref[size_t(i)], round_slack) << where;
          }
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, int(all_formats().size()) * 11 * 3 * 4);
  EXPECT_EQ(ggml_sizes, 12 * 11);
}

// Sparse outliers (+s): pack / unpack, reference dequantization, the fused add of every matmul path
// (decode, multi-token decode, prefill; every family kind), row lookups, and corrupt parts.
TEST_P(QuantKernels, SparseOutliers) {
  ThreadPool pool(2);
  ScopedSimdLevel sl(GetParam());
  for (const char* name : {"w4g32+s0.50", "lut3+s0.45", "nf4g64+s1.00", "fp8row+s0.30", "w3g16a+s0.05",
                           "pow4a0.60g32+s0.30", "bitmod3g64+s0.50"}) {
    const QuantSpec full = parse_format_name(name);
    QuantSpec dense = full;
    dense.sparse = 0;
    const int64_t rows = 37, cols = 300;
    auto w = randn(size_t(rows * cols), 31);
    QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, dense);
    const Tensor td = pack_tensor("w", qm);
    qm.spec = full;
    const int64_t nnz = sparse_count(full, rows, cols);
    std::mt19937 rng(5);
    std::set<uint32_t> pos;
    for (int64_t c = 0; c < cols && int64_t(pos.size()) < std::min<int64_t>(nnz, 37); c += 7)
      pos.insert(uint32_t(5 * cols + c));  // a row with a long run (several SIMD chunks)
    while (int64_t(pos.size()) < nnz) pos.insert(uint32_t(rng() % uint32_t(rows * cols)));
    qm.sp_idx.assign(pos.begin(), pos.end());
    for (int64_t k = 0; k < nnz; ++k) qm.sp_val.push_back(f16_to_f32(f32_to_f16(float(k % 7) - 3.5f)));
    const Tensor t = pack_tensor("w", qm);
    ASSERT_EQ(int64_t(t.nbytes), packed_geometry(full, rows, cols).total_bytes);
    const QuantizedMatrix back = unpack_tensor(t);
    EXPECT_EQ(back.sp_idx, qm.sp_idx) << name;
    EXPECT_EQ(back.sp_val, qm.sp_val) << name;
    const auto wd = dequantize_ref(t), wdd = dequantize_ref(td), wm = dequantize_matrix(qm);
    ASSERT_EQ(wd, wm) << name;
    std::vector<double> sp(size_t(rows * cols), 0.0);
    for (int64_t k = 0; k < nnz; ++k) sp[qm.sp_idx[size_t(k)]] = qm.sp_val[size_t(k)];
    for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(wd[size_t(i)], wdd[size_t(i)] + float(sp[size_t(i)])) << name;
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r += 6) {
      quant_row(t, r, row.data());
      for (int64_t c = 0; c < cols; ++c) ASSERT_NEAR(row[size_t(c)], wd[size_t(r * cols + c)], 1e-6) << name;
    }
    for (int64_t n : {1, 3, 40}) {
      auto x = randn(size_t(n * cols), 32);
      std::vector<float> y(size_t(n * rows)), yd(size_t(n * rows)), ys(size_t(n * rows));
      matmul(t, x.data(), n, y.data(), pool);
      matmul(td, x.data(), n, yd.data(), pool);
      quant_matmul_dequant_sgemm(t, x.data(), n, ys.data(), pool);
      for (int64_t tk = 0; tk < n; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
          double add = 0, e = 0, m = 0;
          for (int64_t c = 0; c < cols; ++c) {
            add += sp[size_t(r * cols + c)] * x[size_t(tk * cols + c)];
            e += double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
            m += std::fabs(double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
          }
          const size_t i = size_t(tk * rows + r);
          // the fused add is exactly the outliers' f32 product on top of the dense kernel's
          ASSERT_NEAR(y[i] - yd[i], add, 1e-4 * (1 + std::fabs(add))) << name << " n=" << n;
          ASSERT_NEAR(ys[i], e, 3e-5 * m) << name;
          ASSERT_NEAR(y[i], e, 0.02 * m) << name;
        }
      // A batch of two products on different inputs (each prefill input transposed on its own)
      // gives exactly the separate products.
      auto x2 = randn(size_t(n * cols), 33);
      std::vector<float> ya(size_t(n * rows)), yb(size_t(n * rows));
      const MatmulJob jobs[2] = {{&t, x.data(), n, ya.data()}, {&t, x2.data(), n, yb.data()}};
      matmul_batch(jobs, 2, pool);
      std::vector<float> yb1(size_t(n * rows));
      matmul(t, x2.data(), n, yb1.data(), pool);
      for (size_t i = 0; i < ya.size(); ++i) {
        ASSERT_EQ(ya[i], y[i]) << name << " n=" << n;
        ASSERT_EQ(yb[i], yb1[i]) << name << " n=" << n;
      }
    }
  }
  // Corrupt sparse parts are refused at load with a message naming them.
  const QuantSpec full = parse_format_name("w4g32+s1.00");
  QuantSpec dense = full;
  dense.sparse = 0;
  auto w = randn(size_t(8 * 64), 3);
  QuantizedMatrix qm = quantize_rtn_ref(w.data(), 8, 64, dense);
  qm.spec = full;
  for (uint32_t k = 0; k < 5; ++k) qm.sp_idx.push_back(k * 100), qm.sp_val.push_back(0.5f);
  const Tensor good = pack_tensor("w", qm);
  EXPECT_NO_THROW(validate_packed(good, "f"));
  const auto g = packed_geometry(full, 8, 64);
  auto corrupt = [&](auto edit, const char* needle) {
    std::vector<uint8_t> b(static_cast<const uint8_t*>(good.data), static_cast<const uint8_t*>(good.data) + good.nbytes);
    edit(b.data());
    const Tensor bad = make_owned_tensor("w", DType::Q, {8, 64}, std::move(b), good.format);
    try {
      validate_packed(bad, "f");
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  corrupt([&](uint8_t* d) { reinterpret_cast<uint32_t*>(d + g.sparse_offset)[2] = 50; }, "not ascending");
  corrupt([&](uint8_t* d) { reinterpret_cast<uint32_t*>(d + g.sparse_offset)[4] = 512; }, "beyond");
  corrupt([&](uint8_t* d) { reinterpret_cast<uint16_t*>(d + g.sparse_offset + 4 * g.sparse_nnz)[1] = 0x7c00; }, "non-finite");
  // and at pack time: wrong count, unsorted positions
  QuantizedMatrix q2 = qm;
  q2.sp_idx.pop_back();
  EXPECT_THROW(pack_tensor("w", q2), Error);
  q2 = qm;
  std::swap(q2.sp_idx[0], q2.sp_idx[1]);
  EXPECT_THROW(pack_tensor("w", q2), Error);
}

// Token chunking, row tiles and thread splits on a bigger prefill; also the dequantize + sgemm
// alternative, and NaN activations turning into NaN outputs.
TEST_P(QuantKernels, PrefillChunksAndAlternatives) {
  ThreadPool pool(2);
  ScopedSimdLevel sl(GetParam());
  for (const QuantSpec s : {QuantSpec{4, 32, true}, QuantSpec{4, 16, false}, QuantSpec{3, 16, false},
                            QuantSpec{8, 128, false}, parse_format_name("nf4g64"), parse_format_name("lut3"),
                            parse_format_name("mxfp4"), parse_format_name("fp8row"), parse_format_name("pow3a0.50g32"),
                            parse_format_name("bitmod4g64"), parse_format_name("bitmod3g128")}) {
    // 4000 columns: two K slices of 64 and 61 blocks (an odd tail block for the 4-bit pair path)
    const int64_t rows = 37, cols = 4000, n = 131;
    auto w = randn(size_t(rows * cols), 21);
    const Tensor t = pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, s));
    auto x = randn(size_t(n * cols), 22);
    std::vector<float> y(size_t(n * rows)), yref(size_t(n * rows)), ys(size_t(n * rows)), y1(static_cast<size_t>(rows));
    matmul(t, x.data(), n, y.data(), pool);
    {
      ScopedSimdLevel sc(SimdLevel::Scalar);
      matmul(t, x.data(), n, yref.data(), pool);
    }
    quant_matmul_dequant_sgemm(t, x.data(), n, ys.data(), pool);
    const auto wd = dequantize_ref(t);
    for (int64_t tk = 0; tk < n; tk += 13) {
      matmul(t, x.data() + tk * cols, 1, y1.data(), pool);  // decode of the same token
      for (int64_t r = 0; r < rows; ++r) {
        double e = 0, m = 0;
        for (int64_t c = 0; c < cols; ++c) {
          e += double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
          m += std::fabs(double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
        }
        const size_t i = size_t(tk * rows + r);
        EXPECT_NEAR(ys[i], e, 3e-5 * m) << format_name(s);
        EXPECT_NEAR(y[i], yref[i], 2e-5 * m * 8) << format_name(s);
        EXPECT_NEAR(y1[size_t(r)], y[i], 2e-5 * m * 8) << format_name(s);
        EXPECT_NEAR(y[i], e, 0.02 * m) << format_name(s);  // int8 activations: ~0.4% per term
      }
    }
    x[5] = std::nanf("");
    matmul(t, x.data(), 2, y.data(), pool);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_TRUE(std::isnan(y[size_t(r)]));
      EXPECT_FALSE(std::isnan(y[size_t(rows + r)]));
    }
  }
}

// matmul_batch (the engine's q/k/v and gate/up dispatch) gives exactly the separate products, for
// quantized, dense and mixed batches, decode and prefill token counts, one and two threads.
TEST_P(QuantKernels, BatchedMatmulEqualsSeparate) {
  ScopedSimdLevel sl(GetParam());
  const int64_t cols = 352;
  constexpr int kJobs = 6;
  const QuantSpec specs[kJobs] = {{4, 32, true}, {2, 64, false}, {8, 128, true}, parse_format_name("nf4g32"),
                                  parse_format_name("fp8row"), parse_format_name("lut4")};
  const int64_t rows[kJobs] = {300, 37, 1, 45, 33, 64};
  std::vector<Tensor> ts;
  for (int j = 0; j < kJobs; ++j) {
    auto w = randn(size_t(rows[j] * cols), uint32_t(31 + j));
    ts.push_back(pack_tensor("w" + std::to_string(j), quantize_rtn_ref(w.data(), rows[j], cols, specs[j])));
  }
  const Tensor dense = make_f32_tensor("dense", {45, cols}, randn(size_t(45 * cols), 40));
  for (int nt : {1, 2}) {
    ThreadPool pool(nt);
    for (int64_t n : {1, 3, 9}) {
      auto x = randn(size_t(n * cols), uint32_t(50 + n));
      for (bool mixed : {false, true}) {
        const Tensor* W[kJobs] = {&ts[0], mixed ? &dense : &ts[1], &ts[2], &ts[3], &ts[4], &ts[5]};
        std::vector<std::vector<float>> yb(kJobs), ys(kJobs);
        MatmulJob jobs[kJobs];
        for (int j = 0; j < kJobs; ++j) {
          yb[size_t(j)].assign(size_t(n * W[j]->rows()), -1.f);
          ys[size_t(j)].assign(size_t(n * W[j]->rows()), -2.f);
          jobs[j] = {W[j], x.data(), n, yb[size_t(j)].data()};
          matmul(*W[j], x.data(), n, ys[size_t(j)].data(), pool);
        }
        matmul_batch(jobs, kJobs, pool);
        for (int j = 0; j < kJobs; ++j)
          for (size_t i = 0; i < yb[size_t(j)].size(); ++i)
            ASSERT_EQ(yb[size_t(j)][i], ys[size_t(j)][i]) << "job " << j << " n " << n << " threads " << nt;
      }
    }
  }
}

namespace {
// The repacked kernel of a level (scalar: the reference over the repacked bytes).
kern::RepackedGemmFn repacked_fn(SimdLevel level, bool amx, bool vnni = false) {
  return amx ? kern::repacked_gemm_amx
         : vnni ? kern::repacked_gemm_avxvnni
         : level == SimdLevel::AVX512 ? kern::repacked_gemm_avx512
         : level == SimdLevel::AVX2 ? kern::repacked_gemm_avx2
                                    : kern::repacked_gemm_scalar;
}
}  // namespace

// Repacked prefill layout (kernels/qrepack.h): every int format x awkward sizes (ragged row tiles,
// ragged blocks, n = 1, 5, 16, 33, 128 tokens) x the level's repacked kernel (scalar reference over
// the repacked bytes; AVX2 maddubs; AVX-512 VNNI) against an independent double-precision product of the
// reference-dequantized weights with the int8-quantized activations (the arithmetic of qkernels.h,
// exact but for float rounding), and against the stored layout's scalar kernel. Then the front end
// (matmul) at the level, which takes the repacked path for prefill on AVX2 and AVX-512.
// `tables`: the table families instead (int8 table values in the layout, repack_table_tiles), against
// the table kernels' scalar reference.
static void repacked_parity_int(SimdLevel level, bool amx, bool tables = false, bool vnni = false) {
  const kern::RepackedGemmFn fn = repacked_fn(level, amx, vnni);
  const kern::QuantOps& Q = kern::qops_scalar;
  int cases = 0, formats = 0;
  for (const auto& s : all_formats()) {
    if (s.sparse) continue;
    if (tables) {
      if (s.family == FormatFamily::Int || is_ggml(s) || s.family == FormatFamily::Spqr || s.family == FormatFamily::Vq ||
          s.family == FormatFamily::Trellis || s.family == FormatFamily::FP8 || composite::is_composite(s))
        continue;
    } else if (!is_int(s)) {
      continue;
    }
    ++formats;
    for (int64_t cols : {1, 33, 352, 1023}) {
      for (int64_t rows : {1, 17, 40}) {
        const uint32_t seed = uint32_t(cols * 131 + rows * 7 + format_id(s));
        auto w = randn(size_t(rows * cols), seed);
        const Tensor t = pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, s));
        const kern::QWeights wv = detail::packed_view(t);
        if (tables && !kern::repack_table_supported(wv)) {
          // whole-block groups only (the layout's units): every table format here qualifies
          ADD_FAILURE() << format_name(s) << " cols=" << cols << ": not repackable";
          continue;
        }
        ASSERT_TRUE(tables || kern::repack_supported(wv)) << format_name(s);
        kern::QRepacked rp = tables ? kern::repack_geometry_table(wv) : kern::repack_geometry(wv);
        std::vector<uint8_t> buf(size_t(kern::repack_total_bytes(rp)) + 64);
        uint8_t* al = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
        if (tables)
          kern::repack_table_tiles(wv, rp, al, 0, rp.tiles);
        else
          kern::repack_int(wv, al);
        rp.data = al;
        const std::vector<float> wd = dequantize_ref(t);
        for (int64_t n : {1, 5, 16, 33, 128}) {
          if (cols * n > 352 * 128 && rows > 17) continue;  // keep the test quick
          auto x = randn(size_t(n * cols), seed + 3);
          for (int64_t tk = 0; tk < n; ++tk)
            for (int64_t c = 0; c < cols; ++c) x[size_t(tk * cols + c)] *= 0.25f + float(tk % 5);
          // int8 activations as the front end builds them (reference quantizer)
          const int64_t nb = wv.nb, stride = nb * 32 + 64, G = wv.groups;
          std::vector<int8_t> qa(size_t(n * stride));
          std::vector<float> d(size_t(nb * n + 16), 0.f), X(size_t(n * G), 0.f);
          std::vector<int32_t> hs(size_t(n * 2 * nb));
          for (int64_t tk = 0; tk < n; ++tk)
            Q.quantize_acts(x.data() + tk * cols, cols, qa.data() + tk * stride, d.data() + tk, n, hs.data() + tk * 2 * nb);
          for (int64_t tk = 0; tk < n; ++tk)
            for (int64_t h = 0; h < 2 * nb; ++h) {
              const int64_t g = wv.g16() ? h : std::min(G - 1, (h * 16) / wv.group);
              if (g < G) X[size_t(tk * G + g)] += d[size_t((h / 2) * n + tk)] * float(hs[size_t(tk * 2 * nb + h)]);
            }
          kern::QActs a;
          a.qa = qa.data();
          a.a_stride = stride;
          a.d = d.data();
          a.x = X.data();
          a.n = n;
          std::vector<float> y(size_t(n * rows), NAN), yref(size_t(n * rows), NAN), yp(size_t(n * rows), NAN);
          // rows split at a tile boundary, tokens split in two (every call writes its own block)
          const int64_t rs = rows > 16 ? 16 : rows, ts = n / 2;
          for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rs}, {rs, rows}})
            for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, ts}, {ts, n}}) fn(rp, a, y.data(), rows, r0, r1, t0, t1);
          // AMX: again with the activations' A-tile panel (QActs::panel, as the front end builds it;
          // the kernel reads it where a call's first token is a multiple of 16, here n = 33 and 128)
          // — the same products, so the same floats.
          if (amx) {
            std::vector<int8_t> panel(size_t(kern::act_panel_bytes(n, nb)), 99);
            kern::build_act_panel(qa.data(), stride, n, nb, panel.data(), 0, (n + 15) / 16);
            kern::QActs ap = a;
            ap.panel = panel.data();
            for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rs}, {rs, rows}})
              for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, ts}, {ts, n}}) fn(rp, ap, yp.data(), rows, r0, r1, t0, t1);
            for (size_t i = 0; i < y.size(); ++i)
              ASSERT_EQ(yp[i], y[i]) << format_name(s) << " amx panel cols=" << cols << " rows=" << rows << " n=" << n << " i=" << i;
          }
          kern::QGemmArgs A;
          A.w = wv;
          A.a = a;
          A.y = yref.data();
          A.ldy = rows;
          if (tables)
            format_traits(s).kernels[0]->gemm(A, 0, rows, 0, n);
          else
            Q.gemm(A, 0, rows, 0, n);
          for (int64_t tk = 0; tk < n; ++tk)
            for (int64_t r = 0; r < rows; ++r) {
              double e = 0, m = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double av = double(d[size_t((c / 32) * n + tk)]) * qa[size_t(tk * stride + c)];
                e += double(wd[size_t(r * cols + c)]) * av;
                m += (std::fabs(double(wd[size_t(r * cols + c)])) + 1.0) * std::fabs(av);
              }
              const size_t i = size_t(tk * rows + r);
              const std::string where = format_name(s) + " " + simd_level_name(level) + " cols=" + std::to_string(cols) +
                                        " rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                                        " t=" + std::to_string(tk) + " r=" + std::to_string(r);
              ASSERT_NEAR(y[i], e, 2e-5 * m + 1e-30) << where;
              ASSERT_NEAR(y[i], yref[i], 2e-5 * m + 1e-30) << where;
            }
          ++cases;
        }
        // The front end at this level (repacked on AVX-512 for n > 3) against the scalar level.
        if (rows == 17 && (cols == 352 || cols == 1023)) {
          ThreadPool pool(2);
          for (int64_t n : {5, 33}) {
            auto x = randn(size_t(n * cols), seed + 9);
            std::vector<float> y(size_t(n * rows)), yref(size_t(n * rows));
            {
              ScopedSimdLevel sl(SimdLevel::Scalar);
              matmul(t, x.data(), n, yref.data(), pool);
            }
            {
              ScopedSimdLevel sl(level, amx, vnni);
              matmul(t, x.data(), n, y.data(), pool);
              if (level != SimdLevel::Scalar) {
                EXPECT_NE(quant_kernel_path(t, n).find("repacked"), std::string::npos) << quant_kernel_path(t, n);
                EXPECT_NE(quant_kernel_path(t, n).find(amx                          ? "amx-int8"
                                                       : vnni                       ? "avxvnni"
                                                       : level == SimdLevel::AVX2 ? "avx2-maddubs"
                                                                                  : "avx512-vnni"),
                          std::string::npos) << quant_kernel_path(t, n);
                EXPECT_EQ(quant_kernel_path(t, 1).find("repacked"), std::string::npos);
              }
            }
            double m = 0;
            for (float v : yref) m = std::max(m, double(std::fabs(v)));
            for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], yref[i], 1e-4 * (m + 1)) << format_name(s) << " n=" << n;
          }
        }
      }
    }
  }
  EXPECT_GE(formats, tables ? 30 : 10);
  EXPECT_GT(cases, formats * 40);
  if (level != SimdLevel::Scalar) {
    EXPECT_GT(prefill_layout_bytes(), 0);
  }
}

TEST_P(QuantKernels, RepackedPrefillParity) {
  const SimdLevel level = GetParam();
  if (cpu_simd_level() < level)
    GTEST_SKIP() << "SKIPPED: this CPU lacks " << simd_level_name(level) << " (its repacked kernel is not run)";
  repacked_parity_int(level, false);
}

// The same with AMX tiles (AVX-512 level, TDPBSUD products): every int format, ragged rows and
// tokens (16-token tiles with zero-padded tails), the front end's path name.
TEST(QuantKernelsAmx, RepackedPrefillParity) {
  if (!cpu_has_amx())
    GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX-INT8: the AMX prefill kernel is not run (" << cpu_feature_string() << ")";
  repacked_parity_int(SimdLevel::AVX512, true);
}

TEST_P(QuantKernels, RepackedPrefillParityTables) {
  const SimdLevel level = GetParam();
  if (cpu_simd_level() < level)
    GTEST_SKIP() << "SKIPPED: this CPU lacks " << simd_level_name(level) << " (its repacked kernel is not run)";
  repacked_parity_int(level, false, true);
}

TEST(QuantKernelsAmx, RepackedPrefillParityTables) {
  if (!cpu_has_amx())
    GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX-INT8: the AMX prefill kernel is not run (" << cpu_feature_string() << ")";
  repacked_parity_int(SimdLevel::AVX512, true, true);
}

// The AVX2 level's AVX-VNNI kernel (VEX dpbusd on ymm): the same parity, every int / table format.
TEST(QuantKernelsAvxVnni, RepackedPrefillParity) {
  if (!cpu_has_avxvnni())
    GTEST_SKIP() << "SKIPPED: this CPU has no AVX-VNNI: the AVX-VNNI prefill kernel is not run (" << cpu_feature_string() << ")";
  repacked_parity_int(SimdLevel::AVX2, false, false, true);
}
TEST(QuantKernelsAvxVnni, RepackedPrefillParityTables) {
  if (!cpu_has_avxvnni())
    GTEST_SKIP() << "SKIPPED: this CPU has no AVX-VNNI: the AVX-VNNI prefill kernel is not run (" << cpu_feature_string() << ")";
  repacked_parity_int(SimdLevel::AVX2, false, true, true);
}

// The ggml block types in the repacked layout: the level's repacked kernel against the ggml
// family's scalar reference (half_rows_gemm_ref via ggml_kernels_scalar), ragged rows, n = 1 .. 128.
static void repacked_parity_ggml(SimdLevel level, bool amx, bool vnni = false) {
  const kern::RepackedGemmFn fn = repacked_fn(level, amx, vnni);
  int types = 0;
  for (const auto& s : all_formats()) {
    if (!is_ggml(s) || s.sparse) continue;
    const int64_t cols = ggml_qk(s) == 256 ? 512 : 96, rows = 37;
    const uint32_t seed = uint32_t(format_id(s) * 3 + 1);
    const Tensor t = ggml_tensor(s, rows, cols, seed);
    const kern::QWeights wv = detail::packed_view(t);
    ASSERT_TRUE(kern::repack_ggml_supported(wv)) << format_name(s);
    ++types;
    kern::QRepacked rp = kern::repack_geometry_ggml(wv);
    std::vector<uint8_t> buf(size_t(kern::repack_total_bytes(rp)) + 64);
    uint8_t* al = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
    ASSERT_TRUE(kern::repack_ggml_tiles(wv, al, 0, rp.tiles)) << format_name(s);
    rp.data = al;
    for (int64_t n : {1, 5, 16, 33, 128}) {
      auto x = randn(size_t(n * cols), seed + 5);
      const int64_t nb = wv.nb, stride = nb * 32 + 64;
      std::vector<int8_t> qa(size_t(n * stride));
      std::vector<float> d(size_t(nb * n + 16), 0.f), X(size_t(n * 2 * nb));
      std::vector<int32_t> hs(size_t(n * 2 * nb));
      for (int64_t tk = 0; tk < n; ++tk)
        kern::qops_scalar.quantize_acts(x.data() + tk * cols, cols, qa.data() + tk * stride, d.data() + tk, n,
                                        hs.data() + tk * 2 * nb);
      for (int64_t tk = 0; tk < n; ++tk)
        for (int64_t h = 0; h < 2 * nb; ++h)
          X[size_t(tk * 2 * nb + h)] = d[size_t((h / 2) * n + tk)] * float(hs[size_t(tk * 2 * nb + h)]);
      kern::QActs a;
      a.qa = qa.data();
      a.a_stride = stride;
      a.d = d.data();
      a.x = X.data();
      a.n = n;
      std::vector<float> y(size_t(n * rows), NAN), yref(size_t(n * rows), NAN);
      fn(rp, a, y.data(), rows, 0, 32, 0, n);
      fn(rp, a, y.data(), rows, 32, rows, 0, n);
      if (amx) {  // with the A-tile panel (QActs::panel): the same products, the same floats
        std::vector<int8_t> panel(size_t(kern::act_panel_bytes(n, nb)), 99);
        kern::build_act_panel(qa.data(), stride, n, nb, panel.data(), 0, (n + 15) / 16);
        kern::QActs ap = a;
        ap.panel = panel.data();
        std::vector<float> yp(size_t(n * rows), NAN);
        fn(rp, ap, yp.data(), rows, 0, 32, 0, n);
        fn(rp, ap, yp.data(), rows, 32, rows, 0, n);
        for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(yp[i], y[i]) << format_name(s) << " amx panel n=" << n << " i=" << i;
      }
      kern::QGemmArgs A;
      A.w = wv;
      A.a = a;
      A.y = yref.data();
      A.ldy = rows;
      kern::ggml_kernels_scalar.gemm(A, 0, rows, 0, n);
      const std::vector<float> wd = dequantize_ref(t);
      for (int64_t tk = 0; tk < n; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
          double m = 0;
          for (int64_t c = 0; c < cols; ++c)
            m += (std::fabs(double(wd[size_t(r * cols + c)])) + 1.0) * double(d[size_t((c / 32) * n + tk)]) * 128.0;
          const size_t i = size_t(tk * rows + r);
          ASSERT_NEAR(y[i], yref[i], 1e-5 * m) << format_name(s) << " " << simd_level_name(level) << " n=" << n
                                               << " t=" << tk << " r=" << r;
        }
    }
  }
  EXPECT_EQ(types, 12);
}

TEST_P(QuantKernels, RepackedPrefillParityGgml) {
  const SimdLevel level = GetParam();
  if (cpu_simd_level() < level)
    GTEST_SKIP() << "SKIPPED: this CPU lacks " << simd_level_name(level) << " (its repacked kernel is not run)";
  repacked_parity_ggml(level, false);
}

TEST(QuantKernelsAmx, RepackedPrefillParityGgml) {
  if (!cpu_has_amx())
    GTEST_SKIP() << "SKIPPED: this CPU (or OS) has no AMX-INT8: the AMX prefill kernel is not run (" << cpu_feature_string() << ")";
  repacked_parity_ggml(SimdLevel::AVX512, true);
}

TEST(QuantKernelsAvxVnni, RepackedPrefillParityGgml) {
  if (!cpu_has_avxvnni())
    GTEST_SKIP() << "SKIPPED: this CPU has no AVX-VNNI: the AVX-VNNI prefill kernel is not run (" << cpu_feature_string() << ")";
  repacked_parity_ggml(SimdLevel::AVX2, false, true);
}

// The repacked copy is built once per tensor and found again; a different tensor at another
// address gets its own; bytes are accounted.
TEST(QuantRepack, CacheAndGeometry) {
  const QuantSpec s = parse_format_name("w4g32");
  auto w = randn(size_t(40 * 100), 5);
  const Tensor t = pack_tensor("w", quantize_rtn_ref(w.data(), 40, 100, s));
  const kern::QRepacked g = kern::repack_geometry(detail::packed_view(t));
  EXPECT_EQ(g.tiles, 3);
  EXPECT_EQ(g.nb, 4);
  EXPECT_EQ(g.code_bytes, 4 * 4 * 64);  // 4 blocks x 4 nibble vectors of 64 bytes
  EXPECT_EQ(g.tile_bytes % 64, 0);
  EXPECT_EQ(kern::repack_cw(3), 4);
  EXPECT_EQ(kern::repack_cw(6), 8);
  EXPECT_EQ(kern::repack_cw(7), 0);
  if (cpu_simd_level() < SimdLevel::AVX2) GTEST_SKIP() << "SKIPPED: no AVX2 (the repacked path needs AVX2 or AVX-512)";
  ThreadPool pool(1);
  ScopedSimdLevel sl(SimdLevel::AVX512);
  auto x = randn(size_t(8 * 100), 6);
  std::vector<float> y(size_t(8 * 40));
  const int64_t before = prefill_layout_bytes();
  matmul(t, x.data(), 8, y.data(), pool);
  const int64_t after = prefill_layout_bytes();
  // (a stale entry of an earlier test's tensor at the same address may have been replaced, so
  // the total can also shrink; this tensor's copy is in it)
  EXPECT_GE(after, kern::repack_total_bytes(g));
  EXPECT_NE(after, before);
  matmul(t, x.data(), 8, y.data(), pool);
  EXPECT_EQ(prefill_layout_bytes(), after);  // found again, not rebuilt
}

INSTANTIATE_TEST_SUITE_P(Levels, QuantKernels,
                         ::testing::Values(SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512),
                         [](const ::testing::TestParamInfo<SimdLevel>& i) {
                           return std::string(simd_level_name(i.param));
                         });
