// lmpress: compress, run and measure Llama-family models on CPU.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

#include "common.h"

namespace lmpress::cli {

LogFlags& log_flags() {
  static LogFlags f;
  return f;
}

void add_log_flags(CLI::App* app) {
  app->add_flag("-q,--quiet", log_flags().quiet, "Only results and errors on stderr");
  app->add_flag("-v,--verbose", log_flags().verbose, "Debug messages on stderr");
}

namespace {
std::string short_value(const std::string& s) { return s.size() > 24 ? s.substr(0, 24) + "..." : s; }
std::string fmt_num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace

CLI::Validator int_between(int64_t lo, int64_t hi) {
  const std::string desc = "INT in " + std::to_string(lo) + ".." + std::to_string(hi);
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (end == s.c_str() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
          return "value " + short_value(s) + " must be an integer in " + std::to_string(lo) + ".." +
                 std::to_string(hi);
        return "";
      },
      desc);
}

CLI::Validator int_at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (end == s.c_str() || *end != '\0' || errno == ERANGE || v < lo || v > INT32_MAX)
          return "value " + short_value(s) + " must be an integer >= " + std::to_string(lo);
        return "";
      },
      "INT >= " + std::to_string(lo));
}

CLI::Validator real_between(double lo, double hi, bool lo_open) {
  const std::string range = (lo_open ? "(" : "[") + fmt_num(lo) + ", " + fmt_num(hi) + "]";
  return CLI::Validator(
      [lo, hi, lo_open, range](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
          return "value " + short_value(s) + " must be a finite number in " + range;
        return "";
      },
      "NUMBER in " + range);
}

void add_force(CLI::App* app, bool& force) {
  app->add_flag("--force", force,
                "Overwrite an existing output (a regular file, or a directory lmpress wrote); other "
                "existing paths are always refused");
}

void add_common(CLI::App* app, Common& c, bool need_model, bool runtime) {
  c.load_default = runtime ? FileLoad::Auto : FileLoad::Mmap;
  auto* o = app->add_option("-m,--model", c.model,
                            "Model: llama2.c .bin, GGUF file, Hugging Face directory or lmpress file");
  if (need_model) o->required();
  app->add_option("--tokenizer", c.tokenizer, "Tokenizer file (overrides the one found beside the model)");
  app->add_option("-t,--threads", c.threads,
                  "Worker threads (0 = all logical CPUs; more than the CPUs is clamped)")
      ->check(int_between(0, ThreadPool::kMaxThreads));
  app->add_flag("--json", c.json, "Machine-readable JSON on stdout");
  app->add_flag("--no-check", c.no_check,
                "Skip the NaN/Inf check of every weight at load (faster on trusted files)");
  auto* mm = app->add_flag("--mmap", c.mmap,
                           std::string("Map the model file instead of reading it into memory") +
                               (runtime ? " (default: read it when it is at most half of the available memory: "
                                          "faster decode)"
                                        : " (the default here)"));
  app->add_flag("--no-mmap", c.no_mmap,
                "Read the model file into private memory (huge pages where the kernel allows) instead of "
                "mapping it")
      ->excludes(mm);
  add_log_flags(app);
}

int threads(const Common& c) {
  const int hw = hardware_threads();
  if (c.threads <= 0) return default_threads();
  if (c.threads > hw) {
    log_info("note: -t %d is more than the %d logical CPUs; using %d threads", c.threads, hw, hw);
    return hw;
  }
  return c.threads;
}

Model load(const Common& c, bool require_tokenizer) {
  set_file_load(c.mmap ? FileLoad::Mmap : c.no_mmap ? FileLoad::Copy : c.load_default);
  LoadOptions lo;
  lo.tokenizer_path = c.tokenizer;
  lo.require_tokenizer = require_tokenizer;
  lo.check_tensors = !c.no_check;
  return load_model(c.model, lo);
}

std::vector<int32_t> tokenize_file(const Model& m, const std::string& path) {
  const std::string text = read_text_input(path);
  try {
    return m.tokenizer->encode(text, true);
  } catch (const Error& e) {
    fail(path, e.what());
  }
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

std::string human_bytes(double b) {
  char buf[64];
  if (b >= 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0)
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

std::string human_seconds(double s) {
  char buf[64];
  if (!std::isfinite(s)) return "?";
  if (s < 90)
    std::snprintf(buf, sizeof buf, "%.0f s", std::max(1.0, s));
  else if (s < 5400)
    std::snprintf(buf, sizeof buf, "%.0f min", s / 60);
  else
    std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
  return buf;
}

void check_memory(double need, const std::string& where, const std::string& what, const std::string& hint) {
  const double avail = double(available_memory_bytes());
  if (need > avail)
    fail(where, what + " needs about " + human_bytes(need) + ", more than the " + human_bytes(avail) +
                    " this process can allocate; " + hint);
  if (need > 0.5 * avail)
    log_info("warning: %s needs about %s of the %s available", what.c_str(), human_bytes(need).c_str(),
             human_bytes(avail).c_str());
}

double engine_bytes(const ModelConfig& c, int64_t n_ctx, int64_t n_batch, bool all_logits) {
  const double kv = 2.0 * double(c.n_layers) * double(n_ctx) * double(c.n_kv_heads) * double(c.head_dim) * 4;
  const double act = double(n_batch) * (4.0 * c.dim + 2.0 * c.n_heads * c.head_dim + 3.0 * c.hidden_dim) * 4 +
                     double(n_batch) * double(n_ctx) * 4;  // attention scores (upper bound)
  const double logits = (all_logits ? double(n_batch) : 1.0) * double(c.vocab_size) * 4;
  return kv + act + logits;
}

double measure_prefill_tps(const Model& m, int n_threads) {
  const int n = int(std::min<int64_t>(32, m.cfg.max_seq_len));
  EngineOptions eo;
  eo.n_threads = n_threads;
  eo.n_ctx = n;
  Engine eng(m, eo);
  std::vector<int32_t> toks(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) toks[size_t(i)] = (3 + i * 7) % m.cfg.vocab_size;
  const double t0 = now_seconds();
  eng.forward(toks.data(), n, 0, nullptr, false);
  const double dt = now_seconds() - t0;
  return dt > 0 ? double(n) / dt : 1e9;
}

void require_finite(const float* v, int64_t n, const std::string& where, const std::string& what) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      fail(where, what + " is NaN or infinite (index " + std::to_string(i) +
                      "): the model's weights or scales are broken");
}

}  // namespace lmpress::cli

int main(int argc, char** argv) {
  using namespace lmpress;
  reexec_with_tuned_blas(argv);
  CLI::App app{"lmpress: make language models small and fast, and measure what it cost"};
  app.option_defaults()->always_capture_default();
  app.require_subcommand(1);
  std::string simd;
  app.add_option("--simd", simd,
                 "Force a kernel level: scalar, avx2 (without AVX-VNNI), avxvnni (AVX2 + AVX-VNNI), avx512 (AVX-512 "
                 "without AMX), amx (AVX-512 + AMX tiles; default: the best the CPU has)")
      ->check(CLI::IsMember({"scalar", "avx2", "avxvnni", "avx512", "amx"}));
  cli::add_log_flags(&app);
  app.set_version_flag("--version", std::string("lmpress ") + LMPRESS_VERSION_STRING);
  cli::add_generate(app);
  cli::add_perplexity(app);
  cli::add_inspect(app);
  cli::add_bench(app);
  cli::add_synth(app);
  cli::add_convert(app);
  cli::add_quantize(app);
  cli::add_sweep(app);
  cli::add_hellaswag(app);
  cli::add_mc(app);
  cli::add_report(app);
  app.parse_complete_callback([&] {
    if (cli::log_flags().quiet) set_log_level(LogLevel::Quiet);
    if (cli::log_flags().verbose) set_log_level(LogLevel::Debug);
    if (!simd.empty()) {
      force_simd_level(simd == "scalar"                       ? SimdLevel::Scalar
                       : simd == "avx2" || simd == "avxvnni" ? SimdLevel::AVX2
                                                             : SimdLevel::AVX512);
      force_amx(simd == "amx");
      force_avxvnni(simd == "avxvnni");
    }
  });
  // The command: the first argument that is not a root option (CLI11 would say "A subcommand is
  // required" for a misspelt one).
  std::string commands;
  std::vector<std::string> names;
  const CLI::App& capp = app;
  for (const CLI::App* sub : capp.get_subcommands([](const CLI::App*) { return true; })) {
    commands += (commands.empty() ? "" : ", ") + sub->get_name();
    names.push_back(sub->get_name());
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--simd") {
      ++i;
      continue;
    }
    if (!a.empty() && a[0] == '-') continue;
    if (std::find(names.begin(), names.end(), a) == names.end()) {
      std::fprintf(stderr, "lmpress: usage error: unknown command '%s' (commands: %s; see --help)\n",
                   a.substr(0, 40).c_str(), commands.c_str());
      return 2;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help/version exit 0; usage errors print one line and exit 2.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string msg = e.what();
    if (msg == "A subcommand is required") msg = "a command is required (" + commands + ")";
    std::fprintf(stderr, "lmpress: usage error: %s (see --help)\n", msg.c_str());
    return 2;
  } catch (const Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "lmpress: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "lmpress: error: out of memory\n");
    return 1;
  } catch (const nlohmann::json::exception& e) {
    std::fflush(stdout);
    std::string msg = e.what();
    if (const size_t p = msg.find("] "); msg.rfind("[json.exception.", 0) == 0 && p != std::string::npos)
      msg = msg.substr(p + 2);
    std::fprintf(stderr, "lmpress: error: JSON: %s\n", msg.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "lmpress: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
