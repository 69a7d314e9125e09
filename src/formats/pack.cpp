// Packing front end of every family: min-max parameters, RTN reference quantizer, pack / unpack /
// dequantize of DType::Q tensors and their validation. Codes are packed here for all families
// (32-weight blocks, the bit layouts of src/kernels/generic/quant.cpp: pack_qblock /
// unpack_qblock); each family's traits pack its params and side payloads (docs/formats.md).
// Codes past `cols` in the last block of a row are 0.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/composite.h"
#include "formats/ggml_family.h"
#include "formats/spqr.h"
#include "formats/traits.h"
#include "formats/trellis.h"
#include "formats/vq.h"

namespace lmpress {

namespace {

int32_t maxq_of(int bits) { return (1 << bits) - 1; }

using fmt::shape_str;

}  // namespace

float round_scale_f16(float s) {
  if (!(s > 0.f) || !std::isfinite(s)) return f16_to_f32(f32_to_f16(s));
  uint16_t h = f32_to_f16(s);
  if (h == 0) return f16_to_f32(1);  // smallest subnormal: 2^-24
  if (f16_to_f32(h) < s) ++h;        // next f16 up (0x7bff + 1 = +inf)
  return f16_to_f32(h);
}

GroupParams minmax_params(const float* w, int64_t n, const QuantSpec& s, float clip) {
  float lo = 0.f, hi = 0.f;  // the range always includes 0
  for (int64_t i = 0; i < n; ++i) {
    const float v = w[i];
    if (!std::isfinite(v))
      fail("", "cannot quantize a non-finite weight (" + std::to_string(v) + " at index " +
                   std::to_string(i) + " of a group)");
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  lo *= clip;
  hi *= clip;
  const int32_t maxq = maxq_of(s.bits);
  GroupParams p;
  if (s.sym) {
    p.zero = 1 << (s.bits - 1);
    const float amax = std::fmax(-lo, hi);
    if (amax == 0.f) return p;  // scale 1
    p.scale = round_scale_f16(2.f * amax / float(maxq));
  } else {
    if (hi == lo) return p;  // all zero: scale 1, zero 0
    p.scale = round_scale_f16((hi - lo) / float(maxq));
    const float z = std::nearbyint(-lo / p.scale);
    p.zero = int32_t(z < 0.f ? 0.f : z > float(maxq) ? float(maxq) : z);
  }
  if (!std::isfinite(p.scale))
    fail("", "weight range too large for an f16 scale (max |w| = " +
                 std::to_string(std::fmax(-lo, hi)) + "); f16 scales reach 65504");
  return p;
}

QuantizedMatrix quantize_rtn_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& s) {
  const PackedGeometry g = packed_geometry(s, rows, cols);
  if (s.family == FormatFamily::Spqr) return spqr::quantize_rtn(w, rows, cols, s);  // statistics shared by rows
  if (s.family == FormatFamily::Vq) return vq::quantize_rtn(w, rows, cols, s);      // codebooks: k-means
  if (s.family == FormatFamily::Trellis) return trellis::quantize_rtn(w, rows, cols, s);  // Viterbi per tile
  if (composite::is_composite(s)) return composite::quantize_rtn(w, rows, cols, s);      // parts of int formats
  const std::unique_ptr<Grid> grid = make_grid(s);
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < g.groups_per_row; ++gi) {
      const int64_t c0 = gi * g.group, c1 = std::min(cols, c0 + g.group);
      const float* src = w + r * cols + c0;
      GroupParams p;
      try {
        p = grid->params(src, c1 - c0, 1.0f, nullptr);
      } catch (const Error& e) {
        fail("", std::string(e.what()) + " (row " + std::to_string(r) + ", columns " +
                     std::to_string(c0) + ".." + std::to_string(c1 - 1) + ")");
      }
      qm.set_params(r, gi, p);
      for (int64_t c = c0; c < c1; ++c) qm.q[size_t(r * cols + c)] = uint8_t(grid->quantize_at(w[r * cols + c], p, c - c0));
    }
  }
  return qm;
}

// ---- QuantizedMatrix -----------------------------------------------------------------------------
int64_t group_length(const QuantSpec& s, int64_t cols) {
  if (s.family == FormatFamily::Ggml) {
    int qk = 0, bytes = 0;
    LMP_ASSERT(ggml_type_block(uint32_t(s.bits), &qk, &bytes));
    return qk;
  }
  if (s.family == FormatFamily::Vq) return cols;  // no groups (one per row; QuantizedMatrix::scales unused)
  if (s.family == FormatFamily::Mix) return 0;    // composites: the parts have the groups
  return s.group == 0 ? cols : s.group;
}

int64_t QuantizedMatrix::group_len() const { return group_length(spec, cols); }
int64_t QuantizedMatrix::groups() const {
  const int64_t g = group_len();
  return g == 0 ? 0 : (cols + g - 1) / g;
}

void QuantizedMatrix::init(const QuantSpec& s, int64_t r, int64_t c) {
  spec = s;
  rows = r;
  cols = c;
  const int64_t G = groups();
  q.assign(size_t(rows * cols), 0);
  scales.assign(size_t(rows * G), 1.f);
  zeros.assign(size_t(rows * G), 0);
  table.clear();
  sp_idx.clear();
  sp_val.clear();
  ggml.clear();
  if (s.family == FormatFamily::Lut) table.assign(size_t(rows << s.bits), 0);
  if (s.family == FormatFamily::Ggml) ggml.assign(size_t(rows * G * kGgmlParamBytes), 0);
  stats2.clear();
  if (s.family == FormatFamily::Spqr) stats2.assign(size_t(spqr::row_groups(s, rows) * 4 * G), 0.f);
  parts.clear();
  part_of.clear();
  if (composite::is_composite(s)) {  // everything is in the parts
    q.clear();
    scales.clear();
    zeros.clear();
  }
  vq_codes.clear();
  vq_book.clear();
  vq_scale[0] = vq_scale[1] = 0.f;
  col_scale.clear();
  col_bias.clear();
  // trellis: q is the code stream (tiles of 32 k bytes), scales one per row
  if (s.family == FormatFamily::Trellis) q.assign(size_t(trellis::code_bytes(s.bits, rows, cols)), 0);
  if (s.family == FormatFamily::Vq) {
    vq_codes.assign(size_t(vq::row_blocks(s, rows) * cols), 0);
    vq_book.assign(size_t((vq::book1_size(s) + vq::book2_size(s)) * s.group), 0);
    if (s.colnorm) col_scale.assign(size_t(cols), 1.f), col_bias.assign(size_t(cols), 0.f);
  }
}

GroupParams QuantizedMatrix::params(int64_t r, int64_t g) const {
  GroupParams p;
  const size_t k = size_t(r * groups() + g);
  p.scale = scales[k];
  p.zero = zeros.empty() ? 0 : zeros[k];
  if (!table.empty()) {
    const int64_t T = int64_t(1) << spec.bits;
    std::copy(table.begin() + r * T, table.begin() + (r + 1) * T, p.row);
  } else {
    const FormatTraits& tr = format_traits(spec);
    p.table = tr.group_table ? tr.group_table(spec, p.zero) : tr.fixed_table;
  }
  if (!ggml.empty()) {
    const uint8_t* b = ggml.data() + k * kGgmlParamBytes;
    std::memcpy(&p.gd, b, 2);
    std::memcpy(&p.gdmin, b + 2, 2);
    std::memcpy(p.gsc, b + 4, 16);
    std::memcpy(p.gm, b + 20, 16);
    ggml_set_factors(uint32_t(spec.bits), p);
  }
  return p;
}

void QuantizedMatrix::set_params(int64_t r, int64_t g, const GroupParams& p) {
  const size_t k = size_t(r * groups() + g);
  scales[k] = p.scale;
  if (!zeros.empty()) zeros[k] = p.zero;
  if (!table.empty()) {
    const int64_t T = int64_t(1) << spec.bits;
    std::copy(p.row, p.row + T, table.begin() + r * T);
  }
  if (!ggml.empty()) {
    uint8_t* b = ggml.data() + k * kGgmlParamBytes;
    std::memcpy(b, &p.gd, 2);
    std::memcpy(b + 2, &p.gdmin, 2);
    std::memcpy(b + 4, p.gsc, 16);
    std::memcpy(b + 20, p.gm, 16);
  }
}

namespace {
std::vector<float> dequantize_dense(const QuantizedMatrix& qm) {
  if (qm.spec.family == FormatFamily::Spqr) return spqr::dequantize_dense(qm);  // no per-group grid
  if (qm.spec.family == FormatFamily::Vq) return vq::dequantize_dense(qm);      // codebook vectors
  if (qm.spec.family == FormatFamily::Trellis) return trellis::dequantize_dense(qm);  // trellis states
  if (composite::is_composite(qm.spec)) return composite::dequantize_dense(qm);      // the parts, placed
  const std::unique_ptr<Grid> grid = make_grid(qm.spec);
  const int64_t g = qm.group_len(), G = qm.groups();
  std::vector<float> out(size_t(qm.rows * qm.cols));
  for (int64_t r = 0; r < qm.rows; ++r)
    for (int64_t gi = 0; gi < G; ++gi) {
      const GroupParams p = qm.params(r, gi);
      for (int64_t c = gi * g; c < std::min(qm.cols, (gi + 1) * g); ++c)
        out[size_t(r * qm.cols + c)] = grid->dequantize_at(qm.q[size_t(r * qm.cols + c)], p, c - gi * g);
    }
  return out;
}
}  // namespace

std::vector<float> dequantize_matrix(const QuantizedMatrix& qm) {
  std::vector<float> out = dequantize_dense(qm);
  for (size_t k = 0; k < qm.sp_idx.size() && k < qm.sp_val.size(); ++k)
    if (qm.sp_idx[k] < out.size()) out[qm.sp_idx[k]] += qm.sp_val[k];
  if (qm.spec.rht) {
    LMP_ASSERT(int64_t(qm.rht_in.size()) == (qm.cols + 7) / 8 &&
               int64_t(qm.rht_out.size()) == (qm.spec.rht == 1 ? (qm.rows + 7) / 8 : 0));
    rht_rotate_weights(out.data(), qm.rows, qm.cols, qm.rht_in.data(), qm.spec.rht == 1 ? qm.rht_out.data() : nullptr,
                       /*inverse=*/true);
  }
  return out;
}

namespace {
// The sparse outliers of a packed tensor (geometry from packed_geometry).
const uint32_t* sparse_idx(const uint8_t* base, const PackedGeometry& g) {
  return reinterpret_cast<const uint32_t*>(base + g.sparse_offset);
}
const uint16_t* sparse_val(const uint8_t* base, const PackedGeometry& g) {
  return reinterpret_cast<const uint16_t*>(base + g.sparse_offset + 4 * g.sparse_nnz);
}
void pack_sparse(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* base, const std::string& where) {
  if (int64_t(qm.sp_idx.size()) != g.sparse_nnz || int64_t(qm.sp_val.size()) != g.sparse_nnz)
    fail(where, "sparse outliers: " + std::to_string(qm.sp_idx.size()) + " positions and " +
                    std::to_string(qm.sp_val.size()) + " values, " + format_name(qm.spec) + " " +
                    shape_str(g.rows, g.cols) + " holds exactly " + std::to_string(g.sparse_nnz));
  uint32_t* idx = reinterpret_cast<uint32_t*>(base + g.sparse_offset);
  uint16_t* val = reinterpret_cast<uint16_t*>(base + g.sparse_offset + 4 * g.sparse_nnz);
  for (int64_t k = 0; k < g.sparse_nnz; ++k) {
    const uint32_t i = qm.sp_idx[size_t(k)];
    const float v = qm.sp_val[size_t(k)];
    if (int64_t(i) >= g.rows * g.cols || (k > 0 && i <= qm.sp_idx[size_t(k - 1)]))
      fail(where, "sparse outlier positions must be ascending and below rows * cols (entry " + std::to_string(k) + ")");
    const uint16_t h = f32_to_f16(v);
    if (!std::isfinite(v) || f16_to_f32(h) != v)
      fail(where, "sparse outlier value " + std::to_string(v) + " (entry " + std::to_string(k) +
                      ") is not a finite f16 value");
    idx[k] = i;
    val[k] = h;
  }
}
}  // namespace

namespace {
void pack_rht(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* base, const std::string& where) {
  const size_t ni = size_t((g.cols + 7) / 8), no = qm.spec.rht == 1 ? size_t((g.rows + 7) / 8) : 0;
  if (qm.rht_in.size() != ni || qm.rht_out.size() != no)
    fail(where, "randomized Hadamard transform: " + std::to_string(qm.rht_in.size()) + " + " +
                    std::to_string(qm.rht_out.size()) + " sign bytes, " + shape_str(g.rows, g.cols) + " needs " +
                    std::to_string(ni) + " + " + std::to_string(no));
  std::memcpy(base + g.rht_offset, qm.rht_in.data(), ni);
  if (no) std::memcpy(base + g.rht_offset + int64_t(ni), qm.rht_out.data(), no);
}
}  // namespace

// Sign bits past the channel count must be zero (one file, one meaning).
void check_rht_part(const uint8_t* base, const PackedGeometry& g, const std::string& where) {
  const uint8_t* in = base + g.rht_offset;
  const uint8_t* out = in + (g.cols + 7) / 8;
  const bool has_out = g.total_bytes > g.rht_offset + (g.cols + 7) / 8;
  if ((g.cols % 8 && (in[g.cols / 8] >> (g.cols % 8))) || (has_out && g.rows % 8 && (out[g.rows / 8] >> (g.rows % 8))))
    fail(where, "randomized Hadamard transform: sign bits set past the " + shape_str(g.rows, g.cols) + " tensor's channels");
}

void check_sparse_part(const uint8_t* base, const PackedGeometry& g, const std::string& where) {
  const uint32_t* idx = sparse_idx(base, g);
  const uint16_t* val = sparse_val(base, g);
  for (int64_t k = 0; k < g.sparse_nnz; ++k) {
    if (int64_t(idx[k]) >= g.rows * g.cols || (k > 0 && idx[k] <= idx[k - 1]))
      fail(where, "sparse outlier " + std::to_string(k) + ": position " + std::to_string(idx[k]) +
                      " not ascending or beyond the " + shape_str(g.rows, g.cols) + " tensor");
    if ((val[k] & 0x7c00) == 0x7c00)
      fail(where, "sparse outlier " + std::to_string(k) + " has a non-finite f16 value");
  }
}

void add_sparse_rows(const uint8_t* base, const PackedGeometry& g, int64_t r0, int64_t r1, float* out, int64_t ld) {
  if (g.sparse_nnz == 0) return;
  const uint32_t* idx = sparse_idx(base, g);
  const uint16_t* val = sparse_val(base, g);
  const uint32_t* k = std::lower_bound(idx, idx + g.sparse_nnz, uint32_t(r0 * g.cols));
  const uint32_t* end = std::lower_bound(k, idx + g.sparse_nnz, uint32_t(r1 * g.cols));
  for (; k < end; ++k) {
    const int64_t r = int64_t(*k) / g.cols, c = int64_t(*k) % g.cols;
    out[(r - r0) * ld + c] += f16_to_f32(val[k - idx]);
  }
}

// ---- pack / unpack / validate --------------------------------------------------------------------
Tensor pack_tensor(const std::string& name, const QuantizedMatrix& qm) {
  const QuantSpec& s = qm.spec;
  const std::string where = name.empty() ? "pack_tensor" : name;
  try {
    format_id(s);
  } catch (const Error& e) {
    fail(where, e.what());
  }
  const int64_t rows = qm.rows, cols = qm.cols;
  if (rows < 1 || cols < 1) fail(where, "cannot pack an empty tensor " + shape_str(rows, cols));
  PackedGeometry g;
  try {
    g = packed_geometry(s, rows, cols);
  } catch (const Error& e) {
    fail(where, e.what());
  }
  // Codebook families (vq): the family writes everything (codebooks, column norm, code stream).
  if (format_traits(s).codebook || format_traits(s).composite) {
    std::vector<uint8_t> bytes(size_t(g.total_bytes), 0);
    format_traits(s).pack(qm, g, bytes.data(), where);
    if (s.rht) pack_rht(qm, g, bytes.data(), where);
    return make_owned_tensor(name, DType::Q, {rows, cols}, std::move(bytes), format_id(s));
  }
  const int64_t G = g.groups_per_row;
  if (int64_t(qm.q.size()) != rows * cols)
    fail(where, "codes: " + std::to_string(qm.q.size()) + " values for shape " + shape_str(rows, cols));
  if (int64_t(qm.scales.size()) != rows * G)
    fail(where, "scales: " + std::to_string(qm.scales.size()) + " values, expected " +
                    std::to_string(rows * G) + " (" + std::to_string(G) + " groups per row)");
  // Opaque-block families (ggml): the family writes whole blocks (codes and params together).
  if (format_traits(s).opaque_blocks) {
    if (int64_t(qm.ggml.size()) != rows * G * kGgmlParamBytes)
      fail(where, "block params: " + std::to_string(qm.ggml.size()) + " bytes, expected " +
                      std::to_string(rows * G * kGgmlParamBytes));
    std::vector<uint8_t> bytes(size_t(g.total_bytes), 0);
    format_traits(s).pack(qm, g, bytes.data(), where);
    if (s.rht) pack_rht(qm, g, bytes.data(), where);
    return make_owned_tensor(name, DType::Q, {rows, cols}, std::move(bytes), format_id(s));
  }
  if (s.family == FormatFamily::Int && !(qm.zeros.empty() && s.sym) && int64_t(qm.zeros.size()) != rows * G)
    fail(where, "zeros: " + std::to_string(qm.zeros.size()) + " values, expected " + std::to_string(rows * G));
  const int32_t maxq = maxq_of(s.bits);

  std::vector<uint8_t> bytes(size_t(g.total_bytes), 0);
  uint8_t* qdst = bytes.data();
  const int bpb = kern::qblock_bytes(s.bits);
  uint8_t blk[kern::kQBlock];
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* qr = qm.q.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      if (qr[c] > maxq)
        fail(where, "code " + std::to_string(qr[c]) + " at row " + std::to_string(r) + ", column " +
                        std::to_string(c) + " exceeds the " + std::to_string(s.bits) +
                        "-bit maximum " + std::to_string(maxq));
    for (int64_t b = 0; b < g.blocks_per_row; ++b) {
      const int64_t c0 = b * kern::kQBlock, n = std::min<int64_t>(kern::kQBlock, cols - c0);
      std::memset(blk, 0, sizeof blk);
      std::memcpy(blk, qr + c0, size_t(n));
      kern::pack_qblock(s.bits, blk, qdst + r * g.row_bytes + b * bpb);
    }
  }
  format_traits(s).pack(qm, g, bytes.data(), where);
  if (s.sparse) pack_sparse(qm, g, bytes.data(), where);
  if (s.rht) pack_rht(qm, g, bytes.data(), where);
  Tensor t = make_owned_tensor(name, DType::Q, {rows, cols}, std::move(bytes), format_id(s));
  return t;
}

namespace {
// Shape, format id and byte size of a packed tensor; returns its spec and geometry. Error
// messages are built only on failure (this runs once per tensor at load).
std::pair<QuantSpec, PackedGeometry> check_layout(const Tensor& t, const std::string& where) {
  auto w = [&] { return where.empty() ? t.name : where; };
  auto tn = [&] { return "tensor '" + t.name + "'"; };
  if (t.dtype != DType::Q) fail(w(), tn() + " is " + dtype_name(t.dtype) + ", not a packed quantized tensor");
  if (!format_id_valid(t.format)) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", t.format);
    fail(w(), tn() + " has unknown quantized format id " + buf);
  }
  if (t.shape.size() != 2 || t.shape[0] < 1 || t.shape[1] < 1) {
    std::string sh;
    for (size_t i = 0; i < t.shape.size(); ++i) sh += (i ? ", " : "") + std::to_string(t.shape[i]);
    fail(w(), tn() + ": packed tensors are 2-D [rows, cols] with rows, cols >= 1, got [" + sh + "]");
  }
  const QuantSpec s = format_spec(t.format);
  if (t.shape[0] > (int64_t(1) << 40) || t.shape[1] > (int64_t(1) << 40))
    fail(w(), tn() + ": shape " + shape_str(t.shape[0], t.shape[1]) + " too large");
  PackedGeometry g;
  try {  // a shape the family does not take (trellis: whole 16 x 16 tiles; ggml: whole blocks)
    g = packed_geometry(s, t.shape[0], t.shape[1]);
  } catch (const Error& e) {
    fail(w(), tn() + ": " + e.what());
  }
  if (t.data == nullptr) fail(w(), tn() + " has no data");
  if (int64_t(t.nbytes) != g.total_bytes)
    fail(w(), tn() + ": " + std::to_string(t.nbytes) + " bytes, but " + format_name(s) + " " +
                  shape_str(g.rows, g.cols) + " needs " + std::to_string(g.total_bytes) +
                  " (truncated file or wrong format id?)");
  return {s, g};
}
}  // namespace

void validate_packed(const Tensor& t, const std::string& where) {
  const auto [s, g] = check_layout(t, where);
  // content errors name the file and the tensor
  const std::string w = where.empty() || where == t.name ? t.name : where + ": tensor " + t.name;
  format_traits(s).check(static_cast<const uint8_t*>(t.data), g, s, w);
  if (s.sparse) check_sparse_part(static_cast<const uint8_t*>(t.data), g, w);
  if (s.rht) check_rht_part(static_cast<const uint8_t*>(t.data), g, w);
}

QuantizedMatrix unpack_tensor(const Tensor& t) {
  const auto [s, g] = check_layout(t, t.name);
  const uint8_t* base = static_cast<const uint8_t*>(t.data);
  QuantizedMatrix qm;
  qm.init(s, g.rows, g.cols);
  if (s.rht) {
    const uint8_t* in = base + g.rht_offset;
    qm.rht_in.assign(in, in + (g.cols + 7) / 8);
    if (s.rht == 1) qm.rht_out.assign(in + (g.cols + 7) / 8, in + (g.cols + 7) / 8 + (g.rows + 7) / 8);
  }
  if (format_traits(s).opaque_blocks || format_traits(s).codebook || format_traits(s).composite) {  // ggml, vq, mix, slim: everything from the family's bytes
    format_traits(s).unpack_params(base, g, s, qm);
    return qm;
  }
  const int bpb = kern::qblock_bytes(s.bits);
  uint8_t blk[kern::kQBlock];
  for (int64_t r = 0; r < g.rows; ++r) {
    for (int64_t b = 0; b < g.blocks_per_row; ++b) {
      kern::unpack_qblock(s.bits, base + r * g.row_bytes + b * bpb, blk);
      const int64_t c0 = b * kern::kQBlock, n = std::min<int64_t>(kern::kQBlock, g.cols - c0);
      std::memcpy(qm.q.data() + r * g.cols + c0, blk, size_t(n));
    }
  }
  format_traits(s).unpack_params(base, g, s, qm);
  if (s.sparse) {
    const uint32_t* idx = sparse_idx(base, g);
    const uint16_t* val = sparse_val(base, g);
    qm.sp_idx.assign(idx, idx + g.sparse_nnz);
    for (int64_t k = 0; k < g.sparse_nnz; ++k) qm.sp_val.push_back(f16_to_f32(val[k]));
  }
  return qm;
}

namespace {
// The reference dequantization: the scalar level's dequant_rows of the family.
void dequant_ref_rows(const Tensor& t, int64_t r0, int64_t r1, float* out) {
  const auto [s, g] = check_layout(t, t.name);
  if (composite::is_composite(s)) return composite::dequant_rows_ref(t, r0, r1, out);  // the parts' references
  const FormatTraits& tr = format_traits(s);
  const kern::QWeights v = tr.view(static_cast<const uint8_t*>(t.data), s, g);
  if (s.family == FormatFamily::Int)
    kern::qops_scalar.dequant_rows(v, r0, r1, out, g.cols);
  else
    tr.kernels[0]->dequant_rows(v, r0, r1, out, g.cols);
  add_sparse_rows(static_cast<const uint8_t*>(t.data), g, r0, r1, out, g.cols);
}
}  // namespace

std::vector<float> dequantize_ref(const Tensor& t) {
  std::vector<float> out(size_t(t.rows() * t.cols()));
  dequant_ref_rows(t, 0, t.rows(), out.data());
  const auto [s, g] = check_layout(t, t.name);
  if (s.rht) {  // the codes hold U W V^T: back to the model's space
    const uint8_t* in = static_cast<const uint8_t*>(t.data) + g.rht_offset;
    rht_rotate_weights(out.data(), g.rows, g.cols, in, s.rht == 1 ? in + (g.cols + 7) / 8 : nullptr, /*inverse=*/true);
  }
  return out;
}

void dequantize_row_ref(const Tensor& t, int64_t r, float* out) {
  if (r < 0 || r >= t.rows())
    fail(t.name, "row " + std::to_string(r) + " out of range [0, " + std::to_string(t.rows()) + ")");
  if (format_id_valid(t.format) && format_spec(t.format).rht) {  // every row mixes into every row
    const std::vector<float> all = dequantize_ref(t);
    std::memcpy(out, all.data() + r * t.cols(), size_t(t.cols()) * sizeof(float));
    return;
  }
  dequant_ref_rows(t, r, r + 1, out);
}

namespace detail {
kern::QWeights packed_view(const Tensor& t) {
  const QuantSpec s = format_spec(t.format);
  return format_traits(s).view(static_cast<const uint8_t*>(t.data), s, packed_geometry(s, t.rows(), t.cols()));
}
}  // namespace detail

}  // namespace lmpress
