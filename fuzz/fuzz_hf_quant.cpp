// Fuzz target: import of one GPTQ / AWQ linear layer (src/io/hf_quant.cpp). The input is a
// safetensors file whose __metadata__ holds "quantization_config" (JSON text), "out" and "in";
// its tensors w.qweight, w.qzeros, w.scales, w.g_idx are the layer. Any input may be rejected
// with lmpress::Error; nothing else may escape or crash, and an accepted layer has the asked shape.
#include <cstdint>
#include <string>

#include "io/hf_internal.h"
#include "lmpress/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lmpress;
  try {
    SafetensorsFile f;
    parse_safetensors_buffer(data, size, "fuzz", f);
    auto meta = [&](const char* k) -> std::string {
      auto it = f.metadata.find(k);
      return it == f.metadata.end() ? "" : it->second;
    };
    const io_detail::HfQuantConfig q =
        io_detail::parse_hf_quant_config(io_detail::parse_json_text(meta("quantization_config"), "fuzz"), "fuzz");
    const std::string so = meta("out"), si = meta("in");
    if (so.empty() || si.empty() || so.size() > 5 || si.size() > 5) return 0;
    for (char c : so + si)
      if (c < '0' || c > '9') return 0;
    const int64_t out = std::stoll(so), in = std::stoll(si);
    if (out < 1 || in < 1) return 0;
    io_detail::HfQuantParts p;
    p.file = "fuzz";
    p.qweight = f.find("w.qweight");
    p.qzeros = f.find("w.qzeros");
    p.scales = f.find("w.scales");
    p.g_idx = f.find("w.g_idx");
    io_detail::HfQuantDense why;
    const Tensor t = io_detail::import_hf_quant_linear(q, "w", "w", out, in, p, &why);
    if (t.rows() != out || t.cols() != in) __builtin_trap();
  } catch (const lmpress::Error&) {
  }
  return 0;
}
