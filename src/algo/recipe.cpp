// Recipe grammar: "gptq:w4g32,act_order;token_embd.weight=rtn:w8g32" (see compress.h, docs/recipes.md).
#include <nlohmann/json.hpp>
#include <sstream>

#include "lmpress/compress.h"

namespace lmpress {

namespace {
std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\n\r"), b = s.find_last_not_of(" \t\n\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream ss(s);
  while (std::getline(ss, cur, sep)) out.push_back(trim(cur));
  return out;
}
}  // namespace

bool glob_match(const std::string& p, const std::string& n) {
  // iterative glob with backtracking over the last '*'
  size_t pi = 0, ni = 0, star = std::string::npos, mark = 0;
  while (ni < n.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == n[ni])) {
      ++pi, ++ni;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ni;
    } else if (star != std::string::npos) {
      pi = star + 1;
      ni = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

TensorRule parse_rule(const std::string& text) {
  TensorRule r;
  r.text = trim(text);
  const std::string s = r.text;
  auto bad = [&](const std::string& why) -> void {
    fail("recipe", "bad rule '" + s + "': " + why +
                       " (expected keep|f16|bf16|f32 or METHOD:FORMAT[,options], e.g. gptq:w4g32,act_order)");
  };
  if (s == "keep" || s == "f16" || s == "bf16" || s == "f32") {
    r.method = s;
    return r;
  }
  const size_t colon = s.find(':');
  if (colon == std::string::npos) bad("missing ':'");
  r.method = s.substr(0, colon);
  if (r.method != "rtn" && r.method != "gptq") bad("unknown method '" + r.method + "' (rtn, gptq)");
  auto parts = split(s.substr(colon + 1), ',');
  if (parts.empty() || parts[0].empty()) bad("missing format");
  try {
    r.spec = parse_format_name(parts[0]);
  } catch (const Error& e) {
    bad(e.what());
  }
  bool emb_set = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& o = parts[i];
    const size_t eq = o.find('=');
    const std::string key = o.substr(0, eq), val = eq == std::string::npos ? "" : o.substr(eq + 1);
    try {
      if (key == "act_order" && val.empty()) {
        r.gptq.act_order = true;
      } else if (key == "static_groups" && val.empty()) {
        r.gptq.static_groups = true;
      } else if (key == "clip" && val.empty()) {
        r.clip = true;
      } else if (key == "mse" && val.empty()) {
        r.gptq.mse = true;  // the rule's param search, for gptq and rtn alike
      } else if (key == "damp" && !val.empty()) {
        size_t used = 0;
        r.gptq.damp = std::stod(val, &used);
        if (used != val.size() || !(r.gptq.damp >= 0 && r.gptq.damp < 10)) bad("damp must be in [0, 10)");
      } else if (key == "emb" && !val.empty()) {
        emb_set = true;
        size_t used = 0;
        r.gptq.emb = std::stod(val, &used);
        if (used != val.size() || !(r.gptq.emb >= 0 && r.gptq.emb <= 1000)) bad("emb must be in [0, 1000]");
      } else if (key == "block" && !val.empty()) {
        size_t used = 0;
        r.gptq.block = std::stoll(val, &used);
        if (used != val.size() || r.gptq.block < 1 || r.gptq.block > 65536) bad("block must be in [1, 65536]");
      } else {
        bad("unknown option '" + o + "' (act_order, static_groups, clip, mse, damp=F, block=N, emb=F)");
      }
    } catch (const std::logic_error&) {
      bad("option '" + o + "' has a malformed number");
    }
  }
  if (r.method == "rtn" && (r.gptq.act_order || r.gptq.static_groups)) bad("act_order/static_groups apply to gptq only");
  if (r.method == "rtn" && emb_set) bad("emb applies to gptq only");
  if (r.clip && r.gptq.mse) bad("clip and mse are alternative parameter searches; use one");
  return r;
}

Recipe parse_recipe(const std::string& text) {
  Recipe rc;
  auto parts = split(text, ';');
  if (parts.empty() || parts[0].empty()) fail("recipe", "empty recipe");
  rc.base = parse_rule(parts[0]);
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].empty()) continue;
    const size_t eq = parts[i].find('=');
    // an override is PATTERN=RULE; a rule option like damp=0.1 has ':' before '='
    const size_t colon = parts[i].find(':');
    if (eq == std::string::npos || (colon != std::string::npos && colon < eq))
      fail("recipe", "bad override '" + parts[i] + "': expected PATTERN=RULE, e.g. token_embd.weight=rtn:w8g32");
    const std::string pat = trim(parts[i].substr(0, eq));
    if (pat.empty()) fail("recipe", "bad override '" + parts[i] + "': empty pattern");
    rc.overrides.emplace_back(pat, parse_rule(parts[i].substr(eq + 1)));
  }
  rc.text = rc.base.text;
  for (auto& [p, r] : rc.overrides) rc.text += ";" + p + "=" + r.text;
  return rc;
}

Recipe load_recipe_file(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("recipe file is not valid JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("default") || !j["default"].is_string())
    fail(path, "recipe file needs a string \"default\" rule, e.g. {\"default\": \"gptq:w4g32\"}");
  std::string text = j["default"].get<std::string>();
  if (j.contains("overrides")) {
    if (!j["overrides"].is_array()) fail(path, "\"overrides\" must be an array");
    for (const auto& o : j["overrides"]) {
      if (!o.is_object() || !o.contains("pattern") || !o.contains("rule") || !o["pattern"].is_string() ||
          !o["rule"].is_string())
        fail(path, "each override needs string \"pattern\" and \"rule\"");
      text += ";" + o["pattern"].get<std::string>() + "=" + o["rule"].get<std::string>();
    }
  }
  try {
    return parse_recipe(text);
  } catch (const Error& e) {
    fail(path, e.what());
  }
}

const TensorRule& Recipe::rule_for(const std::string& name, bool tied_output) const {
  const TensorRule* r = &base;
  for (const auto& [p, rule] : overrides)
    if (glob_match(p, name)) r = &rule;
  if (tied_output)
    for (const auto& [p, rule] : overrides)
      if (glob_match(p, "output.weight")) r = &rule;
  return *r;
}

bool Recipe::needs_calibration() const {
  if (base.method == "gptq") return true;
  for (const auto& [p, r] : overrides)
    if (r.method == "gptq") return true;
  return false;
}

}  // namespace lmpress
