// Mixed precision under a budget: exact byte accounting, the multiple-choice knapsack against brute
// force, the variant database end to end (file bytes = table bytes <= budget), EvoPress within the
// budget, deterministic, never worse than its start on its own fitness.
#include <cstring>
#include <functional>
#include <random>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
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
    const std::string out = dir / ("a" + std::to_string(int(bpw * 10)) + ".lmp");
    {
      LmpressStreamWriter w(out, f.m, plan_quantization(f.m, rc), {{"recipe", recipe}});
      for (const Tensor* t : q.weight_tensors()) w.put(*t);
      w.commit();
    }
    const Model back = load_model(out);
    int64_t wbytes = 0;
    for (const Tensor* t : back.weight_tensors()) wbytes += int64_t(t->nbytes);
    EXPECT_EQ(wbytes, r.bytes) << bpw;
    const std::vector<int32_t> toks = {1, 5, 9, 17, 33, 65, 129, 7};
    EngineOptions eo;
    eo.n_threads = 1;
    eo.n_ctx = 8;
    std::vector<float> a(8 * 300), b(8 * 300);
    Engine(q, eo).forward(toks.data(), 8, 0, a.data(), true);
    Engine(back, eo).forward(toks.data(), 8, 0, b.data(), true);
    EXPECT_EQ(a, b);
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
