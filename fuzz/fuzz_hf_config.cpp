// Fuzz target: Hugging Face config.json parser. Any input may be rejected with lmpress::Error;
// nothing else may escape or crash.
#include <cstdint>
#include <string>

#include "lmpress/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lmpress::ModelConfig c =
        lmpress::parse_hf_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    // Accepted configurations are usable: positive sizes, heads dividing evenly.
    if (c.dim <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0)
      __builtin_trap();
  } catch (const lmpress::Error&) {
  }
  return 0;
}
