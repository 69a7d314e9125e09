// The search's report as SVG (docs/methods.md, "Mixed precision under a budget", `lmpress report`):
// budget vs KLD and the allocation heat map, written as plain text (no plotting dependency).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "lmpress/compress.h"

namespace lmpress {

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

namespace {
std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
}  // namespace

std::string budget_kld_svg(const std::vector<BudgetPoint>& pts, const std::string& title) {
  const double W = 760, H = 480, L = 70, R = 190, T = 40, Bm = 50;
  double x0 = 1e9, x1 = -1e9, y0 = 1e9, y1 = -1e9;
  for (const auto& p : pts) {
    if (!(p.kld > 0) || !std::isfinite(p.bpw)) continue;
    x0 = std::min(x0, p.bpw), x1 = std::max(x1, p.bpw);
    y0 = std::min(y0, std::log10(p.kld)), y1 = std::max(y1, std::log10(p.kld));
  }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = -3, y1 = 0;
  x0 = std::floor(x0 * 2) / 2, x1 = std::ceil(x1 * 2) / 2;
  if (x1 <= x0) x1 = x0 + 0.5;
  y0 = std::floor(y0), y1 = std::ceil(y1);
  if (y1 <= y0) y1 = y0 + 1;
  auto X = [&](double b) { return L + (b - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double k) { return T + (y1 - std::log10(k)) / (y1 - y0) * (H - T - Bm); };
  std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                  fmt("%.0f", W) + "\" height=\"" + fmt("%.0f", H) + "\" viewBox=\"0 0 " + fmt("%.0f", W) + " " +
                  fmt("%.0f", H) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect x=\"0\" y=\"0\" width=\"" + fmt("%.0f", W) + "\" height=\"" + fmt("%.0f", H) + "\" fill=\"white\"/>\n";
  s += "<text x=\"" + fmt("%.0f", W / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" + xml_escape(title) +
       "</text>\n";
  // axes and grid
  s += "<g stroke=\"#ccc\" stroke-width=\"1\">\n";
  for (double b = x0; b <= x1 + 1e-9; b += 0.5)
    s += "<line x1=\"" + fmt("%.1f", X(b)) + "\" y1=\"" + fmt("%.1f", T) + "\" x2=\"" + fmt("%.1f", X(b)) + "\" y2=\"" +
         fmt("%.1f", H - Bm) + "\"/>\n";
  for (double e = y0; e <= y1 + 1e-9; e += 1)
    s += "<line x1=\"" + fmt("%.1f", L) + "\" y1=\"" + fmt("%.1f", Y(std::pow(10, e))) + "\" x2=\"" + fmt("%.1f", W - R) +
         "\" y2=\"" + fmt("%.1f", Y(std::pow(10, e))) + "\"/>\n";
  s += "</g>\n<g>\n";
  for (double b = x0; b <= x1 + 1e-9; b += 0.5)
    s += "<text x=\"" + fmt("%.1f", X(b)) + "\" y=\"" + fmt("%.1f", H - Bm + 16) + "\" text-anchor=\"middle\">" +
         fmt("%.1f", b) + "</text>\n";
  for (double e = y0; e <= y1 + 1e-9; e += 1)
    s += "<text x=\"" + fmt("%.1f", L - 6) + "\" y=\"" + fmt("%.1f", Y(std::pow(10, e)) + 4) + "\" text-anchor=\"end\">" +
         fmt("%g", std::pow(10, e)) + "</text>\n";
  s += "<text x=\"" + fmt("%.1f", (L + W - R) / 2) + "\" y=\"" + fmt("%.1f", H - 12) +
       "\" text-anchor=\"middle\">weight bits per parameter</text>\n";
  s += "<text x=\"16\" y=\"" + fmt("%.1f", (T + H - Bm) / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " +
       fmt("%.1f", (T + H - Bm) / 2) + ")\">KLD vs the base model (log)</text>\n</g>\n";
  // series in order of first appearance
  std::vector<std::string> order;
  for (const auto& p : pts)
    if (std::find(order.begin(), order.end(), p.series) == order.end()) order.push_back(p.series);
  for (size_t k = 0; k < order.size(); ++k) {
    const std::string col = kColours[k % 10];
    std::vector<BudgetPoint> ps;
    for (const auto& p : pts)
      if (p.series == order[k] && p.kld > 0) ps.push_back(p);
    std::stable_sort(ps.begin(), ps.end(), [](const auto& a, const auto& b) { return a.bpw < b.bpw; });
    s += "<g class=\"series\" data-series=\"" + xml_escape(order[k]) + "\">\n";
    if (ps.size() > 1) {
      s += "<polyline fill=\"none\" stroke=\"" + col + "\" stroke-width=\"1.5\" points=\"";
      for (const auto& p : ps) s += fmt("%.1f", X(p.bpw)) + "," + fmt("%.1f", Y(p.kld)) + " ";
      s += "\"/>\n";
    }
    for (const auto& p : ps)
      s += "<circle cx=\"" + fmt("%.1f", X(p.bpw)) + "\" cy=\"" + fmt("%.1f", Y(p.kld)) + "\" r=\"3.5\" fill=\"" + col +
           "\"><title>" + xml_escape(p.series + (p.label.empty() ? "" : " " + p.label)) + ": " + fmt("%.4f", p.bpw) +
           " bpw, KLD " + fmt("%.5g", p.kld) + "</title></circle>\n";
    const double ly = T + 10 + 18 * double(k);
    s += "<line x1=\"" + fmt("%.1f", W - R + 12) + "\" y1=\"" + fmt("%.1f", ly) + "\" x2=\"" + fmt("%.1f", W - R + 32) +
         "\" y2=\"" + fmt("%.1f", ly) + "\" stroke=\"" + col + "\" stroke-width=\"2\"/>\n";
    s += "<text x=\"" + fmt("%.1f", W - R + 38) + "\" y=\"" + fmt("%.1f", ly + 4) + "\">" + xml_escape(order[k]) +
         "</text>\n</g>\n";
  }
  s += "</svg>\n";
  return s;
}

std::string allocation_heatmap_svg(const std::vector<std::string>& names, const std::vector<double>& bits,
                                   const std::string& title) {
  if (names.size() != bits.size()) fail("report", "the allocation's names and bits differ in length");
  // rows: blocks, then "other"; columns: kinds in order of first appearance
  std::map<int, std::map<std::string, size_t>> cell;
  std::vector<std::string> kinds;
  std::vector<std::string> others;
  for (size_t i = 0; i < names.size(); ++i) {
    int blk = -1;
    char kind[128] = {0};
    std::string kind_s;
    if (std::sscanf(names[i].c_str(), "blk.%d.%127[^ ]", &blk, kind) == 2) {
      kind_s = kind;
      if (kind_s.size() > 7 && kind_s.compare(kind_s.size() - 7, 7, ".weight") == 0) kind_s.resize(kind_s.size() - 7);
    } else {
      blk = -1;
      kind_s = names[i];
      if (kind_s.size() > 7 && kind_s.compare(kind_s.size() - 7, 7, ".weight") == 0) kind_s.resize(kind_s.size() - 7);
    }
    if (blk >= 0 && std::find(kinds.begin(), kinds.end(), kind_s) == kinds.end()) kinds.push_back(kind_s);
    if (blk < 0) others.push_back(kind_s);
    cell[blk][kind_s] = i;
  }
  std::vector<int> rows;
  for (const auto& [b, _] : cell)
    if (b >= 0) rows.push_back(b);
  const bool has_other = cell.count(-1) > 0;
  const size_t ncols = std::max(kinds.size(), others.size()) ;
  const double cw = 78, ch = 24, L = 80, T = 50;
  const double W = L + cw * double(std::max<size_t>(ncols, 1)) + 150;
  const double H = T + ch * double(rows.size() + (has_other ? 1 : 0)) + 40;
  double lo = 1e9, hi = -1e9;
  for (double b : bits) lo = std::min(lo, b), hi = std::max(hi, b);
  if (!(hi > lo)) hi = lo + 1;
  auto colour = [&](double b) {  // low bits: red, high: blue (through pale yellow)
    const double t = std::clamp((b - lo) / (hi - lo), 0.0, 1.0);
    const double r = t < 0.5 ? 215 : 215 - (t - 0.5) * 2 * (215 - 44);
    const double g = t < 0.5 ? 48 + t * 2 * (230 - 48) : 230 - (t - 0.5) * 2 * (230 - 123);
    const double bl = t < 0.5 ? 39 + t * 2 * (160 - 39) : 160 + (t - 0.5) * 2 * (182 - 160);
    char c[16];
    std::snprintf(c, sizeof c, "#%02x%02x%02x", int(r), int(g), int(bl));
    return std::string(c);
  };
  std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                  fmt("%.0f", W) + "\" height=\"" + fmt("%.0f", H) + "\" viewBox=\"0 0 " + fmt("%.0f", W) + " " +
                  fmt("%.0f", H) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  s += "<rect x=\"0\" y=\"0\" width=\"" + fmt("%.0f", W) + "\" height=\"" + fmt("%.0f", H) + "\" fill=\"white\"/>\n";
  s += "<text x=\"10\" y=\"20\" font-size=\"13\">" + xml_escape(title) + "</text>\n";
  for (size_t c = 0; c < kinds.size(); ++c)
    s += "<text x=\"" + fmt("%.1f", L + cw * (double(c) + 0.5)) + "\" y=\"" + fmt("%.1f", T - 8) +
         "\" text-anchor=\"middle\">" + xml_escape(kinds[c]) + "</text>\n";
  auto put = [&](double y, double x, size_t i) {
    s += "<rect x=\"" + fmt("%.1f", x) + "\" y=\"" + fmt("%.1f", y) + "\" width=\"" + fmt("%.1f", cw - 2) +
         "\" height=\"" + fmt("%.1f", ch - 2) + "\" fill=\"" + colour(bits[i]) + "\"><title>" + xml_escape(names[i]) +
         ": " + fmt("%.3f", bits[i]) + " bits</title></rect>\n";
    s += "<text x=\"" + fmt("%.1f", x + cw / 2 - 1) + "\" y=\"" + fmt("%.1f", y + ch / 2 + 3) +
         "\" text-anchor=\"middle\">" + fmt("%.2f", bits[i]) + "</text>\n";
  };
  for (size_t r = 0; r < rows.size(); ++r) {
    const double y = T + ch * double(r);
    s += "<text x=\"" + fmt("%.1f", L - 6) + "\" y=\"" + fmt("%.1f", y + ch / 2 + 3) + "\" text-anchor=\"end\">blk." +
         std::to_string(rows[r]) + "</text>\n";
    for (size_t c = 0; c < kinds.size(); ++c) {
      auto it = cell[rows[r]].find(kinds[c]);
      if (it != cell[rows[r]].end()) put(y, L + cw * double(c), it->second);
    }
  }
  if (has_other) {
    const double y = T + ch * double(rows.size());
    s += "<text x=\"" + fmt("%.1f", L - 6) + "\" y=\"" + fmt("%.1f", y + ch / 2 + 3) +
         "\" text-anchor=\"end\">other</text>\n";
    for (size_t c = 0; c < others.size(); ++c) put(y, L + cw * double(c), cell[-1][others[c]]);
  }
  // legend: the colour scale
  const double lx = L + cw * double(std::max<size_t>(ncols, 1)) + 20;
  for (int k = 0; k <= 4; ++k) {
    const double b = lo + (hi - lo) * k / 4.0;
    s += "<rect x=\"" + fmt("%.1f", lx) + "\" y=\"" + fmt("%.1f", T + 20.0 * k) + "\" width=\"18\" height=\"18\" fill=\"" +
         colour(b) + "\"/>\n<text x=\"" + fmt("%.1f", lx + 24) + "\" y=\"" + fmt("%.1f", T + 20.0 * k + 13) + "\">" +
         fmt("%.2f", b) + " bits</text>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace lmpress
