// Fuzz target: GGUF header/metadata/tensor-table parser, then the model loader on inputs that
// parse, then the reference dequantization of tensors of llama.cpp's block types. Any input may
// be rejected with lmpress::Error; nothing else may escape or crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include <vector>

#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace {

// The input as a file the loader can map, without touching the disk.
struct MemFile {
  int fd = -1;
  std::string path;
  MemFile(const uint8_t* data, size_t size) {
    fd = ::memfd_create("fuzz_gguf", 0);
    if (fd < 0) return;
    size_t off = 0;
    while (off < size) {
      const ssize_t w = ::write(fd, data + off, size - off);
      if (w <= 0) return;
      off += size_t(w);
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  ~MemFile() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lmpress::GgufFile g;
  try {
    lmpress::parse_gguf_buffer(data, size, "fuzz", g);
  } catch (const lmpress::Error&) {
    return 0;
  }
  // Every tensor the parser accepted lies inside the buffer.
  for (const auto& t : g.tensors)
    if (t.data < data || t.data + t.nbytes > data + size) __builtin_trap();
  MemFile f(data, size);
  if (f.path.empty()) return 0;
  try {
    lmpress::LoadOptions opt;
    opt.require_tokenizer = false;
    lmpress::Model m = lmpress::load_gguf_model(f.path, opt);
    (void)m.n_params();
    // Packed tensors (llama.cpp block types) passed the load-time checks: the kernels must read
    // them without faults. Dequantize the first row of each (bounded work).
    std::vector<float> row;
    for (const lmpress::Tensor* t : m.weight_tensors())
      if (t->dtype == lmpress::DType::Q && t->cols() <= (1 << 16)) {
        row.resize(size_t(t->cols()));
        lmpress::dequantize_row_ref(*t, 0, row.data());
      }
  } catch (const lmpress::Error&) {
  }
  return 0;
}
