#include <algorithm>
#include <cmath>

#include "eval/eval_internal.h"
#include "lmpress/eval.h"

namespace lmpress {

PerplexityResult perplexity(const Model& m, const std::vector<int32_t>& tokens,
                            const PerplexityOptions& opt) {
  PerplexityResult r;
  r.protocol = opt.protocol;
  r.n_ctx = opt.n_ctx;
  const int64_t n_ctx = opt.n_ctx;
  if (opt.protocol != "llamacpp" && opt.protocol != "full")
    fail("", "unknown perplexity protocol '" + opt.protocol + "' (use llamacpp or full)");
  if (n_ctx < 4) fail("", "--ctx must be at least 4");
  if (n_ctx > m.cfg.max_seq_len)
    log_info("warning: --ctx %lld exceeds the model's trained context %d", (long long)n_ctx,
             m.cfg.max_seq_len);
  int64_t n_chunks = int64_t(tokens.size()) / n_ctx;
  if (opt.max_chunks >= 0) n_chunks = std::min(n_chunks, opt.max_chunks);
  if (n_chunks <= 0)
    fail("", "text too short: " + std::to_string(tokens.size()) + " tokens, need at least " +
                 std::to_string(n_ctx) + " for one chunk");
  if (opt.base && opt.base->cfg.vocab_size != m.cfg.vocab_size)
    fail(opt.base->path, "base model vocabulary differs from the evaluated model's");

  EngineOptions eo;
  eo.n_threads = opt.n_threads;
  eo.n_ctx = int32_t(n_ctx);
  Engine eng(m, eo);
  std::unique_ptr<Engine> base_eng;
  if (opt.base) base_eng = std::make_unique<Engine>(*opt.base, eo);

  const int64_t nv = m.cfg.vocab_size;
  const int64_t first = opt.protocol == "llamacpp" ? n_ctx / 2 : 0;
  std::vector<float> logits(size_t(n_ctx * nv)), blogits;
  if (opt.base) blogits.resize(logits.size());
  std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
  std::vector<double> lp, blp;
  double sum = 0, sum2 = 0, bsum = 0, ksum = 0, ksum2 = 0;
  int64_t count = 0, agree = 0;
  const double t0 = now_seconds();
  Progress prog("perplexity", n_chunks);
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::copy(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx, chunk.begin());
    if (opt.protocol == "llamacpp" && m.tokenizer && m.tokenizer->bos() >= 0) chunk[0] = m.tokenizer->bos();
    eng.forward(chunk.data(), n_ctx, 0, logits.data(), true);
    if (base_eng) base_eng->forward(chunk.data(), n_ctx, 0, blogits.data(), true);
    for (int64_t j = first; j < n_ctx - 1; ++j) {
      const int32_t target = chunk[size_t(j + 1)];
      log_softmax(logits.data() + j * nv, nv, lp);
      const double nll = -lp[size_t(target)];
      sum += nll;
      sum2 += nll * nll;
      ++count;
      if (base_eng) {
        log_softmax(blogits.data() + j * nv, nv, blp);
        bsum += -blp[size_t(target)];
        double kl = 0;
        for (int64_t i = 0; i < nv; ++i) kl += std::exp(blp[size_t(i)]) * (blp[size_t(i)] - lp[size_t(i)]);
        ksum += kl;
        ksum2 += kl * kl;
        const auto am = std::max_element(lp.begin(), lp.end()) - lp.begin();
        const auto bm = std::max_element(blp.begin(), blp.end()) - blp.begin();
        agree += am == bm;
      }
    }
    if (opt.progress) prog.update(c + 1, "ppl " + std::to_string(std::exp(sum / double(count))));
  }
  prog.finish();
  r.seconds = now_seconds() - t0;
  r.chunks = n_chunks;
  r.scored_tokens = count;
  r.nll = sum / double(count);
  r.ppl = std::exp(r.nll);
  const double var = std::max(0.0, sum2 / double(count) - r.nll * r.nll);
  r.nll_sd = std::sqrt(var / double(std::max<int64_t>(1, count - 1)));
  if (base_eng) {
    r.has_base = true;
    r.nll_base = bsum / double(count);
    r.ppl_base = std::exp(r.nll_base);
    r.kld = ksum / double(count);
    const double kvar = std::max(0.0, ksum2 / double(count) - r.kld * r.kld);
    r.kld_sd = std::sqrt(kvar / double(std::max<int64_t>(1, count - 1)));
    r.top1 = double(agree) / double(count);
  }
  return r;
}

}  // namespace lmpress
