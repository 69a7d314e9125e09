// The composite families mix (MixLLM) and slim (SliM-LLM): formats/composite.h has the layouts. Their
// products run on their parts' int / binary kernels (qmatmul.cpp splits a job into the parts' jobs),
// so every ISA level of those kernels serves them.
#include "formats/composite.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <numeric>
#include <unordered_map>

#include "formats/traits.h"

namespace lmpress {
namespace composite {

namespace {
int64_t align64(int64_t x) { return (x + 63) / 64 * 64; }
bool int_spec_ok(const QuantSpec& s) {
  QuantSpec t = s;
  t.family = FormatFamily::Int;
  try {
    format_id(t);
  } catch (const Error&) {
    return false;
  }
  return true;
}
int64_t part_bytes(const QuantSpec& s, int64_t rows, int64_t cols) {
  return rows > 0 && cols > 0 ? packed_geometry(s, rows, cols).total_bytes : 0;
}
}  // namespace

QuantSpec part_spec(const QuantSpec& s, int p) {
  if (s.family == FormatFamily::Mix)
    return p == 0 ? QuantSpec{s.bits, s.group, s.sym, FormatFamily::Int}
                  : QuantSpec{s.hi_bits, s.hi_group, s.hi_sym, FormatFamily::Int};
  const int b = s.bits - 1 + p;
  if (b == 1) return QuantSpec{1, s.group, true, FormatFamily::Binary};
  return QuantSpec{b, s.group, false, FormatFamily::Int};
}

int64_t mix_hi_rows(const QuantSpec& s, int64_t rows) { return (rows * s.share + 999) / 1000; }
int64_t slim_groups(const QuantSpec& s, int64_t cols) { return (cols + s.group - 1) / s.group; }
int64_t map_bytes(const QuantSpec& s, int64_t rows, int64_t cols) {
  return s.family == FormatFamily::Mix ? (rows + 7) / 8 : (slim_groups(s, cols) + 3) / 4;
}

namespace {
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  const int64_t map = align64(map_bytes(s, rows, cols));
  if (s.family == FormatFamily::Mix) {
    const int64_t k = mix_hi_rows(s, rows);
    g.group = s.group ? s.group : cols;
    g.groups_per_row = g.group ? (cols + g.group - 1) / g.group : 0;
    g.total_bytes = align64(map + align64(part_bytes(part_spec(s, 0), rows - k, cols)) + part_bytes(part_spec(s, 1), k, cols));
  } else {
    g.group = s.group;
    g.groups_per_row = slim_groups(s, cols);
    g.total_bytes = align64(map + part_bytes(QuantSpec{s.bits, s.group, false, FormatFamily::Int}, rows, cols) + 3 * 64);
  }
  return g;
}
}  // namespace

Layout layout_of(const QuantSpec& s, int64_t rows, int64_t cols, const uint8_t* data, const std::string& where) {
  Layout L;
  const int64_t map = align64(map_bytes(s, rows, cols));
  if (s.family == FormatFamily::Mix) {
    const int64_t k = mix_hi_rows(s, rows);
    L.index.assign(2, {});
    for (int64_t r = 0; r < rows; ++r) L.index[size_t((data[r / 8] >> (r % 8)) & 1)].push_back(r);
    for (int64_t b = rows; b < map_bytes(s, rows, cols) * 8; ++b)
      if ((data[b / 8] >> (b % 8)) & 1) fail(where, "mix row bitmap: bit " + std::to_string(b) + " set past the " + std::to_string(rows) + " rows");
    if (int64_t(L.index[1].size()) != k)
      fail(where, "mix row bitmap marks " + std::to_string(L.index[1].size()) + " high-precision rows; " + format_name(s) +
                      " with " + std::to_string(rows) + " rows has " + std::to_string(k));
    const int64_t lo = part_bytes(part_spec(s, 0), rows - k, cols);
    L.parts.push_back({part_spec(s, 0), rows - k, cols, map, lo});
    L.parts.push_back({part_spec(s, 1), k, cols, map + align64(lo), part_bytes(part_spec(s, 1), k, cols)});
    return L;
  }
  const int64_t G = slim_groups(s, cols), g = s.group;
  L.index.assign(3, {});
  int64_t count[3] = {0, 0, 0};
  for (int64_t j = 0; j < G; ++j) {
    const int c = (data[j / 4] >> (2 * (j % 4))) & 3;
    if (c == 3) fail(where, "slim class map: group " + std::to_string(j) + " has class 3 (classes are 0, 1, 2)");
    if (j * g + g > cols && c != 1)
      fail(where, "slim class map: the short last group " + std::to_string(j) + " must be class 1, not " + std::to_string(c));
    ++count[c];
    for (int64_t col = j * g; col < std::min(cols, j * g + g); ++col) L.index[size_t(c)].push_back(col);
  }
  for (int64_t b = 2 * G; b < map_bytes(s, rows, cols) * 8; ++b)
    if ((data[b / 8] >> (b % 8)) & 1) fail(where, "slim class map: bit " + std::to_string(b) + " set past the " + std::to_string(G) + " groups");
  if (count[0] != count[2])
    fail(where, "slim class map: " + std::to_string(count[0]) + " groups at " + std::to_string(s.bits - 1) + " bits but " +
                    std::to_string(count[2]) + " at " + std::to_string(s.bits + 1) + " (they must be as many)");
  int64_t off = map;
  for (int p = 0; p < 3; ++p) {
    const int64_t c = int64_t(L.index[size_t(p)].size());
    const int64_t b = part_bytes(part_spec(s, p), rows, c);
    L.parts.push_back({part_spec(s, p), c ? rows : 0, c, off, b});
    off = align64(off + b);
  }
  return L;
}

std::shared_ptr<const Layout> layout_cached(const Tensor& t) {
  // A layout is a function of (format, rows, cols, map bytes): all four are compared, so a tensor freed
  // and replaced at the same address (streamed output frees finished layers) never gets another's layout.
  struct Entry {
    size_t nbytes;
    uint32_t format;
    int64_t rows, cols;
    std::vector<uint8_t> map;
    std::shared_ptr<const Layout> layout;
  };
  static std::mutex mu;
  static std::unordered_map<const void*, Entry> cache;
  const QuantSpec s = format_spec(t.format);
  const uint8_t* d = static_cast<const uint8_t*>(t.data);
  const size_t mb = size_t(map_bytes(s, t.rows(), t.cols()));
  std::lock_guard<std::mutex> lk(mu);
  auto it = cache.find(t.data);
  if (it != cache.end() && it->second.nbytes == t.nbytes && it->second.format == t.format &&
      it->second.rows == t.rows() && it->second.cols == t.cols() && it->second.map.size() == mb &&
      std::memcmp(it->second.map.data(), d, mb) == 0)
    return it->second.layout;
  if (cache.size() > 4096) cache.clear();
  auto L = std::make_shared<const Layout>(layout_of(s, t.rows(), t.cols(), d, t.name));
  cache[t.data] = Entry{t.nbytes, t.format, t.rows(), t.cols(), std::vector<uint8_t>(d, d + mb), L};
  return L;
}

Tensor part_tensor(const Tensor& t, const Layout& L, size_t p) {
  const Part& P = L.parts[p];
  Tensor v;
  v.name = t.name + " (part " + std::to_string(p) + ": " + format_name(P.spec) + ")";
  v.dtype = DType::Q;
  v.shape = {P.rows, P.cols};
  v.data = static_cast<const uint8_t*>(t.data) + P.offset;
  v.nbytes = size_t(P.bytes);
  v.format = format_id(P.spec);
  v.owner = t.owner;
  return v;
}

namespace {
// Copies row r of `src` (its codes of columns cols[0..n) and the params of the groups they lie in)
// into row i of `dst`, whose columns are those n columns in order.
void copy_row(const QuantizedMatrix& src, int64_t r, QuantizedMatrix& dst, int64_t i) {
  std::memcpy(dst.q.data() + i * dst.cols, src.q.data() + r * src.cols, size_t(src.cols));
  for (int64_t g = 0; g < dst.groups(); ++g) dst.set_params(i, g, src.params(r, g));
}
}  // namespace

QuantizedMatrix assemble_mix(const QuantSpec& s, const std::vector<uint8_t>& hi, const QuantizedMatrix& lo,
                             const QuantizedMatrix& hi_q) {
  const int64_t rows = lo.rows, cols = lo.cols;
  if (!(lo.spec == part_spec(s, 0)) || !(hi_q.spec == part_spec(s, 1)) || hi_q.rows != rows || hi_q.cols != cols ||
      int64_t(hi.size()) != rows)
    fail("mix", "assemble: parts of the wrong format or shape for " + format_name(s));
  const int64_t k = std::count(hi.begin(), hi.end(), uint8_t(1));
  if (k != mix_hi_rows(s, rows))
    fail("mix", "assemble: " + std::to_string(k) + " high rows, " + format_name(s) + " needs " + std::to_string(mix_hi_rows(s, rows)));
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  qm.part_of = hi;
  qm.parts.resize(2);
  qm.parts[0].init(lo.spec, rows - k, cols);
  qm.parts[1].init(hi_q.spec, k, cols);
  int64_t n[2] = {0, 0};
  for (int64_t r = 0; r < rows; ++r) {
    const int p = hi[size_t(r)] ? 1 : 0;
    if (hi[size_t(r)] > 1) fail("mix", "assemble: row flag " + std::to_string(int(hi[size_t(r)])));
    copy_row(p ? hi_q : lo, r, qm.parts[size_t(p)], n[p]++);
  }
  return qm;
}

std::vector<uint8_t> slim_classes(const std::vector<double>& salience, int64_t cols, int64_t group, int64_t beta) {
  const int64_t G = (cols + group - 1) / group, full = cols / group;
  if (int64_t(salience.size()) != G || beta < 0 || 2 * beta > full)
    fail("slim", "bad class request: " + std::to_string(beta) + " groups each way of " + std::to_string(full) + " full groups");
  std::vector<int64_t> order(static_cast<size_t>(full));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return salience[size_t(a)] < salience[size_t(b)]; });
  std::vector<uint8_t> cls(size_t(G), 1);
  for (int64_t i = 0; i < beta; ++i) {
    cls[size_t(order[size_t(i)])] = 0;
    cls[size_t(order[size_t(full - 1 - i)])] = 2;
  }
  return cls;
}

QuantizedMatrix assemble_slim(const QuantSpec& s, const std::vector<uint8_t>& cls, const QuantizedMatrix* const src[3]) {
  const int64_t rows = src[0]->rows, cols = src[0]->cols, g = s.group, G = slim_groups(s, cols);
  if (int64_t(cls.size()) != G) fail("slim", "assemble: " + std::to_string(cls.size()) + " classes for " + std::to_string(G) + " groups");
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  qm.part_of = cls;
  qm.parts.resize(3);
  for (int p = 0; p < 3; ++p) {
    const QuantizedMatrix& S = *src[p];
    if (S.rows != rows || S.cols != cols || S.group_len() != g) fail("slim", "assemble: source of the wrong shape or groups");
    std::vector<int64_t> groups;
    for (int64_t j = 0; j < G; ++j)
      if (cls[size_t(j)] == p) groups.push_back(j);
    int64_t pc = 0;
    for (int64_t j : groups) pc += std::min(cols, j * g + g) - j * g;
    QuantizedMatrix& P = qm.parts[size_t(p)];
    P.init(part_spec(s, p), pc ? rows : 0, pc);
    if (!pc) continue;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t c = 0;
      for (size_t k = 0; k < groups.size(); ++k) {
        const int64_t j = groups[k], c0 = j * g, n = std::min(cols, c0 + g) - c0;
        std::memcpy(P.q.data() + r * pc + c, S.q.data() + r * cols + c0, size_t(n));
        P.set_params(r, int64_t(k), S.params(r, j));
        c += n;
      }
    }
  }
  return qm;
}

std::vector<float> dequantize_dense(const QuantizedMatrix& qm) {
  std::vector<float> out(size_t(qm.rows * qm.cols), 0.f);
  if (qm.spec.family == FormatFamily::Mix) {
    int64_t n[2] = {0, 0};
    std::vector<float> d[2];
    for (int p = 0; p < 2; ++p)
      if (qm.parts[size_t(p)].rows > 0) d[p] = dequantize_matrix(qm.parts[size_t(p)]);
    for (int64_t r = 0; r < qm.rows; ++r) {
      const int p = qm.part_of[size_t(r)];
      std::memcpy(out.data() + r * qm.cols, d[p].data() + n[p]++ * qm.cols, size_t(qm.cols) * sizeof(float));
    }
    return out;
  }
  const int64_t g = qm.spec.group, G = slim_groups(qm.spec, qm.cols);
  for (int p = 0; p < 3; ++p) {
    const QuantizedMatrix& P = qm.parts[size_t(p)];
    if (P.cols == 0) continue;
    const std::vector<float> d = dequantize_matrix(P);
    int64_t c = 0;
    for (int64_t j = 0; j < G; ++j) {
      if (qm.part_of[size_t(j)] != p) continue;
      const int64_t c0 = j * g, n = std::min(qm.cols, c0 + g) - c0;
      for (int64_t r = 0; r < qm.rows; ++r)
        std::memcpy(out.data() + r * qm.cols + c0, d.data() + r * P.cols + c, size_t(n) * sizeof(float));
      c += n;
    }
  }
  return out;
}

void dequant_rows_ref(const Tensor& t, int64_t r0, int64_t r1, float* out) {
  const QuantSpec s = format_spec(t.format);
  const Layout L = layout_of(s, t.rows(), t.cols(), static_cast<const uint8_t*>(t.data), t.name);
  const int64_t cols = t.cols();
  if (s.family == FormatFamily::Mix) {
    std::vector<std::pair<size_t, int64_t>> pos(size_t(t.rows()));
    for (size_t p = 0; p < 2; ++p)
      for (size_t i = 0; i < L.index[p].size(); ++i) pos[size_t(L.index[p][i])] = {p, int64_t(i)};
    for (int64_t r = r0; r < r1; ++r)
      dequantize_row_ref(part_tensor(t, L, pos[size_t(r)].first), pos[size_t(r)].second, out + (r - r0) * cols);
    return;
  }
  std::vector<float> tmp(static_cast<size_t>(cols));
  for (size_t p = 0; p < 3; ++p) {
    if (L.parts[p].cols == 0) continue;
    const Tensor pt = part_tensor(t, L, p);
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row_ref(pt, r, tmp.data());
      for (size_t i = 0; i < L.index[p].size(); ++i) out[(r - r0) * cols + L.index[p][i]] = tmp[i];
    }
  }
}

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, int64_t beta_fixed) {
  if (s.family == FormatFamily::Mix) {
    const QuantizedMatrix lo = quantize_rtn_ref(w, rows, cols, part_spec(s, 0));
    const QuantizedMatrix hi = quantize_rtn_ref(w, rows, cols, part_spec(s, 1));
    const std::vector<float> dl = dequantize_matrix(lo), dh = dequantize_matrix(hi);
    std::vector<double> gain(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t k = size_t(r * cols + c);
        gain[size_t(r)] += double(w[k] - dl[k]) * (w[k] - dl[k]) - double(w[k] - dh[k]) * (w[k] - dh[k]);
      }
    std::vector<int64_t> order(static_cast<size_t>(rows));
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gain[size_t(a)] > gain[size_t(b)]; });
    std::vector<uint8_t> flag(size_t(rows), 0);
    for (int64_t i = 0; i < mix_hi_rows(s, rows); ++i) flag[size_t(order[size_t(i)])] = 1;
    return assemble_mix(s, flag, lo, hi);
  }
  const int64_t g = s.group, G = slim_groups(s, cols);
  QuantizedMatrix q[3];
  std::vector<double> err[3];
  for (int p = 0; p < 3; ++p) {
    q[p] = quantize_rtn_ref(w, rows, cols, part_spec(s, p));
    const std::vector<float> d = dequantize_matrix(q[p]);
    err[p].assign(size_t(G), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) err[p][size_t(c / g)] += double(w[r * cols + c] - d[size_t(r * cols + c)]) * (w[r * cols + c] - d[size_t(r * cols + c)]);
  }
  std::vector<double> sal(size_t(G), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) sal[size_t(c / g)] += double(w[r * cols + c]) * w[r * cols + c];
  std::vector<uint8_t> best;
  double best_err = 0;
  if (beta_fixed > cols / g / 2)
    fail("slim", "beta=" + std::to_string(beta_fixed) + ": rows of " + std::to_string(cols) + " columns have " +
                     std::to_string(cols / g) + " full groups of " + std::to_string(g));
  for (int64_t beta = 0; 2 * beta <= cols / g; ++beta) {
    if (beta_fixed >= 0 && beta != beta_fixed) continue;
    const std::vector<uint8_t> cls = slim_classes(sal, cols, g, beta);
    double e = 0;
    for (int64_t j = 0; j < G; ++j) e += err[cls[size_t(j)]][size_t(j)];
    if (best.empty() || e < best_err) best = cls, best_err = e;
  }
  const QuantizedMatrix* src[3] = {&q[0], &q[1], &q[2]};
  return assemble_slim(s, best, src);
}

std::vector<QuantSpec> examples() {
  std::vector<QuantSpec> v;
  for (auto [lo, hi, share] : {std::tuple{"w4g64a", "w8row", 100}, std::tuple{"w2g32", "w4g32", 500},
                               std::tuple{"w3g128a", "w6g64", 0}, std::tuple{"w4row", "w8g32a", 1000}}) {
    QuantSpec s = parse_format_name(lo);
    const QuantSpec h = parse_format_name(hi);
    s.family = FormatFamily::Mix;
    s.hi_bits = h.bits;
    s.hi_group = h.group;
    s.hi_sym = h.sym;
    s.share = share;
    v.push_back(s);
  }
  for (int n : {2, 3, 4, 5})
    for (int g : {32, 64, 128}) v.push_back(QuantSpec{n, g, false, FormatFamily::Slim});
  return v;
}

// ---- the traits rows ------------------------------------------------------------------------------
namespace {
bool valid_mix(const QuantSpec& s) {
  return s.family == FormatFamily::Mix && s.share >= 0 && s.share <= 1000 && int_spec_ok(part_spec(s, 0)) &&
         int_spec_ok(part_spec(s, 1));
}
bool valid_slim(const QuantSpec& s) {
  return s.family == FormatFamily::Slim && s.bits >= 2 && s.bits <= 5 && !s.sym &&
         (s.group == 32 || s.group == 64 || s.group == 128);
}
std::string name_mix(const QuantSpec& s) {
  return "mix" + format_name(part_spec(s, 0)) + "_" + format_name(part_spec(s, 1)) + "_p" + std::to_string(s.share);
}
std::string name_slim(const QuantSpec& s) { return "slim" + std::to_string(s.bits) + "g" + std::to_string(s.group); }
bool parse_int_name(const std::string& n, QuantSpec* out) {
  if (n.empty() || n[0] != 'w') return false;
  try {
    const QuantSpec s = parse_format_name(n);
    if (s.family != FormatFamily::Int || s.sparse || s.rht) return false;
    *out = s;
    return true;
  } catch (const Error&) {
    return false;
  }
}
bool parse_mix(const std::string& n, QuantSpec* out) {
  if (n.rfind("mix", 0) != 0) return false;
  const std::string rest = n.substr(3);
  const size_t a = rest.find('_'), b = a == std::string::npos ? a : rest.find('_', a + 1);
  if (b == std::string::npos) return false;
  QuantSpec lo, hi;
  if (!parse_int_name(rest.substr(0, a), &lo) || !parse_int_name(rest.substr(a + 1, b - a - 1), &hi)) return false;
  const std::string p = rest.substr(b + 1);
  if (p.size() < 2 || p.size() > 5 || p[0] != 'p' || !std::all_of(p.begin() + 1, p.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  const int share = std::stoi(p.substr(1));
  if (std::to_string(share) != p.substr(1) || share > 1000) return false;
  QuantSpec s = lo;
  s.family = FormatFamily::Mix;
  s.hi_bits = hi.bits;
  s.hi_group = hi.group;
  s.hi_sym = hi.sym;
  s.share = share;
  *out = s;
  return true;
}
bool parse_slim(const std::string& n, QuantSpec* out) {
  if (n.size() < 7 || n.rfind("slim", 0) != 0 || n[4] < '0' || n[4] > '9' || n[5] != 'g') return false;
  const std::string g = n.substr(6);
  if (g != "32" && g != "64" && g != "128") return false;
  *out = QuantSpec{n[4] - '0', std::stoi(g), false, FormatFamily::Slim};
  return true;
}
void list_none(std::vector<QuantSpec>&) {}  // composite::examples() (the parts' formats are listed)

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  const QuantSpec& s = qm.spec;
  const bool mix = s.family == FormatFamily::Mix;
  const int64_t n = mix ? g.rows : slim_groups(s, g.cols);
  if (int64_t(qm.part_of.size()) != n || int64_t(qm.parts.size()) != n_parts(s))
    fail(where, format_name(s) + ": " + std::to_string(qm.part_of.size()) + " part flags and " + std::to_string(qm.parts.size()) +
                    " parts (expected " + std::to_string(n) + " and " + std::to_string(n_parts(s)) + ")");
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t v = qm.part_of[size_t(i)];
    if (v >= (mix ? 2 : 3)) fail(where, format_name(s) + ": bad part flag " + std::to_string(int(v)) + " at " + std::to_string(i));
    if (mix)
      out[i / 8] = uint8_t(out[i / 8] | v << (i % 8));
    else
      out[i / 4] = uint8_t(out[i / 4] | v << (2 * (i % 4)));
  }
  const Layout L = layout_of(s, g.rows, g.cols, out, where);
  for (size_t p = 0; p < L.parts.size(); ++p) {
    const Part& P = L.parts[p];
    const QuantizedMatrix& q = qm.parts[p];
    if (P.rows * P.cols == 0) continue;
    if (!(q.spec == P.spec) || q.rows != P.rows || q.cols != P.cols)
      fail(where, format_name(s) + ": part " + std::to_string(p) + " is " + format_name(q.spec) + " " + fmt::shape_str(q.rows, q.cols) +
                      ", the layout needs " + format_name(P.spec) + " " + fmt::shape_str(P.rows, P.cols));
    const Tensor t = pack_tensor(where, q);
    LMP_ASSERT(int64_t(t.nbytes) == P.bytes && P.offset + P.bytes <= g.total_bytes);
    std::memcpy(out + P.offset, t.data, t.nbytes);
  }
}

Tensor raw_part(const uint8_t* data, const Part& P, const std::string& where) {
  Tensor t;
  t.name = where;
  t.dtype = DType::Q;
  t.shape = {P.rows, P.cols};
  t.data = data + P.offset;
  t.nbytes = size_t(P.bytes);
  t.format = format_id(P.spec);
  return t;
}

void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  const Layout L = layout_of(s, g.rows, g.cols, data, "");
  const bool mix = s.family == FormatFamily::Mix;
  const int64_t n = mix ? g.rows : slim_groups(s, g.cols);
  qm.part_of.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    qm.part_of[size_t(i)] = mix ? uint8_t((data[i / 8] >> (i % 8)) & 1) : uint8_t((data[i / 4] >> (2 * (i % 4))) & 3);
  qm.parts.assign(L.parts.size(), QuantizedMatrix{});
  for (size_t p = 0; p < L.parts.size(); ++p) {
    const Part& P = L.parts[p];
    if (P.rows * P.cols == 0) {
      qm.parts[p].init(P.spec, P.rows, P.cols);
      continue;
    }
    qm.parts[p] = unpack_tensor(raw_part(data, P, "part " + std::to_string(p)));
  }
}

void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where) {
  const Layout L = layout_of(s, g.rows, g.cols, data, where);
  for (size_t p = 0; p < L.parts.size(); ++p) {
    const Part& P = L.parts[p];
    if (P.rows * P.cols == 0) continue;
    LMP_ASSERT(P.offset + P.bytes <= g.total_bytes);
    validate_packed(raw_part(data, P, where + " (part " + std::to_string(p) + ", " + format_name(P.spec) + ")"), "");
  }
}

kern::QWeights view(const uint8_t*, const QuantSpec&, const PackedGeometry& g) {
  kern::QWeights w;  // no kernels of their own: qmatmul.cpp runs the parts
  w.rows = g.rows;
  w.cols = g.cols;
  return w;
}

std::unique_ptr<Grid> grid(const QuantSpec& s) {
  fail("", format_name(s) + " is a composite format (" + family_name(s.family) + "): it is made by the " +
               (s.family == FormatFamily::Mix ? "mixllm method or `quantize --allocator mixllm`" : "slim method") +
               ", or rtn (quantize_rtn); other methods round onto one grid");
}
}  // namespace

}  // namespace composite

namespace {
FormatTraits composite_row(FormatFamily f, const char* name, const char* summary, bool (*valid)(const QuantSpec&),
                           std::string (*name_of)(const QuantSpec&), bool (*parse)(const std::string&, QuantSpec*)) {
  FormatTraits t{f, name, summary, ActKind::Int8Blocks, nullptr, valid, name_of, parse, composite::list_none,
                 composite::geometry, composite::pack, composite::unpack_params, composite::check, composite::view,
                 composite::grid, {nullptr, nullptr, nullptr}};
  t.composite = true;
  return t;
}
}  // namespace

const FormatTraits mix_format = composite_row(
    FormatFamily::Mix, "mix", "MixLLM: a share of the rows (output features) in a high-precision int format, the rest in a low one",
    composite::valid_mix, composite::name_mix, composite::parse_mix);
const FormatTraits slim_format = composite_row(
    FormatFamily::Slim, "slim", "SliM-LLM: column groups at N-1, N or N+1 bits (as many below as above N), asymmetric int parts",
    composite::valid_slim, composite::name_slim, composite::parse_slim);

}  // namespace lmpress
