// Scalar reference of the trellis kernels (the specification, kernels/trellis_rows.h): every weight
// decoded by state_value, integer block dots, y = scale_r * (sum_b d_b dot_b - 126 X); the repacked
// tile builder; and the Viterbi reference for any number of state bits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/trellis_rows.h"

namespace lmpress::kern {

using namespace trellis;

namespace {

// Codes u = value + 126 of the 16 x cols rows of tile row rt: out[r][c] (row-major, ld cols).
void decode_tile_row(const QWeights& w, int64_t rt, uint8_t* out) {
  const int64_t ct_n = w.cols / kTile;
  for (int64_t ct = 0; ct < ct_n; ++ct) {
    const uint8_t* t = tile_ptr(w, rt, ct);
    for (int c = 0; c < kTile; ++c)
      for (int r = 0; r < kTile; ++r)
        out[r * w.cols + ct * kTile + c] =
            uint8_t(code_value(w.trellis_code, state_at(t, w.bits, seq_index(r, c))) + code_bias(w.trellis_code));
  }
}

}  // namespace

void trellis_dequant_rows_scalar(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  std::vector<uint8_t> u(size_t(kTile * w.cols));
  for (int64_t rt = r0 / kTile; rt * kTile < r1; ++rt) {
    decode_tile_row(w, rt, u.data());
    for (int64_t r = std::max(r0, rt * kTile); r < std::min(r1, rt * kTile + kTile); ++r) {
      const float s = w.scale(r, 0);
      const uint8_t* ur = u.data() + (r - rt * kTile) * w.cols;
      for (int64_t c = 0; c < w.cols; ++c) out[(r - r0) * ldo + c] = s * float(int32_t(ur[c]) - code_bias(w.trellis_code));
    }
  }
}

namespace {

void trellis_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const QActs& a = A.a;
  std::vector<uint8_t> u(size_t(kTile * w.cols));
  for (int64_t rt = r0 / kTile; rt * kTile < r1; ++rt) {
    decode_tile_row(w, rt, u.data());
    for (int64_t r = std::max(r0, rt * kTile); r < std::min(r1, rt * kTile + kTile); ++r) {
      const uint8_t* ur = u.data() + (r - rt * kTile) * w.cols;
      const float s = w.scale(r, 0);
      for (int64_t t = t0; t < t1; ++t) {
        const int8_t* qa = a.qa + t * a.a_stride;
        float acc = 0.f;
        for (int64_t b = 0; b < w.nb; ++b) {
          int32_t dot = 0;
          for (int64_t c = b * kQBlock; c < std::min(w.cols, (b + 1) * kQBlock); ++c) dot += int32_t(ur[c]) * qa[c];
          acc += a.d[b * a.n + t] * float(dot);
        }
        A.y[t * A.ldy + r] = s * (acc - float(code_bias(w.trellis_code)) * a.x[t]);
      }
    }
  }
}

}  // namespace

QRepacked trellis_repack_geometry(const QWeights& w) {
  QWeights w8 = w;  // the int family's whole-row 8-bit layout: codes u, zero 126
  w8.bits = 8;
  w8.groups = 1;
  w8.group = w.nb * kQBlock;  // one unit per block (a 16-column row must not look like group 16)
  QRepacked p = repack_geometry(w8);
  p.code_max = 2 * code_bias(w.trellis_code);
  p.code_offset = code_bias(w.trellis_code);  // corr = -bias x the row scale exactly (the AMX kernel uses signed codes)
  p.tiles = 1;
  return p;
}

void trellis_repack_tile_scalar(const QWeights& w, int64_t rt, const QRepacked& p, uint8_t* out) {
  std::vector<uint8_t> u(size_t(kTile * w.cols));
  decode_tile_row(w, rt, u.data());
  std::fill(out, out + p.tile_bytes, uint8_t(0));
  uint16_t* sc = reinterpret_cast<uint16_t*>(out + p.code_bytes);
  float* corr = reinterpret_cast<float*>(out + p.code_bytes + p.scale_bytes);
  for (int i = 0; i < kTile; ++i) {
    const int64_t r = rt * kTile + i;
    for (int64_t c = 0; c < w.cols; ++c) {
      const int64_t b = c / kQBlock, j = (c % kQBlock) / 4;
      out[b * 8 * 64 + j * 64 + i * 4 + c % 4] = u[size_t(i * w.cols + c)];
    }
    for (int64_t b = 0; b < w.nb; ++b) sc[b * kTile + i] = w.scales[r];
    corr[i] = -(w.scale(r, 0) * float(code_bias(w.trellis_code)));
  }
}

float trellis_viterbi_generic(const float* vals, int L, int k, const float* x, int T, int64_t overlap, uint32_t* states) {
  const int64_t S = int64_t(1) << L, G = S >> k;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> cost(static_cast<size_t>(S)), next(static_cast<size_t>(S));
  std::vector<uint8_t> bp(static_cast<size_t>(T) * static_cast<size_t>(G));
  for (int64_t s = 0; s < S; ++s) {
    const float d = x[0] - vals[s];
    cost[size_t(s)] = overlap < 0 || (s & (G - 1)) == overlap ? d * d : inf;
  }
  for (int i = 1; i < T; ++i) {
    uint8_t* b = bp.data() + size_t(i) * size_t(G);
    for (int64_t g = 0; g < G; ++g) {
      // predecessors of the successors g | t << (L - k): the 2^k states g << k | l
      float m = cost[size_t(g << k)];
      int best = 0;
      for (int l = 1; l < (1 << k); ++l)
        if (cost[size_t(g << k | l)] < m) m = cost[size_t(g << k | l)], best = l;
      b[g] = uint8_t(best);
      for (int64_t t = 0; t < (int64_t(1) << k); ++t) {
        const float d = x[i] - vals[g + t * G];
        next[size_t(g + t * G)] = m + d * d;
      }
    }
    cost.swap(next);
  }
  float m = inf;
  int64_t last = -1;
  for (int64_t s = 0; s < S; ++s)
    if ((overlap < 0 || (s >> k) == overlap) && cost[size_t(s)] < m) m = cost[size_t(s)], last = s;
  if (last < 0) return inf;
  uint32_t s = uint32_t(last);
  states[T - 1] = s;
  for (int i = T - 1; i > 0; --i) {
    const uint32_t g = s & uint32_t(G - 1);
    s = g << k | bp[size_t(i) * size_t(G) + g];
    states[i - 1] = s;
  }
  return m;
}

namespace {
// x rounded to the nearest f16 value (ties to even; +-inf beyond the range), as a float. x is exact
// here (a sum, product or difference of f16 values held in long double: at most 64 significant
// bits for the operands the Viterbi makes), so this one rounding is the hardware's.
float round_f16(long double x) {
  if (!(std::fabs(x) < 65520.0L)) return std::isnan(double(x)) ? float(x) : std::copysign(std::numeric_limits<float>::infinity(), float(x));
  if (x == 0) return float(x);
  const double xd = double(x);
  if (static_cast<long double>(xd) == x) {  // the usual case: exact in double, exponent from its bits
    uint64_t b;
    std::memcpy(&b, &xd, sizeof b);
    const int e = std::max(int((b >> 52) & 0x7ff) - 1023, -14);  // subnormals: quantum 2^-24
    const uint64_t qb = uint64_t(e - 10 + 1023) << 52;            // 2^(e - 10): 11 significant bits
    double q;
    std::memcpy(&q, &qb, sizeof q);
    return float(std::nearbyint(xd / q) * q);  // default rounding mode: ties to even
  }
  const int e = std::max(std::ilogb(x), -14);
  const long double q = std::ldexp(1.0L, e - 10);
  return float(std::nearbyint(x / q) * q);
}
}  // namespace

float trellis_viterbi_f16_generic(const float* vals, int L, int k, const float* x, int T, int64_t overlap,
                                  uint32_t* states) {
  const int64_t S = int64_t(1) << L, G = S >> k;
  const int N = 1 << k;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v(static_cast<size_t>(S)), m(static_cast<size_t>(G)), next(static_cast<size_t>(G));
  for (int64_t s = 0; s < S; ++s) v[size_t(s)] = round_f16(vals[s] * trellis::kViterbiF16Scale);
  std::vector<uint8_t> bp(static_cast<size_t>(T) * static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) m[size_t(g)] = overlap < 0 || g == overlap ? 0.f : inf;
  float mu = 0;
  double lowered = 0;
  for (int i = 0; i < T; ++i) {
    const float xi = round_f16(trellis::viterbi_f16_input(x[i]));
    float next_mu = inf;
    for (int64_t g = 0; g < G; ++g) {
      // the costs of the states g << k | l: the predecessor group's minimum plus the squared error
      float best = inf;
      int arg = 0;
      for (int l = 0; l < N; ++l) {
        const int64_t s = g << k | l;
        const float d = round_f16((long double)xi - v[size_t(s)]);
        const float c = round_f16((long double)d * d + m[size_t(s & (G - 1))]);
        if (l == 0 || c < best) best = c, arg = l;
      }
      bp[size_t(i) * size_t(G) + size_t(g)] = uint8_t(arg);
      const float r = round_f16((long double)best - mu);
      next[size_t(g)] = r;
      next_mu = std::min(next_mu, r);
    }
    lowered += mu;
    mu = next_mu;
    m.swap(next);
  }
  float best = inf;
  int64_t gbest = -1;
  if (overlap >= 0) {
    if (m[size_t(overlap)] < inf) best = m[size_t(overlap)], gbest = overlap;
  } else {
    for (int64_t g = 0; g < G; ++g)
      if (m[size_t(g)] < best) best = m[size_t(g)], gbest = g;
  }
  if (gbest < 0) return inf;
  uint32_t s = uint32_t(gbest << k | bp[size_t(T - 1) * size_t(G) + size_t(gbest)]);
  states[T - 1] = s;
  for (int i = T - 1; i > 0; --i) {
    const uint32_t g = s & uint32_t(G - 1);
    s = g << k | bp[size_t(i - 1) * size_t(G) + g];
    states[i - 1] = s;
  }
  const double sc = double(trellis::kViterbiF16Scale);
  return float((lowered + best) / (sc * sc));
}

const FormatKernels trellis_kernels_scalar = {SimdLevel::Scalar, trellis_gemm, trellis_dequant_rows_scalar};

}  // namespace lmpress::kern
