// Fuzz target: the lmpress container (.lmp) loader: safetensors header, lmpress metadata (config,
// packed-tensor table, embedded vocabulary), the shared config validation, tensor shapes and
// the NaN/Inf check. Any input may be rejected with lmpress::Error; nothing else may escape or
// crash, and an accepted model is consistent: validate() holds and every tensor lies inside the
// buffer (or is owned by the model).
#include <cstdint>

#include "lmpress/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lmpress::LoadOptions opt;
  opt.require_tokenizer = false;
  try {
    const lmpress::Model m = lmpress::parse_lmpress_buffer(data, size, "fuzz.lmp", opt);
    m.validate();
    for (const lmpress::Tensor* t : m.weight_tensors()) {
      const uint8_t* p = static_cast<const uint8_t*>(t->data);
      const bool inside = p >= data && p + t->nbytes <= data + size;
      if (!t->owner && !inside) __builtin_trap();
    }
    if (m.tokenizer) {
      // The embedded vocabulary is usable: encoding and decoding a short text does not crash.
      const auto ids = m.tokenizer->encode("Once upon a time \xff", true);
      for (int32_t id : ids)
        if (id < 0 || id >= m.cfg.vocab_size) __builtin_trap();
      (void)m.tokenizer->decode(ids);
    }
  } catch (const lmpress::Error&) {
  }
  return 0;
}
