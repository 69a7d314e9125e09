// `lmpress report`: the mixed-precision search as a table, a budget-vs-KLD SVG and allocation heat
// maps, from the machine-readable outputs of `quantize --target-bpw --json` and `perplexity --json`
// (docs/methods.md, "Mixed precision under a budget").
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "common.h"
#include "lmpress/compress.h"

namespace lmpress::cli {

namespace {

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("not JSON: ") + e.what());
  }
}
double num(const nlohmann::json& j, const char* k, const std::string& where) {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) fail(where, std::string("missing number '") + k + "'");
  return j[k].get<double>();
}
std::string str(const nlohmann::json& j, const char* k, const std::string& where) {
  if (!j.is_object() || !j.contains(k) || !j[k].is_string()) fail(where, std::string("missing string '") + k + "'");
  return j[k].get<std::string>();
}

struct Row {
  std::string series, label;
  int64_t bytes = 0, target = 0;
  double target_bpw = 0, kld = 0, ppl = 0, top1 = 0, seconds = 0;
  std::vector<std::string> names;
  std::vector<double> bits;
};

struct ReportOpt {
  std::vector<std::string> runs, uniforms, anchors;
  std::string out, title = "mixed precision under a budget";
  bool force = false;
};

void run_report(const ReportOpt& o) {
  if (o.runs.empty() && o.uniforms.empty()) fail("report", "nothing to report: pass --run Q.json,P.json or --uniform P.json");
  std::vector<Row> rows;
  std::vector<Row> anchors;  // checked first: a bad --anchor fails before any file is read
  for (const auto& a : o.anchors) {
    Row row;
    row.series = "llama.cpp";
    char name[128] = {0};
    long long bytes = 0;
    double kld = 0;
    char extra = 0;
    if (std::sscanf(a.c_str(), "%127[^:]:%lld:%lf%c", name, &bytes, &kld, &extra) != 3 || bytes <= 0 || !(kld > 0))
      fail("report", "--anchor takes NAME:WEIGHT_BYTES:KLD, not '" + a + "'");
    row.label = name, row.bytes = bytes, row.kld = kld;
    anchors.push_back(std::move(row));
  }
  int64_t params = 0;
  auto set_params = [&](int64_t p, const std::string& where) {
    if (params && p != params) fail(where, "a different model (params " + std::to_string(p) + " vs " + std::to_string(params) + ")");
    params = p;
  };
  for (const auto& r : o.runs) {
    const auto comma = r.find(',');
    if (comma == std::string::npos) fail("report", "--run takes QUANTIZE.json,PERPLEXITY.json[,SERIES], not '" + r + "'");
    const std::string qp = r.substr(0, comma);
    std::string pp = r.substr(comma + 1), series;
    if (const auto c2 = pp.find(','); c2 != std::string::npos) series = pp.substr(c2 + 1), pp = pp.substr(0, c2);
    const auto q = read_json(qp), p = read_json(pp);
    Row row;
    row.series = series.empty() ? str(q, "allocator", qp) : series;
    for (const auto& x : rows)
      if (x.series == row.series && x.target == int64_t(num(q, "target_bytes", qp)))
        fail(qp, "a second run of series '" + row.series + "' at the same target (name it: --run Q.json,P.json,SERIES)");
    row.bytes = int64_t(num(q, "weight_bytes", qp));
    row.target = int64_t(num(q, "target_bytes", qp));
    set_params(int64_t(num(q, "params", qp)), qp);
    if (row.bytes > row.target) fail(qp, "weight bytes exceed the target");
    if (str(p, "model", pp) != str(q, "out", qp))
      fail(pp, "evaluates " + str(p, "model", pp) + ", not the quantized file " + str(q, "out", qp));
    row.kld = num(p, "kld", pp);
    row.ppl = num(p, "ppl", pp);
    row.top1 = num(p, "top1", pp);
    row.seconds = num(q, "allocator_seconds", qp) + q.value("kl_sensitivity_seconds", 0.0);
    if (!q.contains("tensors") || !q["tensors"].is_array()) fail(qp, "missing 'tensors'");
    for (const auto& t : q["tensors"]) {
      row.names.push_back(str(t, "name", qp));
      row.bits.push_back(8.0 * num(t, "bytes", qp) / std::max(1.0, num(t, "numel", qp)));
    }
    row.label = str(q, "note", qp);
    rows.push_back(std::move(row));
  }
  for (const auto& u : o.uniforms) {
    const auto p = read_json(u);
    const Model m = load_model(str(p, "model", u));
    Row row;
    row.series = "uniform";
    for (const Tensor* t : m.weight_tensors()) row.bytes += int64_t(t->nbytes);
    set_params(m.n_params(), u);
    auto it = m.metadata.find("recipe");
    row.label = it != m.metadata.end() ? it->second : m.path;
    row.kld = num(p, "kld", u);
    row.ppl = num(p, "ppl", u);
    row.top1 = num(p, "top1", u);
    rows.push_back(std::move(row));
  }
  rows.insert(rows.end(), anchors.begin(), anchors.end());
  if (!params) fail("report", "no run or uniform file gives the parameter count");
  auto bpw = [&](int64_t b) { return 8.0 * double(b) / double(params); };
  // outputs, all composed before anything is written
  std::map<std::string, std::string> files;
  std::vector<BudgetPoint> pts;
  for (const auto& r : rows) pts.push_back({r.series, r.label, bpw(r.bytes), r.kld});
  files["budget-kld.svg"] = budget_kld_svg(pts, o.title + ": KLD vs weight bits per parameter");
  std::set<int64_t> targets;
  for (const auto& r : rows)
    if (r.target) targets.insert(r.target);
  std::string md = "# " + o.title + "\n\nparams " + std::to_string(params) +
                   "; bpw = 8 x weight bytes / params; KLD on the evaluation text of each perplexity run.\n\n";
  md += "| target bpw | target bytes | allocator | weight bytes | % of target | bpw | KLD | PPL | top-1 | search s |\n";
  md += "|---|---|---|---|---|---|---|---|---|---|\n";
  nlohmann::json jrows = nlohmann::json::array();
  char buf[512];
  for (int64_t t : targets)
    for (const auto& r : rows)
      if (r.target == t) {
        std::snprintf(buf, sizeof buf, "| %.2f | %lld | %s | %lld | %.3f%% | %.4f | %.5f | %.4f | %.2f%% | %.1f |\n",
                      bpw(t), (long long)t, r.series.c_str(), (long long)r.bytes, 100.0 * double(r.bytes) / double(t),
                      bpw(r.bytes), r.kld, r.ppl, 100 * r.top1, r.seconds);
        md += buf;
        char title[256];
        std::snprintf(title, sizeof title, "%s at %.2f bpw (bits per weight of each tensor)", r.series.c_str(), bpw(t));
        std::snprintf(buf, sizeof buf, "alloc-%s-%.2f.svg", r.series.c_str(), bpw(t));
        files[buf] = allocation_heatmap_svg(r.names, r.bits, title);
      }
  md += "\nBest uniform recipe and llama.cpp type at no more weight bytes than the target:\n\n| target bpw |";
  std::vector<std::string> series;
  for (const auto& r : rows)
    if (r.target && std::find(series.begin(), series.end(), r.series) == series.end()) series.push_back(r.series);
  for (const auto& s : series) md += " " + s + " KLD |";
  md += " best uniform ≤ target (bpw, KLD) | best llama.cpp ≤ target (bytes, KLD) |\n|---|";
  for (size_t k = 0; k < series.size() + 2; ++k) md += "---|";
  md += "\n";
  for (int64_t t : targets) {
    std::snprintf(buf, sizeof buf, "| %.2f |", bpw(t));
    md += buf;
    for (const auto& s : series) {
      std::string cell = " |";
      for (const auto& r : rows)
        if (r.target == t && r.series == s) std::snprintf(buf, sizeof buf, " %.5f |", r.kld), cell = buf;
      md += cell;
    }
    for (const char* kind : {"uniform", "llama.cpp"}) {
      const Row* best = nullptr;
      for (const auto& r : rows)
        if (r.series == kind && r.bytes <= t && (!best || r.kld < best->kld)) best = &r;
      if (!best) {
        md += " none |";
      } else if (std::string(kind) == "uniform") {
        std::snprintf(buf, sizeof buf, " %s %.4f, %.5f |", best->label.c_str(), bpw(best->bytes), best->kld);
        md += buf;
      } else {
        std::snprintf(buf, sizeof buf, " %s %lld, %.5f |", best->label.c_str(), (long long)best->bytes, best->kld);
        md += buf;
      }
    }
    md += "\n";
  }
  for (const auto& r : rows)
    jrows.push_back({{"series", r.series}, {"label", r.label}, {"weight_bytes", r.bytes}, {"target_bytes", r.target},
                     {"bpw", bpw(r.bytes)}, {"kld", r.kld}, {"ppl", r.ppl}, {"top1", r.top1},
                     {"search_seconds", r.seconds}, {"names", r.names}, {"bits", r.bits}});
  files["report.md"] = md;
  files["report.json"] = nlohmann::json{{"params", params}, {"rows", jrows}}.dump(1) + "\n";
  if (!o.force)
    for (const auto& [name, text] : files)
      if (file_exists(o.out + "/" + name)) fail(o.out + "/" + name, "exists (pass --force to overwrite)");
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) fail(o.out, "cannot create the report directory: " + ec.message());
  for (const auto& [name, text] : files) {
    AtomicFile f(o.out + "/" + name, true);
    f.write(text);
    f.commit();
  }
  std::fputs(md.c_str(), stdout);
  std::printf("\nwritten: %zu files in %s\n", files.size(), o.out.c_str());
}

}  // namespace

void add_report(CLI::App& app) {
  auto* sub = app.add_subcommand("report", "Report a mixed-precision search: table, budget-vs-KLD SVG, allocation heat maps");
  auto o = std::make_shared<ReportOpt>();
  add_log_flags(sub);
  sub->add_option("--run", o->runs,
                  "QUANTIZE.json,PERPLEXITY.json[,SERIES]: `quantize --target-bpw --json` and `perplexity --kl-base "
                  "--json` of its output; SERIES names the line (default: the allocator) (repeatable)");
  sub->add_option("--uniform", o->uniforms, "PERPLEXITY.json of a uniform model (its file gives the bytes; repeatable)");
  sub->add_option("--anchor", o->anchors, "NAME:WEIGHT_BYTES:KLD of a llama.cpp file (repeatable)");
  sub->add_option("--title", o->title, "Title of the plots");
  sub->add_option("-o,--out", o->out, "Output directory (report.md, report.json, budget-kld.svg, alloc-*.svg)")->required();
  add_force(sub, o->force);
  sub->callback([o] { run_report(*o); });
}

}  // namespace lmpress::cli
