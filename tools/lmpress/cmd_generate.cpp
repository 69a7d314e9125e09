// lmpress generate: sample text from a prompt. Logit processing (repeat penalty, top-k, min-p)
// happens here on the logits; the engine's Sampler then applies temperature and top-p.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "common.h"

namespace lmpress::cli {

namespace {

struct GenOpt {
  Common c;
  std::string prompt;
  int n = 64;
  int ctx = 0;
  float temp = 0.f, top_p = 1.f, min_p = 0.f, repeat_penalty = 1.f;
  int top_k = 0, repeat_last_n = 64;
  std::vector<std::string> stops;
  uint64_t seed = 0;
  bool stop_eos = true;
};

// llama.cpp's repetition penalty: logits of recently seen tokens divided (positive) or multiplied
// (negative) by the penalty.
void apply_repeat_penalty(std::vector<float>& logits, const std::vector<int32_t>& ids, int last_n, float penalty) {
  if (penalty == 1.f || last_n <= 0) return;
  std::vector<char> seen(logits.size(), 0);
  const size_t from = ids.size() > size_t(last_n) ? ids.size() - size_t(last_n) : 0;
  for (size_t i = from; i < ids.size(); ++i) {
    const int32_t t = ids[i];
    if (t < 0 || size_t(t) >= logits.size() || seen[size_t(t)]) continue;
    seen[size_t(t)] = 1;
    float& l = logits[size_t(t)];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

// Keeps the k largest logits (ties at the k-th value kept), others -inf.
void apply_top_k(std::vector<float>& logits, int k) {
  if (k <= 0 || size_t(k) >= logits.size()) return;
  std::vector<float> tmp(logits);
  std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
  const float kth = tmp[size_t(k - 1)];
  for (float& l : logits)
    if (l < kth) l = -INFINITY;
}

// Keeps tokens whose probability (at temperature temp) is at least min_p times the top one's.
void apply_min_p(std::vector<float>& logits, float min_p, float temp) {
  if (min_p <= 0.f || temp <= 0.f) return;
  const float mx = *std::max_element(logits.begin(), logits.end());
  const float cut = mx + temp * std::log(min_p);
  for (float& l : logits)
    if (l < cut) l = -INFINITY;
}

}  // namespace

void add_generate(CLI::App& app) {
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt (greedy at --temp 0)");
  auto o = std::make_shared<GenOpt>();
  add_common(sub, o->c, true, true);
  sub->add_option("-p,--prompt", o->prompt, "Prompt text")->required();
  sub->add_option("-n,--n-predict", o->n, "Tokens to generate")->check(int_between(0, 1 << 24));
  sub->add_option("-c,--ctx", o->ctx,
                  "Context (KV cache) length in tokens; 0 = the model's context. Generation stops, "
                  "with a message, when prompt + generated tokens fill it")
      ->check(int_between(0, 1 << 24));
  sub->add_option("--temp", o->temp, "Sampling temperature (0 = greedy)")->check(real_between(0, 100));
  sub->add_option("--top-p", o->top_p, "Nucleus sampling mass")->check(real_between(0, 1, true));
  sub->add_option("--top-k", o->top_k, "Sample from the k most likely tokens only (0 = off)")
      ->check(int_between(0, 1 << 24));
  sub->add_option("--min-p", o->min_p, "Drop tokens less likely than min-p times the top token (0 = off)")
      ->check(real_between(0, 1));
  sub->add_option("--repeat-penalty", o->repeat_penalty, "Penalty for recently generated tokens (1 = off)")
      ->check(real_between(0, 10, true));
  sub->add_option("--repeat-last-n", o->repeat_last_n, "Tokens the repeat penalty looks back over")
      ->check(int_between(0, 1 << 24));
  sub->add_option("--stop", o->stops, "Stop when the text contains this string (repeatable; not printed)");
  auto* seed = sub->add_option("--seed", o->seed, "Random seed (default: a random one, printed)");
  seed->default_str("random");
  sub->add_flag("!--no-stop", o->stop_eos, "Do not stop at the end-of-sequence token");
  sub->callback([o, seed] {
    for (const auto& s : o->stops)
      if (s.empty()) fail("--stop", "a stop string must not be empty");
    const bool seeded = seed->count() > 0;
    if (!seeded) o->seed = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
    const int nt = threads(o->c);
    Model m = load(o->c);
    const Tokenizer& tok = *m.tokenizer;
    std::vector<int32_t> ids = tok.encode(o->prompt, true);
    const int64_t n_prompt = int64_t(ids.size());
    if (n_prompt == 0) fail(m.path, "the prompt is empty and the tokenizer adds no BOS token: give a prompt with -p");
    const int64_t ctx = o->ctx > 0 ? o->ctx : m.cfg.max_seq_len;
    if (ctx > m.cfg.max_seq_len)
      log_info("warning: --ctx %lld is beyond the model's trained context of %d tokens; quality degrades past it",
               (long long)ctx, m.cfg.max_seq_len);
    if (n_prompt > ctx)
      fail(m.path, "the prompt is " + std::to_string(n_prompt) + " tokens, longer than the context of " +
                       std::to_string(ctx) + " tokens" + (o->ctx > 0 ? " (--ctx)" : " (the model's; raise --ctx)"));
    EngineOptions eo;
    eo.n_threads = nt;
    eo.n_ctx = int32_t(std::min<int64_t>(ctx, n_prompt + o->n + 1));
    check_memory(engine_bytes(m.cfg, eo.n_ctx, std::max<int64_t>(n_prompt, 1), false), m.path,
                 "a context of " + std::to_string(eo.n_ctx) + " tokens", "lower -n or --ctx");
    Engine eng(m, eo);
    Sampler sampler({o->temp, o->top_p, o->seed});
    const int32_t nv = m.cfg.vocab_size;
    std::vector<float> logits(static_cast<size_t>(nv));
    const double t0 = now_seconds();
    eng.forward(ids.data(), n_prompt, 0, logits.data(), false);
    require_finite(logits.data(), nv, m.path, "the logits after the prompt");
    const double t1 = now_seconds();
    bool line_open = false;  // text printed on stdout without a final newline
    auto out = [&](const std::string& s) {
      if (o->c.json || s.empty()) return;
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
      line_open = s.back() != '\n';
    };
    auto end_line = [&] {
      if (line_open) std::fputc('\n', stdout);
      std::fflush(stdout);
      line_open = false;
    };
    out(o->prompt);
    size_t max_stop = 0;
    for (const auto& s : o->stops) max_stop = std::max(max_stop, s.size());
    std::string text;
    size_t printed = 0;  // bytes of text already on stdout (held back while they may start a stop string)
    std::string reason = "length";
    int64_t n_gen = 0;
    try {
      for (int i = 0; i < o->n; ++i) {
        if (int64_t(ids.size()) >= eng.n_ctx()) {
          reason = "context";
          break;
        }
        apply_repeat_penalty(logits, ids, o->repeat_last_n, o->repeat_penalty);
        apply_top_k(logits, o->top_k);
        apply_min_p(logits, o->min_p, o->temp);
        const int32_t next = sampler.sample(logits.data(), nv);
        if (o->stop_eos && next == tok.eos()) {
          reason = "eos";
          break;
        }
        ids.push_back(next);
        ++n_gen;
        text += tok.token_to_piece(next);
        size_t stop_at = std::string::npos;
        for (const auto& s : o->stops) {
          const size_t from = printed > s.size() ? printed - s.size() : 0;
          const size_t p = text.find(s, from);
          if (p != std::string::npos) stop_at = std::min(stop_at, p);
        }
        if (stop_at != std::string::npos) {
          text.resize(stop_at);
          reason = "stop";
          break;
        }
        const size_t safe = max_stop ? (text.size() >= max_stop - 1 ? text.size() - (max_stop - 1) : 0) : text.size();
        if (safe > printed) {
          out(text.substr(printed, safe - printed));
          printed = safe;
        }
        if (i + 1 < o->n && int64_t(ids.size()) < eng.n_ctx()) {
          eng.forward(&next, 1, int32_t(ids.size() - 1), logits.data(), false);
          require_finite(logits.data(), nv, m.path, "the logits at position " + std::to_string(ids.size() - 1));
        }
      }
    } catch (...) {
      end_line();  // the text ends with a newline before the error message
      throw;
    }
    if (printed < text.size()) out(text.substr(printed));
    const double t2 = now_seconds();
    const double prefill_tps = double(n_prompt) / std::max(1e-9, t1 - t0);
    const double decode_tps = n_gen > 1 ? double(n_gen - 1) / std::max(1e-9, t2 - t1) : 0.0;
    if (reason == "length" && n_gen < o->n) reason = "context";
    if (o->c.json) {
      print_json({{"prompt", o->prompt}, {"text", text}, {"tokens", ids}, {"n_prompt", n_prompt},
                  {"n_generated", n_gen}, {"n_ctx", eng.n_ctx()}, {"stop_reason", reason}, {"seed", o->seed},
                  {"prefill_tps", prefill_tps}, {"decode_tps", decode_tps}});
      return;
    }
    end_line();
    if (reason == "context")
      log_info("context full: %lld tokens (prompt %lld + %lld generated) fill the context of %d; stopped before -n %d%s",
               (long long)ids.size(), (long long)n_prompt, (long long)n_gen, eng.n_ctx(), o->n,
               o->ctx > 0 || ctx >= m.cfg.max_seq_len ? "" : " (raise --ctx)");
    log_info("%lld prompt tokens, %lld generated, prefill %.1f tok/s, decode %.1f tok/s, seed %llu",
             (long long)n_prompt, (long long)n_gen, prefill_tps, decode_tps, (unsigned long long)o->seed);
  });
}

}  // namespace lmpress::cli
