// lmpress synth: a model of a real shape with random weights (speed work).
#include <cstdio>

#include "common.h"

namespace lmpress::cli {

void add_synth(CLI::App& app) {
  auto* sub = app.add_subcommand("synth", "Write a model of a real shape with random weights (GGUF)");
  struct Opt {
    std::string shape = "tinyllama-1.1b", dtype = "f16", out;
    uint64_t seed = 1;
    bool force = false;
  };
  auto o = std::make_shared<Opt>();
  sub->add_option("--shape", o->shape,
                  "tinyllama-1.1b (1.10 B params: 2.2 GB at f16, 4.4 GB at f32) | llama-3.2-1b (1.24 B: "
                  "2.5 GB at f16) | llama-7b (6.74 B: 13.5 GB at f16) | tiny (test model, 0.1 M)");
  sub->add_option("--dtype", o->dtype, "f32 | f16 | bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  sub->add_option("--seed", o->seed, "Random seed");
  sub->add_option("-o,--out", o->out, "Output .gguf file")->required();
  add_force(sub, o->force);
  add_log_flags(sub);
  sub->callback([o] {
    const DType dt = o->dtype == "f32" ? DType::F32 : o->dtype == "f16" ? DType::F16 : DType::BF16;
    check_output_path(o->out, OutputKind::File, o->force);
    const double t0 = now_seconds();
    Model m = synth_model(o->shape, dt, o->seed);
    write_gguf_model(m, o->out, dt, o->force);
    log_info("wrote %s (%s, %lld params, %s) in %.1f s", o->out.c_str(), o->shape.c_str(),
             (long long)m.n_params(), human_bytes(double(file_size(o->out))).c_str(), now_seconds() - t0);
  });
}

}  // namespace lmpress::cli
