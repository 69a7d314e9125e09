// Packing front end: min-max parameters, RTN reference quantizer, pack / unpack / dequantize of
// DType::Q tensors and their validation. The block bit layouts themselves are the scalar
// reference in src/kernels/generic/quant.cpp (pack_qblock / unpack_qblock).
//
// Packed tensor bytes (docs/formats.md): [rows][row_bytes] code blocks, then f16 scales
// [rows][groups], then (asymmetric only) u8 zeros [rows][groups]. Codes past `cols` in the last
// block of a row are 0.
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/qkernels.h"
#include "lmpress/formats.h"

namespace lmpress {

namespace {

int32_t maxq_of(int bits) { return (1 << bits) - 1; }

std::string shape_str(int64_t rows, int64_t cols) {
  std::string s(1, '[');  // (appends: GCC 12 warns falsely on "[" + std::string)
  s += std::to_string(rows);
  s += ", ";
  s += std::to_string(cols);
  s += ']';
  return s;
}

kern::QWeights view_of(const Tensor& t, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w;
  const uint8_t* base = static_cast<const uint8_t*>(t.data);
  w.q = base;
  w.scales = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  w.zeros = s.sym ? nullptr : base + g.q_bytes + g.scale_bytes;
  w.rows = g.rows;
  w.cols = g.cols;
  w.nb = g.blocks_per_row;
  w.row_bytes = g.row_bytes;
  w.groups = g.groups_per_row;
  w.group = g.group;
  w.bits = s.bits;
  w.zero_sym = 1 << (s.bits - 1);
  return w;
}

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
  QuantizedMatrix qm;
  qm.spec = s;
  qm.rows = rows;
  qm.cols = cols;
  qm.q.resize(size_t(rows * cols));
  qm.scales.resize(size_t(rows * g.groups_per_row));
  qm.zeros.resize(size_t(rows * g.groups_per_row));
  const int32_t maxq = maxq_of(s.bits);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < g.groups_per_row; ++gi) {
      const int64_t c0 = gi * g.group, c1 = std::min(cols, c0 + g.group);
      const float* src = w + r * cols + c0;
      GroupParams p;
      try {
        p = minmax_params(src, c1 - c0, s);
      } catch (const Error& e) {
        fail("", std::string(e.what()) + " (row " + std::to_string(r) + ", columns " +
                     std::to_string(c0) + ".." + std::to_string(c1 - 1) + ")");
      }
      qm.scales[size_t(r * g.groups_per_row + gi)] = p.scale;
      qm.zeros[size_t(r * g.groups_per_row + gi)] = p.zero;
      for (int64_t c = c0; c < c1; ++c)
        qm.q[size_t(r * cols + c)] = uint8_t(quantize_value(w[r * cols + c], p, maxq));
    }
  }
  return qm;
}

Tensor pack_tensor(const std::string& name, const QuantizedMatrix& qm) {
  register_quant_kernels();
  const QuantSpec& s = qm.spec;
  const std::string where = name.empty() ? "pack_tensor" : name;
  try {
    format_id(s);
  } catch (const Error& e) {
    fail(where, e.what());
  }
  const int64_t rows = qm.rows, cols = qm.cols;
  if (rows < 1 || cols < 1) fail(where, "cannot pack an empty tensor " + shape_str(rows, cols));
  const PackedGeometry g = packed_geometry(s, rows, cols);
  const int64_t G = g.groups_per_row;
  if (int64_t(qm.q.size()) != rows * cols)
    fail(where, "codes: " + std::to_string(qm.q.size()) + " values for shape " + shape_str(rows, cols));
  if (int64_t(qm.scales.size()) != rows * G)
    fail(where, "scales: " + std::to_string(qm.scales.size()) + " values, expected " +
                    std::to_string(rows * G) + " (" + std::to_string(G) + " groups per row)");
  if (!(qm.zeros.empty() && s.sym) && int64_t(qm.zeros.size()) != rows * G)
    fail(where, "zeros: " + std::to_string(qm.zeros.size()) + " values, expected " +
                    std::to_string(rows * G));
  const int32_t maxq = maxq_of(s.bits), zsym = 1 << (s.bits - 1);

  std::vector<uint8_t> bytes(size_t(g.total_bytes), 0);
  uint8_t* qdst = bytes.data();
  uint16_t* sdst = reinterpret_cast<uint16_t*>(bytes.data() + g.q_bytes);
  uint8_t* zdst = bytes.data() + g.q_bytes + g.scale_bytes;
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
    for (int64_t gi = 0; gi < G; ++gi) {
      const size_t k = size_t(r * G + gi);
      const float sc = qm.scales[k];
      if (!std::isfinite(sc))
        fail(where, "non-finite scale " + std::to_string(sc) + " at row " + std::to_string(r) +
                        ", group " + std::to_string(gi));
      const uint16_t h = f32_to_f16(sc);
      if (f16_to_f32(h) != sc)
        fail(where, "scale " + std::to_string(sc) + " at row " + std::to_string(r) + ", group " +
                        std::to_string(gi) +
                        " is not f16-representable: pass it through round_scale_f16 before "
                        "quantizing with it");
      sdst[k] = h;
      if (qm.zeros.empty()) continue;
      const int32_t z = qm.zeros[k];
      if (s.sym && z != zsym)
        fail(where, "symmetric format with zero " + std::to_string(z) + " at row " +
                        std::to_string(r) + ", group " + std::to_string(gi) + " (must be " +
                        std::to_string(zsym) + ")");
      if (!s.sym) {
        if (z < 0 || z > 255)
          fail(where, "zero " + std::to_string(z) + " at row " + std::to_string(r) + ", group " +
                          std::to_string(gi) + " outside the u8 range 0..255");
        zdst[k] = uint8_t(z);
      }
    }
  }
  return make_owned_tensor(name, DType::Q, {rows, cols}, std::move(bytes), format_id(s));
}

void validate_packed(const Tensor& t, const std::string& where) {
  register_quant_kernels();
  const std::string w = where.empty() ? t.name : where;
  const std::string tn = "tensor '" + t.name + "'";
  if (t.dtype != DType::Q) fail(w, tn + " is " + dtype_name(t.dtype) + ", not a packed quantized tensor");
  if (!format_id_valid(t.format)) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%06x", t.format);
    fail(w, tn + " has unknown quantized format id " + buf);
  }
  if (t.shape.size() != 2 || t.shape[0] < 1 || t.shape[1] < 1) {
    std::string sh;
    for (size_t i = 0; i < t.shape.size(); ++i) sh += (i ? ", " : "") + std::to_string(t.shape[i]);
    fail(w, tn + ": packed tensors are 2-D [rows, cols] with rows, cols >= 1, got [" + sh + "]");
  }
  const QuantSpec s = format_spec(t.format);
  if (t.shape[0] > (int64_t(1) << 40) || t.shape[1] > (int64_t(1) << 40))
    fail(w, tn + ": shape " + shape_str(t.shape[0], t.shape[1]) + " too large");
  const PackedGeometry g = packed_geometry(s, t.shape[0], t.shape[1]);
  if (t.data == nullptr) fail(w, tn + " has no data");
  if (int64_t(t.nbytes) != g.total_bytes)
    fail(w, tn + ": " + std::to_string(t.nbytes) + " bytes, but " + format_name(s) + " " +
                shape_str(g.rows, g.cols) + " needs " + std::to_string(g.total_bytes) +
                " (truncated file or wrong format id?)");
}

QuantizedMatrix unpack_tensor(const Tensor& t) {
  validate_packed(t, t.name);
  const QuantSpec s = format_spec(t.format);
  const PackedGeometry g = packed_geometry(s, t.rows(), t.cols());
  const kern::QWeights v = view_of(t, s, g);
  QuantizedMatrix qm;
  qm.spec = s;
  qm.rows = g.rows;
  qm.cols = g.cols;
  qm.q.resize(size_t(g.rows * g.cols));
  qm.scales.resize(size_t(g.rows * g.groups_per_row));
  qm.zeros.resize(size_t(g.rows * g.groups_per_row));
  const int bpb = kern::qblock_bytes(s.bits);
  uint8_t blk[kern::kQBlock];
  for (int64_t r = 0; r < g.rows; ++r) {
    for (int64_t b = 0; b < g.blocks_per_row; ++b) {
      kern::unpack_qblock(s.bits, v.q + r * g.row_bytes + b * bpb, blk);
      const int64_t c0 = b * kern::kQBlock, n = std::min<int64_t>(kern::kQBlock, g.cols - c0);
      std::memcpy(qm.q.data() + r * g.cols + c0, blk, size_t(n));
    }
  }
  for (int64_t k = 0; k < g.rows * g.groups_per_row; ++k) {
    qm.scales[size_t(k)] = f16_to_f32(v.scales[k]);
    qm.zeros[size_t(k)] = v.zeros ? v.zeros[k] : v.zero_sym;
  }
  return qm;
}

void dequantize_row_ref(const Tensor& t, int64_t r, float* out) {
  validate_packed(t, t.name);
  if (r < 0 || r >= t.rows())
    fail(t.name, "row " + std::to_string(r) + " out of range [0, " + std::to_string(t.rows()) + ")");
  const QuantSpec s = format_spec(t.format);
  const PackedGeometry g = packed_geometry(s, t.rows(), t.cols());
  kern::qops_scalar.dequant_rows(view_of(t, s, g), r, r + 1, out, g.cols);
}

std::vector<float> dequantize_ref(const Tensor& t) {
  validate_packed(t, t.name);
  const QuantSpec s = format_spec(t.format);
  const PackedGeometry g = packed_geometry(s, t.rows(), t.cols());
  std::vector<float> out(size_t(g.rows * g.cols));
  kern::qops_scalar.dequant_rows(view_of(t, s, g), 0, g.rows, out.data(), g.cols);
  return out;
}

namespace detail {
kern::QWeights packed_view(const Tensor& t) {
  const QuantSpec s = format_spec(t.format);
  return view_of(t, s, packed_geometry(s, t.rows(), t.cols()));
}
}  // namespace detail

}  // namespace lmpress
