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
    bool no_true_seq = false;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_option("-r,--recipe", o->recipe,
                  "Recipe, e.g. \"gptq:w4g32,act_order;token_embd.weight=rtn:w8g32\" (docs/recipes.md)");
  sub->add_option("--recipe-file", o->recipe_file, "JSON recipe file (overrides --recipe)");
  sub->add_option("-o,--out", o->out, "Output lmpress file (.lmp)")->required();
  sub->add_option("--calib", o->calib, "Calibration text (required by gptq)");
  sub->add_option("--nsamples", o->nsamples, "Calibration windows")->check(CLI::PositiveNumber);
  sub->add_option("--seqlen", o->seqlen, "Tokens per calibration window")->check(CLI::Range(2, 1 << 20));
  sub->add_option("--seed", o->seed, "Seed for window selection");
  sub->add_flag("--no-true-sequential", o->no_true_seq,
                "Capture all inputs of a block before quantizing any of it (faster, slightly worse)");
  sub->callback([o] {
    QuantizeOptions qo;
    qo.recipe = o->recipe_file.empty() ? parse_recipe(o->recipe) : load_recipe_file(o->recipe_file);
    Model m = load(o->c);
    qo.calib.text_path = o->calib;
    qo.calib.nsamples = o->nsamples;
    qo.calib.seqlen = o->seqlen;
    qo.calib.seed = o->seed;
    qo.n_threads = o->c.threads;
    qo.true_sequential = !o->no_true_seq;
    if (qo.calib.text_path.empty() && qo.recipe.needs_calibration())
      fail("quantize", "recipe '" + qo.recipe.text + "' uses methods that need calibration data: pass --calib FILE");
    log_info("quantizing %s with '%s'%s", m.path.c_str(), qo.recipe.text.c_str(),
             o->calib.empty() ? "" : (", calibration " + o->calib).c_str());
    // Streaming output: every tensor goes to the file as soon as it is final (the layout is planned
    // up front), so memory holds one block's work, not the model.
    std::map<std::string, std::string> meta = m.metadata;
    meta["recipe"] = qo.recipe.text;
    meta["source"] = m.path;
    meta["calib"] = o->calib.empty() ? "" :
        o->calib + " nsamples=" + std::to_string(o->nsamples) + " seqlen=" + std::to_string(o->seqlen) +
        " seed=" + std::to_string(o->seed);
    LmpressStreamWriter writer(o->out, m, plan_quantization(m, qo.recipe), meta);
    qo.sink = &writer;
    QuantizeReport rep;
    quantize_model(m, qo, &rep);
    writer.commit();
    const double fbytes = double(file_size(o->out));
    if (o->c.json) {
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& l : rep.layers)
        layers.push_back({{"name", l.name}, {"method", l.method},
                          {"format", l.method == "keep" || l.method == "f16" || l.method == "bf16" || l.method == "f32" ? l.method : format_name(l.spec)},
                          {"err", l.err}, {"rel_err", l.rel_err}, {"seconds", l.seconds}});
      print_json({{"model", m.path}, {"out", o->out}, {"recipe", qo.recipe.text}, {"params", rep.params},
                  {"bpw", rep.bpw()}, {"file_bytes", fbytes}, {"seconds", rep.seconds},
                  {"peak_rss_mb", double(peak_rss_bytes()) / 1048576.0},
                  {"peak_anon_mb", rep.peak_anon_bytes / 1048576.0}, {"layers", layers}});
      return;
    }
    std::printf("| tensor | method | format | rel. error | seconds |\n|---|---|---|---|---|\n");
    for (const auto& l : rep.layers)
      std::printf("| %s | %s | %s | %.5f | %.3f |\n", l.name.c_str(), l.method.c_str(),
                  l.method == "keep" || l.method == "f16" || l.method == "bf16" || l.method == "f32" ? "-" : format_name(l.spec).c_str(), l.rel_err,
                  l.seconds);
    std::printf("total: %lld params, %.4f bits per weight, file %s (%s), %.2f s, peak RSS %.0f MiB "
                "(anonymous %.0f MiB; the rest is the mapped input)\n",
                (long long)rep.params, rep.bpw(), o->out.c_str(), human_bytes(fbytes).c_str(), rep.seconds,
                double(peak_rss_bytes()) / 1048576.0, rep.peak_anon_bytes / 1048576.0);
  });
}

}  // namespace lmpress::cli
