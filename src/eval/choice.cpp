// Multiple-choice scoring (llama.cpp's HellaSwag protocol, generalised to any number of choices):
// per task, the tokens all choices' sequences share are run once; each choice continues from the
// KV cache of that prefix, and the log-probs of its remaining tokens are summed.
#include <algorithm>
#include <cmath>

#include "eval/eval_internal.h"
#include "lmpress/eval.h"

namespace lmpress {

namespace {
struct Prepared {
  std::vector<std::vector<int32_t>> seqs;  // per choice: BOS + tokens(context + " " + choice)
  size_t prefix = 0;                       // tokens shared by every sequence, run once
};

std::string task_where(const ChoiceTask& t) { return "task " + t.id + " (line " + std::to_string(t.line) + ")"; }

Prepared prepare(const Model& m, const ChoiceTask& t, int32_t n_ctx, const std::string& name) {
  Prepared p;
  size_t shortest = SIZE_MAX;
  for (const std::string& c : t.choices) {
    try {
      p.seqs.push_back(m.tokenizer->encode(t.context + " " + c, true));
    } catch (const Error& e) {
      fail(name, task_where(t) + ": " + e.what());
    }
    const size_t len = p.seqs.back().size();
    if (len > size_t(n_ctx))
      fail(name, task_where(t) + ": context + choice is " + std::to_string(len) + " tokens, more than --ctx " +
                     std::to_string(n_ctx) + " (raise --ctx)");
    shortest = std::min(shortest, len);
  }
  // The common prefix, capped so that every sequence keeps at least one token to score.
  const auto& s0 = p.seqs[0];
  while (p.prefix + 1 < shortest &&
         std::all_of(p.seqs.begin(), p.seqs.end(), [&](const auto& s) { return s[p.prefix] == s0[p.prefix]; }))
    ++p.prefix;
  if (p.prefix == 0 || shortest < 2 ||
      !std::all_of(p.seqs.begin(), p.seqs.end(), [&](const auto& s) { return s[0] == s0[0]; }))
    fail(name, task_where(t) +
                   ": the choices' token sequences share no first token (a vocabulary without BOS "
                   "needs a non-empty context)");
  return p;
}

int64_t utf8_chars(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
}  // namespace

ChoiceResult score_choices(const Model& m, const std::vector<ChoiceTask>& tasks, const ChoiceOptions& opt) {
  if (!m.tokenizer) fail(m.path, "multiple-choice scoring needs a tokenizer");
  if (tasks.empty()) fail(opt.name, "no tasks");
  // Tokenize and check every task before any model work: a bad task fails at once.
  std::vector<Prepared> prep;
  prep.reserve(tasks.size());
  size_t longest = 0;
  int64_t beyond = 0;  // tasks with a sequence longer than the trained context
  for (const ChoiceTask& t : tasks) {
    if (t.choices.empty() || t.gold < 0 || size_t(t.gold) >= t.choices.size())
      fail(opt.name, task_where(t) + ": gold index out of range");
    prep.push_back(prepare(m, t, opt.n_ctx > 0 ? opt.n_ctx : INT32_MAX, opt.name));
    size_t len = 0;
    for (const auto& s : prep.back().seqs) len = std::max(len, s.size());
    longest = std::max(longest, len);
    beyond += len > size_t(m.cfg.max_seq_len);
  }
  // The KV cache holds the longest sequence (or --ctx). Like llama.cpp, positions beyond the
  // trained context are run (with a warning), not cut.
  const int32_t n_ctx = opt.n_ctx > 0 ? opt.n_ctx : int32_t(longest);
  if (beyond > 0)
    log_info("warning: %lld of %zu tasks have a sequence beyond the model's trained context of %d tokens "
             "(longest %zu)", (long long)beyond, tasks.size(), m.cfg.max_seq_len, longest);

  EngineOptions eo;
  eo.n_threads = opt.n_threads;
  eo.n_ctx = n_ctx;
  Engine eng(m, eo);
  const int64_t nv = m.cfg.vocab_size;
  std::vector<float> first(static_cast<size_t>(nv)), logits;
  ChoiceResult r;
  r.n_ctx = n_ctx;
  r.per_task.resize(tasks.size());
  const double t0 = now_seconds();
  Progress prog(opt.label, int64_t(tasks.size()));
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const ChoiceTask& t = tasks[ti];
    const Prepared& p = prep[ti];
    ChoiceScore& sc = r.per_task[ti];
    const size_t cp = p.prefix;
    // The shared prefix: only its last position's logits are needed (they predict token cp).
    eng.forward(p.seqs[0].data(), int64_t(cp), 0, first.data(), false);
    r.tokens_evaluated += int64_t(cp);
    for (size_t c = 0; c < p.seqs.size(); ++c) {
      const std::vector<int32_t>& s = p.seqs[c];
      double lp = token_log_prob(first.data(), nv, s[cp]);
      // Tokens cp .. len-2 continue from the prefix's cache; their logits predict cp+1 .. len-1.
      const int64_t n = int64_t(s.size()) - 1 - int64_t(cp);
      if (n > 0) {
        logits.resize(size_t(n * nv));
        eng.forward(s.data() + cp, n, int32_t(cp), logits.data(), true);
        r.tokens_evaluated += n;
        for (int64_t j = 0; j < n; ++j) lp += token_log_prob(logits.data() + j * nv, nv, s[cp + 1 + size_t(j)]);
      }
      if (!std::isfinite(lp))
        fail(m.path, "log-probability of " + task_where(t) + " choice " + std::to_string(c) +
                         " is not finite: the model produces NaN or infinite logits (broken weights or scales)");
      const int32_t count = int32_t(s.size() - cp);
      sc.logprob.push_back(lp);
      sc.n_tokens.push_back(count);
      switch (opt.norm) {
        case ChoiceNorm::Tokens: sc.score.push_back(lp / double(count)); break;
        case ChoiceNorm::None: sc.score.push_back(lp); break;
        case ChoiceNorm::Chars: sc.score.push_back(lp / double(std::max<int64_t>(1, utf8_chars(t.choices[c])))); break;
      }
    }
    sc.pred = int(std::max_element(sc.score.begin(), sc.score.end()) - sc.score.begin());
    r.correct += sc.pred == t.gold;
    if (opt.progress) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "acc %.2f%%", 100.0 * double(r.correct) / double(ti + 1));
      prog.update(int64_t(ti + 1), buf);
    }
  }
  prog.finish();
  r.seconds = now_seconds() - t0;
  r.tasks = int64_t(tasks.size());
  r.accuracy = double(r.correct) / double(r.tasks);
  r.accuracy_se = r.tasks > 1 ? std::sqrt(r.accuracy * (1.0 - r.accuracy) / double(r.tasks - 1)) : 0.0;
  return r;
}

}  // namespace lmpress
