// lut3 / lut4: SqueezeLLM's non-uniform quantization (Kim et al. 2024): every row has its own table
// of 2^b values, found by (importance-weighted) 1-D k-means over the row; a code indexes the table.
// Stored as int8 table values T_r (ascending) times an f16 row scale s_r = max|centroid| / 127
// (rounded up to f16), so the kernels dot int8 values exactly; the table costs 2^b + 2 bytes a
// row. Snapping the centroids to that grid is a deviation from the paper's f16/f32 centroids
// (docs/methods.md): it moves a value by at most s_r / 2.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "formats/traits.h"

namespace lmpress {

namespace {

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Lut && (s.bits == 3 || s.bits == 4) && s.sym && s.group == 0;
}
std::string name_of(const QuantSpec& s) { return "lut" + std::to_string(s.bits); }
bool parse(const std::string& n, QuantSpec* out) {
  if (n != "lut3" && n != "lut4") return false;
  *out = QuantSpec{n[3] - '0', 0, true, FormatFamily::Lut};
  return true;
}
void list(std::vector<QuantSpec>& v) {
  for (int b : {3, 4}) v.push_back(QuantSpec{b, 0, true, FormatFamily::Lut});
}
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) { return fmt::table_geometry(s, rows, cols, 2, true); }

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  fmt::pack_f16_scales(qm, g, out, where);
  const int64_t T = int64_t(1) << qm.spec.bits;
  if (int64_t(qm.table.size()) != g.rows * T)
    fail(where, "lut tables: " + std::to_string(qm.table.size()) + " values, expected " + std::to_string(g.rows * T));
  int8_t* dst = reinterpret_cast<int8_t*>(out + g.q_bytes + g.scale_bytes);
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t i = 0; i < T; ++i) {
      const int8_t v = qm.table[size_t(r * T + i)];
      if (v == -128) fail(where, "lut table value -128 at row " + std::to_string(r) + " (values are in -127..127)");
      if (i > 0 && v < qm.table[size_t(r * T + i - 1)])
        fail(where, "lut table of row " + std::to_string(r) + " is not ascending");
      dst[r * T + i] = v;
    }
}
void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  fmt::unpack_f16_scales(data, g, qm);
  const int8_t* t = reinterpret_cast<const int8_t*>(data + g.q_bytes + g.scale_bytes);
  qm.table.assign(t, t + g.table_bytes);
}
void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec&, const std::string& where) {
  fmt::check_f16_scales(data, g, where);
  // Any int8 but -128 (the kernels' sign trick needs |v| <= 127).
  const int8_t* t = reinterpret_cast<const int8_t*>(data + g.q_bytes + g.scale_bytes);
  for (int64_t i = 0; i < g.table_bytes; ++i)
    if (t[i] == -128) fail(where, "lut table value -128 (row " + std::to_string(i / (g.table_bytes / g.rows)) + "): values are in -127..127");
}
kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::table_view(base, s, g, nullptr);
}

// Weighted 1-D k-means (Lloyd) over a row, exact per iteration: with the values sorted, every
// cluster is a contiguous run between midpoints of consecutive centroids, summed by prefix sums.
// Initial centroids: the weighted quantiles (i + 1/2) / k (deterministic; SqueezeLLM's reference
// uses scikit-learn's k-means++ initialisation).
std::vector<double> kmeans_1d(const float* w, int64_t n, const double* imp, int k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return w[a] < w[b]; });
  std::vector<double> x(static_cast<size_t>(n)), cw(static_cast<size_t>(n) + 1, 0.0), cwx(static_cast<size_t>(n) + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    x[size_t(i)] = w[idx[size_t(i)]];
    // a zero importance would drop the weight from the fit entirely; keep a floor
    const double iw = imp ? std::max(imp[idx[size_t(i)]], 1e-12) : 1.0;
    cw[size_t(i) + 1] = cw[size_t(i)] + iw;
    cwx[size_t(i) + 1] = cwx[size_t(i)] + iw * x[size_t(i)];
  }
  const double total = cw[size_t(n)];
  std::vector<double> c(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) {
    const double target = total * (j + 0.5) / k;
    const size_t i = size_t(std::lower_bound(cw.begin() + 1, cw.end(), target) - (cw.begin() + 1));
    c[size_t(j)] = x[std::min(i, size_t(n - 1))];
  }
  std::vector<int64_t> bound(static_cast<size_t>(k) + 1);
  for (int it = 0; it < 50; ++it) {
    std::sort(c.begin(), c.end());
    bound[0] = 0;
    bound[size_t(k)] = n;
    for (int j = 1; j < k; ++j) {
      const double mid = 0.5 * (c[size_t(j - 1)] + c[size_t(j)]);
      bound[size_t(j)] = std::upper_bound(x.begin(), x.end(), mid) - x.begin();
    }
    bool changed = false;
    for (int j = 0; j < k; ++j) {
      const int64_t a = bound[size_t(j)], b = bound[size_t(j) + 1];
      if (b <= a) continue;  // empty cluster keeps its centroid
      const double nc = (cwx[size_t(b)] - cwx[size_t(a)]) / (cw[size_t(b)] - cw[size_t(a)]);
      changed = changed || nc != c[size_t(j)];
      c[size_t(j)] = nc;
    }
    if (!changed) break;
  }
  std::sort(c.begin(), c.end());
  return c;
}

class LutGrid final : public fmt::TableGrid {
 public:
  explicit LutGrid(const QuantSpec& s) : TableGrid(s, nullptr) {}
  bool row_table() const override { return true; }
  bool has_range() const override { return false; }
  GroupParams params(const float* w, int64_t n, float, const double* imp) const override {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(w[i])) fail("", "cannot quantize a non-finite weight (column " + std::to_string(i) + ")");
    const int k = n_codes();
    const std::vector<double> c = kmeans_1d(w, n, imp, k);
    double amax = 0;
    for (double v : c) amax = std::max(amax, std::fabs(v));
    GroupParams p;
    if (amax > 0) p.scale = round_scale_f16(float(amax / 127.0));
    if (!std::isfinite(p.scale)) fail("", "weight range too large for an f16 scale (max |w| = " + std::to_string(amax) + ")");
    for (int j = 0; j < k; ++j) {
      const double v = std::nearbyint(c[size_t(j)] / p.scale);
      p.row[j] = int8_t(std::clamp(v, -127.0, 127.0));
    }
    std::sort(p.row, p.row + k);
    return p;
  }
};
std::unique_ptr<Grid> grid(const QuantSpec& s) { return std::make_unique<LutGrid>(s); }

}  // namespace

const FormatTraits lut_format = {
    FormatFamily::Lut, "lut", "per-row table of 2^b int8 values times an f16 row scale (SqueezeLLM)",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    LMP_TABLE_KERNELS,
};

}  // namespace lmpress
