// lmpress sweep: quantize one model by several recipes in memory and tabulate size and quality
// (bits per weight, PPL, KLD, top-1) against the unquantized model, on one evaluation protocol.
#include <cstdio>
#include <sstream>

#include "common.h"
#include "lmpress/compress.h"

namespace lmpress::cli {

void add_sweep(CLI::App& app) {
  auto* sub = app.add_subcommand("sweep", "Quantize by several recipes and tabulate bpw / PPL / KLD / top-1");
  struct Opt {
    Common c;
    std::vector<std::string> recipes;
    std::string calib, text, protocol = "llamacpp";
    int nsamples = 32, seqlen = 128, ctx = 128;
    uint64_t seed = 0;
    int64_t chunks = -1;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_option("-r,--recipe", o->recipes, "Recipes (repeat the option for several)")->required();
  sub->add_option("--calib", o->calib, "Calibration text");
  sub->add_option("-f,--text", o->text, "Evaluation text")->required();
  sub->add_option("-c,--ctx", o->ctx, "Evaluation context")->check(CLI::PositiveNumber);
  sub->add_option("--protocol", o->protocol, "llamacpp | full")->check(CLI::IsMember({"llamacpp", "full"}));
  sub->add_option("--chunks", o->chunks, "Evaluate at most this many chunks");
  sub->add_option("--nsamples", o->nsamples, "Calibration windows")->check(CLI::PositiveNumber);
  sub->add_option("--seqlen", o->seqlen, "Tokens per calibration window")->check(CLI::Range(2, 1 << 20));
  sub->add_option("--seed", o->seed, "Seed for window selection");
  sub->callback([o] {
    Model base = load(o->c);
    std::vector<Recipe> recipes;
    for (const auto& r : o->recipes) recipes.push_back(parse_recipe(r));
    const std::vector<int32_t> tokens = tokenize_file(base, o->text);
    PerplexityOptions po;
    po.n_ctx = o->ctx;
    po.protocol = o->protocol;
    po.n_threads = o->c.threads;
    po.max_chunks = o->chunks;
    po.progress = false;
    const PerplexityResult b = perplexity(base, tokens, po);
    nlohmann::json rows = nlohmann::json::array();
    FILE* out = o->c.json ? stderr : stdout;  // the table goes to stderr when stdout carries JSON
    std::fprintf(out, "model %s, eval %s (%s, ctx %d, %lld scored tokens), base PPL %.4f\n", base.path.c_str(),
                o->text.c_str(), b.protocol.c_str(), b.n_ctx, (long long)b.scored_tokens, b.ppl);
    std::fprintf(out, "| recipe | bpw | PPL | KLD | top-1 | quantize s |\n|---|---|---|---|---|---|\n");
    std::fflush(out);
    po.base = &base;
    for (const auto& rc : recipes) {
      QuantizeOptions qo;
      qo.recipe = rc;
      qo.calib.text_path = o->calib;
      qo.calib.nsamples = o->nsamples;
      qo.calib.seqlen = o->seqlen;
      qo.calib.seed = o->seed;
      qo.n_threads = o->c.threads;
      qo.progress = false;
      if (!rc.needs_calibration()) qo.calib.text_path.clear();
      QuantizeReport rep;
      Model q = quantize_model(base, qo, &rep);
      const PerplexityResult r = perplexity(q, tokens, po);
      std::fprintf(out, "| %s | %.4f | %.4f | %.5f | %.2f%% | %.1f |\n", rc.text.c_str(), rep.bpw(), r.ppl, r.kld,
                  100.0 * r.top1, rep.seconds);
      std::fflush(out);
      rows.push_back({{"recipe", rc.text}, {"bpw", rep.bpw()}, {"ppl", r.ppl}, {"ppl_base", r.ppl_base},
                      {"kld", r.kld}, {"kld_se", r.kld_sd}, {"top1", r.top1}, {"quantize_seconds", rep.seconds}});
    }
    if (o->c.json)
      print_json({{"model", base.path}, {"text", o->text}, {"protocol", b.protocol}, {"ctx", b.n_ctx},
                  {"scored_tokens", b.scored_tokens}, {"ppl_base", b.ppl}, {"calib", o->calib},
                  {"nsamples", o->nsamples}, {"seqlen", o->seqlen}, {"rows", rows}});
  });
}

}  // namespace lmpress::cli
