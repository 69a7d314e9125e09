// Fuzz target: multiple-choice task files: llama.cpp's HellaSwag text (parse_hellaswag), JSONL
// tasks (parse_choice_jsonl), and the bzip2 reader (bz2_decompress) they may arrive through.
// Any input may be rejected with lmpress::Error; nothing else may escape or crash. Accepted tasks
// keep their invariants (gold within the choices; HellaSwag: 4 endings).
#include <cstdint>
#include <string>

#include "lmpress/eval.h"

namespace {
void check_tasks(const std::vector<lmpress::ChoiceTask>& tasks, bool hellaswag) {
  for (const auto& t : tasks) {
    if (t.gold < 0 || size_t(t.gold) >= t.choices.size()) __builtin_trap();
    if (hellaswag ? t.choices.size() != 4 : t.choices.size() < 2) __builtin_trap();
  }
}

void parse_all(std::string_view s) {
  try {
    const auto tasks = lmpress::parse_hellaswag(s, "fuzz.txt");
    check_tasks(tasks, true);
    if (lmpress::llamacpp_task_order(tasks.size(), 3).size() != std::min<size_t>(3, tasks.size()))
      __builtin_trap();
  } catch (const lmpress::Error&) {
  }
  try {
    check_tasks(lmpress::parse_choice_jsonl(s, "fuzz.jsonl"), false);
  } catch (const lmpress::Error&) {
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  parse_all(s);
  // The same bytes as a .bz2 file (the bzip2 magic is prepended when missing, so that the
  // decompressor, not the magic check, sees most inputs); what it yields is parsed as well.
  const std::string bz = lmpress::is_bz2(s) ? std::string(s) : "BZh9" + std::string(s);
  try {
    parse_all(lmpress::bz2_decompress(bz, "fuzz.bz2", size_t(1) << 20));
  } catch (const lmpress::Error&) {
  }
  return 0;
}
