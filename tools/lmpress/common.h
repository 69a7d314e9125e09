// Shared pieces of the lmpress command-line tool.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "lmpress/core.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"

namespace lmpress::cli {

struct Common {
  std::string model;
  std::string tokenizer;
  int threads = 0;
  bool json = false;
  bool no_check = false;
  // --mmap / --no-mmap (FileLoad, lmpress/core.h); unset: the command's default (set by add_common).
  bool mmap = false, no_mmap = false;
  FileLoad load_default = FileLoad::Mmap;
};

// -q/-v: accepted before and after the subcommand.
struct LogFlags {
  bool quiet = false, verbose = false;
};
LogFlags& log_flags();
void add_log_flags(CLI::App* app);

// Adds --model/-m, --tokenizer, --threads/-t, --json, --no-check, --mmap/--no-mmap, -q/-v. `runtime`:
// a command that runs the model (generate, bench, perplexity, hellaswag, mc): the weights are read
// into memory when they fit (FileLoad::Auto); the others (quantize, convert, inspect, sweep) map them.
void add_common(CLI::App* app, Common& c, bool need_model = true, bool runtime = false);
Model load(const Common& c, bool require_tokenizer = true);
// -t resolved: 0 -> default_threads(); more than the machine's logical CPUs is clamped (a note).
int threads(const Common& c);
void print_json(const nlohmann::json& j);  // stdout, pretty; invalid UTF-8 replaced, never throws
// The whole text file (plain or .bz2) tokenized with BOS; errors name the text file.
std::vector<int32_t> tokenize_file(const Model& m, const std::string& path);
std::string human_bytes(double b);
std::string human_seconds(double s);

// Option validators with short messages (CLI11's Range prints DBL_MAX in full).
CLI::Validator int_at_least(int64_t lo);
CLI::Validator int_between(int64_t lo, int64_t hi);
// A finite number in [lo, hi] (lo_open: lo excluded). NaN and infinities are refused.
CLI::Validator real_between(double lo, double hi, bool lo_open = false);

// Output path checks before any work: an existing output needs --force, a non-regular path (or a
// directory not written by lmpress) is refused.
void add_force(CLI::App* app, bool& force);

// Memory: fails (naming `where`) when `need` bytes exceed what the process can allocate, warns
// above half of it. `what` says what needs it, `hint` what to lower.
void check_memory(double need, const std::string& where, const std::string& what, const std::string& hint);
// Bytes of the KV cache and of the per-token activations of an engine over n_ctx tokens.
double engine_bytes(const ModelConfig& c, int64_t n_ctx, int64_t n_batch, bool all_logits);
// A rough prefill speed (tokens/s) of the model measured on a few tokens: for time estimates.
double measure_prefill_tps(const Model& m, int n_threads);

// Fails when any value is NaN or infinite: `what` names the result (e.g. "logits at token 5").
void require_finite(const float* v, int64_t n, const std::string& where, const std::string& what);

// Each verb registers itself on the root app.
void add_generate(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_inspect(CLI::App& app);
void add_bench(CLI::App& app);
void add_synth(CLI::App& app);
void add_convert(CLI::App& app);
void add_quantize(CLI::App& app);
void add_sweep(CLI::App& app);
void add_hellaswag(CLI::App& app);
void add_mc(CLI::App& app);
void add_report(CLI::App& app);

}  // namespace lmpress::cli
