// lmpress: compress, run and measure Llama-family models on CPU.
#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_common(CLI::App* app, Common& c, bool need_model) {
  auto* o = app->add_option("-m,--model", c.model,
                            "Model: llama2.c .bin, GGUF file, Hugging Face directory or lmpress file");
  if (need_model) o->required();
  app->add_option("--tokenizer", c.tokenizer, "Tokenizer file (overrides the one found beside the model)");
  app->add_option("-t,--threads", c.threads, "Worker threads (default: all cores)");
  app->add_flag("--json", c.json, "Machine-readable JSON on stdout");
}

Model load(const Common& c, bool require_tokenizer) {
  LoadOptions lo;
  lo.tokenizer_path = c.tokenizer;
  lo.require_tokenizer = require_tokenizer;
  return load_model(c.model, lo);
}

std::vector<int32_t> tokenize_file(const Model& m, const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return m.tokenizer->encode(text, true);
  } catch (const Error& e) {
    fail(path, e.what());
  }
}

void print_json(const nlohmann::json& j) { std::printf("%s\n", j.dump(2).c_str()); }

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

}  // namespace lmpress::cli

int main(int argc, char** argv) {
  using namespace lmpress;
  CLI::App app{"lmpress: make language models small and fast, and measure what it cost"};
  app.require_subcommand(1);
  std::string simd;
  bool quiet = false, verbose = false;
  app.add_option("--simd", simd, "Force a kernel level: scalar, avx2, avx512 (default: best the CPU has)")
      ->check(CLI::IsMember({"scalar", "avx2", "avx512"}));
  app.add_flag("-q,--quiet", quiet, "Only results and errors on stderr");
  app.add_flag("-v,--verbose", verbose, "Debug messages on stderr");
  app.set_version_flag("--version", std::string("lmpress ") + LMPRESS_VERSION_STRING);
  cli::add_generate(app);
  cli::add_perplexity(app);
  cli::add_inspect(app);
  cli::add_bench(app);
  cli::add_synth(app);
  cli::add_convert(app);
  cli::add_quantize(app);
  cli::add_sweep(app);
  app.parse_complete_callback([&] {
    if (quiet) set_log_level(LogLevel::Quiet);
    if (verbose) set_log_level(LogLevel::Debug);
    if (!simd.empty())
      force_simd_level(simd == "scalar" ? SimdLevel::Scalar : simd == "avx2" ? SimdLevel::AVX2 : SimdLevel::AVX512);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help/version exit 0; usage errors print one line and exit 2.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "lmpress: usage error: %s (see --help)\n", e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "lmpress: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lmpress: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lmpress: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
