// AWQ (Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and
// Acceleration", MLSys 2024), following the reference llm-awq auto_scale / auto_clip:
//   scale search: for the tensors reading one input, s = mean|x|^alpha (clamped at 1e-4, divided by
//     sqrt(max s * min s)), alpha on the grid {0, 1/grid, ..., (grid-1)/grid}; the loss of an alpha
//     is the mean squared error of the tensors' outputs on calibration rows when W diag(s) is
//     rounded to nearest on the target format and the input is x / s; the best s is applied:
//     W <- W diag(s) and 1/s folds into the producer (the RMSNorm weight for q/k/v and gate/up, v's
//     rows (and bias) for o when there is no GQA, up's rows for down);
//   clip search (all readers but q and k, as in the reference): per output row and group, the
//     range max|w| * (1 - i/20), i = 0..9, whose rounding minimises the group's output error
//     (w - q)^T H_gg (w - q) over the (scaled) input's Hessian block, then w is clipped to it.
// Deviations (docs/methods.md): the scale-search loss sums the outputs of the linear layers
// themselves, not of the whole attention / MLP module; o is skipped under GQA (as the reference,
// which only scales v -> o when their shapes match); the clip error is computed exactly from the
// Hessian block instead of on 512 sampled tokens.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "algo/pipeline_internal.h"

namespace lmpress {

namespace {

std::vector<float> f32_of(const Tensor& t) { return tensor_to_f32(t); }

// Y [m][rows] = X [m][n] * W^T, W [rows][n].
void outputs(const std::vector<float>& X, int64_t m, int64_t n, const float* W, int64_t rows, std::vector<float>& Y) {
  Y.resize(size_t(m * rows));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(n), 1.0f, X.data(), int(n), W,
              int(n), 0.0f, Y.data(), int(rows));
}

bool is_qk(const std::string& name) {
  return name.find("attn_q.") != std::string::npos || name.find("attn_k.") != std::string::npos;
}

}  // namespace

ScaledReaders::ScaledReaders(const StepContext& ctx) {
  const InputStats& st = *ctx.stats;
  n = st.n;
  m = st.sample_rows;
  X = &st.samples;
  // Readers that are quantized take part in the loss; every reader is rescaled.
  for (size_t i = 0; i < ctx.readers.size(); ++i) {
    Reader R{ctx.readers[i], ctx.rules[i], f32_of(*ctx.readers[i]), {}};
    if (R.r->quantized()) outputs(*X, m, n, R.w.data(), R.t->rows(), R.y);
    rd.push_back(std::move(R));
  }
}

double ScaledReaders::loss(const std::vector<double>& s) const {
  double loss = 0;
  int64_t count = 0;
  std::vector<float> ws, yq;
  for (const Reader& R : rd) {
    if (!R.r->quantized()) continue;
    const int64_t rows = R.t->rows();
    ws.resize(R.w.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) ws[size_t(r * n + j)] = R.w[size_t(r * n + j)] * float(s[size_t(j)]);
    const QuantizedMatrix q = quantize_rtn(ws.data(), rows, n, R.r->spec, false, nullptr);
    std::vector<float> deq = dequantize_matrix(q);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) deq[size_t(r * n + j)] /= float(s[size_t(j)]);  // (x/s) . Q(W s) = x . Q(W s)/s
    outputs(*X, m, n, deq.data(), rows, yq);
    for (size_t i = 0; i < yq.size(); ++i) {
      const double d = double(yq[i]) - double(R.y[i]);
      loss += d * d;
    }
    count += int64_t(yq.size());
  }
  return loss / double(std::max<int64_t>(count, 1));
}

void ScaledReaders::apply(StepContext& ctx, const std::vector<double>& s) {
  for (Reader& R : rd) {
    const int64_t rows = R.t->rows();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) R.w[size_t(r * n + j)] *= float(s[size_t(j)]);
  }
  if (ctx.norm) {
    make_f32_owned(*ctx.norm);
    std::vector<float> g = f32_of(*ctx.norm);
    for (int64_t j = 0; j < n; ++j) g[size_t(j)] = float(g[size_t(j)] / s[size_t(j)]);
    *ctx.norm = make_f32_tensor(ctx.norm->name, ctx.norm->shape, std::move(g));
  } else {
    std::vector<float> p = f32_of(*ctx.producer);
    const int64_t pc = ctx.producer->cols();
    if (ctx.producer->rows() != n) fail("scale fold", "producer " + ctx.producer->name + " rows differ from the input width");
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < pc; ++c) p[size_t(j * pc + c)] = float(p[size_t(j * pc + c)] / s[size_t(j)]);
    *ctx.producer = make_f32_tensor(ctx.producer->name, ctx.producer->shape, std::move(p));
    if (ctx.producer_bias) {
      std::vector<float> b = f32_of(*ctx.producer_bias);
      for (int64_t j = 0; j < n; ++j) b[size_t(j)] = float(b[size_t(j)] / s[size_t(j)]);
      *ctx.producer_bias = make_f32_tensor(ctx.producer_bias->name, ctx.producer_bias->shape, std::move(b));
    }
  }
}

void ScaledReaders::commit() {
  for (Reader& R : rd) *R.t = make_f32_tensor(R.t->name, R.t->shape, std::move(R.w));
}

void awq_transform(StepContext& ctx) {
  const InputStats& st = *ctx.stats;
  const TensorRule& rule = *ctx.rule;
  if (!ctx.norm && !ctx.producer) {
    ctx.note = "awq: skipped (no producer to fold a scale into: grouped-query attention)";
    return;
  }
  const int64_t n = st.n, m = st.sample_rows;
  if (m == 0 || int64_t(st.mean_abs.size()) != n) fail("awq", "missing calibration statistics for " + ctx.input);
  ScaledReaders sr(ctx);
  const ScopedBlasThreads blas(ctx.pool->size(), 1e9);

  // ---- scale search ----
  std::vector<double> best_s(size_t(n), 1.0), s(static_cast<size_t>(n));
  double best_loss = INFINITY, best_alpha = 0, loss0 = 0;
  for (int k = 0; k < rule.awq.grid; ++k) {
    const double alpha = double(k) / rule.awq.grid;
    double smax = 0, smin = INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      s[size_t(j)] = std::max(std::pow(st.mean_abs[size_t(j)], alpha), 1e-4);
      smax = std::max(smax, s[size_t(j)]);
      smin = std::min(smin, s[size_t(j)]);
    }
    const double norm = std::sqrt(smax * smin);
    for (double& v : s) v /= norm;
    const double loss = sr.loss(s);
    if (k == 0) loss0 = loss;
    if (loss < best_loss) {
      best_loss = loss;
      best_alpha = alpha;
      best_s = s;
    }
  }

  // ---- apply: W <- W diag(s); the producer absorbs 1/s ----
  sr.apply(ctx, best_s);
  auto& rd = sr.rd;

  // ---- clip search on the scaled weights, with the scaled input's Hessian H'_jl = H_jl / (s_j s_l) ----
  int clipped = 0;
  if (rule.awq.clip && !st.H.empty()) {
    for (ScaledReaders::Reader& R : rd) {
      if (!R.r->quantized() || is_qk(R.t->name)) continue;
      const auto grid = make_grid(R.r->spec);
      if (!grid->has_range()) continue;
      const int64_t rows = R.t->rows(), g = grid->group_len(n), G = (n + g - 1) / g;
      parallel_for_checked(*ctx.pool, rows, [&](int, int64_t r0, int64_t r1) {
        std::vector<float> cw(static_cast<size_t>(g));
        std::vector<double> dv(static_cast<size_t>(g));
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t gi = 0; gi < G; ++gi) {
            const int64_t c0 = gi * g, len = std::min(g, n - c0);
            float* w = R.w.data() + r * n + c0;
            float amax = 0.f;
            for (int64_t j = 0; j < len; ++j) amax = std::max(amax, std::fabs(w[j]));
            if (amax == 0.f) continue;
            double best = INFINITY;
            float best_max = amax;
            for (int i = 0; i < 10; ++i) {
              const float mx = amax * (1.0f - float(i) / 20.0f);
              for (int64_t j = 0; j < len; ++j) cw[size_t(j)] = std::clamp(w[j], -mx, mx);
              const GroupParams p = grid->params(cw.data(), len, 1.0f, nullptr);
              for (int64_t j = 0; j < len; ++j)
                dv[size_t(j)] = double(w[j]) - double(grid->dequantize_at(grid->quantize_at(cw[size_t(j)], p, j), p, j));
              double e = 0;
              for (int64_t a = 0; a < len; ++a) {
                const double* Ha = st.H.data() + (c0 + a) * n + c0;
                double row = 0;
                for (int64_t b = 0; b < len; ++b) row += Ha[b] * dv[size_t(b)] / best_s[size_t(c0 + b)];
                e += dv[size_t(a)] / best_s[size_t(c0 + a)] * row;
              }
              if (e < best) {
                best = e;
                best_max = mx;
              }
            }
            for (int64_t j = 0; j < len; ++j) w[j] = std::clamp(w[j], -best_max, best_max);
          }
      });
      ++clipped;
    }
  }
  sr.commit();
  char buf[160];
  std::snprintf(buf, sizeof buf, "awq: alpha %.2f (output MSE %.4g -> %.4g), %d tensor(s) clipped", best_alpha, loss0,
                best_loss, clipped);
  ctx.note = buf;
}

}  // namespace lmpress
