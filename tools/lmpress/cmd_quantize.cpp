#include <cmath>
#include <cstdio>
#include <sstream>

#include "common.h"
#include "lmpress/compress.h"
#include "lmpress/io.h"

namespace lmpress::cli {

namespace {

struct QuantizeOpt {
  Common c;
  std::string recipe = "gptq:w4g32;token_embd.weight=rtn:w8g32", recipe_file, out, calib;
  int nsamples = 32, seqlen = 128;
  uint64_t seed = 0;
  bool no_true_seq = false, force = false;
  // mixed precision under a budget
  double target_bpw = 0;
  int64_t target_bytes = 0;
  std::string candidates, allocator = "proxy", database;
  int generations = 150, offspring = 16, kl_windows = 16;
  std::string evo_start = "kl", stages;
  double search_seconds = 0, guided = 0.5;
  int hutchinson = 4, probe_windows = 2, probe_tokens = 128, sens_windows = 4;
};

// "TOKENSxWINDOWS:SURVIVORS,..." (e.g. "64x4:4,256x16:1"): the evopress selection stages.
void parse_stages(const std::string& s, AllocateOptions& ao) {
  ao.stage_tokens.clear(), ao.stage_windows.clear(), ao.stage_survivors.clear();
  std::istringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    int t = 0, w = 0, k = 0;
    char x = 0, c = 0, extra = 0;
    if (std::sscanf(part.c_str(), "%d%c%d%c%d%c", &t, &x, &w, &c, &k, &extra) != 5 || x != 'x' || c != ':' || t < 1 ||
        w < 1 || k < 1)
      fail("stages", "'" + part + "' is not TOKENSxWINDOWS:SURVIVORS (e.g. \"64x4:4,256x16:1\")");
    ao.stage_tokens.push_back(t), ao.stage_windows.push_back(w), ao.stage_survivors.push_back(k);
  }
  if (ao.stage_tokens.empty()) fail("stages", "no stages given");
}

// The kl sensitivities cached in the database directory (they do not depend on the budget).
std::vector<std::vector<double>> cached_kl_sensitivities(const std::string& dir, const VariantDb& db, const Model& m,
                                                         KlEvaluator& kl, int nw, int nt, uint64_t kl_seed,
                                                         bool* from_cache) {
  const std::string path = dir + "/kl-sensitivities.json";
  *from_cache = false;
  if (file_exists(path)) {
    try {
      const auto j = nlohmann::json::parse(read_text_file(path));
      if (j.at("windows") == nw && j.at("tokens") == nt && j.at("kl_windows") == kl.windows() &&
          j.at("kl_seed") == kl_seed) {
        auto c = j.at("kl").get<std::vector<std::vector<double>>>();
        if (c.size() == db.v.size()) {
          *from_cache = true;
          return c;
        }
      }
    } catch (const nlohmann::json::exception&) {
    }
  }
  auto c = kl_sensitivities(db, m, kl, nw, nt, true);
  AtomicFile f(path, true);
  f.write(nlohmann::json{{"windows", nw}, {"tokens", nt}, {"kl_windows", kl.windows()}, {"kl_seed", kl_seed},
                         {"names", db.table.names}, {"kl", c}}
              .dump(1));
  f.commit();
  return c;
}

// --target-bpw / --target-bytes: the database of variants, an allocator, the chosen variants
// written as one file (docs/methods.md, "Mixed precision under a budget").
void quantize_to_budget(const QuantizeOpt& o) {
  if (o.calib.empty()) fail("quantize", "--target-bpw/--target-bytes need calibration data: pass --calib FILE");
  const AllocatorInfo& alloc = find_allocator(o.allocator);
  if (o.evo_start != "kl" && o.evo_start != "proxy") fail("quantize", "--evo-start must be kl or proxy, not '" + o.evo_start + "'");
  if (!o.stages.empty()) {
    AllocateOptions check;
    parse_stages(o.stages, check);  // a bad --stages fails before any work
  }
  const std::vector<TensorRule> cands = parse_candidates(o.candidates.empty() ? kDefaultCandidates : o.candidates);
  const int nt = threads(o.c);
  Model m = load(o.c);
  const BudgetTable table = budget_table(m, cands);
  const int64_t target = o.target_bytes > 0 ? o.target_bytes : bpw_to_bytes(o.target_bpw, table.params);
  auto bpw = [&](int64_t b) { return 8.0 * double(b) / double(table.params); };
  if (target < table.min_bytes())
    fail("quantize", "the budget of " + std::to_string(target) + " weight bytes (" + std::to_string(bpw(target)) +
                         " bpw) is below the cheapest candidates' " + std::to_string(table.min_bytes()) + " bytes (" +
                         std::to_string(bpw(table.min_bytes())) + " bpw)");
  if (target >= table.max_bytes())
    log_info("note: the budget (%.4f bpw) holds every tensor on its largest candidate (%.4f bpw)", bpw(target),
             bpw(table.max_bytes()));
  CalibOptions calib{o.calib, o.nsamples, o.seqlen, o.seed};
  log_info("database: %zu candidates x %zu tensors of %s, calibration %s", cands.size(), table.names.size(),
           m.path.c_str(), o.calib.c_str());
  const std::string calib_desc = o.calib + " nsamples=" + std::to_string(o.nsamples) + " seqlen=" +
                                 std::to_string(o.seqlen) + " seed=" + std::to_string(o.seed);
  VariantDb db;
  bool reused = false;
  if (!o.database.empty() && file_exists(o.database + "/database.json")) {
    db = load_variant_db(m, cands, o.database, calib_desc);
    reused = true;
    log_info("database %s reused (built in %.1f s; %s on disk)", o.database.c_str(), db.seconds,
             human_bytes(double(variant_db_disk_bytes(o.database))).c_str());
  } else {
    db = build_variant_db(m, cands, calib, nt);
    log_info("database built in %.1f s, %s of packed variants", db.seconds, human_bytes(double(db.db_bytes)).c_str());
    if (!o.database.empty()) {
      save_variant_db(db, m, o.database, calib_desc);
      db = load_variant_db(m, cands, o.database, calib_desc);  // what a later run reads
      log_info("database saved to %s (%s)", o.database.c_str(), human_bytes(double(variant_db_disk_bytes(o.database))).c_str());
    }
  }
  std::unique_ptr<KlEvaluator> kl;
  if (alloc.needs_kl) {
    CalibOptions kc = calib;
    kc.seed = o.seed + 1;  // other windows than the statistics' ones
    kc.nsamples = o.kl_windows;
    kl = std::make_unique<KlEvaluator>(m, calibration_windows(m, kc), nt);
  }
  AllocateOptions ao;
  ao.budget = target;
  ao.seed = o.seed;
  ao.n_threads = nt;
  ao.kl = kl.get();
  ao.generations = o.generations;
  ao.offspring = o.offspring;
  ao.stage_tokens = {std::max(2, o.seqlen / 4), o.seqlen};
  ao.stage_windows = {std::max(1, o.kl_windows / 4), o.kl_windows};
  ao.stage_survivors = {std::max(1, o.offspring / 4), 1};
  if (!o.stages.empty()) parse_stages(o.stages, ao);
  ao.sens_windows = std::min(o.sens_windows, o.kl_windows);
  ao.sens_tokens = o.seqlen;
  ao.evo_start = o.evo_start;
  ao.max_seconds = o.search_seconds;
  ao.guided = o.guided;
  ao.hutchinson_samples = o.hutchinson;
  ao.probe_windows = o.probe_windows;
  ao.probe_tokens = o.probe_tokens;
  std::vector<std::vector<double>> sens;
  double sens_seconds = 0;
  bool sens_cached = false;
  const std::string an = alloc.name;
  if (!o.database.empty() && (an == "kl" || an == "mixllm" || an == "kl-rows" || (an == "evopress" && o.evo_start == "kl"))) {
    const double t0 = now_seconds();
    sens = cached_kl_sensitivities(o.database, db, m, *kl, ao.sens_windows, ao.sens_tokens, o.seed + 1, &sens_cached);
    sens_seconds = now_seconds() - t0;
    ao.kl_costs = &sens;
    log_info("kl sensitivities %s (%.1f s)", sens_cached ? "from the database directory" : "measured and cached",
             sens_seconds);
  }
  const AllocateResult ar = alloc.run(db, m, ao);
  if (ar.bytes > target) fail("quantize", "internal: the allocation exceeds the budget");  // never
  const std::string recipe = allocation_recipe(db, ar.choice, &ar.rules);
  auto own = [&](size_t i) { return !ar.tensors.empty() && !ar.tensors[i].empty(); };
  auto tensor_of = [&](size_t i) -> const Tensor& { return own(i) ? ar.tensors[i] : db.v[i][size_t(ar.choice[i])].t; };
  auto rule_of = [&](size_t i) { return own(i) ? ar.rules[i] : cands[size_t(ar.choice[i])].text; };
  const Recipe rc = parse_recipe(recipe);
  const std::vector<PlannedTensor> plan = plan_quantization(m, rc);
  int64_t planned = 0;
  for (const auto& p : plan) planned += int64_t(p.nbytes);
  if (planned != ar.bytes) fail("quantize", "internal: planned bytes differ from the budget table");
  std::map<std::string, std::string> meta = m.metadata;
  meta["recipe"] = recipe;
  meta["source"] = m.path;
  meta["calib"] = calib_desc;
  meta["allocation"] = std::string(alloc.name) + " target_bytes=" + std::to_string(target);
  {
    const Model q = assemble_model(m, db, ar.choice, &ar.tensors);
    LmpressStreamWriter writer(o.out, m, plan, meta, o.force);
    for (const Tensor* t : q.weight_tensors()) writer.put(*t);
    writer.commit();
  }
  const uint64_t fbytes = file_size(o.out);
  const double used = 100.0 * double(ar.bytes) / double(target);
  if (used < 99.0)
    log_info("note: the allocation uses %.2f%% of the budget (the candidates cannot fill it closer)", used);
  if (o.c.json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (size_t i = 0; i < ar.choice.size(); ++i) {
      const Variant& v = db.v[i][size_t(ar.choice[i])];
      const Tensor& t = tensor_of(i);
      nlohmann::json tj = {{"name", db.table.names[i]}, {"rule", rule_of(i)},
                           {"format", format_name(format_spec(t.format))}, {"bytes", int64_t(t.nbytes)},
                           {"numel", t.numel()}};
      if (!own(i)) tj["err"] = v.rep.err, tj["rel_err"] = v.rep.rel_err;
      tensors.push_back(tj);
    }
    nlohmann::json cj = nlohmann::json::array();
    for (const auto& c : cands) cj.push_back(c.text);
    print_json({{"model", m.path}, {"out", o.out}, {"recipe", recipe}, {"allocator", alloc.name},
                {"candidates", cj}, {"target_bytes", target}, {"weight_bytes", ar.bytes},
                {"fixed_bytes", table.fixed_bytes}, {"budget_used", double(ar.bytes) / double(target)},
                {"params", table.params}, {"bpw", bpw(ar.bytes)}, {"file_bytes", fbytes},
                {"database_seconds", db.seconds}, {"database_bytes", db.db_bytes}, {"database_reused", reused},
                {"database_dir", o.database},
                {"allocator_seconds", ar.seconds}, {"allocator_score", ar.score},
                {"kl_sensitivity_seconds", sens_seconds}, {"kl_sensitivities_cached", sens_cached},
                {"target_bpw", bpw(target)}, {"seed", o.seed},
                {"kl_evaluations", ar.evaluations}, {"note", ar.note}, {"tensors", tensors}});
    return;
  }
  std::printf("| tensor | rule | bytes | rel. error |\n|---|---|---|---|\n");
  for (size_t i = 0; i < ar.choice.size(); ++i) {
    const Variant& v = db.v[i][size_t(ar.choice[i])];
    if (own(i))
      std::printf("| %s | %s | %lld | |\n", db.table.names[i].c_str(), rule_of(i).c_str(), (long long)tensor_of(i).nbytes);
    else
      std::printf("| %s | %s | %lld | %.5f |\n", db.table.names[i].c_str(), rule_of(i).c_str(),
                  (long long)db.table.bytes[i][size_t(ar.choice[i])], v.rep.rel_err);
  }
  std::printf("allocator %s (%s): %.2f s, %lld KL evaluations, objective %.6g\n", alloc.name, ar.note.c_str(),
              ar.seconds, (long long)ar.evaluations, ar.score);
  std::printf("budget %lld weight bytes (%.4f bpw); used %lld (%.4f bpw, %.3f%% of the budget; %lld bytes of norms "
              "and other fixed tensors)\n",
              (long long)target, bpw(target), (long long)ar.bytes, bpw(ar.bytes), used, (long long)table.fixed_bytes);
  std::printf("database: %zu candidates x %zu tensors, built in %.1f s%s, %s of variants; file %s (%s)\n",
              cands.size(), db.v.size(), db.seconds, reused ? " (reused)" : "", human_bytes(double(db.db_bytes)).c_str(),
              o.out.c_str(),
              human_bytes(double(fbytes)).c_str());
}

}  // namespace


void add_quantize(CLI::App& app) {
  auto* sub = app.add_subcommand("quantize", "Compress a model by a recipe into an lmpress file");
  auto o = std::make_shared<QuantizeOpt>();
  add_common(sub, o->c);
  sub->add_option("-r,--recipe", o->recipe,
                  "Recipe, e.g. \"gptq:w4g32,act_order;token_embd.weight=rtn:w8g32\" (docs/recipes.md)");
  sub->add_option("--recipe-file", o->recipe_file, "JSON recipe file (overrides --recipe)");
  sub->add_option("-o,--out", o->out, "Output lmpress file (.lmp)")->required();
  sub->add_option("--calib", o->calib, "Calibration text (required by gptq)");
  sub->add_option("--nsamples", o->nsamples, "Calibration windows")->check(int_between(1, 1 << 20));
  sub->add_option("--seqlen", o->seqlen, "Tokens per calibration window")->check(int_between(2, 1 << 20));
  sub->add_option("--seed", o->seed, "Seed for window selection");
  sub->add_flag("--no-true-sequential", o->no_true_seq,
                "Capture all inputs of a block before quantizing any of it (faster, slightly worse)");
  auto* o_bpw = sub->add_option("--target-bpw", o->target_bpw,
                  "Mixed precision: choose each tensor's rule among --candidates so that the weights take at "
                  "most this many bits per weight (all weight tensors counted)")->check(real_between(0.5, 32, true));
  auto* o_bytes = sub->add_option("--target-bytes", o->target_bytes, "Mixed precision: the budget as total weight bytes")
                      ->check(CLI::Range(int64_t(1), int64_t(1) << 50));
  o_bpw->excludes(o_bytes);
  sub->add_option("--candidates", o->candidates,
                  std::string("Space-separated rules a tensor may get (default \"") + kDefaultCandidates + "\")");
  sub->add_option("--database", o->database,
                  "Keep the variant database in DIR (one uniform .lmp per candidate + database.json) and reuse it "
                  "when DIR already holds one for the same model, calibration and candidates");
  sub->add_option("--allocator", o->allocator, "proxy | kl | evopress | lim | zd | hessian | mixllm | kl-rows (docs/methods.md)");
  sub->add_option("--evo-start", o->evo_start, "evopress: start from the 'kl' (default) or 'proxy' knapsack");
  sub->add_option("--stages", o->stages,
                  "evopress: selection stages TOKENSxWINDOWS:SURVIVORS,... (default: seqlen/4 x kl-windows/4 : "
                  "offspring/4, seqlen x kl-windows : 1)");
  sub->add_option("--search-seconds", o->search_seconds, "evopress: stop after the generation that passes this time")
      ->check(CLI::Range(0.0, 1e7));
  sub->add_option("--evo-guided", o->guided,
                  "evopress from kl: probability that a level switch picks its tensor by the kl sensitivities (KL per "
                  "byte) instead of uniformly (default 0.5; 0: the reference's uniform switches)")
      ->check(real_between(0, 1));
  sub->add_option("--sens-windows", o->sens_windows,
                  "kl (and evopress's kl start): windows of each variant's own KL (x --seqlen tokens; default 4)")
      ->check(int_between(1, 1 << 16));
  sub->add_option("--hutchinson", o->hutchinson, "hessian: random probes per tensor")->check(int_between(1, 1000));
  sub->add_option("--probe-windows", o->probe_windows, "lim / hessian: calibration windows of the probes")
      ->check(int_between(1, 1 << 16));
  sub->add_option("--probe-tokens", o->probe_tokens, "lim / hessian: tokens per probe window")
      ->check(int_between(2, 1 << 20));
  sub->add_option("--generations", o->generations, "evopress: generations")->check(int_between(0, 1000000));
  sub->add_option("--offspring", o->offspring, "evopress: offspring per generation")->check(int_between(1, 10000));
  sub->add_option("--kl-windows", o->kl_windows, "kl / evopress: calibration windows for the KL fitness (seed + 1)")
      ->check(int_between(1, 1 << 16));
  add_force(sub, o->force);
  sub->callback([o, sub] {
    check_output_path(o->out, OutputKind::File, o->force);
    if (o->target_bpw > 0 || o->target_bytes > 0) {
      if (sub->count("--recipe") || sub->count("--recipe-file"))
        fail("quantize", "--target-bpw/--target-bytes choose the rules from --candidates; do not pass --recipe");
      quantize_to_budget(*o);
      return;
    }
    if (sub->count("--candidates") || sub->count("--allocator") || sub->count("--database") || sub->count("--stages") ||
        sub->count("--evo-start"))
      fail("quantize", "--candidates, --allocator and --database need --target-bpw or --target-bytes");
    QuantizeOptions qo;
    qo.recipe = o->recipe_file.empty() ? parse_recipe(o->recipe) : load_recipe_file(o->recipe_file);
    const int nt = threads(o->c);
    Model m = load(o->c);
    qo.calib.text_path = o->calib;
    qo.calib.nsamples = o->nsamples;
    qo.calib.seqlen = o->seqlen;
    qo.calib.seed = o->seed;
    qo.n_threads = nt;
    qo.true_sequential = !o->no_true_seq;
    if (qo.calib.text_path.empty() && qo.recipe.needs_calibration())
      fail("quantize", "recipe '" + qo.recipe.text + "' uses methods that need calibration data: pass --calib FILE");
    const bool calibrated = !qo.calib.text_path.empty();
    {
      // Memory: the output model, plus with calibration the residual streams of every window, the
      // per-layer Hessians and one engine over a window.
      const ModelConfig& c = m.cfg;
      const double tokens = calibrated ? double(o->nsamples) * o->seqlen : 0.0;
      const double qd = double(c.n_heads) * c.head_dim;
      double need = double(m.n_params()) * 4.0;
      if (calibrated)
        need += tokens * c.dim * 4.0 * 2 + 8.0 * (2.0 * c.dim * c.dim + qd * qd + double(c.hidden_dim) * c.hidden_dim) +
                engine_bytes(c, o->seqlen, o->seqlen, true);
      check_memory(need, o->calib.empty() ? m.path : o->calib,
                   calibrated ? "quantize with --nsamples " + std::to_string(o->nsamples) + " --seqlen " +
                                    std::to_string(o->seqlen)
                              : std::string("quantize"),
                   calibrated ? "lower --nsamples or --seqlen" : "use a machine with more memory");
      if (calibrated && o->seqlen > m.cfg.max_seq_len)
        log_info("warning: --seqlen %d is beyond the model's trained context of %d tokens; calibration "
                 "activations past it are not representative", o->seqlen, m.cfg.max_seq_len);
      if (calibrated && log_level() >= LogLevel::Info) {
        // Time: calibration forward passes (a few per layer) plus the per-layer solves.
        const double tps = measure_prefill_tps(m, nt);
        if (3.0 * tokens / tps >= 5.0)
          log_info("estimate: about %s of memory, calibration passes about %s", human_bytes(need).c_str(),
                 human_seconds(3.0 * tokens / tps).c_str());
      }
    }
    // Streaming output: every tensor goes to the file as soon as it is final (the layout is planned
    // up front), so memory holds one block's work, not the model.
    std::map<std::string, std::string> meta = m.metadata;
    meta["recipe"] = qo.recipe.text;
    meta["source"] = m.path;
    meta["calib"] = o->calib.empty() ? "" :
        o->calib + " nsamples=" + std::to_string(o->nsamples) + " seqlen=" + std::to_string(o->seqlen) +
        " seed=" + std::to_string(o->seed);
    LmpressStreamWriter writer(o->out, m, plan_quantization(m, qo.recipe), meta, o->force);
    log_info("quantizing %s with '%s'%s", m.path.c_str(), qo.recipe.text.c_str(),
             o->calib.empty() ? "" : (", calibration " + o->calib).c_str());
    qo.sink = &writer;
    QuantizeReport rep;
    quantize_model(m, qo, &rep);
    for (const auto& l : rep.layers)
      if (!std::isfinite(l.err) || !std::isfinite(l.rel_err))
        fail(m.path, "quantizing " + l.name + " gave a non-finite error (NaN or Inf); not writing " + o->out);
    writer.commit();
    const uint64_t fbytes = file_size(o->out);
    // Without calibration there is no Hessian: the error proxy is not measured (0), say so.
    auto measured = [&](const LayerReport& l) { return calibrated && l.rel_err > 0; };
    if (o->c.json) {
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& l : rep.layers)
        layers.push_back({{"name", l.name}, {"method", l.method},
                          {"format", l.method == "keep" || l.method == "f16" || l.method == "bf16" || l.method == "f32" ? l.method : format_name(l.spec)},
                          {"err", measured(l) ? nlohmann::json(l.err) : nlohmann::json(nullptr)},
                          {"rel_err", measured(l) ? nlohmann::json(l.rel_err) : nlohmann::json(nullptr)},
                          {"seconds", l.seconds}});
      print_json({{"model", m.path}, {"out", o->out}, {"recipe", qo.recipe.text}, {"params", rep.params},
                  {"bpw", rep.bpw()}, {"file_bytes", fbytes}, {"seconds", rep.seconds},
                  {"peak_rss_mb", double(peak_rss_bytes()) / 1048576.0},
                  {"peak_anon_mb", rep.peak_anon_bytes / 1048576.0}, {"layers", layers}});
      return;
    }
    std::printf("| tensor | method | format | rel. error | seconds |\n|---|---|---|---|---|\n");
    for (const auto& l : rep.layers) {
      char err[32] = "n/a";
      if (measured(l)) std::snprintf(err, sizeof err, "%.5f", l.rel_err);
      std::printf("| %s | %s | %s | %s | %.3f |\n", l.name.c_str(), l.method.c_str(),
                  l.method == "keep" || l.method == "f16" || l.method == "bf16" || l.method == "f32" ? "-" : format_name(l.spec).c_str(),
                  err, l.seconds);
    }
    if (!calibrated) std::printf("(rel. error n/a: no calibration text, so no activation statistics)\n");
    std::printf("total: %lld params, %.4f bits per weight, file %s (%s), %.2f s, peak RSS %.0f MiB "
                "(anonymous %.0f MiB; the rest is the mapped input)\n",
                (long long)rep.params, rep.bpw(), o->out.c_str(), human_bytes(double(fbytes)).c_str(), rep.seconds,
                double(peak_rss_bytes()) / 1048576.0, rep.peak_anon_bytes / 1048576.0);
  });
}

}  // namespace lmpress::cli
