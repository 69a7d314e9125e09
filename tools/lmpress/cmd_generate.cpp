#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_generate(CLI::App& app) {
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt (greedy at --temp 0)");
  struct Opt {
    Common c;
    std::string prompt;
    int n = 64;
    float temp = 0.f, top_p = 1.f;
    uint64_t seed = 0;
    bool stop_eos = true;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_option("-p,--prompt", o->prompt, "Prompt text")->required();
  sub->add_option("-n,--n-predict", o->n, "Tokens to generate")->check(CLI::NonNegativeNumber);
  sub->add_option("--temp", o->temp, "Sampling temperature (0 = greedy)")->check(CLI::NonNegativeNumber);
  sub->add_option("--top-p", o->top_p, "Nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", o->seed, "Random seed");
  sub->add_flag("!--no-stop", o->stop_eos, "Do not stop at the end-of-sequence token");
  sub->callback([o] {
    Model m = load(o->c);
    const Tokenizer& tok = *m.tokenizer;
    std::vector<int32_t> ids = tok.encode(o->prompt, true);
    const size_t n_prompt = ids.size();
    EngineOptions eo;
    eo.n_threads = o->c.threads;
    eo.n_ctx = int32_t(std::min<int64_t>(m.cfg.max_seq_len, int64_t(n_prompt) + o->n + 1));
    if (int64_t(n_prompt) + o->n > m.cfg.max_seq_len)
      log_info("note: prompt + %d tokens exceeds the model's context %d; generation stops there", o->n,
               m.cfg.max_seq_len);
    Engine eng(m, eo);
    Sampler sampler({o->temp, o->top_p, o->seed});
    std::vector<float> logits(size_t(m.cfg.vocab_size));
    const double t0 = now_seconds();
    eng.forward(ids.data(), int64_t(ids.size()), 0, logits.data(), false);
    const double t1 = now_seconds();
    if (!o->c.json) {
      std::fputs(o->prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    std::string text;
    for (int i = 0; i < o->n && int64_t(ids.size()) < eng.n_ctx(); ++i) {
      const int32_t next = sampler.sample(logits.data(), m.cfg.vocab_size);
      if (o->stop_eos && next == tok.eos()) break;
      ids.push_back(next);
      const std::string piece = tok.token_to_piece(next);
      text += piece;
      if (!o->c.json) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      }
      if (i + 1 < o->n && int64_t(ids.size()) < eng.n_ctx())
        eng.forward(&next, 1, int32_t(ids.size() - 1), logits.data(), false);
    }
    const double t2 = now_seconds();
    const size_t n_gen = ids.size() - n_prompt;
    if (o->c.json) {
      print_json({{"prompt", o->prompt}, {"text", text}, {"tokens", ids}, {"n_prompt", n_prompt},
                  {"n_generated", n_gen}, {"prefill_tps", double(n_prompt) / (t1 - t0)},
                  {"decode_tps", n_gen > 1 ? double(n_gen - 1) / (t2 - t1) : 0.0}});
    } else {
      std::fputc('\n', stdout);
      log_info("%zu prompt tokens, %zu generated, prefill %.1f tok/s, decode %.1f tok/s", n_prompt, n_gen,
               double(n_prompt) / (t1 - t0), n_gen > 1 ? double(n_gen - 1) / (t2 - t1) : 0.0);
    }
  });
}

}  // namespace lmpress::cli
