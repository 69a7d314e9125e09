// lmpress formats: packed low-bit weight formats. One traits table (src/formats/registry.cpp)
// has a row per format family: its names, geometry, exact bits per weight, pack / unpack /
// reference dequantization, the grid a method quantizes onto, and its kernels per ISA level.
// Families (docs/formats.md):
//   int    w<b>g<G>[a] / w<b>row[a]: b-bit integers q in [0, 2^b - 1], w = scale_g * (q - zero_g),
//          symmetric (implicit zero 2^(b-1)) or asymmetric (u8 zero per group), f16 scales;
//   nf4    nf4g<G>: QLoRA's NormalFloat-4 values (as int8 / 127) times an f16 absmax scale;
//   fp4    fp4g<G>: E2M1 values times an f16 scale; mxfp4: E2M1 in groups of 32 with a shared
//          power-of-two E8M0 scale (OCP MX);
//   fp8    fp8row / fp8g<G>: E4M3 values times an f16 scale;
//   lut    lut3 / lut4: a per-row table of 2^b values (int8 times an f16 row scale), codes index
//          it (SqueezeLLM's non-uniform quantization);
//   ggml   q8_0, q4_0, q4_1, q5_0, q5_1, q2_k ... q6_k, iq4_nl, iq4_xs: llama.cpp's block types,
//          stored byte for byte as in a GGUF file (scales inside the blocks); imported from GGUF
//          or made by any method (a group is one block: its sub-block scales are fitted first);
//   spqr   spqr<b>g<G>[r<R>]: SpQR's b-bit codes with a scale and a (real) zero per group of G
//          columns, themselves 3-bit codes over groups of R rows (made only by the spqr method);
//   binary b1g<G> / b1row: one bit per weight, w = alpha_g * (2q - 1) with an f16 alpha per group
//          (PB-LLM's binarized part; its salient weights are the +s sparse part).
//   pow    pow<b>g<G> / pow<b>a<A>g<G>: NUPES's power grid sign(u)|u|^(1/a) (u uniform in [-1, 1])
//          as an int8 table times an f16 absmax scale; the exponent a is stored in the tensor;
//   bitmod bitmod<b>g<G>: BitMoD's mixture of datatypes: per group one of four FP3/FP4 tables
//          (extra-resolution / extra-asymmetry special values), u8 selector and f16 scale.
//   vq     vq<v>k<b>[r<b2>][n]: VPTQ's vector quantization: vectors of v weights along the rows of a
//          column, each a b-bit index into a per-tensor codebook of 2^b int8 vectors (plus an
//          optional residual stage of 2^b2), optional per-column f16 scale and bias (made only by
//          the vptq method; formats/vq.h). Its bytes are codebooks + an index stream: no code planes.
//   trellis trellis<k> (k = 2, 3, 4): QTIP's bitshift trellis (L = 16, V = 1): 16 x 16 tiles, each a
//          tail-biting sequence of 256 states in a cyclic bitstream of 256 k bits, the value of a state
//          an integer hash of it; f16 row scales (made by the qtip and rtn methods; formats/trellis.h).
//   mix    mix<lo>_<hi>_p<P>: MixLLM's mixed precision between output features: a share of P permille of
//          the rows (the high-salience output features) in the int format <hi> (e.g. w8row), the others in
//          the int format <lo> (e.g. w4g64a); two int sub-tensors and a row bitmap (formats/composite.h).
//   slim   slim<N>g<G>: SliM-LLM's group-wise mixed precision: each group of G columns (all rows) in
//          N-1, N or N+1 bits, as many groups at N-1 as at N+1 (N bits on average); int sub-tensors of
//          asymmetric w<b>g<G>a (1 bit: b1g<G>), the columns of each class together (formats/composite.h).
// Packed layout (docs/formats.md): rows are independent; each row's codes are packed in
// 32-weight blocks (the row is zero-padded to a multiple of 32), followed, after all rows, by the
// per-group scales and the family's side payloads (zeros, tables).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmpress/model.h"

namespace lmpress {

// Format families (the high byte of a format id).
enum class FormatFamily : uint8_t {
  Int = 0, NF4 = 1, FP4 = 2, MXFP4 = 3, FP8 = 4, Lut = 5, Ggml = 6, Spqr = 7, Binary = 8, Pow = 9, Bitmod = 10,
  Trellis = 11, Vq = 12, Mix = 13, Slim = 14
};

struct QuantSpec {
  int bits = 4;        // int: 2, 3, 4, 5, 6, 8; nf4/fp4/mxfp4: 4; fp8: 8; lut: 3, 4; binary: 1;
                       // ggml: the ggml_type value (2 = Q4_0, 12 = Q4_K, ...); vq: index bits (4..12)
  int group = 32;      // 16, 32, 64, 128, or 0 = whole row (per-channel); ggml: 0 (unused);
                       // vq: the vector length v (2, 4, 8)
  bool sym = true;     // int only (every other family is symmetric)
  FormatFamily family = FormatFamily::Int;
  // Sparse outliers (any family): this many hundredths of a percent of the weights (0..127, i.e.
  // up to 1.27%) are kept apart as f16 corrections with their positions; name suffix "+s0.45".
  int sparse = 0;
  int group2 = 0;      // spqr: rows per second-level statistics group (16, 32, 64); vq: residual
                       // stage index bits (0 = none, 4..12); 0 elsewhere
  bool colnorm = false;  // vq: per-column f16 scale and bias (name suffix "n"); false elsewhere
  // Family parameter that is NOT part of the format id (the packed tensor stores it): pow: the
  // power exponent a in hundredths (0 = the family's default, 0.75); every other family: 0.
  int param = 0;
  // Randomized Hadamard transform (QuIP#'s incoherence processing): 0 none; 1 both sides (name suffix
  // "+h"): the codes hold W~ = U W V^T with U = H_rows D_out, V = H_cols D_in (normalized Hadamard
  // matrices, random sign diagonals stored in the tensor); 2 the input side only ("+hi": W~ = W V^T, no
  // output rotation at run time). The matmul front end rotates activations (and outputs).
  uint8_t rht = 0;
  // mix family (MixLLM): the high-precision rows' int format (hi_bits, hi_group, hi_sym; bits/group/sym
  // above are the other rows' int format) and their share of the rows in permille: ceil(rows * share /
  // 1000) rows. 0 (and hi_sym true) in every other family.
  int hi_bits = 0, hi_group = 0;
  bool hi_sym = true;
  int share = 0;
  // fp family (formats/fp4.cpp): exponent bits of the minifloat when not the default split (E2M1 at 4
  // bits, E2M0 at 3): 1 or 3; 0 = the default; 0 in every other family. Part of the format id.
  int variant = 0;
  bool operator==(const QuantSpec&) const = default;
};
// Number of sparse outliers of a [rows, cols] tensor: floor(rows * cols * sparse / 10000).
int64_t sparse_count(const QuantSpec& s, int64_t rows, int64_t cols);

// Format id encoding: bits | group_code << 8 | sym << 16 | sparse << 17 | family << 24
// (group_code: 16->1 32->2 64->3 128->4 row->5; spqr's second-level group code in bits 12..14;
// the RHT flag in bit 15, and bit 14 set for the input-side-only RHT; the vq family: index bits |
// residual bits << 4 | log2(v) << 8 | column norm << 13, formats/vq.h; the trellis family: k | 5 << 8 |
// 1 << 16 | 11 << 24 plus the RHT bits, no sparse outliers; the fp family: variant in bits 12..13). The int family's ids are those of
// lmpress files before families existed.
uint32_t format_id(const QuantSpec& s);
QuantSpec format_spec(uint32_t id);             // throws Error for unknown ids
bool format_id_valid(uint32_t id);
std::string format_name(const QuantSpec& s);    // "w4g32" / "w4g128a" / "w8row" / "nf4g64" / "lut3"
QuantSpec parse_format_name(const std::string& name);  // inverse; throws Error
std::vector<QuantSpec> all_formats();          // every format of every family (parity tests)
const char* family_name(FormatFamily f);       // "int", "nf4", ...

// One table row per bit width: block layout of 32 weights.
struct BitLayout {
  int bits;
  int bytes_per_block;  // bytes for 32 weights
  const char* layout;   // human description (docs/formats.md has the full bit layout)
};
const BitLayout& bit_layout(int bits);  // throws for unsupported widths

// Geometry of a packed [rows, cols] tensor.
struct PackedGeometry {
  int64_t rows = 0, cols = 0;
  int64_t blocks_per_row = 0;  // ceil(cols / 32)
  int64_t row_bytes = 0;       // blocks_per_row * bytes_per_block
  int64_t group = 0;           // effective group length (cols for whole-row)
  int64_t groups_per_row = 0;  // ceil(cols / group)
  int64_t q_bytes = 0, scale_bytes = 0, zero_bytes = 0, total_bytes = 0;
  int64_t table_bytes = 0;     // lut: per-row int8 tables [rows][2^bits]
  int scale_size = 2;          // bytes per group scale: 2 (f16) or 1 (mxfp4's E8M0)
  // Sparse outliers (spec.sparse > 0), after the family's bytes at a 4-byte aligned offset:
  // u32 positions r * cols + c [nnz], strictly ascending, then f16 values [nnz]; a weight is its
  // dense value plus its sparse value.
  int64_t sparse_offset = 0, sparse_nnz = 0;
  // Randomized Hadamard transform (spec.rht), after everything else: sign bits of the input
  // channels [ceil(cols / 8)] then (both sides, rht 1) of the output channels [ceil(rows / 8)] (bit
  // i of byte i / 8 set: channel i is negated).
  int64_t rht_offset = 0;
};
PackedGeometry packed_geometry(const QuantSpec& s, int64_t rows, int64_t cols);
// Exact bits per weight of a packed tensor (scales and zeros included).
double packed_bpw(const QuantSpec& s, int64_t rows, int64_t cols);

// Scale/zero of one group, GPTQ's min-max quantizer: asymmetric: scale = (max-min)/maxq,
// zero = round(-min/scale); symmetric: scale = 2*max|w|/maxq, zero = 2^(bits-1).
// (the range always includes 0; an all-zero group gets scale 1). The scale is f16-rounded up
// (round_scale_f16); throws Error on a non-finite weight or a range beyond f16 scales.
struct GroupParams {
  float scale = 1.f;
  int32_t zero = 0;
  // Table families: value of code q = scale * tab()[q]; `table` is a family's fixed table, or
  // null with the values in `row` (per-row tables of the lut family, ascending).
  const int8_t* table = nullptr;
  int8_t row[16] = {};
  const int8_t* tab() const { return table ? table : row; }
  // ggml family: a group is one block of the type. Stored integers: the f16 bits of d and dmin
  // (q4_1 / q5_1: m), and per sub-block the integer scale sc and min m as the block holds them
  // (q3_k / iq4_xs: the signed scale s - 32). S[h] * v - M[h] is the value of signed code value
  // v in 16-weight unit h (S = d * sc, M = dmin * m: ggml's own products, ggml_set_factors).
  uint16_t gd = 0, gdmin = 0;
  int8_t gsc[16] = {};
  uint8_t gm[16] = {};
  float S[16] = {}, M[16] = {};
};
GroupParams minmax_params(const float* w, int64_t n, const QuantSpec& s, float clip = 1.0f);
// Quantize one value with given params: clamp(round(w/scale) + zero, 0, maxq).
inline int32_t quantize_value(float w, const GroupParams& p, int32_t maxq) {
  float q = __builtin_nearbyintf(w / p.scale) + float(p.zero);
  return int32_t(q < 0.f ? 0.f : q > float(maxq) ? float(maxq) : q);
}
// Rounds a scale through f16 (what the file stores) so quantization uses the stored value.
// A positive finite scale is rounded UP to the next f16 value (at least 2^-24, the smallest
// f16 subnormal), so the range it was computed from still fits the grid; a scale beyond the f16
// range gives +inf (minmax_params then throws). Other inputs are rounded to nearest.
// minmax_params returns scales already rounded this way.
float round_scale_f16(float s);

// Quantized tensor under construction: integer codes + per-group params, f32 view for the algorithms.
struct QuantizedMatrix {
  QuantSpec spec;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> q;          // [rows][cols] codes (trellis: the code stream, formats/trellis.h)
  std::vector<float> scales;       // [rows][groups], representable in the stored scale type
  std::vector<int32_t> zeros;      // [rows][groups] (int family; 0 elsewhere)
  std::vector<int8_t> table;       // lut family: [rows][2^bits], ascending per row
  std::vector<uint8_t> ggml;       // ggml family: [rows][groups][kGgmlParamBytes] block params
  std::vector<uint32_t> sp_idx;    // sparse outliers (spec.sparse): positions r * cols + c, ascending
  std::vector<float> sp_val;       //   and their f16-representable values, added to the dense value
  // spqr (formats/spqr.cpp): zeros hold each group's 3-bit statistic codes (scale | zero << 3),
  // scales the decoded scales, stats2 the second-level f16 values [row groups][4][groups].
  std::vector<float> stats2;
  // vq (formats/vq.h): codes [row blocks][cols] (row block = v rows, rows padded to a multiple of
  // 16), each stage-1 index | stage-2 index << bits; codebooks [K1][v] then [K2][v] int8 with one
  // f32 scale per stage; colnorm: per-column scale and bias [cols] (f16-representable).
  std::vector<uint32_t> vq_codes;
  std::vector<int8_t> vq_book;
  float vq_scale[2] = {0.f, 0.f};
  std::vector<float> col_scale, col_bias;
  // spec.rht: sign bits of the input [ceil(cols / 8)] and (rht 1) output [ceil(rows / 8)] channels; the
  // codes hold the rotated weights (dequantize_matrix returns the weights in the model's space).
  std::vector<uint8_t> rht_in, rht_out;
  // Composite families (mix, slim; formats/composite.h): the sub-matrices, each of its own int (or
  // binary) spec, and which part each row (mix: 1 = the high-precision part) or column group (slim:
  // 0, 1, 2 = N-1, N, N+1 bits) belongs to; q, scales and zeros stay empty.
  std::vector<QuantizedMatrix> parts;
  std::vector<uint8_t> part_of;
  // Sizes every array for spec/rows/cols (codes 0, scales 1, zeros 0, tables 0).
  void init(const QuantSpec& s, int64_t rows, int64_t cols);
  // Params of (row, group) as the grid uses them / stores them (table families: the table too).
  GroupParams params(int64_t r, int64_t g) const;
  void set_params(int64_t r, int64_t g, const GroupParams& p);
  int64_t groups() const;          // groups per row
  int64_t group_len() const;       // columns per group (cols for whole-row)
};
// Bytes of one ggml block's params in QuantizedMatrix::ggml: d, dmin (f16 bits), sc[16], m[16].
inline constexpr int kGgmlParamBytes = 36;
// Columns per group of a format for rows of `cols` columns: the group, cols for whole-row formats,
// the block (32 or 256) for the ggml family.
int64_t group_length(const QuantSpec& s, int64_t cols);
// Dequantized weights [rows][cols] of a quantized matrix through its grid (the reference).
std::vector<float> dequantize_matrix(const QuantizedMatrix& qm);

// The grid a method rounds onto (one per format; format traits give it). Methods (RTN, GPTQ,
// AWQ's search, SqueezeLLM ...) call only this, so every method works on every format.
//   params():   the stored params of one group (or, for per-row tables, of the whole row) from its
//               weights; `clip` shrinks the range (1 = the plain range); `imp` (may be null) weighs
//               each weight's error where the grid fits params (the lut family's k-means);
//   quantize(): the code nearest to w under p; dequantize(): its value.
class Grid {
 public:
  explicit Grid(const QuantSpec& s) : spec_(s) {}
  virtual ~Grid() = default;
  const QuantSpec& spec() const { return spec_; }
  int32_t n_codes() const { return 1 << spec_.bits; }
  // Group length for a row of `cols` columns (cols for whole-row formats).
  int64_t group_len(int64_t cols) const { return group_length(spec_, cols); }
  virtual GroupParams params(const float* w, int64_t n, float clip, const double* imp) const = 0;
  virtual int32_t quantize(float w, const GroupParams& p) const = 0;
  virtual float dequantize(int32_t q, const GroupParams& p) const = 0;
  // The same for the weight at index j of its group (0 .. group length - 1): grids whose groups
  // have sub-blocks of their own scales (the ggml family's k-quants) use it; every method calls
  // these when it knows the position.
  virtual int32_t quantize_at(float w, const GroupParams& p, int64_t /*j*/) const { return quantize(w, p); }
  virtual float dequantize_at(int32_t q, const GroupParams& p, int64_t /*j*/) const { return dequantize(q, p); }
  // Whether params() carry a per-row table that the QuantizedMatrix stores (lut family).
  virtual bool row_table() const { return false; }
  // Whether `clip` < 1 means something (range-based grids); methods reject clip/mse searches
  // on grids without a range (lut: its table comes from k-means).
  virtual bool has_range() const { return true; }

 private:
  QuantSpec spec_;
};
std::unique_ptr<Grid> make_grid(const QuantSpec& s);  // throws Error for unknown formats
// Packs into a DType::Q tensor (format id set, owned bytes). Validates codes/params.
Tensor pack_tensor(const std::string& name, const QuantizedMatrix& qm);
// Reference dequantization of a whole packed tensor / one row.
void dequantize_row_ref(const Tensor& t, int64_t r, float* out);
std::vector<float> dequantize_ref(const Tensor& t);
// Unpack codes/params back (tests, re-encoding).
QuantizedMatrix unpack_tensor(const Tensor& t);
// Checks that a DType::Q tensor's byte size matches its format and shape (file loading).
void validate_packed(const Tensor& t, const std::string& where);

// ---- randomized Hadamard transform (src/formats/hadamard.cpp) ----------------------------------------
// A Hadamard matrix of order n: H_n = I_blocks (x) H_m (x) H_p with H_m from Paley's constructions
// (m - 1 a prime = 3 mod 4, or m / 2 - 1 a prime = 1 mod 4; m = 1 for powers of two) and H_p
// Sylvester's (p a power of two); the smallest such m = odd(n) * 2^j <= 128 is chosen. When no order
// divides n that way (e.g. 11008 = 43 * 256) the transform is block-diagonal: `blocks` independent
// Sylvester transforms of the power of two in n. Normalized: H_n H_n^T = I.
struct HadamardPlan {
  int64_t n = 0, m = 1, p = 1, blocks = 1;
  std::vector<int8_t> base;  // H_m, [m][m], entries +-1
};
const HadamardPlan& hadamard_plan(int64_t n);  // cached per n; throws Error for n < 1
// x[n] <- H_n x (or H_n^T x), normalized.
void hadamard_apply(const HadamardPlan& P, float* x, bool transpose);
// The dense normalized matrix [n][n] (tests).
std::vector<double> hadamard_matrix(const HadamardPlan& P);
// Random sign bits for n channels from a seed (splitmix64), and a seed from a name (FNV-1a).
std::vector<uint8_t> rht_random_signs(int64_t n, uint64_t seed);
uint64_t rht_seed(const std::string& key);
// x <- H D x (forward: activations entering a rotated layer) / x <- D H^T x (backward: its outputs).
void rht_forward(const HadamardPlan& P, const uint8_t* signs, float* x);
void rht_backward(const HadamardPlan& P, const uint8_t* signs, float* x);
// w [rows][cols] <- U w V^T (forward) or U^T w V (inverse), U = H_rows D_out, V = H_cols D_in;
// sout null: U = I (the input side only).
void rht_rotate_weights(float* w, int64_t rows, int64_t cols, const uint8_t* sin, const uint8_t* sout, bool inverse);
// V H V^T of a symmetric [n][n] matrix (an input's Hessian), in double.
std::vector<double> rht_rotate_hessian(const std::vector<double>& H, int64_t n, const uint8_t* sin);

// Plain round-to-nearest with min-max params (optionally clipping search, see algo/rtn).
QuantizedMatrix quantize_rtn_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& s);


}  // namespace lmpress
