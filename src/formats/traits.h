// Format traits: one row per format family (ggml's type_traits, gemma.cpp's codecs). THE table is
// kFormats in registry.cpp; each family lives in its own file (int.cpp, nf4.cpp, fp4.cpp,
// mxfp4.cpp, fp8.cpp, lut.cpp). Adding a family = its file + one line in kFormats + its entry in
// the parity test's tolerance table (tests/test_formats.cpp); the parity test and `inspect`
// enumerate the table.
//
// Everything here trusts a spec that valid() accepted and a PackedGeometry from geometry(); the
// generic front end (pack.cpp, qmatmul.cpp) validates shapes, sizes and codes once.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/qkernels.h"
#include "lmpress/formats.h"

namespace lmpress {

// What a family's kernels read as activations.
enum class ActKind : uint8_t {
  Int8Blocks,  // int8 per 32-column block (qkernels.h QActs::qa/d/x), shared by int and table families
  F32,         // the f32 activations themselves (QActs::xf)
};

struct FormatTraits {
  FormatFamily family;
  const char* name;     // family name: "int", "nf4", ...
  const char* summary;  // one line: what a code means
  ActKind acts;
  const int8_t* fixed_table;  // table families with one table for all rows (nf4, fp4, mxfp4); else null
  bool (*valid)(const QuantSpec& s);
  std::string (*name_of)(const QuantSpec& s);
  bool (*parse)(const std::string& name, QuantSpec* out);  // false: not a name of this family
  void (*list)(std::vector<QuantSpec>& out);                // every format of the family
  PackedGeometry (*geometry)(const QuantSpec& s, int64_t rows, int64_t cols);
  // Packs codes and params (the front end checked sizes and code ranges); throws Error naming
  // `where` on params the family cannot store.
  void (*pack)(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where);
  // Fills qm.scales / zeros / table from packed bytes (codes are unpacked generically; opaque
  // families fill the codes too).
  void (*unpack_params)(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm);
  // Checks packed content the kernels rely on (e.g. E8M0 range, finite scales); at load, once.
  void (*check)(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where);
  kern::QWeights (*view)(const uint8_t* data, const QuantSpec& s, const PackedGeometry& g);
  std::unique_ptr<Grid> (*grid)(const QuantSpec& s);
  // Kernels per ISA level (scalar, AVX2, AVX-512); the int family uses kern::QuantOps (null here).
  const kern::FormatKernels* kernels[3];
  // The family's bytes are self-contained blocks with their scales inside (ggml): no code planes;
  // pack / unpack_params write and read whole blocks (codes and params), QuantizedMatrix::ggml.
  bool opaque_blocks = false;
  // Table of a group when it is not the family's fixed_table nor a per-row table: pow (the table
  // of the spec's exponent) and bitmod (the table the group's selector, GroupParams::zero, names).
  const int8_t* (*group_table)(const QuantSpec& s, int32_t selector) = nullptr;
  // The family's bytes are codebooks and an index stream (vq): no code planes, no grid; pack /
  // unpack_params write and read everything (QuantizedMatrix::vq_*).
  bool codebook = false;
  // The family's tensors are int / binary sub-tensors (mix, slim; formats/composite.h): pack /
  // unpack_params write and read everything (QuantizedMatrix::parts); products run on the parts.
  bool composite = false;
};

const FormatTraits& format_traits(FormatFamily f);  // throws Error for unknown families
const FormatTraits& format_traits(const QuantSpec& s);
// THE table, in family order.
const std::vector<const FormatTraits*>& all_format_traits();

// The family rows (one per file).
extern const FormatTraits int_format, nf4_format, fp4_format, mxfp4_format, fp8_format, lut_format, ggml_format,
    spqr_format, binary_format, pow_format, bitmod_format, trellis_format, vq_format, mix_format, slim_format;

// ---- shared pieces of the families ------------------------------------------------------------
namespace fmt {
int group_code(int group);     // 16->1 32->2 64->3 128->4 row->5, else -1
int group_of_code(int code);   // inverse; -1 for bad codes
bool parse_group_suffix(const std::string& s, int* group);  // "g32" / "row"
std::string group_suffix(int group);                        // "g32" / "row"
// Codes in 32-weight blocks of qblock_bytes(bits), rows zero-padded (every family but fp8 too,
// where a "block" is 32 bytes), then per-group scales of scale_size bytes.
PackedGeometry block_geometry(const QuantSpec& s, int64_t rows, int64_t cols, int scale_size);
// f16 scales [rows][groups] at data + g.q_bytes: write (checking representability) / read.
void pack_f16_scales(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* data, const std::string& where);
void unpack_f16_scales(const uint8_t* data, const PackedGeometry& g, QuantizedMatrix& qm);
void check_f16_scales(const uint8_t* data, const PackedGeometry& g, const std::string& where);
std::string shape_str(int64_t rows, int64_t cols);
// The family's geometry extended by the sparse outliers and the RHT sign bits of s (formats.h PackedGeometry).
PackedGeometry with_sparse(PackedGeometry g, const QuantSpec& s);
}  // namespace fmt
// Sparse outliers of a packed tensor (pack.cpp): load-time check (ascending in-range positions,
// finite values), and out[(r - r0) * ld + c] += value for the outliers of rows [r0, r1).
void check_sparse_part(const uint8_t* base, const PackedGeometry& g, const std::string& where);
// The RHT sign bits of a packed tensor (spec.rht): load-time check (no bits past the channels).
void check_rht_part(const uint8_t* base, const PackedGeometry& g, const std::string& where);
void add_sparse_rows(const uint8_t* base, const PackedGeometry& g, int64_t r0, int64_t r1, float* out, int64_t ld);
namespace fmt {
// The same with the traits' signatures, for families whose only params are f16 scales (nf4, fp4).
void unpack_f16_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm);
void check_f16_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where);
// Names PREFIX + group suffix ("nf4g64", "fp8row"): the spec is `proto` with the parsed group.
bool parse_prefixed(const std::string& name, const char* prefix, const QuantSpec& proto, QuantSpec* out);
// max |w| of a group; throws Error on a non-finite weight.
float group_absmax(const float* w, int64_t n);
// f16 scale (rounded up) mapping the largest grid value `vmax` onto absmax * clip (1 for an all-zero
// group); throws Error when it exceeds the f16 range.
float absmax_scale_f16(float amax, float clip, float vmax);

// Table families (nf4, fp4, mxfp4, lut): codes in the int family's 3/4-bit block layouts, then
// per-group scales of scale_size bytes [rows][groups], then (row_table) int8 tables [rows][2^bits].
PackedGeometry table_geometry(const QuantSpec& s, int64_t rows, int64_t cols, int scale_size, bool row_table);
// The kernel view's fields every family shares (codes, shape, blocks, groups, bits); scales and side
// payloads are the family's.
kern::QWeights block_view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g);
// Kernel view; `fixed_table`: the family's table (null: per-row tables in the packed bytes).
kern::QWeights table_view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g, const int8_t* fixed_table);
// The table kernels per level, for a family row's `kernels`.
#define LMP_TABLE_KERNELS {&kern::table_kernels_scalar, &kern::table_kernels_avx2, &kern::table_kernels_avx512}

// The k centroids (ascending) minimising sum_i imp_i (w_i - nearest centroid)^2 over a row, exactly
// (imp null: unweighted); lut.cpp. SqueezeLLM's table fit.
std::vector<double> weighted_kmeans_1d(const float* w, int64_t n, const double* imp, int k);

// A grid whose values are scale * T[q] for an int8 table T (nf4, fp4, mxfp4, lut): nearest code by
// binary search over the sorted table values (ties to the lower value).
class TableGrid : public Grid {
 public:
  // `table`: the family's fixed table (null for per-row tables, which come in GroupParams).
  TableGrid(const QuantSpec& s, const int8_t* table);
  int32_t quantize(float w, const GroupParams& p) const override;
  float dequantize(int32_t q, const GroupParams& p) const override { return p.scale * float(p.tab()[q]); }

 protected:
  const int8_t* table_;
  std::vector<float> sorted_;     // fixed table: distinct values ascending
  std::vector<int32_t> code_of_;  // code of sorted_[i]
  std::vector<float> mid_;        // midpoints between consecutive sorted_ values
};
// A fixed int8 table with an f16 absmax scale per group (nf4, fp4): scale = absmax / vmax.
class AbsmaxTableGrid : public TableGrid {
 public:
  AbsmaxTableGrid(const QuantSpec& s, const int8_t* table, float vmax) : TableGrid(s, table), vmax_(vmax) {}
  GroupParams params(const float* w, int64_t n, float clip, const double*) const override {
    GroupParams p;
    p.table = table_;
    p.scale = absmax_scale_f16(group_absmax(w, n), clip, vmax_);
    return p;
  }

 private:
  float vmax_;
};
}  // namespace fmt

}  // namespace lmpress
