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
                       " (expected keep|f16|bf16|f32 or METHOD[+METHOD]:FORMAT[,options], e.g. gptq:w4g32,act_order)");
  };
  if (s == "keep" || s == "f16" || s == "bf16" || s == "f32") {
    r.method = s;
    return r;
  }
  const size_t colon = s.find(':');
  if (colon == std::string::npos) bad("missing ':'");
  r.method = s.substr(0, colon);
  if (trim(r.method).empty()) bad("missing method before ':'");
  // The chain: registry methods, transforms first, at most one rounding method (last; rtn if none).
  for (const std::string& m : split(r.method, '+')) {
    if (m.empty()) bad("empty method name in '" + r.method + "'");
    const MethodInfo* mi = nullptr;
    try {
      mi = &find_method(m);
    } catch (const Error& e) {
      bad(e.what());
    }
    if (r.has(m)) bad("method '" + m + "' appears twice");
    if (!r.chain.empty() && find_method(r.chain.back()).rounds &&
        !(find_method(r.chain.back()).fits_grid && (m == "gptq" || m == "quantease")))
      bad("'" + r.chain.back() + "' rounds the weights, so it must come last in the chain" +
          (find_method(r.chain.back()).fits_grid ? " (or right before gptq or quantease, which then round onto its grid)" : ""));
    r.chain.push_back(mi->name);
  }
  if (r.chain.empty()) bad("missing method before ':'");
  if (!find_method(r.chain.back()).rounds) r.chain.push_back("rtn");
  auto parts = split(s.substr(colon + 1), ',');
  if (parts.empty() || parts[0].empty()) bad("missing format");
  try {
    r.spec = parse_format_name(parts[0]);
  } catch (const Error& e) {
    bad(e.what());
  }
  // Each option must be taken by a method of the chain (an option that does not apply is an error).
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& o = parts[i];
    const size_t eq = o.find('=');
    const std::string key = o.substr(0, eq), val = eq == std::string::npos ? "" : o.substr(eq + 1);
    bool taken = false;
    for (const std::string& m : r.chain) {
      const MethodInfo& mi = find_method(m);
      if (mi.option(r, key, val)) {
        taken = true;
        break;
      }
    }
    if (!taken) {
      std::string accepted;
      for (const std::string& m : r.chain)
        accepted += (accepted.empty() ? "" : "; ") + m + ": " + find_method(m).options;
      std::string known;
      for (const auto& mi : method_registry())
        for (const std::string& m : r.chain)
          if (m != mi.name) {
            TensorRule probe;
            probe.spec = r.spec;
            if (known.empty() && mi.option(probe, key, val)) known = std::string(" (it is an option of ") + mi.name + ")";
          }
      bad("option '" + o + "' does not apply to " + r.method + known + "; accepted: " + accepted);
    }
  }
  for (const std::string& m : r.chain) {
    try {
      find_method(m).check(r);
    } catch (const Error& e) {
      bad(e.what());
    }
  }
  if (r.quantized() && (r.spec.family == FormatFamily::Mix || r.spec.family == FormatFamily::Slim)) {
    const std::string& m = r.rounding();
    const char* own = r.spec.family == FormatFamily::Mix ? "mixllm" : "slim";
    if (m != own && m != "rtn")
      bad(format_name(r.spec) + " is a composite format: it is made by " + own + " (or rtn), not " + m);
  }
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
  (void)rc.quarot();  // checks where quarot appears
  return rc;
}

Recipe load_recipe_file(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    std::string msg = "recipe file is not valid JSON: ";  // (appends: GCC 12 -Wrestrict false positive)
    msg += e.what();
    fail(path, msg);
  }
  if (!j.is_object() || !j.contains("default") || !j["default"].is_string())
    fail(path, "recipe file needs a string \"default\" rule, e.g. {\"default\": \"gptq:w4g32\"}");
  // An unknown key is an error, not ignored (a misspelt "overides" would drop every override).
  for (const auto& [key, val] : j.items())
    if (key != "default" && key != "overrides")
      fail(path, "unknown key \"" + key + "\" in the recipe file (keys: \"default\", \"overrides\")");
  std::string text = j["default"].get<std::string>();
  if (j.contains("overrides")) {
    if (!j["overrides"].is_array()) fail(path, "\"overrides\" must be an array");
    for (const auto& o : j["overrides"]) {
      if (!o.is_object() || !o.contains("pattern") || !o.contains("rule") || !o["pattern"].is_string() ||
          !o["rule"].is_string())
        fail(path, "each override needs string \"pattern\" and \"rule\"");
      for (const auto& [key, val] : o.items())
        if (key != "pattern" && key != "rule")
          fail(path, "unknown key \"" + key + "\" in an override (keys: \"pattern\", \"rule\")");
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

// rtn alone takes calibration when given (its clip search then weighs by diag(H)) but runs
// without; every method that declares statistics needs them.
bool Recipe::needs_calibration() const {
  if (base.stats() != 0) return true;
  for (const auto& [p, r] : overrides)
    if (r.stats() != 0) return true;
  return false;
}

bool Recipe::has_transforms() const {
  auto any = [](const TensorRule& r) {
    for (const auto& m : r.chain)
      if (!find_method(m).rounds) return true;
    return false;
  };
  if (any(base)) return true;
  for (const auto& [p, r] : overrides)
    if (any(r)) return true;
  return false;
}

const TensorRule* Recipe::quarot() const {
  for (const auto& [p, r] : overrides) {
    if (!r.has("quarot")) continue;
    if (!base.has("quarot"))
      fail("recipe", "override '" + p + "=" + r.text +
                         "': quarot rotates the whole model; name it in the default rule (overrides then choose only "
                         "how each rotated tensor is rounded)");
    if (!(r.quarot == base.quarot))
      fail("recipe", "override '" + p + "=" + r.text + "': quarot's options differ from the default rule's (one rotation per model)");
  }
  return base.has("quarot") ? &base : nullptr;
}

void Recipe::check_patterns(const std::vector<std::string>& names) const {
  for (const auto& [p, r] : overrides) {
    bool hit = false;
    for (const auto& n : names) hit = hit || glob_match(p, n);
    if (!hit) {
      std::string example = names.empty() ? "" : names.size() > 1 ? names[1] : names[0];
      fail("recipe", "override pattern '" + p + "' matches no tensor of this model (tensor names look like '" +
                         example + "'; patterns are globs over whole names)");
    }
  }
}

}  // namespace lmpress
