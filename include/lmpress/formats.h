// lmpress formats: packed low-bit weight formats. One registry table (src/formats/registry.cpp)
// lists every bit width's block layout; a format = bit width x group size x symmetric/asymmetric.
//
// Quantized value q in [0, 2^bits - 1]; dequantized weight w = scale_g * (q - zero_g), where g is
// the group (a run of `group` consecutive input columns of one row; the last group of a ragged row
// is shorter). Symmetric formats have the implicit zero 2^(bits-1) (GPTQ's symmetric grid) and
// store only scales; asymmetric formats store an integer zero (u8) per group. Scales are f16.
// Packed layout (docs/formats.md): rows are independent; each row's q values are packed in
// 32-weight blocks (bytes_per_block(bits) bytes each; the row is zero-padded to a multiple of 32),
// followed, after all rows, by the f16 scales [rows][n_groups] and (asymmetric) u8 zeros.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmpress/model.h"

namespace lmpress {

struct QuantSpec {
  int bits = 4;        // 2, 3, 4, 5, 6, 8
  int group = 32;      // 16, 32, 64, 128, or 0 = whole row (per-channel)
  bool sym = true;
  bool operator==(const QuantSpec&) const = default;
};

// Format id encoding: bits | group_code << 8 | sym << 16 (group_code: 16->1 32->2 64->3 128->4 row->5).
uint32_t format_id(const QuantSpec& s);
QuantSpec format_spec(uint32_t id);             // throws Error for unknown ids
bool format_id_valid(uint32_t id);
std::string format_name(const QuantSpec& s);    // "w4g32" / "w4g128a" / "w8row"
QuantSpec parse_format_name(const std::string& name);  // inverse; throws Error
std::vector<QuantSpec> all_formats();

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
  std::vector<uint8_t> q;          // [rows][cols] codes
  std::vector<float> scales;       // [rows][groups], already f16-representable
  std::vector<int32_t> zeros;      // [rows][groups]
};
// Packs into a DType::Q tensor (format id set, owned bytes). Validates codes/params.
Tensor pack_tensor(const std::string& name, const QuantizedMatrix& qm);
// Reference dequantization of a whole packed tensor / one row.
void dequantize_row_ref(const Tensor& t, int64_t r, float* out);
std::vector<float> dequantize_ref(const Tensor& t);
// Unpack codes/params back (tests, re-encoding).
QuantizedMatrix unpack_tensor(const Tensor& t);
// Checks that a DType::Q tensor's byte size matches its format and shape (file loading).
void validate_packed(const Tensor& t, const std::string& where);

// Plain round-to-nearest with min-max params (optionally clipping search, see algo/rtn).
QuantizedMatrix quantize_rtn_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& s);

// Installs the quantized matmul / row kernels into the engine (matmul() on DType::Q tensors,
// tensor_row_f32). Idempotent and thread-safe; pack_tensor, validate_packed and the engine's
// quantized branch call it, so callers rarely need to.
void register_quant_kernels();

}  // namespace lmpress
