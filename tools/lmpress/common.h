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
};

// Adds --model/-m, --tokenizer, --threads/-t, --json.
void add_common(CLI::App* app, Common& c, bool need_model = true);
Model load(const Common& c, bool require_tokenizer = true);
void print_json(const nlohmann::json& j);  // stdout, pretty
// The whole text file tokenized with BOS; errors name the text file.
std::vector<int32_t> tokenize_file(const Model& m, const std::string& path);
std::string human_bytes(double b);

// Each verb registers itself on the root app.
void add_generate(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_inspect(CLI::App& app);
void add_bench(CLI::App& app);
void add_synth(CLI::App& app);
void add_convert(CLI::App& app);
void add_quantize(CLI::App& app);
void add_sweep(CLI::App& app);

}  // namespace lmpress::cli
