// Multiple-choice task files (untrusted input): llama.cpp's HellaSwag text and generic JSONL; and
// llama.cpp's random selection of HellaSwag tasks.
#include <nlohmann/json.hpp>

#include <random>

#include "lmpress/eval.h"

namespace lmpress {

namespace {
// Lines split at '\n' as std::getline does: a final '\n' ends the last line instead of starting
// an empty one. A trailing '\r' is dropped (files written on Windows).
std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    pos = end + 1;
  }
  return lines;
}

std::string quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, 24)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out + (s.size() > 24 ? "...'" : "'");
}
}  // namespace

std::vector<ChoiceTask> parse_hellaswag(std::string_view text, const std::string& name) {
  const std::vector<std::string_view> lines = split_lines(text);
  if (lines.empty()) fail(name, "no tasks (empty file)");
  if (lines.size() % 6 != 0)
    fail(name, std::to_string(lines.size()) +
                   " lines, not a multiple of 6 (HellaSwag text: per task a context line, the gold "
                   "ending's index 0..3, and 4 ending lines)");
  std::vector<ChoiceTask> tasks(lines.size() / 6);
  for (size_t t = 0; t < tasks.size(); ++t) {
    ChoiceTask& task = tasks[t];
    const std::string_view* l = lines.data() + 6 * t;
    task.line = int64_t(6 * t + 1);
    task.id = std::to_string(t + 1);
    task.context = std::string(l[0]);
    if (l[1].size() != 1 || l[1][0] < '0' || l[1][0] > '3')
      fail(name, "line " + std::to_string(6 * t + 2) + " (task " + std::to_string(t + 1) + "): gold label " +
                     quoted(l[1]) + " is not 0, 1, 2 or 3");
    task.gold = l[1][0] - '0';
    for (int j = 0; j < 4; ++j) task.choices.emplace_back(l[2 + j]);
  }
  return tasks;
}

std::vector<ChoiceTask> parse_choice_jsonl(std::string_view text, const std::string& name) {
  const std::vector<std::string_view> lines = split_lines(text);
  std::vector<ChoiceTask> tasks;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = "line " + std::to_string(i + 1);
    auto bad = [&](const std::string& what) { fail(name, where + ": " + what); };
    const std::string_view line = lines[i];
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      std::string msg = e.what();
      if (const size_t p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
      bad("invalid JSON (" + msg + ")");
    }
    if (!j.is_object()) bad("not a JSON object (want {\"context\": ..., \"choices\": [...], \"gold\": N})");
    ChoiceTask task;
    task.line = int64_t(i + 1);
    task.id = std::to_string(tasks.size() + 1);
    const auto ctx = j.find("context");
    if (ctx == j.end() || !ctx->is_string()) bad("\"context\" missing or not a string");
    task.context = ctx->get<std::string>();
    const auto ch = j.find("choices");
    if (ch == j.end() || !ch->is_array()) bad("\"choices\" missing or not an array");
    if (ch->size() < 2) bad("\"choices\" has " + std::to_string(ch->size()) + " entries, need at least 2");
    for (size_t c = 0; c < ch->size(); ++c) {
      if (!(*ch)[c].is_string()) bad("choice " + std::to_string(c) + " is not a string");
      task.choices.push_back((*ch)[c].get<std::string>());
    }
    const auto gold = j.find("gold");
    if (gold == j.end() || !gold->is_number_integer()) bad("\"gold\" missing or not an integer");
    const int64_t g = gold->is_number_unsigned() ? int64_t(std::min<uint64_t>(gold->get<uint64_t>(), INT64_MAX))
                                                 : gold->get<int64_t>();
    if (g < 0 || g >= int64_t(task.choices.size()))
      bad("\"gold\" " + std::to_string(g) + " out of range (" + std::to_string(task.choices.size()) +
          " choices: 0.." + std::to_string(task.choices.size() - 1) + ")");
    task.gold = int(g);
    if (const auto id = j.find("id"); id != j.end()) {
      if (id->is_string())
        task.id = id->get<std::string>();
      else if (id->is_number_integer())
        task.id = id->dump();
      else
        bad("\"id\" is neither a string nor an integer");
    }
    tasks.push_back(std::move(task));
  }
  if (tasks.empty()) fail(name, "no tasks (empty file)");
  return tasks;
}

namespace {
// A uniform integer in [0, range) from 32-bit draws of g, as libstdc++ (GCC >= 11) computes
// std::uniform_int_distribution for a 32-bit engine: the high half of draw * range, redrawing
// while the low half falls below 2^32 mod range (Lemire 2019, "nearly divisionless").
uint32_t uniform_below(std::mt19937& g, uint32_t range) {
  uint64_t m = uint64_t(g()) * range;
  if (uint32_t(m) < range) {
    const uint32_t threshold = uint32_t(0u - range) % range;
    while (uint32_t(m) < threshold) m = uint64_t(g()) * range;
  }
  return uint32_t(m >> 32);
}
}  // namespace

std::vector<size_t> llamacpp_task_order(size_t total, size_t n) {
  if (total > UINT32_MAX) fail("", "too many tasks for llama.cpp's selection (" + std::to_string(total) + ")");
  std::mt19937 rng(1);
  std::vector<size_t> left(total);
  for (size_t i = 0; i < total; ++i) left[i] = i;
  std::vector<size_t> order;
  n = std::min(n, total);
  order.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t k = uniform_below(rng, uint32_t(left.size()));
    order.push_back(left[k]);
    left.erase(left.begin() + ptrdiff_t(k));
  }
  return order;
}

}  // namespace lmpress
