// fp8row / fp8g<G>: E4M3 (OCP FP8: sign, 4 exponent bits with bias 7, 3 mantissa bits, max 448,
// no infinities, 0x7f/0xff NaN) times an f16 scale per row or group, scale = absmax / 448. Codes
// are bytes in 32-byte blocks (rows zero-padded). Kernels read f32 activations.
#include <algorithm>
#include <cmath>

#include "formats/traits.h"

namespace lmpress {

namespace {

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::FP8 && s.bits == 8 && s.sym && fmt::group_code(s.group) > 0;
}
std::string name_of(const QuantSpec& s) { return "fp8" + fmt::group_suffix(s.group); }
bool parse(const std::string& n, QuantSpec* out) {
  return fmt::parse_prefixed(n, "fp8", QuantSpec{8, 0, true, FormatFamily::FP8}, out);
}
void list(std::vector<QuantSpec>& v) {
  for (int g : {16, 32, 64, 128, 0}) v.push_back(QuantSpec{8, g, true, FormatFamily::FP8});
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::block_geometry(s, rows, cols, 2); }
void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  fmt::pack_f16_scales(qm, g, out, where);
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = 0; c < g.cols; ++c)
      if ((qm.q[size_t(r * g.cols + c)] & 0x7f) == 0x7f)
        fail(where, "fp8 NaN code at row " + std::to_string(r) + ", column " + std::to_string(c));
}
void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, const std::string& where) {
  fmt::check_f16_scales(data, g, where);
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = 0; c < g.cols; ++c)
      if ((data[r * g.row_bytes + c] & 0x7f) == 0x7f)
        fail(where, "fp8 NaN code at row " + std::to_string(r) + ", column " + std::to_string(c));
}
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w = fmt::block_view(base, s, g);
  w.scales = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  return w;
}

// Nearest E4M3 value of w / scale, saturating at +-448; ties go to the smaller magnitude.
class FP8Grid final : public Grid {
 public:
  explicit FP8Grid(const QuantSpec& s) : Grid(s) {
    for (int c = 0; c < 127; ++c) mag_.push_back(kern::e4m3_to_f32(uint8_t(c)));  // ascending
    for (size_t i = 0; i + 1 < mag_.size(); ++i) mid_.push_back(0.5f * (mag_[i] + mag_[i + 1]));
  }
  GroupParams params(const float* w, int64_t n, float clip, const double*) const override {
    GroupParams p;
    p.scale = fmt::absmax_scale_f16(fmt::group_absmax(w, n), clip, 448.f);
    return p;
  }
  int32_t quantize(float w, const GroupParams& p) const override {
    const float x = w / p.scale, a = std::fabs(x);
    const int32_t m = int32_t(std::lower_bound(mid_.begin(), mid_.end(), a) - mid_.begin());
    return (x < 0.f && m != 0) ? (m | 0x80) : m;
  }
  float dequantize(int32_t q, const GroupParams& p) const override { return p.scale * kern::e4m3_to_f32(uint8_t(q)); }

 private:
  std::vector<float> mag_, mid_;
};
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<FP8Grid>(s); }

}  // namespace

const FormatTraits fp8_format = {
    FormatFamily::FP8, "fp8", "E4M3 values times an f16 scale per row or group (scale = absmax / 448)",
    ActKind::F32, nullptr, valid, name_of, parse, list, geometry, pack, fmt::unpack_f16_params, check, view, grid,
    {&kern::fp8_kernels_scalar, &kern::fp8_kernels_avx2, &kern::fp8_kernels_avx512},
};

}  // namespace lmpress
