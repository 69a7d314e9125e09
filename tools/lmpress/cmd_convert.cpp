// lmpress convert: write a model as a Hugging Face directory or a GGUF file.
#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_convert(CLI::App& app) {
  auto* sub = app.add_subcommand("convert", "Write a model as a Hugging Face directory or a GGUF file");
  struct Opt {
    Common c;
    std::string out, to, dtype = "f32";
    bool force = false;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_option("-o,--out", o->out, "Output directory (hf) or file (gguf)")->required();
  sub->add_option("--to", o->to,
                  "hf | hf-gptq (int-format layers as a GPTQ checkpoint) | gguf (default: from --out: *.gguf -> gguf, else hf)")
      ->check(CLI::IsMember({"hf", "hf-gptq", "gguf"}));
  sub->add_option("--dtype", o->dtype, "f32 | f16 | bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  add_force(sub, o->force);
  sub->callback([o] {
    std::string to = o->to;
    if (to.empty()) to = o->out.size() > 5 && o->out.substr(o->out.size() - 5) == ".gguf" ? "gguf" : "hf";
    check_output_path(o->out, to == "gguf" ? OutputKind::File : OutputKind::Directory, o->force);
    Model m = load(o->c);
    const DType dt = o->dtype == "f32" ? DType::F32 : o->dtype == "f16" ? DType::F16 : DType::BF16;
    if (to == "hf")
      write_hf_model(m, o->out, dt, o->force);
    else if (to == "hf-gptq")
      write_hf_gptq_model(m, o->out, dt, o->force);
    else
      write_gguf_model(m, o->out, dt, o->force);
    if (o->c.json)
      print_json({{"model", m.path}, {"out", o->out}, {"format", to}, {"dtype", o->dtype}});
    else
      log_info("wrote %s (%s, %s)", o->out.c_str(), to.c_str(), o->dtype.c_str());
  });
}

}  // namespace lmpress::cli
