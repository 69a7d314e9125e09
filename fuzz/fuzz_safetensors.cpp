// Fuzz target: safetensors header parser. Any input may be rejected with lmpress::Error; nothing
// else may escape or crash, and accepted tensors must lie inside the buffer.
#include <cstdint>

#include "lmpress/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lmpress::SafetensorsFile f;
  try {
    lmpress::parse_safetensors_buffer(data, size, "fuzz", f);
  } catch (const lmpress::Error&) {
    return 0;
  }
  for (const auto& t : f.tensors)
    if (t.nbytes && (t.data < data || t.data + t.nbytes > data + size)) __builtin_trap();
  return 0;
}
