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

namespace fmt {
// Weighted 1-D k-means over a row, solved exactly (the paper's objective, min sum_i imp_i (w_i - c)^2
// over tables of k values; SqueezeLLM's reference runs Lloyd from a k-means++ start, a local
// optimum). With the values sorted every cluster of an optimum is a contiguous run, so
//   D_m(j) = min_i D_{m-1}(i) + cost(i, j)   (the first j values in m clusters; cost of run [i, j)
// from prefix sums of imp, imp*x, imp*x^2), and the best split i is non-decreasing in j (the cost
// satisfies the concave Monge condition; Gronlund et al. 2017, "Fast exact k-means, k-medians and
// Bregman divergence clustering in 1D"), so each layer is a divide-and-conquer over j:
// O(k n log n). Runs of equal values and k > n give empty or zero-cost clusters (centroids repeat).
std::vector<double> weighted_kmeans_1d(const float* w, int64_t n, const double* imp, int k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return w[a] < w[b]; });
  const size_t N = size_t(n);
  std::vector<double> x(N), cw(N + 1, 0.0), cwx(N + 1, 0.0), cwxx(N + 1, 0.0);
  double mean = 0, wsum = 0;
  for (size_t i = 0; i < N; ++i) {
    x[i] = w[idx[i]];
    // a zero importance would drop the weight from the fit entirely; keep a floor
    const double iw = imp ? std::max(imp[idx[i]], 1e-12) : 1.0;
    cw[i + 1] = cw[i] + iw;
    mean += iw * x[i];
    wsum += iw;
  }
  mean /= wsum;  // centred values keep the prefix sums of x^2 well conditioned
  for (size_t i = 0; i < N; ++i) {
    const double iw = cw[i + 1] - cw[i], xc = x[i] - mean;
    cwx[i + 1] = cwx[i] + iw * xc;
    cwxx[i + 1] = cwxx[i] + iw * xc * xc;
  }
  auto cost = [&](size_t i, size_t j) {  // run [i, j), j > i
    const double W = cw[j] - cw[i], S = cwx[j] - cwx[i];
    return std::max(0.0, cwxx[j] - cwxx[i] - S * S / W);
  };
  const int K = int(std::min<int64_t>(k, n));
  std::vector<double> prev(N + 1), cur(N + 1);
  std::vector<std::vector<uint32_t>> arg(size_t(K), std::vector<uint32_t>(N + 1, 0));
  for (size_t j = 1; j <= N; ++j) prev[j] = cost(0, j);
  for (int m = 2; m <= K; ++m) {
    std::vector<uint32_t>& am = arg[size_t(m - 1)];
    // Fills cur[j] for j in [jlo, jhi] knowing the best split lies in [olo, ohi].
    auto solve = [&](auto&& self, size_t jlo, size_t jhi, size_t olo, size_t ohi) -> void {
      if (jlo > jhi) return;
      const size_t j = (jlo + jhi) / 2;
      double best = INFINITY;
      size_t bi = std::max(olo, size_t(m - 1));
      for (size_t i = std::max(olo, size_t(m - 1)); i <= std::min(ohi, j - 1); ++i) {
        const double v = prev[i] + cost(i, j);
        if (v < best) best = v, bi = i;
      }
      cur[j] = best;
      am[j] = uint32_t(bi);
      if (j > jlo) self(self, jlo, j - 1, olo, bi);
      self(self, j + 1, jhi, bi, ohi);
    };
    solve(solve, size_t(m), N, size_t(m - 1), N - 1);
    std::swap(prev, cur);
  }
  // Walk the splits back; centroid = weighted mean of its run.
  std::vector<double> c;
  size_t j = N;
  for (int m = K; m >= 1; --m) {
    const size_t i = m == 1 ? 0 : arg[size_t(m - 1)][j];
    c.push_back(mean + (cwx[j] - cwx[i]) / (cw[j] - cw[i]));
    j = i;
  }
  while (int(c.size()) < k) c.push_back(c.back());
  std::sort(c.begin(), c.end());
  return c;
}

}  // namespace fmt

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

class LutGrid final : public fmt::TableGrid {
 public:
  explicit LutGrid(const QuantSpec& s) : TableGrid(s, nullptr) {}
  bool row_table() const override { return true; }
  bool has_range() const override { return false; }
  GroupParams params(const float* w, int64_t n, float, const double* imp) const override {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(w[i])) fail("", "cannot quantize a non-finite weight (column " + std::to_string(i) + ")");
    const int k = n_codes();
    const std::vector<double> c = fmt::weighted_kmeans_1d(w, n, imp, k);
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
