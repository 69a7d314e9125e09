// Task accuracy: `hellaswag` (llama.cpp's --hellaswag protocol and task selection) and `mc`
// (generic multiple-choice JSONL). Both share the scorer (score_choices) and the report.
#include <cmath>
#include <cstdio>

#include "common.h"

namespace lmpress::cli {

namespace {
struct ChoiceCli {
  Common c;
  std::string file, norm = "tokens";
  int ctx = 0;
  int64_t n_tasks = -1;
  bool in_order = false, per_task = false;
};

void add_choice_options(CLI::App* sub, ChoiceCli& o) {
  add_common(sub, o.c, true, true);
  sub->add_option("-c,--ctx", o.ctx,
                  "KV cache length: every context + choice sequence must fit (default 0: as long as the "
                  "longest one)")
      ->check(int_between(0, 1 << 24));
  sub->add_flag("--per-task", o.per_task, "Print every task's prediction and per-choice scores");
}

const char* norm_name(ChoiceNorm n) {
  return n == ChoiceNorm::Tokens ? "tokens" : n == ChoiceNorm::None ? "none" : "chars";
}

// Loads the model, scores the selected tasks and prints the report (text or JSON).
void run_choice(const ChoiceCli& o, const std::string& verb, const std::vector<ChoiceTask>& tasks,
                size_t total, const std::string& selection, ChoiceNorm norm) {
  const int nt = threads(o.c);
  Model m = load(o.c);
  // Memory: the KV cache of --ctx, or (automatic) of about the model's context.
  const int32_t est = o.ctx > 0 ? o.ctx : m.cfg.max_seq_len;
  check_memory(engine_bytes(m.cfg, est, est, true), m.path, verb + " at --ctx " + std::to_string(est),
               "lower --ctx");
  ChoiceOptions co;
  co.n_ctx = o.ctx;
  co.n_threads = nt;
  co.norm = norm;
  co.label = verb;
  co.name = o.file;
  const ChoiceResult r = score_choices(m, tasks, co);
  const double tps = r.seconds > 0 ? double(r.tasks) / r.seconds : 0.0;
  if (o.c.json) {
    nlohmann::json j = {{"model", m.path}, {"file", o.file}, {"tasks", r.tasks}, {"total_tasks", total},
                        {"selection", selection}, {"norm", norm_name(norm)}, {"ctx", r.n_ctx},
                        {"correct", r.correct}, {"accuracy", r.accuracy}, {"stderr", r.accuracy_se},
                        {"seconds", r.seconds}, {"tasks_per_s", tps}, {"tokens_evaluated", r.tokens_evaluated},
                        {"threads", nt}};
    if (o.per_task) {
      nlohmann::json pt = nlohmann::json::array();
      for (size_t i = 0; i < tasks.size(); ++i) {
        const ChoiceScore& s = r.per_task[i];
        pt.push_back({{"id", tasks[i].id}, {"gold", tasks[i].gold}, {"pred", s.pred},
                      {"correct", s.pred == tasks[i].gold}, {"score", s.score}, {"logprob", s.logprob},
                      {"tokens", s.n_tokens}});
      }
      j["per_task"] = pt;
    }
    print_json(j);
    return;
  }
  if (o.per_task) {
    std::printf("task\tid\tgold\tpred\tacc%%\tscores (norm %s)\n", norm_name(norm));
    int64_t correct = 0;
    for (size_t i = 0; i < tasks.size(); ++i) {
      const ChoiceScore& s = r.per_task[i];
      correct += s.pred == tasks[i].gold;
      std::printf("%zu\t%s\t%d\t%d\t%.2f\t", i + 1, tasks[i].id.c_str(), tasks[i].gold, s.pred,
                  100.0 * double(correct) / double(i + 1));
      for (size_t c = 0; c < s.score.size(); ++c) std::printf("%s%.5f", c ? " " : "", s.score[c]);
      std::printf("\n");
    }
  }
  std::printf("model      %s\ntasks      %lld of %zu in %s (%s)\nscoring    norm %s, ctx %d\n",
              m.path.c_str(), (long long)r.tasks, total, o.file.c_str(), selection.c_str(), norm_name(norm), r.n_ctx);
  std::printf("accuracy   %.4f%% +/- %.4f  (%lld correct)\n", 100.0 * r.accuracy, 100.0 * r.accuracy_se,
              (long long)r.correct);
  std::printf("time       %.2f s, %.1f tasks/s, %lld tokens evaluated, %d threads\n", r.seconds, tps,
              (long long)r.tokens_evaluated, nt);
}
}  // namespace

void add_hellaswag(CLI::App& app) {
  auto* sub = app.add_subcommand("hellaswag", "HellaSwag accuracy (llama.cpp's --hellaswag protocol)");
  auto o = std::make_shared<ChoiceCli>();
  sub->add_option("-f,--file", o->file,
                  "HellaSwag text (llama.cpp's format: 6 lines per task), plain or .bz2")
      ->required();
  sub->add_option("--tasks", o->n_tasks,
                  "Score this many tasks, selected as llama.cpp's --hellaswag-tasks does (default: all)")
      ->check(int_at_least(1));
  sub->add_flag("--in-order", o->in_order, "Take the file's first tasks instead of llama.cpp's random selection");
  add_choice_options(sub, *o);
  sub->callback([o] {
    const std::vector<ChoiceTask> all = parse_hellaswag(read_text_input(o->file), o->file);
    const size_t n = o->n_tasks > 0 ? std::min(all.size(), size_t(o->n_tasks)) : all.size();
    std::vector<ChoiceTask> tasks;
    tasks.reserve(n);
    if (o->in_order) {
      tasks.assign(all.begin(), all.begin() + ptrdiff_t(n));
    } else {
      for (size_t i : llamacpp_task_order(all.size(), n)) tasks.push_back(all[i]);
    }
    const std::string selection = o->in_order ? "the first " + std::to_string(n)
                                              : "llama.cpp's random selection, mt19937 seed 1";
    run_choice(*o, "hellaswag", tasks, all.size(), selection, ChoiceNorm::Tokens);
  });
}

void add_mc(CLI::App& app) {
  auto* sub = app.add_subcommand("mc", "Multiple-choice accuracy of JSONL tasks {context, choices, gold}");
  auto o = std::make_shared<ChoiceCli>();
  sub->add_option("-f,--file", o->file,
                  "Tasks, one JSON object per line: {\"context\": str, \"choices\": [str, ...], \"gold\": "
                  "int, \"id\": optional}; plain or .bz2")
      ->required();
  sub->add_option("--norm", o->norm,
                  "tokens: mean log-prob per scored token (as hellaswag); none: sum; chars: sum per "
                  "character of the choice")
      ->check(CLI::IsMember({"tokens", "none", "chars"}));
  sub->add_option("--tasks", o->n_tasks, "Score only the first N tasks (default: all)")->check(int_at_least(1));
  add_choice_options(sub, *o);
  sub->callback([o] {
    std::vector<ChoiceTask> tasks = parse_choice_jsonl(read_text_input(o->file), o->file);
    const size_t total = tasks.size();
    if (o->n_tasks > 0 && size_t(o->n_tasks) < total) tasks.resize(size_t(o->n_tasks));
    const ChoiceNorm norm = o->norm == "none" ? ChoiceNorm::None : o->norm == "chars" ? ChoiceNorm::Chars
                                                                                       : ChoiceNorm::Tokens;
    run_choice(*o, "mc", tasks, total, "the first " + std::to_string(tasks.size()), norm);
  });
}

}  // namespace lmpress::cli
