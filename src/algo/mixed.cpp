// Mixed precision inside a tensor (docs/methods.md, "SliM-LLM" and "MixLLM"):
//  - SliM-LLM (Huang et al. 2024): salience-determined bit allocation (SBA) over column groups, N-1 /
//    N / N+1 bits keeping the average N, and GPTQ with salience-weighted quantizer calibration (SQC);
//  - MixLLM (Zheng et al. 2024), within one tensor: the output features (rows) whose GPTQ error falls
//    most from the low to the high int format get the high one. Its global form (salience ranked over
//    every tensor under a byte budget) is the `mixllm` allocator (budget.cpp).
// Formats: formats/composite.h.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "formats/composite.h"
#include "lmpress/compress.h"

namespace lmpress {

std::vector<double> slim_salience(const float* w, int64_t rows, int64_t cols, int64_t group, const std::vector<double>& H,
                                  double damp) {
  const std::vector<double> ru = inverse_factor_recip_diag(H, cols, damp);  // 1 / U_jj
  std::vector<double> sal(size_t((cols + group - 1) / group), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double v = double(w[r * cols + c]) * ru[size_t(c)];
      sal[size_t(c / group)] += v * v;
    }
  return sal;
}

namespace {
// KL(softmax(a) || softmax(b)) over n outputs with both probabilities clamped at 1e-6 (the reference's
// kl_div on clamped softmaxes).
double clamped_kl(const float* a, const float* b, int64_t n) {
  float ma = a[0], mb = b[0];
  for (int64_t i = 1; i < n; ++i) ma = std::max(ma, a[i]), mb = std::max(mb, b[i]);
  double za = 0, zb = 0;
  for (int64_t i = 0; i < n; ++i) za += std::exp(double(a[i] - ma)), zb += std::exp(double(b[i] - mb));
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double p = std::max(1e-6, std::exp(double(a[i] - ma)) / za), q = std::max(1e-6, std::exp(double(b[i] - mb)) / zb);
    kl += p * (std::log(p) - std::log(q));
  }
  return kl;
}
}  // namespace

int64_t slim_search_beta(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& salience,
                         const float* X, int64_t T, std::vector<double>* kl_out) {
  const int64_t g = s.group, full = cols / g;
  if (T <= 0 || !X) fail("slim", "the bit allocation search needs calibration samples of the layer's input");
  // The class matrices: min-max RTN per row and group at N-1, N, N+1 bits.
  std::vector<float> Wc[3];
  for (int c = 0; c < 3; ++c) Wc[c] = dequantize_matrix(quantize_rtn_ref(w, rows, cols, composite::part_spec(s, c)));
  std::vector<float> Y0(size_t(T * rows)), Y(size_t(T * rows));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(rows), int(cols), 1.f, X, int(cols), w, int(cols), 0.f,
              Y0.data(), int(rows));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(rows), int(cols), 1.f, X, int(cols), Wc[1].data(),
              int(cols), 0.f, Y.data(), int(rows));
  std::vector<float> D[2] = {std::vector<float>(Wc[0].size()), std::vector<float>(Wc[2].size())};
  for (size_t k = 0; k < Wc[1].size(); ++k) D[0][k] = Wc[0][k] - Wc[1][k], D[1][k] = Wc[2][k] - Wc[1][k];
  std::vector<int64_t> order(static_cast<size_t>(full));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return salience[size_t(a)] < salience[size_t(b)]; });
  auto kl_now = [&] {
    double k = 0;
    for (int64_t t = 0; t < T; ++t) k += clamped_kl(Y.data() + t * rows, Y0.data() + t * rows, rows);
    return k / double(T);
  };
  if (kl_out) kl_out->clear();
  int64_t best = 0;
  double best_kl = kl_now();
  if (kl_out) kl_out->push_back(best_kl);
  for (int64_t beta = 1; 2 * beta <= full; ++beta) {
    // group order[beta - 1] goes to N-1 bits, order[full - beta] to N+1: Y += X_j (W_c - W_1)_j^T
    const int64_t jl = order[size_t(beta - 1)], jh = order[size_t(full - beta)];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(rows), int(g), 1.f, X + jl * g, int(cols),
                D[0].data() + jl * g, int(cols), 1.f, Y.data(), int(rows));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(rows), int(g), 1.f, X + jh * g, int(cols),
                D[1].data() + jh * g, int(cols), 1.f, Y.data(), int(rows));
    const double k = kl_now();
    if (kl_out) kl_out->push_back(k);
    if (k < best_kl) best = beta, best_kl = k;
  }
  return best;
}

GroupParams slim_sqc_params(const Grid& grid, const float* w, int64_t n) {
  GroupParams p1 = grid.params(w, n, 1.0f, nullptr);  // (throws on non-finite weights)
  if (grid.spec().family != FormatFamily::Int) return p1;  // binary: mean |w|, as the reference's 1-bit fit
  const int32_t maxq = (1 << grid.spec().bits) - 1;
  float lo = 0.f, hi = 0.f;
  for (int64_t i = 0; i < n; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
  if (lo == hi) return p1;
  auto err = [&](const GroupParams& p) {
    double e = 0;
    for (int64_t i = 0; i < n; ++i) e += std::pow(std::fabs(double(w[i]) - grid.dequantize(quantize_value(w[i], p, maxq), p)), 2.4);
    return e;
  };
  GroupParams best = p1;
  double best_e = err(p1);
  for (int side = 0; side < 2; ++side)
    for (int k = 1; k <= 50; ++k) {
      const double f = side == 0 ? 1.0 + 0.1 * k / 50 : 1.0 - 0.1 * k / 50;
      GroupParams p = p1;
      p.scale = round_scale_f16(float((double(hi) - lo) * f / maxq));
      if (!std::isfinite(p.scale) || p.scale <= 0.f) continue;
      const float z = std::nearbyint(float(-double(lo) * f / p.scale));
      p.zero = int32_t(std::clamp(z, 0.f, float(maxq)));
      const double e = err(p);
      if (e < best_e) best = p, best_e = e;
    }
  return best;
}

QuantizedMatrix quantize_slim(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& H,
                              const float* samples, int64_t n_samples, const GptqOptions& go, const SlimOptions& o,
                              ThreadPool& pool, int64_t* beta_out) {
  if (s.family != FormatFamily::Slim) fail("slim", "the slim method writes slim formats, not " + format_name(s));
  const int64_t g = s.group, full = cols / g, G = (cols + g - 1) / g;
  const std::vector<double> sal = slim_salience(w, rows, cols, g, H, go.damp);
  int64_t beta = o.beta;
  if (beta > full / 2)
    fail("slim", "beta=" + std::to_string(beta) + ": a tensor of " + std::to_string(cols) + " columns has " + std::to_string(full) +
                     " full groups of " + std::to_string(g) + " (at most " + std::to_string(full / 2) + " each way)");
  if (beta < 0) {
    if (samples && n_samples > 0) {
      constexpr int64_t kMaxRows = 256;  // sample rows the search's KL is averaged over
      const int64_t T = std::min(n_samples, kMaxRows);
      std::vector<float> X(size_t(T * cols));
      for (int64_t t = 0; t < T; ++t)  // evenly spread over the stored samples
        std::copy(samples + (t * n_samples / T) * cols, samples + (t * n_samples / T + 1) * cols, X.begin() + t * cols);
      beta = slim_search_beta(w, rows, cols, s, sal, X.data(), T);
    } else {
      beta = 0;  // (no samples: the container stays at N bits in every group)
    }
  }
  if (beta_out) *beta_out = beta;
  const std::vector<uint8_t> cls = composite::slim_classes(sal, cols, g, beta);
  std::unique_ptr<Grid> grids[3];
  for (int c = 0; c < 3; ++c) grids[c] = make_grid(composite::part_spec(s, c));
  std::vector<const Grid*> per_group(static_cast<size_t>(G));
  for (int64_t j = 0; j < G; ++j) per_group[size_t(j)] = grids[cls[size_t(j)]].get();
  GptqOptions o2 = go;
  o2.group_grids = &per_group;
  o2.group_params = go.mse ? nullptr : slim_sqc_params;  // mse: GPTQ's shrink search on the group's grid
  o2.act_order = o2.static_groups = false;
  const QuantSpec container{s.bits + 1, int(g), false, FormatFamily::Int};  // codes and (scale, zero) of every group
  const QuantizedMatrix q = quantize_gptq(w, rows, cols, container, H, o2, pool);
  const QuantizedMatrix* src[3] = {&q, &q, &q};
  return composite::assemble_slim(s, cls, src);
}

std::vector<double> row_errors(const float* w, const std::vector<float>& deq, int64_t rows, int64_t cols,
                               const std::vector<double>& H) {
  if (int64_t(H.size()) == cols) {  // a diagonal H: sum_j d_rj^2 H_jj
    std::vector<double> e(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double d = double(w[r * cols + c]) - deq[size_t(r * cols + c)];
        e[size_t(r)] += d * d * H[size_t(c)];
      }
    return e;
  }
  if (int64_t(H.size()) != cols * cols) fail("row_errors", "Hessian of the wrong size");
  std::vector<float> Hf(H.begin(), H.end()), D(size_t(rows * cols)), DH(size_t(rows * cols));
  for (size_t k = 0; k < D.size(); ++k) D[k] = w[k] - deq[k];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(cols), int(cols), 1.f, D.data(), int(cols), Hf.data(),
              int(cols), 0.f, DH.data(), int(cols));
  std::vector<double> e(size_t(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) e[size_t(r)] += double(D[size_t(r * cols + c)]) * DH[size_t(r * cols + c)];
  return e;
}

QuantizedMatrix quantize_mixllm(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& H,
                                const GptqOptions& go, ThreadPool& pool) {
  if (s.family != FormatFamily::Mix) fail("mixllm", "the mixllm method writes mix formats, not " + format_name(s));
  const QuantizedMatrix lo = quantize_gptq(w, rows, cols, composite::part_spec(s, 0), H, go, pool);
  const QuantizedMatrix hi = quantize_gptq(w, rows, cols, composite::part_spec(s, 1), H, go, pool);
  const std::vector<double> el = row_errors(w, dequantize_matrix(lo), rows, cols, H);
  const std::vector<double> eh = row_errors(w, dequantize_matrix(hi), rows, cols, H);
  std::vector<int64_t> order(static_cast<size_t>(rows));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return el[size_t(a)] - eh[size_t(a)] > el[size_t(b)] - eh[size_t(b)];
  });
  std::vector<uint8_t> flag(static_cast<size_t>(rows), 0);
  for (int64_t i = 0; i < composite::mix_hi_rows(s, rows); ++i) flag[size_t(order[size_t(i)])] = 1;
  return composite::assemble_mix(s, flag, lo, hi);
}

}  // namespace lmpress
