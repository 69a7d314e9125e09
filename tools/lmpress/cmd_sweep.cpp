// lmpress sweep: quantize one model by several recipes in memory and tabulate size and quality
// (bits per weight, PPL, KLD, top-1) against the unquantized model, on one evaluation protocol.
#include <cmath>
#include <cstdio>
#include <sstream>

#include <sys/resource.h>

#include "common.h"
#include "lmpress/compress.h"

namespace lmpress::cli {

namespace {
// User CPU seconds of this process so far (every thread): the quantization's CPU time, which a
// machine shared with other jobs inflates far less than the wall time.
double user_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec);
}
}  // namespace

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
  sub->add_option("-c,--ctx", o->ctx, "Evaluation context")->check(int_between(4, 1 << 24));
  sub->add_option("--protocol", o->protocol, "llamacpp | full")->check(CLI::IsMember({"llamacpp", "full"}));
  sub->add_option("--chunks", o->chunks, "Evaluate at most this many chunks (default -1: all)")
      ->check(int_at_least(1));
  sub->add_option("--nsamples", o->nsamples, "Calibration windows")->check(int_between(1, 1 << 20));
  sub->add_option("--seqlen", o->seqlen, "Tokens per calibration window")->check(int_between(2, 1 << 20));
  sub->add_option("--seed", o->seed, "Seed for window selection");
  sub->callback([o] {
    std::vector<Recipe> recipes;
    for (const auto& r : o->recipes) recipes.push_back(parse_recipe(r));
    const int nt = threads(o->c);
    Model base = load(o->c);
    bool any_calib = false;
    for (const auto& rc : recipes) any_calib = any_calib || rc.needs_calibration();
    if (any_calib && o->calib.empty()) fail("sweep", "a recipe uses gptq: pass --calib FILE");
    if (any_calib && o->seqlen > base.cfg.max_seq_len)
      log_info("warning: --seqlen %d is beyond the model's trained context of %d tokens", o->seqlen,
               base.cfg.max_seq_len);
    const std::vector<int32_t> tokens = tokenize_file(base, o->text);
    int64_t n_chunks = int64_t(tokens.size()) / o->ctx;
    if (n_chunks == 0)
      fail(o->text, "text too short: " + std::to_string(tokens.size()) + " tokens, one chunk of --ctx " +
                        std::to_string(o->ctx) + " needs " + std::to_string(o->ctx));
    if (o->chunks > 0) n_chunks = std::min(n_chunks, o->chunks);
    {
      const ModelConfig& c = base.cfg;
      const double mem = 2.0 * double(base.n_params()) * 4.0 + 2.0 * engine_bytes(c, o->ctx, o->ctx, true) +
                         (any_calib ? double(o->nsamples) * o->seqlen * c.dim * 8.0 +
                                          8.0 * (3.0 * c.dim * c.dim + double(c.hidden_dim) * c.hidden_dim)
                                    : 0.0);
      check_memory(mem, base.path, "sweep", "lower --nsamples, --seqlen or --ctx");
      const double tps = measure_prefill_tps(base, nt);
      const double eval_tokens = double(n_chunks) * o->ctx;
      const double est = eval_tokens / tps * (1 + 2.0 * double(recipes.size())) +
                         (any_calib ? 3.0 * o->nsamples * o->seqlen / tps * double(recipes.size()) : 0.0);
      log_info("sweep: %zu recipes, %lld evaluation chunks of %d tokens: about %s and %s", recipes.size(),
               (long long)n_chunks, o->ctx, human_seconds(est).c_str(), human_bytes(mem).c_str());
    }
    PerplexityOptions po;
    po.n_ctx = o->ctx;
    po.protocol = o->protocol;
    po.n_threads = nt;
    po.max_chunks = o->chunks;
    po.progress = false;
    const PerplexityResult b = perplexity(base, tokens, po);
    if (!std::isfinite(b.ppl)) fail(base.path, "base perplexity is not finite: the model produces NaN or infinite logits");
    nlohmann::json rows = nlohmann::json::array();
    FILE* out = o->c.json ? stderr : stdout;  // the table goes to stderr when stdout carries JSON
    std::fprintf(out, "model %s, eval %s (%s, ctx %d, %lld scored tokens), base PPL %.4f\n", base.path.c_str(),
                o->text.c_str(), b.protocol.c_str(), b.n_ctx, (long long)b.scored_tokens, b.ppl);
    std::fprintf(out, "| recipe | bpw | PPL | KLD | top-1 | quantize s | quantize CPU-s |\n|---|---|---|---|---|---|---|\n");
    std::fflush(out);
    po.base = &base;
    Progress prog("sweep", int64_t(recipes.size()));
    int64_t done = 0;
    for (const auto& rc : recipes) {
      QuantizeOptions qo;
      qo.recipe = rc;
      qo.calib.text_path = o->calib;
      qo.calib.nsamples = o->nsamples;
      qo.calib.seqlen = o->seqlen;
      qo.calib.seed = o->seed;
      qo.n_threads = nt;
      qo.progress = false;
      if (!rc.needs_calibration()) qo.calib.text_path.clear();
      QuantizeReport rep;
      const double cpu0 = user_cpu_seconds();
      Model q = quantize_model(base, qo, &rep);
      const double cpu = user_cpu_seconds() - cpu0;
      const PerplexityResult r = perplexity(q, tokens, po);
      if (!std::isfinite(r.ppl) || !std::isfinite(r.kld))
        fail(base.path, "recipe '" + rc.text + "' gives a non-finite PPL or KLD (NaN or Inf)");
      std::fprintf(out, "| %s | %.4f | %.4f | %.5f | %.2f%% | %.1f | %.1f |\n", rc.text.c_str(), rep.bpw(), r.ppl,
                  r.kld, 100.0 * r.top1, rep.seconds, cpu);
      std::fflush(out);
      prog.update(++done, rc.text);
      rows.push_back({{"recipe", rc.text}, {"bpw", rep.bpw()}, {"ppl", r.ppl}, {"ppl_base", r.ppl_base},
                      {"kld", r.kld}, {"kld_se", r.kld_sd}, {"top1", r.top1}, {"quantize_seconds", rep.seconds},
                      {"quantize_cpu_seconds", cpu}});
    }
    if (o->c.json)
      print_json({{"model", base.path}, {"text", o->text}, {"protocol", b.protocol}, {"ctx", b.n_ctx},
                  {"scored_tokens", b.scored_tokens}, {"ppl_base", b.ppl}, {"calib", o->calib},
                  {"nsamples", o->nsamples}, {"seqlen", o->seqlen}, {"rows", rows}});
  });
}

}  // namespace lmpress::cli
