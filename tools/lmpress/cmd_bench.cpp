#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "Prefill and decode speed, peak memory");
  struct Opt {
    Common c;
    BenchOptions b;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c, true, true);
  sub->add_option("-p,--n-prompt", o->b.n_prompt, "Prompt tokens (prefill); prompt + generated tokens must fit the model's context")
      ->check(int_between(1, 1 << 24));
  sub->add_option("-n,--n-gen", o->b.n_gen, "Generated tokens (decode)")->check(int_between(0, 1 << 24));
  sub->add_option("-r,--reps", o->b.reps, "Repetitions")->check(int_between(1, 1000));
  sub->add_flag("--scaling", o->b.scaling, "Also run every repetition on 1 thread and report the 1 -> N thread scaling");
  sub->callback([o] {
    o->b.n_threads = threads(o->c);
    const double t0 = now_seconds();
    Model m = load(o->c, false);
    const double load_s = now_seconds() - t0;
    const int64_t total = int64_t(o->b.n_prompt) + o->b.n_gen;
    if (total > m.cfg.max_seq_len)
      fail(m.path, "-p " + std::to_string(o->b.n_prompt) + " + -n " + std::to_string(o->b.n_gen) + " = " +
                       std::to_string(total) + " tokens exceed the model's context of " +
                       std::to_string(m.cfg.max_seq_len) + " tokens; lower -p or -n");
    check_memory(engine_bytes(m.cfg, total + 1, o->b.n_prompt, false), m.path,
                 "bench -p " + std::to_string(o->b.n_prompt), "lower -p or -n");
    bool copied = false;
    for (const auto& f : m.files) copied = copied || (f && f->copied());
    const std::string weights_in = copied ? "read into memory" : "mapped";
    const BenchResult r = bench(m, o->b);
    const std::string simd = std::string(simd_level_name(active_simd_level())) + (amx_active() ? "+amx" : avxvnni_active() ? "+avx-vnni" : "");
    if (o->c.json) {
      print_json({{"model", m.path}, {"params", m.n_params()}, {"threads", o->b.n_threads},
                  {"n_prompt", o->b.n_prompt}, {"n_gen", o->b.n_gen}, {"reps", o->b.reps},
                  {"prefill_tps", r.prefill_tps}, {"prefill_tps_sd", r.prefill_tps_sd},
                  {"decode_tps", r.decode_tps}, {"decode_tps_sd", r.decode_tps_sd},
                  {"prefill_runs", r.prefill_runs}, {"decode_runs", r.decode_runs},
                  {"decode_weight_gbps", r.decode_gbps}, {"weight_bytes", uint64_t(r.weight_bytes)},
                  {"peak_rss_mb", r.peak_rss_mb}, {"load_seconds", load_s}, {"weights", weights_in}, {"simd", simd},
                  {"prefill_tps_median", r.prefill_tps_median}, {"decode_tps_median", r.decode_tps_median},
                  {"prefill_linear_gflops", r.prefill_gflops}, {"kernel_paths", r.kernel_paths},
                  {"prefill_layout_mib", r.prefill_layout_mb}, {"warmup_seconds", r.warmup_s},
                  {"cpu", cpu_feature_string()}, {"blas", blas_info()},
                  {"prefill_tps_median_1t", r.prefill_tps_median_1t}, {"decode_tps_median_1t", r.decode_tps_median_1t},
                  {"int8_peak_gops", r.int8_peak_gops}, {"int8_peak_kind", r.int8_peak_kind}});
      return;
    }
    std::printf("model   %s (%lld params, %s streamed per token)\n", m.path.c_str(), (long long)m.n_params(),
                human_bytes(r.weight_bytes).c_str());
    std::printf("kernels %s (cpu: %s), %s, %d threads\n", simd.c_str(), cpu_feature_string().c_str(),
                blas_info().c_str(), o->b.n_threads);
    for (const auto& k : r.kernel_paths) std::printf("  %s\n", k.c_str());
    std::printf("| test | tokens/s | sd | median |\n|---|---|---|---|\n");
    std::printf("| pp%d | %.2f | %.2f | %.2f |\n", o->b.n_prompt, r.prefill_tps, r.prefill_tps_sd, r.prefill_tps_median);
    if (o->b.n_gen > 0)
      std::printf("| tg%d | %.2f | %.2f | %.2f |\n", o->b.n_gen, r.decode_tps, r.decode_tps_sd, r.decode_tps_median);
    if (r.prefill_tps_median_1t > 0) {
      std::printf("| pp%d, 1 thread | | | %.2f (x%.2f at %d threads) |\n", o->b.n_prompt, r.prefill_tps_median_1t,
                  r.prefill_tps_median / r.prefill_tps_median_1t, o->b.n_threads);
      if (o->b.n_gen > 0 && r.decode_tps_median_1t > 0)
        std::printf("| tg%d, 1 thread | | | %.2f (x%.2f at %d threads) |\n", o->b.n_gen, r.decode_tps_median_1t,
                    r.decode_tps_median / r.decode_tps_median_1t, o->b.n_threads);
    }
    std::printf("prefill linear layers %.1f GFLOP/s (median), repacked prefill weights %.1f MiB, warm-up %.2f s\n",
                r.prefill_gflops, r.prefill_layout_mb, r.warmup_s);
    if (r.int8_peak_gops > 0)
      std::printf("compute peak measured now on %d threads (%s loop): %.0f GOP/s; prefill linear layers at %.0f%% of it\n",
                  o->b.n_threads, r.int8_peak_kind.c_str(), r.int8_peak_gops, 100.0 * r.prefill_gflops / r.int8_peak_gops);
    std::printf("decode weight stream %.1f GB/s, peak RSS %.1f MiB, load %.2f s (weights %s)\n", r.decode_gbps,
                r.peak_rss_mb, load_s, weights_in.c_str());
  });
}

}  // namespace lmpress::cli
