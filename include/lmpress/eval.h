// lmpress eval: perplexity (two documented protocols), KL divergence against a base model,
// multiple-choice task accuracy (HellaSwag), speed benchmark, synthetic models of real shapes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lmpress/engine.h"
#include "lmpress/model.h"

namespace lmpress {

struct PerplexityOptions {
  int32_t n_ctx = 128;
  // "llamacpp": chunks of n_ctx tokens, first token of each chunk set to BOS, predictions of the
  //             second half scored (llama.cpp's perplexity tool).
  // "full":     non-overlapping windows of n_ctx tokens, every prediction inside a window scored
  //             (the GPTQ paper's protocol; the window's first token is the text's own token).
  std::string protocol = "llamacpp";
  int n_threads = 0;
  int64_t max_chunks = -1;          // -1 = all
  const Model* base = nullptr;      // when set: KL divergence of model from base on the same tokens
  bool progress = true;
};

struct PerplexityResult {
  std::string protocol;
  int32_t n_ctx = 0;
  int64_t chunks = 0;
  int64_t scored_tokens = 0;
  double nll = 0;  // mean negative log-likelihood (nats)
  double ppl = 0;
  double nll_sd = 0;  // standard error of the mean NLL
  double seconds = 0;
  // Only with a base model (llama.cpp --kl-divergence definitions):
  bool has_base = false;
  double ppl_base = 0, nll_base = 0;
  double kld = 0, kld_sd = 0;  // mean KL(base || model) per scored token, and its standard error
  double top1 = 0;             // fraction of scored tokens where both argmax agree
};

// Throws Error if the text is too short for one chunk.
PerplexityResult perplexity(const Model& m, const std::vector<int32_t>& tokens,
                            const PerplexityOptions& opt);

// ---- multiple-choice tasks (HellaSwag, generic JSONL; docs/evaluation.md) --------------------
struct ChoiceTask {
  std::string id;       // JSONL "id" (when given), else the task's number in its file (1-based)
  std::string context;
  std::vector<std::string> choices;
  int gold = 0;         // index into choices
  int64_t line = 0;     // first line of the task in its file (1-based), for messages
};

// llama.cpp's HellaSwag text (perplexity --hellaswag): 6 lines per task: context, gold ending
// index (0..3), 4 endings. A trailing '\r' is dropped from every line. Errors name `name`, the
// line and the task.
std::vector<ChoiceTask> parse_hellaswag(std::string_view text, const std::string& name);
// One JSON object per line: {"context": str, "choices": [str, ...] (at least 2), "gold": int,
// "id": str|int (optional)}; other keys are ignored, blank lines skipped. Errors name `name`, the
// line and what is wrong.
std::vector<ChoiceTask> parse_choice_jsonl(std::string_view text, const std::string& name);

// The order in which llama.cpp b4747 (`--hellaswag-tasks n`) takes tasks from a file of `total`:
// std::mt19937 seeded with 1; each pick draws an index uniformly from the tasks not yet taken
// (libstdc++'s uniform_int_distribution, Lemire's method on 32-bit draws) and removes it.
// Returns min(n, total) task indices in the order they are taken.
std::vector<size_t> llamacpp_task_order(size_t total, size_t n);

enum class ChoiceNorm {
  Tokens,  // mean log-prob per scored token (llama.cpp's HellaSwag acc_norm)
  None,    // sum of log-probs
  Chars,   // sum of log-probs / characters (Unicode code points) of the choice
};
struct ChoiceOptions {
  int32_t n_ctx = 0;  // KV cache length; every sequence must fit (0: the longest sequence)
  int n_threads = 0;
  ChoiceNorm norm = ChoiceNorm::Tokens;
  bool progress = true;
  std::string label = "tasks";  // progress label
  std::string name;             // the tasks' file, for messages
};
struct ChoiceScore {
  int pred = -1;                  // argmax of score (the first one on ties)
  std::vector<double> logprob;    // per choice: sum of log p over its scored tokens
  std::vector<int32_t> n_tokens;  // per choice: scored tokens
  std::vector<double> score;      // per choice: logprob normalized by opt.norm
};
struct ChoiceResult {
  int64_t tasks = 0, correct = 0;
  double accuracy = 0;     // correct / tasks
  double accuracy_se = 0;  // sqrt(p (1 - p) / (tasks - 1)), as llama.cpp reports it
  double seconds = 0;
  int64_t tokens_evaluated = 0;  // tokens run through the model (shared prefixes once)
  int32_t n_ctx = 0;             // KV cache length used
  std::vector<ChoiceScore> per_task;
};

// Scores every task: each choice is the sequence BOS + tokens(context + " " + choice); the
// leading tokens shared by all of a task's sequences (at least one, leaving each sequence at
// least one token) are run once, every choice's remaining tokens continue from that KV cache, and
// their log-probs are summed. Throws Error (naming opt.name and the task) for a task whose
// sequences do not fit opt.n_ctx (when set), share no first token, or contain a character the vocabulary
// cannot represent; and when the model's logits are not finite.
ChoiceResult score_choices(const Model& m, const std::vector<ChoiceTask>& tasks, const ChoiceOptions& opt);

struct BenchOptions {
  int n_prompt = 128;
  int n_gen = 32;
  int n_threads = 0;
  int reps = 3;
  // With n_threads > 1: also run every repetition on one thread (same engine code, a 1-thread
  // pool), for the 1 -> n_threads scaling of prefill and decode.
  bool scaling = false;
};
struct BenchResult {
  double prefill_tps = 0, prefill_tps_sd = 0;
  double decode_tps = 0, decode_tps_sd = 0;
  std::vector<double> prefill_runs, decode_runs;
  double peak_rss_mb = 0;
  double weight_bytes = 0;
  double decode_gbps = 0;  // weight bytes streamed per second while decoding
  double prefill_tps_median = 0, decode_tps_median = 0;
  // Linear-layer arithmetic of the prompt (2 x weights x tokens, classifier included) per second
  // at the median prefill speed.
  double prefill_gflops = 0;
  // Per matmul kind (wq, wk, ..., output): "kind: decode path | prefill path" at the active level.
  std::vector<std::string> kernel_paths;
  double prefill_layout_mb = 0;  // repacked prefill copies of the weights (second layout)
  double warmup_s = 0;           // the warm-up forward (includes building the repacked copies)
  // --scaling: medians on one thread (0: not measured).
  double prefill_tps_median_1t = 0, decode_tps_median_1t = 0;
  // Int8 multiply-accumulate peak measured on the engine's threads at the active level (GOP/s,
  // all threads at once; 0 at the scalar level), and which instruction loop measured it.
  double int8_peak_gops = 0;
  std::string int8_peak_kind;
};
BenchResult bench(const Model& m, const BenchOptions& opt);

// Synthetic model of a real shape, random weights (speed work). Shapes: tinyllama-1.1b,
// llama-3.2-1b, llama-7b, and "tiny" (for tests).
Model synth_model(const std::string& shape, DType dtype, uint64_t seed);
std::vector<std::string> synth_shapes();

}  // namespace lmpress
