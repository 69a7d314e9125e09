#include <cmath>
#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_perplexity(CLI::App& app) {
  auto* sub = app.add_subcommand("perplexity", "Perplexity of a text (and KL divergence vs a base model)");
  struct Opt {
    Common c;
    std::string text, protocol = "llamacpp", kl_base;
    int ctx = 128;
    int64_t chunks = -1;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c, true, true);
  sub->add_option("-f,--text", o->text, "Text file to score")->required();
  sub->add_option("-c,--ctx", o->ctx, "Context (chunk) length in tokens")->check(int_between(4, 1 << 24));
  sub->add_option("--protocol", o->protocol,
                  "llamacpp: BOS-led chunks, second half scored; full: every prediction in "
                  "non-overlapping windows (GPTQ paper)")
      ->check(CLI::IsMember({"llamacpp", "full"}));
  sub->add_option("--chunks", o->chunks, "Score at most this many chunks (default -1: all)")
      ->check(int_at_least(1));
  sub->add_option("--kl-base", o->kl_base, "Base model: report KL divergence, top-1 agreement, PPL of both");
  sub->callback([o] {
    const int nt = threads(o->c);
    Model m = load(o->c);
    std::unique_ptr<Model> base;
    if (!o->kl_base.empty()) {
      LoadOptions lo;
      lo.tokenizer_path = o->c.tokenizer;
      lo.check_tensors = !o->c.no_check;
      base = std::make_unique<Model>(load_model(o->kl_base, lo));
      if (base->cfg.vocab_size != m.cfg.vocab_size)
        fail(o->kl_base, "base model vocabulary (" + std::to_string(base->cfg.vocab_size) +
                             ") differs from the evaluated model's (" + std::to_string(m.cfg.vocab_size) + ")");
    }
    const std::vector<int32_t> tokens = tokenize_file(m, o->text);
    int64_t n_chunks = int64_t(tokens.size()) / o->ctx;
    if (n_chunks == 0)
      fail(o->text, "text too short: " + std::to_string(tokens.size()) + " tokens, one chunk of --ctx " +
                        std::to_string(o->ctx) + " needs " + std::to_string(o->ctx));
    if (o->chunks > 0) n_chunks = std::min(n_chunks, o->chunks);
    if (o->ctx > m.cfg.max_seq_len)
      log_info("warning: --ctx %d is beyond the model's trained context of %d tokens", o->ctx, m.cfg.max_seq_len);
    const double mem = engine_bytes(m.cfg, o->ctx, o->ctx, true) * (base ? 2 : 1) +
                       double(o->ctx) * m.cfg.vocab_size * 4.0 * (base ? 2 : 1);
    check_memory(mem, m.path, "perplexity at --ctx " + std::to_string(o->ctx), "lower --ctx");
    const int64_t work = n_chunks * o->ctx;
    if (work >= 4096) {
      const double tps = measure_prefill_tps(m, nt) / (base ? 2.0 : 1.0);
      if (double(work) / tps >= 5.0)  // only for runs long enough to need it
        log_info("perplexity: %lld chunks of %d tokens, about %s and %s", (long long)n_chunks, o->ctx,
               human_seconds(double(work) / tps).c_str(), human_bytes(mem + double(m.file_bytes)).c_str());
    }
    PerplexityOptions po;
    po.n_ctx = o->ctx;
    po.protocol = o->protocol;
    po.n_threads = nt;
    po.max_chunks = o->chunks;
    po.base = base.get();
    const PerplexityResult r = perplexity(m, tokens, po);
    if (!std::isfinite(r.ppl) || (r.has_base && (!std::isfinite(r.ppl_base) || !std::isfinite(r.kld))))
      fail(!std::isfinite(r.ppl) ? m.path : o->kl_base,
           "perplexity is not finite (PPL " + std::string(std::isfinite(r.ppl) ? "ok" : "nan/inf") +
               "): the model produces NaN or infinite logits (broken weights or scales)");
    if (o->c.json) {
      nlohmann::json j = {{"model", m.path}, {"text", o->text}, {"protocol", r.protocol},
                          {"ctx", r.n_ctx}, {"chunks", r.chunks}, {"scored_tokens", r.scored_tokens},
                          {"nll", r.nll}, {"nll_se", r.nll_sd}, {"ppl", r.ppl}, {"seconds", r.seconds},
                          {"text_tokens", tokens.size()}};
      if (r.has_base) {
        j["kl_base"] = o->kl_base;
        j["ppl_base"] = r.ppl_base;
        j["nll_base"] = r.nll_base;
        j["kld"] = r.kld;
        j["kld_se"] = r.kld_sd;
        j["top1"] = r.top1;
        j["delta_ppl"] = r.ppl - r.ppl_base;
      }
      print_json(j);
    } else {
      std::printf("model      %s\ntext       %s (%zu tokens)\nprotocol   %s, ctx %d, %lld chunks, %lld scored tokens\n",
                  m.path.c_str(), o->text.c_str(), tokens.size(), r.protocol.c_str(), r.n_ctx,
                  (long long)r.chunks, (long long)r.scored_tokens);
      std::printf("PPL        %.4f  (mean NLL %.5f +/- %.5f)\n", r.ppl, r.nll, r.nll_sd);
      if (r.has_base) {
        std::printf("base PPL   %.4f  (%s)\nKLD        %.6f +/- %.6f\ntop-1      %.2f%%\n", r.ppl_base,
                    o->kl_base.c_str(), r.kld, r.kld_sd, 100.0 * r.top1);
      }
      std::printf("time       %.2f s\n", r.seconds);
    }
  });
}

}  // namespace lmpress::cli
