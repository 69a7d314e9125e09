#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/matmul_ext.h"
#include "formats/formats_internal.h"
#include "kernels/kernels.h"
#include "kernels/qrepack.h"
#include "lmpress/eval.h"

namespace lmpress {

namespace {
void mean_sd(const std::vector<double>& v, double& mean, double& sd) {
  mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  sd = v.size() > 1 ? std::sqrt(s / double(v.size() - 1)) : 0.0;
}
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}
// The kernel path of one weight for n tokens.
std::string path_of(const Tensor& t, int64_t n) {
  if (t.dtype == DType::Q) return quant_kernel_path(t, n);
  const std::string dt = dtype_name(t.dtype);
  const std::string lvl = simd_level_name(active_simd_level());
  if (n < 4) return dt + " gemv-" + lvl;
  if (t.dtype != DType::F32 && f16_prefill_int16()) return dt + " amx-int8x3-tiles (16-bit fixed-point limbs)";
  if (t.dtype != DType::F32 && amx_bf16_active()) return dt + " amx-bf16x3-tiles (bf16 high+low split)";
  if (t.dtype == DType::F32) return dt + " openblas-sgemm";
  if (!f16_prefill_register_gemm()) return dt + " " + lvl + "-convert-to-f32-panels+openblas-sgemm";
  return dt + " " + lvl + "-gemm (in-register conversion, " + (active_simd_level() == SimdLevel::AVX2 ? "6x16" : "12x32") +
         " f32 tiles)";
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
  const double w0 = now_seconds();
  eng.forward(prompt.data(), std::min(opt.n_prompt, 8), 0, logits.data(), false);
  r.warmup_s = now_seconds() - w0;
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
  if (opt.scaling && eng.pool().size() > 1) {
    EngineOptions e1 = eo;
    e1.n_threads = 1;
    Engine one(m, e1);
    one.forward(prompt.data(), std::min(opt.n_prompt, 8), 0, logits.data(), false);
    std::vector<double> pp, tg;
    for (int rep = 0; rep < opt.reps; ++rep) {
      double t0 = now_seconds();
      one.forward(prompt.data(), opt.n_prompt, 0, logits.data(), false);
      pp.push_back(opt.n_prompt / (now_seconds() - t0));
      if (opt.n_gen > 0) {
        int32_t tok = prompt.back();
        t0 = now_seconds();
        for (int i = 0; i < opt.n_gen; ++i) {
          one.forward(&tok, 1, opt.n_prompt + i, logits.data(), false);
          tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
        tg.push_back(opt.n_gen / (now_seconds() - t0));
      }
    }
    r.prefill_tps_median_1t = median(pp);
    r.decode_tps_median_1t = median(tg);
  }
  // The int8 peak on every engine thread at once (0.2 s each): what the cores deliver now.
  const SimdLevel lvl = active_simd_level();
  if (lvl != SimdLevel::Scalar) {
    const bool amx = amx_active();
    // f16 / bf16 weights on AMX: the bf16 tile peak divided by the products per multiply-add of
    // the high/low split (3 for f16, 2 for bf16) is their ceiling instead.
    const DType wdt = m.layers.empty() ? DType::F32 : m.layers[0].wq.dtype;
    const bool f16w = wdt == DType::F16 || wdt == DType::BF16;
    const bool limbs = f16w && f16_prefill_int16();
    const bool dense16 = f16w && !limbs && amx_bf16_active();
    const double split = limbs ? 3.0 : wdt == DType::F16 ? 3.0 : 2.0;
    std::vector<double> per(size_t(eng.pool().size()), 0.0);
    eng.pool().parallel_for(eng.pool().size(), [&](int, int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        per[size_t(i)] = dense16                     ? kern::bf16_peak_gflops_amx(0.2) / split
                         : limbs                     ? kern::int8_peak_gops_amx(0.2) / split
                         : amx                       ? kern::int8_peak_gops_amx(0.2)
                         : lvl == SimdLevel::AVX512 ? kern::int8_peak_gops_avx512(0.2)
                         : avxvnni_active()         ? kern::int8_peak_gops_avxvnni(0.2)
                                                    : kern::int8_peak_gops_avx2(0.2);
    });
    for (double v : per) r.int8_peak_gops += v / 1e9;
    r.int8_peak_kind = limbs ? "amx int8 tiles (tdpbsud loop) / 3 (f16 as 16-bit limbs: hi*hi + hi*lo + lo*hi)"
                       : dense16 ? (wdt == DType::F16 ? "amx tdpbf16ps / 3 (f16 = bf16 high+low x activations high+low)"
                                                    : "amx tdpbf16ps / 2 (bf16 x activations high+low)")
                       : amx ? "amx tdpbsud 16x32.8x64 tiles"
                       : lvl == SimdLevel::AVX512 ? "vpdpbusd zmm"
                       : avxvnni_active()         ? "vpdpbusd ymm (avx-vnni)"
                                                  : "vpmaddubsw+vpaddw ymm";
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
  r.prefill_tps_median = median(r.prefill_runs);
  r.decode_tps_median = median(r.decode_runs);
  double macs = 0;  // per token
  for (const auto& L : m.layers)
    for (const Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      macs += double(t->rows()) * double(t->cols());
  macs += double(m.output.rows()) * double(m.output.cols());
  r.prefill_gflops = 2.0 * macs * r.prefill_tps_median / 1e9;
  if (!m.layers.empty()) {
    const auto& L = m.layers[0];
    const std::pair<const char*, const Tensor*> kinds[] = {
        {"wq", &L.wq}, {"wk", &L.wk}, {"wv", &L.wv}, {"wo", &L.wo}, {"w_gate", &L.w_gate},
        {"w_up", &L.w_up}, {"w_down", &L.w_down}, {"output", &m.output}};
    for (const auto& [name, t] : kinds)
      if (!t->empty())
        r.kernel_paths.push_back(std::string(name) + ": decode " + path_of(*t, 1) + " | prefill " +
                                 path_of(*t, opt.n_prompt));
  }
  r.prefill_layout_mb = double(prefill_layout_bytes()) / (1024.0 * 1024.0);
  return r;
}

}  // namespace lmpress
