#include <cmath>
#include <cstdio>

#include "common.h"
#include "lmpress/compress.h"
#include "lmpress/io.h"

namespace lmpress::cli {

void add_quantize(CLI::App& app) {
  auto* sub = app.add_subcommand("quantize", "Compress a model by a recipe into an lmpress file");
  struct Opt {
    Common c;
    std::string recipe = "gptq:w4g32;token_embd.weight=rtn:w8g32", recipe_file, out, calib;
    int nsamples = 32, seqlen = 128;
    uint64_t seed = 0;
    bool no_true_seq = false, force = false;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_option("-r,--recipe", o->recipe,
                  "Recipe, e.g. \"gptq:w4g32,act_order;token_embd.weight=rtn:w8g32\" (docs/recipes.md)");
  sub->add_option("--recipe-file", o->recipe_file, "JSON recipe file (overrides --recipe)");
  sub->add_option("-o,--out", o->out, "Output lmpress file (.lmp)")->required();
  sub->add_option("--calib", o->calib, "Calibration text (required by gptq)");
  sub->add_option("--nsamples", o->nsamples, "Calibration windows")->check(int_between(1, 1 << 20));
  sub->add_option("--seqlen", o->seqlen, "Tokens per calibration window")->check(int_between(2, 1 << 20));
  sub->add_option("--seed", o->seed, "Seed for window selection");
  sub->add_flag("--no-true-sequential", o->no_true_seq,
                "Capture all inputs of a block before quantizing any of it (faster, slightly worse)");
  add_force(sub, o->force);
  sub->callback([o] {
    check_output_path(o->out, OutputKind::File, o->force);
    QuantizeOptions qo;
    qo.recipe = o->recipe_file.empty() ? parse_recipe(o->recipe) : load_recipe_file(o->recipe_file);
    const int nt = threads(o->c);
    Model m = load(o->c);
    qo.calib.text_path = o->calib;
    qo.calib.nsamples = o->nsamples;
    qo.calib.seqlen = o->seqlen;
    qo.calib.seed = o->seed;
    qo.n_threads = nt;
    qo.true_sequential = !o->no_true_seq;
    if (qo.calib.text_path.empty() && qo.recipe.needs_calibration())
      fail("quantize", "recipe '" + qo.recipe.text + "' uses methods that need calibration data: pass --calib FILE");
    const bool calibrated = !qo.calib.text_path.empty();
    {
      // Memory: the output model, plus with calibration the residual streams of every window, the
      // per-layer Hessians and one engine over a window.
      const ModelConfig& c = m.cfg;
      const double tokens = calibrated ? double(o->nsamples) * o->seqlen : 0.0;
      const double qd = double(c.n_heads) * c.head_dim;
      double need = double(m.n_params()) * 4.0;
      if (calibrated)
        need += tokens * c.dim * 4.0 * 2 + 8.0 * (2.0 * c.dim * c.dim + qd * qd + double(c.hidden_dim) * c.hidden_dim) +
                engine_bytes(c, o->seqlen, o->seqlen, true);
      check_memory(need, o->calib.empty() ? m.path : o->calib,
                   calibrated ? "quantize with --nsamples " + std::to_string(o->nsamples) + " --seqlen " +
                                    std::to_string(o->seqlen)
                              : std::string("quantize"),
                   calibrated ? "lower --nsamples or --seqlen" : "use a machine with more memory");
      if (calibrated && o->seqlen > m.cfg.max_seq_len)
        log_info("warning: --seqlen %d is beyond the model's trained context of %d tokens; calibration "
                 "activations past it are not representative", o->seqlen, m.cfg.max_seq_len);
      if (calibrated && log_level() >= LogLevel::Info) {
        // Time: calibration forward passes (a few per layer) plus the per-layer solves.
        const double tps = measure_prefill_tps(m, nt);
        if (3.0 * tokens / tps >= 5.0)
          log_info("estimate: about %s of memory, calibration passes about %s", human_bytes(need).c_str(),
                 human_seconds(3.0 * tokens / tps).c_str());
      }
    }
    // Streaming output: every tensor goes to the file as soon as it is final (the layout is planned
    // up front), so memory holds one block's work, not the model.
    std::map<std::string, std::string> meta = m.metadata;
    meta["recipe"] = qo.recipe.text;
    meta["source"] = m.path;
    meta["calib"] = o->calib.empty() ? "" :
        o->calib + " nsamples=" + std::to_string(o->nsamples) + " seqlen=" + std::to_string(o->seqlen) +
        " seed=" + std::to_string(o->seed);
    LmpressStreamWriter writer(o->out, m, plan_quantization(m, qo.recipe), meta, o->force);
    log_info("quantizing %s with '%s'%s", m.path.c_str(), qo.recipe.text.c_str(),
             o->calib.empty() ? "" : (", calibration " + o->calib).c_str());
    qo.sink = &writer;
    QuantizeReport rep;
    quantize_model(m, qo, &rep);
    for (const auto& l : rep.layers)
      if (!std::isfinite(l.err) || !std::isfinite(l.rel_err))
        fail(m.path, "quantizing " + l.name + " gave a non-finite error (NaN or Inf); not writing " + o->out);
    writer.commit();
    const uint64_t fbytes = file_size(o->out);
    // Without calibration there is no Hessian: the error proxy is not measured (0), say so.
    auto measured = [&](const LayerReport& l) { return calibrated && l.rel_err > 0; };
    if (o->c.json) {
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& l : rep.layers)
        layers.push_back({{"name", l.name}, {"method", l.method},
                          {"format", l.method == "keep" || l.method == "f16" || l.method == "bf16" || l.method == "f32" ? l.method : format_name(l.spec)},
                          {"err", measured(l) ? nlohmann::json(l.err) : nlohmann::json(nullptr)},
                          {"rel_err", measured(l) ? nlohmann::json(l.rel_err) : nlohmann::json(nullptr)},
                          {"seconds", l.seconds}});
      print_json({{"model", m.path}, {"out", o->out}, {"recipe", qo.recipe.text}, {"params", rep.params},
                  {"bpw", rep.bpw()}, {"file_bytes", fbytes}, {"seconds", rep.seconds},
                  {"peak_rss_mb", double(peak_rss_bytes()) / 1048576.0},
                  {"peak_anon_mb", rep.peak_anon_bytes / 1048576.0}, {"layers", layers}});
      return;
    }
    std::printf("| tensor | method | format | rel. error | seconds |\n|---|---|---|---|---|\n");
    for (const auto& l : rep.layers) {
      char err[32] = "n/a";
      if (measured(l)) std::snprintf(err, sizeof err, "%.5f", l.rel_err);
      std::printf("| %s | %s | %s | %s | %.3f |\n", l.name.c_str(), l.method.c_str(),
                  l.method == "keep" || l.method == "f16" || l.method == "bf16" || l.method == "f32" ? "-" : format_name(l.spec).c_str(),
                  err, l.seconds);
    }
    if (!calibrated) std::printf("(rel. error n/a: no calibration text, so no activation statistics)\n");
    std::printf("total: %lld params, %.4f bits per weight, file %s (%s), %.2f s, peak RSS %.0f MiB "
                "(anonymous %.0f MiB; the rest is the mapped input)\n",
                (long long)rep.params, rep.bpw(), o->out.c_str(), human_bytes(double(fbytes)).c_str(), rep.seconds,
                double(peak_rss_bytes()) / 1048576.0, rep.peak_anon_bytes / 1048576.0);
  });
}

}  // namespace lmpress::cli
