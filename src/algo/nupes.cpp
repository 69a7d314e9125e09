// NUPES (Yvinec et al. 2023, "NUPES: Non-Uniform Post-Training Quantization via Power Exponent
// Search"): the quantization grid is a power function of a uniform one, w = sign(u)|u|^(1/a)
// (formats pow<b>g<G>: src/formats/pow.cpp), and the exponent a is searched. The paper learns a
// by gradient descent together with the weights; here a is chosen per tensor by a grid search
// over a in [0.30, 1.20] (steps of 0.05) on the layer's output error tr(D H D^T) of the RTN
// rounding onto each candidate grid (D = W - Q), or diag(H)- / un-weighted squared error
// (docs/methods.md: deviations). The rounding onto the chosen grid is RTN (nupes) or GPTQ
// (nupes+gptq).
#include <cmath>

#include "lmpress/compress.h"

namespace lmpress {

namespace {
double diag_error(const float* w, const QuantizedMatrix& q, const double* hdiag) {
  const std::vector<float> dq = dequantize_matrix(q);
  double e = 0;
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t c = 0; c < q.cols; ++c) {
      const double d = double(w[r * q.cols + c]) - double(dq[size_t(r * q.cols + c)]);
      e += (hdiag ? hdiag[c] : 1.0) * d * d;
    }
  return e / double(q.rows);
}
}  // namespace

int nupes_search(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>* H,
                 const double* hdiag, std::vector<std::pair<int, double>>* trace, int64_t max_rows) {
  if (s.family != FormatFamily::Pow)
    fail("nupes", "nupes searches the exponent of a pow grid: use pow3g<G> or pow4g<G>, not " + format_name(s));
  if (H && int64_t(H->size()) != cols * cols) fail("nupes", "Hessian size does not match the weight's columns");
  int best = 0;
  double best_err = INFINITY;
  for (int p = kNupesMin; p <= kNupesMax; p += kNupesStep) {
    QuantSpec c = s;
    c.param = p;
    const QuantizedMatrix q = quantize_rtn(w, rows, cols, c, false, nullptr);
    const double e = H ? layer_error(w, q, *H, nullptr, max_rows) : diag_error(w, q, hdiag);
    if (trace) trace->emplace_back(p, e);
    if (e < best_err) best_err = e, best = p;
  }
  return best;
}

}  // namespace lmpress
