// Fuzz target: the recipe grammar (parse_recipe) and JSON recipe files (load_recipe_file).
// Any input may be rejected with lmpress::Error; nothing else may escape or crash. An accepted
// recipe's canonical text (what output files store) parses again to the same canonical text.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "lmpress/compress.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  try {
    const lmpress::Recipe r = lmpress::parse_recipe(s);
    const lmpress::Recipe again = lmpress::parse_recipe(r.text);
    if (again.text != r.text) __builtin_trap();
    (void)r.rule_for("blk.0.attn_q.weight");
    (void)r.rule_for("output.weight", true);
  } catch (const lmpress::Error&) {
  }
  // The same bytes as a JSON recipe file.
  static const std::string path = "/tmp/lmpress_fuzz_recipe." + std::to_string(::getpid()) + ".json";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
    try {
      const lmpress::Recipe r = lmpress::load_recipe_file(path);
      (void)r.rule_for("token_embd.weight");
    } catch (const lmpress::Error&) {
    }
  }
  return 0;
}
