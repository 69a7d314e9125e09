// Fuzz target: llama2.c checkpoint header/size checks, then the loader on inputs that pass.
// Any input may be rejected with lmpress::Error; nothing else may escape or crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "lmpress/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lmpress::ModelConfig c;
  try {
    lmpress::parse_llama2c_buffer(data, size, "fuzz", c);
  } catch (const lmpress::Error&) {
    return 0;
  }
  const int fd = ::memfd_create("fuzz_llama2c", 0);
  if (fd < 0) return 0;
  size_t off = 0;
  while (off < size) {
    const ssize_t w = ::write(fd, data + off, size - off);
    if (w <= 0) break;
    off += size_t(w);
  }
  try {
    lmpress::LoadOptions opt;
    opt.require_tokenizer = false;
    lmpress::Model m = lmpress::load_llama2c("/proc/self/fd/" + std::to_string(fd), opt);
    if (m.cfg.dim != c.dim || m.layers.size() != size_t(c.n_layers)) __builtin_trap();
  } catch (const lmpress::Error&) {
  }
  ::close(fd);
  return 0;
}
