// vq<v>k<b>[r<b2>][n]: VPTQ's vector quantization (formats/vq.h has the value formula and the byte
// layout). The family has no code planes and no scalar grid (a weight is an entry of a codebook
// vector): pack / unpack write and read everything, make_grid refuses it (only the vptq method
// makes it), the kernels are kernels/vq_x86.h and kernels/generic/vq.cpp.
#include "formats/vq.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "formats/traits.h"

namespace lmpress {

namespace vq {

Layout layout(const QuantSpec& s, int64_t rows, int64_t cols) {
  Layout L;
  L.book = 8;
  L.colnorm = L.book + (book1_size(s) + book2_size(s)) * s.group;
  L.codes = L.colnorm + (s.colnorm ? 4 * cols : 0);
  const int64_t ncodes = row_blocks(s, rows) * cols;
  L.code_bytes = (ncodes * code_bits(s) + 7) / 8 + kSlack;
  L.total = L.codes + L.code_bytes;
  return L;
}

float value(const QuantizedMatrix& qm, int64_t r, int64_t c) {
  const QuantSpec& s = qm.spec;
  const int v = s.group;
  const uint32_t code = qm.vq_codes[size_t(r / v * qm.cols + c)];
  const int l = int(r % v);
  const uint32_t i1 = code & uint32_t(book1_size(s) - 1), i2 = code >> s.bits;
  float u = qm.vq_scale[0] * float(qm.vq_book[size_t(i1 * v + l)]);
  if (s.group2) {
    const float p2 = qm.vq_scale[1] * float(qm.vq_book[size_t((book1_size(s) + i2) * v + l)]);
    u = u + p2;
  }
  if (s.colnorm) {
    const float p = u * qm.col_scale[size_t(c)];
    u = p + qm.col_bias[size_t(c)];
  }
  return u;
}

std::vector<float> dequantize_dense(const QuantizedMatrix& qm) {
  std::vector<float> out(static_cast<size_t>(qm.rows * qm.cols));
  for (int64_t r = 0; r < qm.rows; ++r)
    for (int64_t c = 0; c < qm.cols; ++c) out[size_t(r * qm.cols + c)] = value(qm, r, c);
  return out;
}

Search make_search(const float* book, int k, int v) {
  Search s;
  s.v = v;
  s.k = k;
  s.book.assign(book, book + int64_t(k) * v);
  s.t.resize(size_t(k) * size_t(v));
  s.norm2.assign(size_t(k), 0.f);
  for (int i = 0; i < k; ++i)
    for (int l = 0; l < v; ++l) {
      const float x = book[i * v + l];
      s.t[size_t(l * k + i)] = x;
      s.norm2[size_t(i)] += x * x;
    }
  return s;
}

namespace {
// argmin_i |c_i|^2 - 2 x.c_i over the transposed book (vectorizes over i).
template <int V>
int32_t nearest_full(const Search& s, const float* x) {
  const int k = s.k;
  const float* t = s.t.data();
  const float* n2 = s.norm2.data();
  float best = INFINITY;
  int32_t bi = 0;
  constexpr int kChunk = 64;
  float d[kChunk];
  for (int i0 = 0; i0 < k; i0 += kChunk) {
    const int m = std::min(kChunk, k - i0);
    for (int i = 0; i < m; ++i) {
      float dot = 0.f;
      for (int l = 0; l < V; ++l) dot += x[l] * t[l * k + i0 + i];
      d[i] = n2[i0 + i] - 2.f * dot;
    }
    for (int i = 0; i < m; ++i)
      if (d[i] < best) best = d[i], bi = i0 + i;
  }
  return bi;
}
}  // namespace

int32_t nearest(const Search& s, const float* x, int nv) {
  if (nv == s.v) {
    switch (s.v) {
      case 2: return nearest_full<2>(s, x);
      case 4: return nearest_full<4>(s, x);
      case 8: return nearest_full<8>(s, x);
      default: break;
    }
  }
  // a partial vector (the last rows of a tensor whose rows are not a multiple of v): its real entries
  float best = INFINITY;
  int32_t bi = 0;
  for (int i = 0; i < s.k; ++i) {
    float d = 0.f;
    for (int l = 0; l < nv; ++l) {
      const float e = x[l] - s.book[size_t(i * s.v + l)];
      d += e * e;
    }
    if (d < best) best = d, bi = i;
  }
  return bi;
}

std::vector<float> kmeans(const float* x, int64_t n, int v, const double* wt, int k, int iters, uint64_t seed,
                          ThreadPool* pool, std::vector<int32_t>* assign_out) {
  LMP_ASSERT(v >= 1 && k >= 1 && n >= 0);
  std::vector<float> c(size_t(k) * size_t(v), 0.f);
  std::vector<int32_t> as(size_t(n), -1);
  if (n == 0) {
    if (assign_out) assign_out->clear();
    return c;
  }
  {  // k distinct vectors (a seeded partial shuffle)
    std::mt19937_64 rng(seed);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), int64_t(0));
    const int64_t m = std::min<int64_t>(k, n);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t j = i + int64_t(rng() % uint64_t(n - i));
      std::swap(idx[size_t(i)], idx[size_t(j)]);
      std::copy(x + idx[size_t(i)] * v, x + idx[size_t(i)] * v + v, c.begin() + i * v);
    }
  }
  std::vector<double> err(static_cast<size_t>(n));
  std::atomic<int64_t> changed{0};
  auto assign = [&](int64_t a, int64_t b) {
    const Search s = make_search(c.data(), k, v);
    int64_t ch = 0;
    for (int64_t i = a; i < b; ++i) {
      const float* xi = x + i * v;
      const int32_t j = nearest(s, xi, v);
      double e = 0;
      for (int l = 0; l < v; ++l) {
        const double d = double(xi[l]) - double(c[size_t(j * v + l)]);
        e += d * d;
      }
      err[size_t(i)] = e * (wt ? wt[i] : 1.0);
      if (as[size_t(i)] != j) ++ch, as[size_t(i)] = j;
    }
    changed += ch;
  };
  for (int it = 0; it <= iters; ++it) {
    changed = 0;
    if (pool && pool->size() > 1 && n * k * v > (int64_t(1) << 18))
      pool->parallel_for(n, [&](int, int64_t a, int64_t b) {
        if (a < b) assign(a, b);
      });
    else
      assign(0, n);
    if (it == iters || (it > 0 && changed == 0)) break;
    std::vector<double> sum(size_t(k) * size_t(v), 0.0), w(size_t(k), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double wi = wt ? wt[i] : 1.0;
      const int32_t j = as[size_t(i)];
      w[size_t(j)] += wi;
      for (int l = 0; l < v; ++l) sum[size_t(j * v + l)] += wi * double(x[i * v + l]);
    }
    std::vector<int32_t> empty;
    for (int j = 0; j < k; ++j) {
      if (w[size_t(j)] > 0)
        for (int l = 0; l < v; ++l) c[size_t(j * v + l)] = float(sum[size_t(j * v + l)] / w[size_t(j)]);
      else
        empty.push_back(j);
    }
    if (!empty.empty() && n > k) {  // re-seed empty clusters with the worst-served vectors
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), int64_t(0));
      const size_t m = std::min(empty.size(), order.size());
      std::partial_sort(order.begin(), order.begin() + int64_t(m), order.end(),
                        [&](int64_t a, int64_t b) { return err[size_t(a)] > err[size_t(b)] || (err[size_t(a)] == err[size_t(b)] && a < b); });
      for (size_t e = 0; e < m; ++e)
        if (err[size_t(order[e])] > 0)
          std::copy(x + order[e] * v, x + order[e] * v + v, c.begin() + empty[e] * v);
    }
  }
  if (assign_out) *assign_out = std::move(as);
  return c;
}

float to_int8(const float* c, int64_t n, int8_t* out) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(c[i]));
  const float scale = amax > 0.f ? amax / 127.f : 1.f;
  if (!std::isfinite(scale)) fail("", "codebook value beyond the f32 range");
  for (int64_t i = 0; i < n; ++i) out[i] = int8_t(std::clamp(std::nearbyint(c[i] / scale), -127.f, 127.f));
  return scale;
}

void column_norm(const float* w, int64_t rows, int64_t cols, std::vector<float>& scale, std::vector<float>& bias) {
  scale.assign(size_t(cols), 1.f);
  bias.assign(size_t(cols), 0.f);
  for (int64_t c = 0; c < cols; ++c) {
    double s1 = 0, s2 = 0;
    for (int64_t r = 0; r < rows; ++r) s1 += w[r * cols + c];
    const double mean = s1 / double(rows);
    for (int64_t r = 0; r < rows; ++r) s2 += (w[r * cols + c] - mean) * (w[r * cols + c] - mean);
    const double sd = std::sqrt(s2 / double(rows));
    const float b = f16_to_f32(f32_to_f16(float(mean)));
    const float s = f16_to_f32(f32_to_f16(float(sd)));
    if (!std::isfinite(b) || !std::isfinite(s))
      fail("", "column " + std::to_string(c) + ": mean or deviation beyond the f16 range of the column norm");
    bias[size_t(c)] = b;
    scale[size_t(c)] = s > 1e-6f * std::fabs(b) && s >= 6.2e-5f ? s : 1.f;  // tiny / subnormal deviation: no scaling
  }
}

namespace {
// The vectors [real row blocks * cols][v] of w (column by column), zero past the last row.
std::vector<float> vectors_of(const float* w, int64_t rows, int64_t cols, int v) {
  const int64_t rb = (rows + v - 1) / v;
  std::vector<float> x(size_t(rb * cols * v), 0.f);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t b = 0; b < rb; ++b)
      for (int l = 0; l < v && b * v + l < rows; ++l) x[size_t((c * rb + b) * v + l)] = w[(b * v + l) * cols + c];
  return x;
}
}  // namespace

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s) {
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail("", "cannot quantize a non-finite weight (index " + std::to_string(i) + ")");
  std::vector<float> wn(w, w + rows * cols);
  if (s.colnorm) {
    column_norm(w, rows, cols, qm.col_scale, qm.col_bias);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        wn[size_t(r * cols + c)] = (w[r * cols + c] - qm.col_bias[size_t(c)]) / qm.col_scale[size_t(c)];
  }
  const int v = s.group;
  const int64_t rb = real_row_blocks(s, rows), n = rb * cols;
  std::vector<float> x = vectors_of(wn.data(), rows, cols, v);
  auto stage = [&](int bits, int st, std::vector<float>& target) {
    const int k = 1 << bits;
    const std::vector<float> c = kmeans(target.data(), n, v, nullptr, k, 6, 1234 + uint64_t(st), nullptr);
    int8_t* book = qm.vq_book.data() + (st == 0 ? 0 : book1_size(s) * v);
    qm.vq_scale[st] = to_int8(c.data(), int64_t(k) * v, book);
    std::vector<float> deq(size_t(k) * size_t(v));
    for (int64_t i = 0; i < int64_t(k) * v; ++i) deq[size_t(i)] = qm.vq_scale[st] * float(book[i]);
    const Search sr = make_search(deq.data(), k, v);
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t b = 0; b < rb; ++b) {
        float* xi = target.data() + (c * rb + b) * v;
        const int nv = int(std::min<int64_t>(v, rows - b * v));
        const int32_t j = nearest(sr, xi, nv);
        qm.vq_codes[size_t(b * cols + c)] |= uint32_t(j) << (st == 0 ? 0 : s.bits);
        for (int l = 0; l < v; ++l) xi[l] -= deq[size_t(j * v + l)];  // the residual for stage 2
      }
  };
  stage(s.bits, 0, x);
  if (s.group2) stage(s.group2, 1, x);
  return qm;
}

QuantizedMatrix random_matrix(const QuantSpec& s, int64_t rows, int64_t cols, uint32_t seed) {
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  std::mt19937 rng(seed);
  for (auto& b : qm.vq_book) b = int8_t(int(rng() % 255) - 127);
  qm.vq_scale[0] = 0.02f / 127.f;
  qm.vq_scale[1] = s.group2 ? 0.005f / 127.f : 0.f;
  const uint32_t mask = (uint32_t(1) << code_bits(s)) - 1;
  for (auto& c : qm.vq_codes) c = rng() & mask;
  if (s.colnorm)
    for (int64_t c = 0; c < cols; ++c) {
      qm.col_scale[size_t(c)] = f16_to_f32(f32_to_f16(0.5f + float(rng() % 1000) / 1000.f));
      qm.col_bias[size_t(c)] = f16_to_f32(f32_to_f16(float(int(rng() % 200) - 100) * 1e-5f));
    }
  return qm;
}

}  // namespace vq

namespace {

using vq::Layout;

bool valid(const QuantSpec& s) {
  auto bits_ok = [](int b) { return b >= vq::kMinBits && b <= vq::kMaxBits; };
  return s.family == FormatFamily::Vq && (s.group == 2 || s.group == 4 || s.group == 8) && bits_ok(s.bits) &&
         (s.group2 == 0 || bits_ok(s.group2)) && s.sym && s.param == 0;
}

std::string name_of(const QuantSpec& s) {
  std::string n = "vq";
  n += std::to_string(s.group);
  n += 'k';
  n += std::to_string(s.bits);
  if (s.group2) {
    n += 'r';
    n += std::to_string(s.group2);
  }
  if (s.colnorm) n += 'n';
  return n;
}

// vq<v>k<b>[r<b2>][n]
bool parse(const std::string& n, QuantSpec* out) {
  if (n.size() < 5 || n.compare(0, 2, "vq") != 0) return false;
  size_t i = 2;
  auto number = [&](int* v) {
    size_t j = i;
    while (j < n.size() && j - i < 2 && n[j] >= '0' && n[j] <= '9') ++j;
    if (j == i || n[i] == '0') return false;
    *v = std::stoi(n.substr(i, j - i));
    i = j;
    return true;
  };
  QuantSpec s{4, 4, true, FormatFamily::Vq};
  if (!number(&s.group) || i >= n.size() || n[i++] != 'k' || !number(&s.bits)) return false;
  if (i < n.size() && n[i] == 'r') {
    ++i;
    if (!number(&s.group2)) return false;
  }
  if (i < n.size() && n[i] == 'n') {
    s.colnorm = true;
    ++i;
  }
  if (i != n.size()) return false;
  *out = s;
  return true;
}

// A representative set (the family has 3 x 9 x 10 x 2 formats): the parity tests run each.
void list(std::vector<QuantSpec>& v) {
  for (const char* n : {"vq2k8n", "vq4k6", "vq4k8", "vq4k8n", "vq4k12", "vq4k8r4n", "vq4k8r8", "vq8k8r8n", "vq8k10"}) {
    QuantSpec s;
    LMP_ASSERT(parse(n, &s));
    v.push_back(s);
  }
}

PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  const Layout L = vq::layout(s, rows, cols);
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.group = s.group;
  g.groups_per_row = 0;
  g.scale_size = 4;
  g.scale_bytes = L.book + (L.codes - L.colnorm);  // the codebook scales and the column norm
  g.table_bytes = L.colnorm - L.book;              // the codebooks
  g.q_bytes = L.code_bytes;
  g.total_bytes = L.total;
  return g;
}

float read_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  const QuantSpec& s = qm.spec;
  const Layout L = vq::layout(s, g.rows, g.cols);
  const int v = s.group, cb = vq::code_bits(s);
  const int64_t rb = vq::row_blocks(s, g.rows), nbook = (vq::book1_size(s) + vq::book2_size(s)) * v;
  if (int64_t(qm.vq_codes.size()) != rb * g.cols)
    fail(where, "vq codes: " + std::to_string(qm.vq_codes.size()) + " values, expected " + std::to_string(rb * g.cols) +
                    " (" + std::to_string(rb) + " vectors of " + std::to_string(v) + " rows per column)");
  if (int64_t(qm.vq_book.size()) != nbook)
    fail(where, "vq codebooks: " + std::to_string(qm.vq_book.size()) + " values, expected " + std::to_string(nbook));
  for (int st = 0; st < 2; ++st) {
    const float sc = qm.vq_scale[st];
    if (!std::isfinite(sc) || sc < 0.f || (st == 1 && !s.group2 && sc != 0.f))
      fail(where, "vq codebook scale " + std::to_string(st + 1) + " is " + std::to_string(sc) +
                      " (finite and >= 0; 0 for a missing residual stage)");
    std::memcpy(out + 4 * st, &sc, 4);
  }
  std::memcpy(out + L.book, qm.vq_book.data(), size_t(nbook));
  if (s.colnorm) {
    if (int64_t(qm.col_scale.size()) != g.cols || int64_t(qm.col_bias.size()) != g.cols)
      fail(where, "vq column norm: " + std::to_string(qm.col_scale.size()) + " scales and " +
                      std::to_string(qm.col_bias.size()) + " biases, expected " + std::to_string(g.cols));
    uint16_t* dst = reinterpret_cast<uint16_t*>(out + L.colnorm);
    for (int64_t c = 0; c < 2 * g.cols; ++c) {
      const float x = c < g.cols ? qm.col_scale[size_t(c)] : qm.col_bias[size_t(c - g.cols)];
      const uint16_t h = f32_to_f16(x);
      if (!std::isfinite(x) || f16_to_f32(h) != x)
        fail(where, std::string("vq column ") + (c < g.cols ? "scale " : "bias ") + std::to_string(x) + " of column " +
                        std::to_string(c % g.cols) + " is not a finite f16 value");
      std::memcpy(dst + c, &h, 2);
    }
  } else if (!qm.col_scale.empty() || !qm.col_bias.empty()) {
    fail(where, "vq column norm given for " + format_name(s) + ", which has none (the n suffix)");
  }
  uint8_t* q = out + L.codes;
  const uint32_t limit = uint32_t(1) << cb;
  for (int64_t b = 0; b < rb; ++b)
    for (int64_t c = 0; c < g.cols; ++c) {
      const uint32_t code = qm.vq_codes[size_t(b * g.cols + c)];
      if (code >= limit)
        fail(where, "vq code " + std::to_string(code) + " of vector " + std::to_string(b) + ", column " + std::to_string(c) +
                        " exceeds " + std::to_string(cb) + " bits");
      const int64_t bit = vq::code_pos(s, g.cols, b, c) * cb;
      uint64_t x = uint64_t(code) << (bit % 8);
      for (int64_t k = bit / 8; x; ++k, x >>= 8) q[k] = uint8_t(q[k] | (x & 0xff));
    }
}

kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  const Layout L = vq::layout(s, g.rows, g.cols);
  kern::QWeights w;
  w.q = base + L.codes;
  w.rows = g.rows;
  w.cols = g.cols;
  w.bits = s.bits;
  w.vq_bits2 = s.group2;
  w.vq_v = s.group;
  w.vq_s1 = read_f32(base);
  w.vq_s2 = read_f32(base + 4);
  w.vq_book = reinterpret_cast<const int8_t*>(base + L.book);
  if (s.colnorm) {
    w.col_scale = reinterpret_cast<const uint16_t*>(base + L.colnorm);
    w.col_bias = w.col_scale + g.cols;
  }
  return w;
}

void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  const Layout L = vq::layout(s, g.rows, g.cols);
  const int v = s.group, cb = vq::code_bits(s);
  const int64_t rb = vq::row_blocks(s, g.rows);
  qm.vq_scale[0] = read_f32(data);
  qm.vq_scale[1] = read_f32(data + 4);
  std::memcpy(qm.vq_book.data(), data + L.book, qm.vq_book.size());
  if (s.colnorm) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(data + L.colnorm);
    for (int64_t c = 0; c < g.cols; ++c) {
      qm.col_scale[size_t(c)] = f16_to_f32(p[c]);
      qm.col_bias[size_t(c)] = f16_to_f32(p[g.cols + c]);
    }
  }
  (void)v;
  const uint8_t* q = data + L.codes;
  for (int64_t b = 0; b < rb; ++b)
    for (int64_t c = 0; c < g.cols; ++c) {
      const int64_t bit = vq::code_pos(s, g.cols, b, c) * cb;
      uint64_t x = 0;
      std::memcpy(&x, q + bit / 8, 8);  // (the stream ends with 8 slack bytes)
      qm.vq_codes[size_t(b * g.cols + c)] = uint32_t((x >> (bit % 8)) & ((uint64_t(1) << cb) - 1));
    }
}

void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where) {
  for (int st = 0; st < 2; ++st) {
    const float sc = read_f32(data + 4 * st);
    if (!std::isfinite(sc) || sc < 0.f || (st == 1 && !s.group2 && sc != 0.f))
      fail(where, "vq codebook scale " + std::to_string(st + 1) + " is " + std::to_string(sc) +
                      " (must be finite and >= 0; 0 without a residual stage)");
  }
  if (s.colnorm) {
    const Layout L = vq::layout(s, g.rows, g.cols);
    const uint16_t* p = reinterpret_cast<const uint16_t*>(data + L.colnorm);
    for (int64_t c = 0; c < 2 * g.cols; ++c)
      if ((p[c] & 0x7c00) == 0x7c00)
        fail(where, std::string("non-finite f16 vq column ") + (c < g.cols ? "scale" : "bias") + " of column " +
                        std::to_string(c % g.cols));
  }
}

std::unique_ptr<Grid> grid(const QuantSpec& s) {
  fail("", format_name(s) + ": a vq format's weights are entries of codebook vectors, so it has no scalar grid; "
                            "only the vptq method quantizes to it (use vptq:" + format_name(s) + ")");
}

}  // namespace

const FormatTraits vq_format = {
    FormatFamily::Vq, "vq", "vectors of v weights along a column's rows, b-bit indices into a per-tensor codebook (+ residual; VPTQ)",
    ActKind::F32, nullptr, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    {&kern::vq_kernels_scalar, &kern::vq_kernels_avx2, &kern::vq_kernels_avx512},
    false, nullptr, true,
};

}  // namespace lmpress
