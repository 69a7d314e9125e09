#include <cmath>
#include <numeric>

#include "lmpress/eval.h"

namespace lmpress {

namespace {
void mean_sd(const std::vector<double>& v, double& mean, double& sd) {
  mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  sd = v.size() > 1 ? std::sqrt(s / double(v.size() - 1)) : 0.0;
}
}  // namespace

BenchResult bench(const Model& m, const BenchOptions& opt) {
  BenchResult r;
  if (opt.n_prompt < 1 || opt.n_gen < 0 || opt.reps < 1) fail("", "bench: -p must be >= 1, -n >= 0, -r >= 1");
  EngineOptions eo;
  eo.n_threads = opt.n_threads;
  eo.n_ctx = opt.n_prompt + opt.n_gen + 1;
  Engine eng(m, eo);
  const int32_t nv = m.cfg.vocab_size;
  std::vector<float> logits(static_cast<size_t>(nv));
  // Token ids cycle through the vocabulary avoiding special ids 0..2 (speed does not depend on them).
  std::vector<int32_t> prompt(static_cast<size_t>(opt.n_prompt));
  for (int i = 0; i < opt.n_prompt; ++i) prompt[size_t(i)] = 3 + (i * 7919) % std::max(1, nv - 3);
  // Warm-up run (page in mmapped weights, grow scratch buffers).
  eng.forward(prompt.data(), std::min(opt.n_prompt, 8), 0, logits.data(), false);
  for (int rep = 0; rep < opt.reps; ++rep) {
    double t0 = now_seconds();
    eng.forward(prompt.data(), opt.n_prompt, 0, logits.data(), false);
    double t1 = now_seconds();
    r.prefill_runs.push_back(opt.n_prompt / (t1 - t0));
    if (opt.n_gen > 0) {
      int32_t tok = prompt.back();
      t0 = now_seconds();
      for (int i = 0; i < opt.n_gen; ++i) {
        eng.forward(&tok, 1, opt.n_prompt + i, logits.data(), false);
        tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      t1 = now_seconds();
      r.decode_runs.push_back(opt.n_gen / (t1 - t0));
    }
  }
  mean_sd(r.prefill_runs, r.prefill_tps, r.prefill_tps_sd);
  if (!r.decode_runs.empty()) mean_sd(r.decode_runs, r.decode_tps, r.decode_tps_sd);
  r.peak_rss_mb = double(peak_rss_bytes()) / (1024.0 * 1024.0);
  // Bytes streamed per decoded token: every linear layer plus the classifier (the embedding
  // table contributes one row only).
  for (const auto& L : m.layers)
    for (const Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      r.weight_bytes += double(t->nbytes);
  r.weight_bytes += double(m.output.nbytes);
  r.decode_gbps = r.decode_tps * r.weight_bytes / 1e9;
  return r;
}

}  // namespace lmpress
