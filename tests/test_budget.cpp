// Mixed precision under a budget: exact byte accounting, the multiple-choice knapsack against brute
// force, the variant database end to end (file bytes = table bytes <= budget), EvoPress within the
// budget, deterministic, never worse than its start on its own fitness.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_quant_util.h"
#include "test_util.h"

using namespace lmpress;

namespace {
// Least cost over all choices with bytes <= budget (infinity if none): the independent reference.
double brute_mckp(const std::vector<std::vector<int64_t>>& b, const std::vector<std::vector<double>>& c, int64_t budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> ch(b.size(), 0);
  std::function<void(size_t, int64_t, double)> rec = [&](size_t i, int64_t bytes, double cost) {
    if (bytes > budget) return;
    if (i == b.size()) {
      best = std::min(best, cost);
      return;
    }
    for (size_t k = 0; k < b[i].size(); ++k) rec(i + 1, bytes + b[i][k], cost + c[i][k]);
  };
  rec(0, 0, 0.0);
  return best;
}
}  // namespace

TEST(Budget, KnapsackMatchesBruteForce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const int n = 1 + int(rng() % 6), C = 1 + int(rng() % 4);
    std::vector<std::vector<int64_t>> b(static_cast<size_t>(n));
    std::vector<std::vector<double>> c(static_cast<size_t>(n));
    // offsets of a large common size (tensor-like), a common factor on some trials (the gcd grid)
    const int64_t big = int64_t(rng() % 3) * 1000003, mul = 1 + int64_t(rng() % 3) * 4;
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < n; ++i) {
      int64_t mn = INT64_MAX, mx = 0;
      for (int k = 0; k < C; ++k) {
        b[size_t(i)].push_back(big + mul * int64_t(1 + rng() % 40));
        c[size_t(i)].push_back(double(rng() % 1000) / 7.0);
        mn = std::min(mn, b[size_t(i)].back()), mx = std::max(mx, b[size_t(i)].back());
      }
      lo += mn, hi += mx;
    }
    const int64_t budget = lo + int64_t(rng() % uint32_t(hi - lo + 1));
    const double ref = brute_mckp(b, c, budget);
    const KnapsackResult k = solve_mckp(b, c, budget);
    EXPECT_TRUE(k.exact);
    EXPECT_LE(k.bytes, budget);
    EXPECT_NEAR(k.cost, ref, 1e-9) << "trial " << trial;
    int64_t bytes = 0;
    double cost = 0;
    for (int i = 0; i < n; ++i) bytes += b[size_t(i)][size_t(k.choice[size_t(i)])], cost += c[size_t(i)][size_t(k.choice[size_t(i)])];
    EXPECT_EQ(bytes, k.bytes);
    EXPECT_NEAR(cost, k.cost, 1e-9);
    // a coarse grid: still within the budget, never better than the optimum
    const KnapsackResult q = solve_mckp(b, c, budget, 3);
    EXPECT_LE(q.bytes, budget);
    EXPECT_GE(q.cost, ref - 1e-9);
  }
  // below the cheapest choice: a one-line error
  EXPECT_THROW(solve_mckp({{10, 20}, {5}}, {{1, 0}, {0}}, 14), Error);
}

TEST(Budget, ExactBytesPerCandidate) {
  Model m = synth_model("tiny", DType::F32, 3);  // dim 64, hidden 192, 2 layers, vocab 300, untied
  const auto cands = parse_candidates("rtn:w2g64 rtn:w4g32a rtn:w8row");
  const BudgetTable t = budget_table(m, cands);
  // independent arithmetic: codes bits*rows*cols/8, an f16 scale per group, a u8 zero per group (a)
  auto bytes = [](int64_t rows, int64_t cols, int bits, int64_t group, bool asym) {
    const int64_t groups = rows * ((cols + group - 1) / group);
    return rows * cols * bits / 8 + groups * 2 + (asym ? groups : 0);
  };
  ASSERT_EQ(t.names.size(), size_t(2 * 7 + 2));  // 7 linear per layer, embedding, untied classifier
  int64_t fixed = 0, params = 0;
  for (const Tensor* x : m.weight_tensors()) {
    params += x->numel();
    const auto it = std::find(t.names.begin(), t.names.end(), x->name);
    if (it == t.names.end()) {
      fixed += x->numel() * 4;  // norms, f32
      continue;
    }
    const size_t i = size_t(it - t.names.begin());
    const int64_t r = x->rows(), c = x->cols();
    EXPECT_EQ(t.bytes[i][0], bytes(r, c, 2, 64, false)) << x->name;
    EXPECT_EQ(t.bytes[i][1], bytes(r, c, 4, 32, true)) << x->name;
    EXPECT_EQ(t.bytes[i][2], bytes(r, c, 8, c, false)) << x->name;
  }
  EXPECT_EQ(t.fixed_bytes, fixed);
  EXPECT_EQ(t.params, params);
  EXPECT_EQ(bpw_to_bytes(2.5, 1000), 312);
  EXPECT_EQ(bpw_to_bytes(4.0, 1000), 500);
  for (const char* bad : {"", "keep", "awq:w4g128", "rtn:w4g32 rtn:w4g32", "rtn:w3g64+s0.5", "gptq:w9g32"})
    EXPECT_THROW(parse_candidates(bad), Error) << bad;
}

namespace {
struct Fixture {
  Model m;
  VariantDb db;
};
Fixture& tiny_db() {
  static Fixture f = [] {
    Fixture x;
    x.m = synth_model("tiny", DType::F32, 3);
    CalibOptions co{test::shared("data/tinystories/calib.txt"), 4, 32, 0};
    x.db = build_variant_db(x.m, parse_candidates("gptq:w2g64 gptq:w3g64 gptq:w4g64 rtn:w8row"), co, 2, false);
    return x;
  }();
  return f;
}
}  // namespace

// The database's variants, assembled by the proxy allocator's choice and written: the file's weight
// bytes are the table's, within the budget and within 1% of it; the loaded file computes what
// the assembled model computes.
TEST(Budget, DatabaseAllocationMeetsBudgetInFile) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Fixture& f = tiny_db();
  const VariantDb& db = f.db;
  for (size_t i = 0; i < db.v.size(); ++i)
    for (size_t c = 0; c < db.candidates.size(); ++c) {
      EXPECT_EQ(int64_t(db.v[i][c].t.nbytes), db.table.bytes[i][c]);
      EXPECT_EQ(db.v[i][c].t.name, db.table.names[i]);
    }
  // the proxy error falls with the bits on every tensor that has a Hessian
  for (size_t i = 0; i < db.v.size(); ++i)
    if (db.v[i][0].rep.err > 0) {
      EXPECT_GT(db.v[i][0].rep.err, db.v[i][2].rep.err) << db.table.names[i];
    }
  test::TempDir dir;
  for (double bpw : {3.0, 3.5, 5.0}) {
    AllocateOptions ao;
    ao.budget = bpw_to_bytes(bpw, db.table.params);
    ao.progress = false;
    const AllocateResult r = find_allocator("proxy").run(db, f.m, ao);
    EXPECT_LE(r.bytes, ao.budget);
    EXPECT_GE(double(r.bytes), 0.99 * double(ao.budget)) << bpw;
    const std::string recipe = allocation_recipe(db, r.choice);
    const Recipe rc = parse_recipe(recipe);
    const Model q = assemble_model(f.m, db, r.choice);
    test::expect_file_matches(f.m, q, plan_quantization(f.m, rc), recipe, dir / ("a" + std::to_string(int(bpw * 10)) + ".lmp"),
                              r.bytes);
  }
}

TEST(Budget, EvoPressStaysInBudgetDeterministicNeverWorse) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Fixture& f = tiny_db();
  CalibOptions kc{test::shared("data/tinystories/calib.txt"), 4, 32, 1};
  KlEvaluator kl(f.m, calibration_windows(f.m, kc), 2);
  AllocateOptions ao;
  ao.budget = bpw_to_bytes(3.2, f.db.table.params);
  ao.kl = &kl;
  ao.seed = 5;
  ao.generations = 6;
  ao.offspring = 6;
  ao.stage_tokens = {16, 32};
  ao.stage_windows = {2, 4};  // the last stage sees every window: the parent's fitness never rises
  ao.stage_survivors = {3, 1};
  ao.progress = false;
  const AllocateResult a = find_allocator("evopress").run(f.db, f.m, ao);
  const AllocateResult b = find_allocator("evopress").run(f.db, f.m, ao);
  EXPECT_LE(a.bytes, ao.budget);
  EXPECT_EQ(a.choice, b.choice);
  EXPECT_EQ(a.score, b.score);
  const AllocateResult start = find_allocator("proxy").run(f.db, f.m, ao);
  const double k0 = kl.kl(assemble_model(f.m, f.db, start.choice), 4, 32);
  const double k1 = kl.kl(assemble_model(f.m, f.db, a.choice), 4, 32);
  EXPECT_NEAR(k1, a.score, 1e-9);
  EXPECT_LE(k1, k0 + 1e-9);
  // the kl allocator: also within the budget
  const AllocateResult k = find_allocator("kl").run(f.db, f.m, ao);
  EXPECT_LE(k.bytes, ao.budget);
  EXPECT_EQ(k.evaluations, int64_t(f.db.v.size() * f.db.candidates.size()));
  EXPECT_THROW(find_allocator("nope"), Error);
}

// The database on disk: saved and loaded back, every variant's bytes and errors are the same; a
// directory built for other candidates is refused.
TEST(Budget, DatabaseOnDiskRoundTrip) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Fixture& f = tiny_db();
  test::TempDir dir;
  save_variant_db(f.db, f.m, dir.path, "calib-desc");
  const VariantDb back = load_variant_db(f.m, f.db.candidates, dir.path, "calib-desc");
  ASSERT_EQ(back.v.size(), f.db.v.size());
  for (size_t i = 0; i < back.v.size(); ++i)
    for (size_t c = 0; c < back.candidates.size(); ++c) {
      const Tensor &a = f.db.v[i][c].t, &b = back.v[i][c].t;
      ASSERT_EQ(a.nbytes, b.nbytes);
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << back.table.names[i];
      EXPECT_EQ(a.format, b.format);
      EXPECT_DOUBLE_EQ(f.db.v[i][c].rep.err, back.v[i][c].rep.err);
    }
  EXPECT_GT(variant_db_disk_bytes(dir.path), back.db_bytes);
  EXPECT_THROW(load_variant_db(f.m, parse_candidates("gptq:w2g64 gptq:w4g64"), dir.path, "calib-desc"), Error);
  EXPECT_THROW(load_variant_db(f.m, f.db.candidates, dir.path, "other calibration"), Error);
}

// The one-shot importance allocators (lim, zd, hessian): within the budget (and within 1% of it),
// deterministic, and their scores are what they claim.
TEST(Budget, ImportanceAllocatorsMeetBudget) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Fixture& f = tiny_db();
  CalibOptions kc{test::shared("data/tinystories/calib.txt"), 4, 32, 1};
  KlEvaluator kl(f.m, calibration_windows(f.m, kc), 2);
  // ZD: the share of weights beyond one standard deviation, recomputed here for every tensor
  const std::vector<double> zd = zd_scores(f.db, f.m);
  ASSERT_EQ(zd.size(), f.db.v.size());
  for (size_t i = 0; i < zd.size(); ++i) {
    const Tensor* t = nullptr;
    for (const Tensor* x : f.m.weight_tensors())
      if (x->name == f.db.table.names[i]) t = x;
    ASSERT_NE(t, nullptr);
    const std::vector<float> w = tensor_to_f32(*t);
    double mean = 0, var = 0;
    for (float x : w) mean += x;
    mean /= double(w.size());
    for (float x : w) var += (x - mean) * (x - mean);
    const double sd = std::sqrt(var / double(w.size()));
    size_t k = 0;
    for (float x : w) k += std::abs(x - mean) > sd;
    EXPECT_NEAR(zd[i], double(k) / double(w.size()), 1e-6) << f.db.table.names[i];
  }
  // LIM: 1 - cos in [0, 2]; every tensor of a block shares its block's score; the embedding the largest
  const std::vector<double> lim = lim_scores(f.db, f.m, kl, 2, 32);
  ASSERT_EQ(lim.size(), f.db.v.size());
  double top = 0;
  for (double s : lim) {
    EXPECT_TRUE(s >= 0 && s <= 2);
    top = std::max(top, s);
  }
  for (size_t i = 0; i < lim.size(); ++i) {
    const std::string& nm = f.db.table.names[i];
    if (nm.rfind("blk.0.", 0) == 0) {
      EXPECT_DOUBLE_EQ(lim[i], lim[0]) << nm;
    }
    if (nm == f.m.tok_embd.name) {
      EXPECT_DOUBLE_EQ(lim[i], top);
    }
  }
  EXPECT_GT(top, 0.0);
  // relative weight errors fall with the bits
  const auto rel = relative_weight_errors(f.db, f.m);
  for (size_t i = 0; i < rel.size(); ++i) EXPECT_GT(rel[i][0], rel[i][2]) << f.db.table.names[i];
  for (const char* name : {"lim", "zd", "hessian"}) {
    for (double bpw : {3.0, 4.5}) {
      AllocateOptions ao;
      ao.budget = bpw_to_bytes(bpw, f.db.table.params);
      ao.kl = &kl;
      ao.progress = false;
      ao.probe_windows = 2, ao.probe_tokens = 32, ao.hutchinson_samples = 2;
      const AllocateResult a = find_allocator(name).run(f.db, f.m, ao);
      const AllocateResult b = find_allocator(name).run(f.db, f.m, ao);
      EXPECT_LE(a.bytes, ao.budget) << name;
      EXPECT_GE(double(a.bytes), 0.99 * double(ao.budget)) << name << " " << bpw;
      EXPECT_EQ(a.bytes, f.db.table.bytes_of(a.choice));
      EXPECT_EQ(a.choice, b.choice) << name;
    }
  }
}

// EvoPress from the kl knapsack (the default start): never worse than its start on the full
// fitness, never leaves the budget, the same for the same seed; a time limit stops it early.
TEST(Budget, EvoPressFromKlStart) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Fixture& f = tiny_db();
  CalibOptions kc{test::shared("data/tinystories/calib.txt"), 4, 32, 1};
  KlEvaluator kl(f.m, calibration_windows(f.m, kc), 2);
  AllocateOptions ao;
  ao.budget = bpw_to_bytes(3.0, f.db.table.params);
  ao.kl = &kl;
  ao.seed = 3;
  ao.generations = 5;
  ao.offspring = 6;
  ao.stage_tokens = {16, 32};
  ao.stage_windows = {2, 4};
  ao.stage_survivors = {3, 1};
  ao.sens_windows = 2, ao.sens_tokens = 32;
  ao.progress = false;
  const auto sens = kl_sensitivities(f.db, f.m, kl, 2, 32, false);
  ao.kl_costs = &sens;
  const AllocateResult start = find_allocator("kl").run(f.db, f.m, ao);
  EXPECT_EQ(start.evaluations, 0);  // the cached sensitivities
  const AllocateResult a = find_allocator("evopress").run(f.db, f.m, ao);
  const AllocateResult b = find_allocator("evopress").run(f.db, f.m, ao);
  EXPECT_LE(a.bytes, ao.budget);
  EXPECT_EQ(a.choice, b.choice);
  const double k0 = kl.kl(assemble_model(f.m, f.db, start.choice), 4, 32);
  const double k1 = kl.kl(assemble_model(f.m, f.db, a.choice), 4, 32);
  EXPECT_LE(k1, k0 + 1e-9);
  EXPECT_NE(a.note.find("start: kl"), std::string::npos) << a.note;
  ao.max_seconds = 1e-9;
  const AllocateResult c = find_allocator("evopress").run(f.db, f.m, ao);
  EXPECT_EQ(c.choice, start.choice);  // stopped before the first generation
  EXPECT_NE(c.note.find("time limit"), std::string::npos);
  ao.evo_start = "nope";
  EXPECT_THROW(find_allocator("evopress").run(f.db, f.m, ao), Error);
}

namespace {
// Well-formed XML as far as SVG needs: every tag closed in order, attributes quoted, no bare '&'.
bool balanced_xml(const std::string& s, std::string* why) {
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    const size_t e = s.find('>', i);
    if (e == std::string::npos) return *why = "unterminated tag", false;
    std::string tag = s.substr(i + 1, e - i - 1);
    i = e + 1;
    if (tag.empty()) return *why = "empty tag", false;
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return *why = "mismatched </" + tag.substr(1) + ">", false;
      stack.pop_back();
      continue;
    }
    const bool self = tag.back() == '/';
    const std::string name = tag.substr(0, tag.find_first_of(" /"));
    if (std::count(tag.begin(), tag.end(), '"') % 2) return *why = "unbalanced quotes in <" + name + ">", false;
    if (!self) stack.push_back(name);
  }
  for (size_t k = 0; (k = s.find('&', k)) != std::string::npos; ++k)
    if (s.compare(k, 4, "&lt;") && s.compare(k, 4, "&gt;") && s.compare(k, 5, "&amp;") && s.compare(k, 6, "&quot;") &&
        s.compare(k, 6, "&apos;"))
      return *why = "bare &", false;
  if (!stack.empty()) return *why = "unclosed <" + stack.back() + ">", false;
  return true;
}
size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t k = 0; (k = s.find(what, k)) != std::string::npos; k += what.size()) ++n;
  return n;
}
}  // namespace

TEST(Budget, ReportSvgWellFormedAndFaithful) {
  std::vector<BudgetPoint> pts = {{"evopress", "", 3.0, 0.03}, {"evopress", "", 2.5, 0.08}, {"kl", "", 3.0, 0.035},
                                  {"uniform", "gptq:w3g64,mse & co", 3.27, 0.04}, {"llama.cpp", "IQ2_XS", 2.64, 0.109}};
  std::string why;
  const std::string svg = budget_kld_svg(pts, "wiki5m <test>");
  EXPECT_TRUE(balanced_xml(svg, &why)) << why;
  EXPECT_EQ(count(svg, "<circle"), pts.size());
  EXPECT_EQ(count(svg, "<polyline"), size_t(1));  // only evopress has two points
  EXPECT_NE(svg.find("evopress: 2.5000 bpw, KLD 0.08<"), std::string::npos);
  EXPECT_NE(svg.find("uniform gptq:w3g64,mse &amp; co: 3.2700 bpw, KLD 0.04<"), std::string::npos);
  EXPECT_NE(svg.find("wiki5m &lt;test&gt;"), std::string::npos);
  // log-scale y axis pointing up: the smaller KLD has the larger y coordinate
  auto cy = [&](const std::string& title) {
    const size_t t = svg.find(title);
    const size_t c = svg.rfind("cy=\"", t);
    return std::stod(svg.substr(c + 4));
  };
  EXPECT_GT(cy("evopress: 3.0000"), cy("evopress: 2.5000"));
  const std::vector<std::string> names = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_q.weight",
                                          "blk.1.ffn_down.weight", "token_embd.weight"};
  const std::vector<double> bits = {2.25, 4.25, 3.25, 8.5, 6.25};
  const std::string hm = allocation_heatmap_svg(names, bits, "alloc");
  EXPECT_TRUE(balanced_xml(hm, &why)) << why;
  EXPECT_EQ(count(hm, "<title>"), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    char b[64];
    std::snprintf(b, sizeof b, ": %.3f bits</title>", bits[i]);
    EXPECT_NE(hm.find(names[i] + b), std::string::npos) << names[i];
  }
  EXPECT_NE(hm.find(">blk.1<"), std::string::npos);
  EXPECT_NE(hm.find(">other<"), std::string::npos);
  EXPECT_THROW(allocation_heatmap_svg(names, {1.0}, "x"), Error);
}
