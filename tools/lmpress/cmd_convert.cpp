// lmpress convert: write a model as a Hugging Face directory or a GGUF file.
#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_convert(CLI::App& app) {
  auto* sub = app.add_subcommand("convert", "Write a model as a Hugging Face directory or a GGUF file");
  struct Opt {
    Common c;
    std::string out, to, dtype, requant;
    bool force = false;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_option("-o,--out", o->out, "Output directory (hf) or file (gguf)")->required();
  sub->add_option("--to", o->to,
                  "hf | hf-gptq (int-format layers as a GPTQ checkpoint) | gguf (default: from --out: *.gguf -> gguf, else hf)")
      ->check(CLI::IsMember({"hf", "hf-gptq", "gguf"}));
  sub->add_option("--dtype", o->dtype,
                  "f32 | f16 | bf16: every weight in this type, quantized ones dequantized. Default: each weight "
                  "keeps its type (quantized weights: gguf as their exact llama.cpp type, e.g. w4g32 -> Q4_0; "
                  "hf dequantized to f32)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  sub->add_option("--requant", o->requant,
                  "gguf: a llama.cpp type (q4_k, q4_0, q8_0, ...) for quantized weights without an exact llama.cpp "
                  "type: dequantize and re-quantize them (RTN, added error reported) instead of refusing");
  add_force(sub, o->force);
  sub->callback([o] {
    std::string to = o->to;
    if (to.empty()) to = o->out.size() > 5 && o->out.substr(o->out.size() - 5) == ".gguf" ? "gguf" : "hf";
    if (!o->requant.empty() && to != "gguf") throw CLI::ValidationError("--requant", "applies to --to gguf only");
    if (!o->requant.empty() && !o->dtype.empty())
      throw CLI::ValidationError("--requant", "and --dtype exclude each other (--dtype dequantizes every weight)");
    check_output_path(o->out, to == "gguf" ? OutputKind::File : OutputKind::Directory, o->force);
    Model m = load(o->c);
    if (to == "hf-gptq") {
      const DType dt = o->dtype == "f16" ? DType::F16 : o->dtype == "bf16" ? DType::BF16 : DType::F32;
      write_hf_gptq_model(m, o->out, dt, o->force);
      if (o->c.json)
        print_json({{"model", m.path}, {"out", o->out}, {"format", to}, {"dtype", dtype_name(dt)}});
      else
        log_info("wrote %s (%s, dense tensors %s)", o->out.c_str(), to.c_str(), dtype_name(dt));
      return;
    }
    WriteOptions wo;
    if (!o->dtype.empty()) wo.dtype = o->dtype == "f32" ? DType::F32 : o->dtype == "f16" ? DType::F16 : DType::BF16;
    wo.dequantize = wo.dtype.has_value();
    wo.requant = o->requant;
    wo.overwrite = o->force;
    const std::string types = o->dtype.empty() ? "types kept" : o->dtype;
    if (to == "hf") {
      write_hf_model(m, o->out, wo);
      if (o->c.json)
        print_json({{"model", m.path}, {"out", o->out}, {"format", to}, {"dtype", o->dtype.empty() ? "keep" : o->dtype}});
      else
        log_info("wrote %s (%s, %s)", o->out.c_str(), to.c_str(), types.c_str());
      return;
    }
    const GgufWriteReport r = write_gguf_model(m, o->out, wo);
    if (o->c.json) {
      nlohmann::json rq = nlohmann::json::array();
      for (const auto& t : r.requant) rq.push_back({{"tensor", t.name}, {"from", t.from}, {"to", t.to}, {"rel_rms", t.rel_rms}});
      print_json({{"model", m.path}, {"out", o->out}, {"format", to}, {"dtype", o->dtype.empty() ? "keep" : o->dtype},
                  {"file_type", r.file_type}, {"mapped", r.mapped}, {"dequantized", r.n_dequantized},
                  {"asym_tensors", r.n_asym}, {"asym_changed", r.n_asym_changed}, {"asym_max_abs", r.asym_max_abs},
                  {"asym_rel_rms", r.asym_rel_rms}, {"requant", rq}, {"requant_rel_rms", r.requant_rel_rms}});
      return;
    }
    log_info("wrote %s (%s, %s, general.file_type %u)", o->out.c_str(), to.c_str(), types.c_str(), r.file_type);
    std::string mapped;
    for (const auto& [k, n] : r.mapped) mapped += (mapped.empty() ? "" : ", ") + std::to_string(n) + " x " + k;
    if (!mapped.empty()) log_info("quantized weights kept exactly: %s", mapped.c_str());
    if (r.n_dequantized) log_info("%d quantized weights dequantized to %s", r.n_dequantized, o->dtype.c_str());
    if (r.n_asym)
      log_info("asymmetric -> Q4_1/Q5_1 (m = -scale*zero rounded to f16): %d of %d tensors changed, max abs error "
               "%.3g, relative RMS error %.3g",
               r.n_asym_changed, r.n_asym, r.asym_max_abs, r.asym_rel_rms);
    for (const auto& t : r.requant)
      log_info("re-quantized %s: %s -> %s, relative RMS error %.4g", t.name.c_str(), t.from.c_str(), t.to.c_str(), t.rel_rms);
    if (!r.requant.empty())
      log_info("re-quantized %zu tensors to %s: relative RMS error %.4g overall", r.requant.size(),
               r.requant.front().to.c_str(), r.requant_rel_rms);
  });
}

}  // namespace lmpress::cli
