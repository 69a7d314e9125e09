// Multiple-choice scoring (hellaswag / mc): the scorer's per-choice log-probs against a plain
// full-sequence forward pass with a double-precision log-softmax written here; llama.cpp's task
// selection against libstdc++'s distribution; the task parsers and the .bz2 reader on good and
// hostile input.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>

#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;

namespace {

// Sum of log p(tokens[j] | tokens[..j]) for j in [from, n), from one forward pass over the whole
// sequence (no shared prefix, no cache reuse), log-softmax in double.
double reference_logprob(Engine& eng, const std::vector<int32_t>& toks, size_t from) {
  const int64_t nv = eng.model().cfg.vocab_size, n = int64_t(toks.size());
  std::vector<float> logits(size_t(n * nv));
  eng.reset();
  eng.forward(toks.data(), n, 0, logits.data(), true);
  double sum = 0;
  for (int64_t j = int64_t(from); j < n; ++j) {
    const float* row = logits.data() + (j - 1) * nv;
    double mx = -INFINITY;
    for (int64_t v = 0; v < nv; ++v) mx = std::max(mx, double(row[v]));
    double z = 0;
    for (int64_t v = 0; v < nv; ++v) z += std::exp(double(row[v]) - mx);
    sum += double(row[toks[size_t(j)]]) - mx - std::log(z);
  }
  return sum;
}

ChoiceTask task(std::string ctx, std::vector<std::string> choices, int gold) {
  ChoiceTask t;
  t.context = std::move(ctx);
  t.choices = std::move(choices);
  t.gold = gold;
  t.id = "t";
  t.line = 1;
  return t;
}

std::string expect_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

}  // namespace

TEST(Choice, ScoresMatchFullSequenceReference) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const std::vector<ChoiceTask> tasks = {
      task("Once upon a time, there was a little girl named Lily. She",
           {"liked to play outside with her dog.", "was a big red car.", "said the sun is a spoon and ran.",
            "loved to eat apples."},
           0),
      // The choices share their first words: the shared prefix reaches into the endings.
      task("Tom went to the park.", {"He saw a big dog.", "He saw a small bird in a tree.", "He saw"}, 1),
      task("The cat sat", {"on the mat.", "happily"}, 0),
  };
  ChoiceOptions opt;
  opt.n_threads = 1;
  opt.progress = false;
  opt.name = "inline";
  const ChoiceResult r = score_choices(m, tasks, opt);
  ASSERT_EQ(r.per_task.size(), tasks.size());
  EngineOptions eo;
  eo.n_threads = 1;
  Engine eng(m, eo);
  int64_t correct = 0;
  bool prefix_in_ending = false;
  for (size_t t = 0; t < tasks.size(); ++t) {
    std::vector<std::vector<int32_t>> seqs;
    size_t shortest = SIZE_MAX;
    for (const auto& c : tasks[t].choices) {
      seqs.push_back(m.tokenizer->encode(tasks[t].context + " " + c, true));
      shortest = std::min(shortest, seqs.back().size());
    }
    ASSERT_EQ(seqs[0][0], m.tokenizer->bos());
    size_t cp = 0;  // llama.cpp's common prefix of the sequences, leaving each one token
    for (bool same = true; same && cp + 1 < shortest; cp += same)
      for (const auto& s : seqs) same = same && s[cp] == seqs[0][cp];
    const size_t ctx_len = m.tokenizer->encode(tasks[t].context, true).size();
    prefix_in_ending |= cp > ctx_len;
    const ChoiceScore& sc = r.per_task[t];
    ASSERT_EQ(sc.logprob.size(), seqs.size());
    double best = -INFINITY;
    int best_i = -1;
    for (size_t c = 0; c < seqs.size(); ++c) {
      const double ref = reference_logprob(eng, seqs[c], cp);
      EXPECT_NEAR(sc.logprob[c], ref, 1e-4) << "task " << t << " choice " << c;
      EXPECT_EQ(sc.n_tokens[c], int32_t(seqs[c].size() - cp));
      const double mean = ref / double(seqs[c].size() - cp);
      EXPECT_NEAR(sc.score[c], mean, 1e-4);
      if (mean > best) best = mean, best_i = int(c);
    }
    EXPECT_EQ(sc.pred, best_i) << "task " << t;
    correct += best_i == tasks[t].gold;
  }
  EXPECT_TRUE(prefix_in_ending) << "the second task should share tokens beyond the context";
  EXPECT_EQ(r.correct, correct);
  EXPECT_EQ(r.tasks, 3);
  EXPECT_NEAR(r.accuracy, double(correct) / 3.0, 1e-12);

  // The other normalisations rescale the same sums.
  opt.norm = ChoiceNorm::None;
  const ChoiceResult rs = score_choices(m, tasks, opt);
  opt.norm = ChoiceNorm::Chars;
  const ChoiceResult rc = score_choices(m, tasks, opt);
  for (size_t t = 0; t < tasks.size(); ++t)
    for (size_t c = 0; c < tasks[t].choices.size(); ++c) {
      EXPECT_NEAR(rs.per_task[t].score[c], r.per_task[t].logprob[c], 1e-9);
      EXPECT_NEAR(rc.per_task[t].score[c] * double(tasks[t].choices[c].size()), r.per_task[t].logprob[c], 1e-9);
    }
}

TEST(Choice, TaskTooLongForContext) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  ChoiceOptions opt;
  opt.n_ctx = 8;
  opt.progress = false;
  opt.name = "tasks.jsonl";
  const std::string msg = expect_error([&] {
    score_choices(m, {task("Once upon a time there was a girl", {"who ran far away.", "b"}, 0)}, opt);
  });
  EXPECT_NE(msg.find("tasks.jsonl: task t (line 1): context + choice is"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--ctx 8"), std::string::npos) << msg;
}

TEST(Choice, AccuracyStandardError) {
  // llama.cpp's form sqrt(p (1 - p) / (n - 1)): one right of two gives p = 0.5, se = 0.5.
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  ChoiceOptions opt;
  opt.progress = false;
  // The same task twice with opposite gold labels: exactly one is right.
  const ChoiceTask a = task("The dog", {"ran.", "sat on the big red ball."}, 0);
  ChoiceTask b = a;
  b.gold = 1;
  const ChoiceResult r = score_choices(m, {a, b}, opt);
  EXPECT_EQ(r.correct, 1);
  EXPECT_NEAR(r.accuracy_se, 0.5, 1e-12);
}

TEST(Choice, LlamaCppTaskOrder) {
  const std::vector<size_t> order = llamacpp_task_order(10042, 10042);
  std::vector<bool> seen(10042, false);
  for (size_t i : order) {
    ASSERT_LT(i, 10042u);
    EXPECT_FALSE(seen[i]) << "task " << i << " taken twice";
    seen[i] = true;
  }
  EXPECT_EQ(llamacpp_task_order(10, 400).size(), 10u);
  const std::vector<size_t> first400 = llamacpp_task_order(10042, 400);
  EXPECT_TRUE(std::equal(first400.begin(), first400.end(), order.begin()));
#if defined(__GLIBCXX__) && defined(_GLIBCXX_RELEASE) && _GLIBCXX_RELEASE >= 11
  // llama.cpp b4747 (perplexity.cpp, hellaswag_score) draws with std::uniform_int_distribution;
  // libstdc++ >= 11 is the standard library it is built with on Linux.
  std::mt19937 rng(1);
  std::vector<size_t> left(10042);
  for (size_t i = 0; i < left.size(); ++i) left[i] = i;
  for (size_t i = 0; i < 400; ++i) {
    std::uniform_int_distribution<size_t> dist(0, left.size() - 1);
    const size_t k = dist(rng);
    ASSERT_EQ(order[i], left[k]) << "pick " << i;
    left.erase(left.begin() + ptrdiff_t(k));
  }
#else
  GTEST_SKIP() << "SKIPPED: the std::uniform_int_distribution cross-check needs libstdc++ >= 11";
#endif
}

TEST(Choice, ParseHellaswag) {
  const std::string two =
      "Ctx one\n2\ne0\ne1\ne2\ne3\n"
      "Ctx two: he\r\n0\r\na\r\nb\r\nc\r\nd\r\n";
  const auto t = parse_hellaswag(two, "hs.txt");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].context, "Ctx one");
  EXPECT_EQ(t[0].gold, 2);
  EXPECT_EQ(t[0].choices, (std::vector<std::string>{"e0", "e1", "e2", "e3"}));
  EXPECT_EQ(t[1].context, "Ctx two: he");
  EXPECT_EQ(t[1].choices[3], "d");
  EXPECT_EQ(t[1].line, 7);
  // Without the final newline: the same tasks.
  EXPECT_EQ(parse_hellaswag(two.substr(0, two.size() - 2), "hs.txt").size(), 2u);

  auto err = [](const std::string& text) { return expect_error([&] { parse_hellaswag(text, "hs.txt"); }); };
  EXPECT_EQ(err(""), "hs.txt: no tasks (empty file)");
  EXPECT_NE(err("c\n1\na\nb\nc\n").find("hs.txt: 5 lines, not a multiple of 6"), std::string::npos);
  EXPECT_NE(err("c\n4\na\nb\nc\nd\n").find("hs.txt: line 2 (task 1): gold label '4' is not 0, 1, 2 or 3"),
            std::string::npos);
  EXPECT_NE(err("c\n0\na\nb\nc\nd\nc\n1x\na\nb\nc\nd\n").find("line 8 (task 2): gold label '1x'"), std::string::npos);
  EXPECT_NE(err("c\n\na\nb\nc\nd\n").find("gold label ''"), std::string::npos);
  EXPECT_NE(err("c\n-1\na\nb\nc\nd\n").find("gold label '-1'"), std::string::npos);
}

TEST(Choice, ParseJsonl) {
  const std::string ok =
      "{\"context\": \"The sky is\", \"choices\": [\"blue\", \"green\", \"loud\"], \"gold\": 0, \"id\": \"q1\"}\n"
      "\n"
      "  \n"
      "{\"context\": \"\", \"choices\": [\"a\", \"b\"], \"gold\": 1, \"id\": 7, \"extra\": [1, 2]}\n"
      "{\"gold\": 1, \"choices\": [\"x\", \"y\"], \"context\": \"c\"}";
  const auto t = parse_choice_jsonl(ok, "t.jsonl");
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].id, "q1");
  EXPECT_EQ(t[0].choices.size(), 3u);
  EXPECT_EQ(t[1].id, "7");
  EXPECT_EQ(t[1].gold, 1);
  EXPECT_EQ(t[1].line, 4);
  EXPECT_EQ(t[2].id, "3");
  EXPECT_EQ(t[2].line, 5);

  auto err = [](const std::string& text) { return expect_error([&] { parse_choice_jsonl(text, "t.jsonl"); }); };
  const std::string good = "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n";
  EXPECT_EQ(err(""), "t.jsonl: no tasks (empty file)");
  EXPECT_EQ(err("\n \n"), "t.jsonl: no tasks (empty file)");
  // {file text, part of the one-line message}
  const std::pair<std::string, std::string> bad[] = {
      {good + "{\"context\": \"c\", \"choices\": [\"a\"\n", "t.jsonl: line 2: invalid JSON"},
      {"[1, 2]", "line 1: not a JSON object"},
      {"{\"choices\": [\"a\", \"b\"], \"gold\": 0}", "line 1: \"context\" missing"},
      {"{\"context\": 5, \"choices\": [\"a\", \"b\"], \"gold\": 0}", "\"context\" missing or not a string"},
      {"{\"context\": \"c\", \"choices\": [], \"gold\": 0}", "\"choices\" has 0 entries, need at least 2"},
      {"{\"context\": \"c\", \"choices\": \"ab\", \"gold\": 0}", "\"choices\" missing or not an array"},
      {"{\"context\": \"c\", \"choices\": [\"a\", 3], \"gold\": 0}", "choice 1 is not a string"},
      {good + good + "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 2}",
       "t.jsonl: line 3: \"gold\" 2 out of range (2 choices: 0..1)"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": -1}", "\"gold\" -1 out of range"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 18446744073709551615}", "out of range"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 1.0}", "\"gold\" missing or not an integer"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 0, \"id\": null}", "\"id\" is neither"},
      {"{\"context\": \"\xff\", \"choices\": [\"a\", \"b\"], \"gold\": 0}", "line 1: invalid JSON"},
  };
  for (const auto& [text, want] : bad) EXPECT_NE(err(text).find(want), std::string::npos) << want;
}

// ---- .bz2 inputs ----------------------------------------------------------------------------------

namespace {
bool have_bzip2_tool() { return std::system("command -v bzip2 >/dev/null 2>&1") == 0; }

std::string write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
  return path;
}

// bzip2-compresses `text` with the bzip2 tool; returns the compressed bytes.
std::string bzip2_bytes(const test::TempDir& d, const std::string& text, const std::string& name) {
  write_file(d / name, text);
  EXPECT_EQ(std::system(("bzip2 -kf " + d / name).c_str()), 0);
  return read_text_file(d / (name + ".bz2"));
}
}  // namespace

TEST(Bz2, ReadsCompressedText) {
  if (!have_bzip2_tool()) GTEST_SKIP() << "SKIPPED: the bzip2 tool is not installed (apt bzip2)";
  test::TempDir d;
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i * 7919 % 1000) + " of the test\n";
  const std::string a = bzip2_bytes(d, text, "a.txt");
  const std::string b = bzip2_bytes(d, "second stream\n", "b.txt");
  const std::string e = bzip2_bytes(d, "", "e.txt");
  EXPECT_EQ(read_text_input(d / "a.txt.bz2"), text);
  EXPECT_EQ(read_text_input(d / "e.txt.bz2"), "");
  EXPECT_EQ(read_text_input(d / "a.txt"), text);  // plain text passes through
  // Concatenated streams (bzip2 -c a b) decompress to the concatenation.
  EXPECT_EQ(read_text_input(write_file(d / "ab.bz2", a + b)), text + "second stream\n");

  auto err = [&](const std::string& name, const std::string& data, size_t max = size_t(1) << 30) {
    const std::string p = write_file(d / name, data);
    return expect_error([&] { read_text_input(p, max); });
  };
  EXPECT_NE(err("trunc.bz2", a.substr(0, a.size() - 20)).find("trunc.bz2: truncated bzip2 data"), std::string::npos);
  EXPECT_NE(err("header-only.bz2", a.substr(0, 4)).find("truncated"), std::string::npos);
  std::string corrupt = a;
  corrupt[a.size() / 2] ^= 0x55;
  EXPECT_NE(err("corrupt.bz2", corrupt).find("corrupt.bz2: "), std::string::npos);
  EXPECT_NE(err("garbage.bz2", a + "junk").find("trailing data after the bzip2 stream"), std::string::npos);
  EXPECT_NE(err("plain.bz2", "just text\n").find("plain.bz2: named .bz2 but not bzip2 data"), std::string::npos);
  EXPECT_NE(err("big.bz2", a, 1000).find("more than the limit of 1000 bytes"), std::string::npos);
}

TEST(Bz2, HellaswagFromSharedData) {
  LMP_REQUIRE_SHARED("data/hellaswag/hellaswag_val_full.txt.bz2");
  const std::string path = test::shared("data/hellaswag/hellaswag_val_full.txt.bz2");
  const auto tasks = parse_hellaswag(read_text_input(path), path);
  EXPECT_EQ(tasks.size(), 10042u);
  EXPECT_EQ(tasks[0].context, "Roof shingle removal: A man is sitting on a roof. he");
  EXPECT_EQ(tasks[0].gold, 3);
  EXPECT_EQ(tasks[0].choices[3], "starts pulling up roofing on a roof.");
}
