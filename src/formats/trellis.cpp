// The trellis format family (formats/trellis.h): names trellis2 / trellis3 / trellis4, geometry,
// packing (the family writes its code stream and row scales itself: no code planes, no scalar grid),
// load-time checks, the kernel view; and the encoder (Viterbi, tail-biting) and the no-feedback
// quantizer shared with the qtip method.
#include "formats/trellis.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "formats/traits.h"

namespace lmpress {

namespace trellis {

namespace {
// Row scale = rms * kScaleFactor / sd(values): the row's RMS lands a little inside the values'
// standard deviation (measured on Gaussian rows, docs/methods.md "qtip").
constexpr double kScaleFactor = 1.0;
}  // namespace

bool shape_ok(int64_t rows, int64_t cols) { return rows > 0 && cols > 0 && rows % kTile == 0 && cols % kTile == 0; }

std::string shape_problem(const QuantSpec& s, int64_t rows, int64_t cols) {
  return format_name(s) + " needs rows and columns that are multiples of 16 (16 x 16 trellis tiles); this tensor is [" +
         std::to_string(rows) + ", " + std::to_string(cols) + "]: give it another format with a per-tensor override";
}

const float* state_values(int code) {
  auto make = [](int c) {
    std::vector<float> t(size_t(kStates) + 16);
    for (int s = 0; s < kStates; ++s) t[size_t(s)] = float(kern::trellis::code_value(c, uint32_t(s)));
    return t;
  };
  static const std::vector<float> v0 = make(0), v1 = make(1);
  return code ? v1.data() : v0.data();
}

double values_sd(int code) {
  auto make = [](int c) {
    double m = 0, q = 0;
    const float* v = state_values(c);
    for (int s = 0; s < kStates; ++s) m += v[s], q += double(v[s]) * v[s];
    m /= kStates;
    return std::sqrt(q / kStates - m * m);
  };
  static const double sd0 = make(0), sd1 = make(1);
  return code ? sd1 : sd0;
}

float viterbi_ref(const float* vals, int L, int k, const float* x, int T, int64_t overlap, uint32_t* states) {
  if (L < 2 || L > 20 || k < 1 || k >= L || T < 1) fail("trellis", "bad trellis parameters");
  return kern::trellis_viterbi_generic(vals, L, k, x, T, overlap, states);
}

float viterbi_tailbiting_exact(const float* vals, int L, int k, const float* x, int T, uint32_t* states) {
  float best = std::numeric_limits<float>::infinity();
  std::vector<uint32_t> p(static_cast<size_t>(T));
  for (int64_t o = 0; o < (int64_t(1) << (L - k)); ++o) {
    const float c = viterbi_ref(vals, L, k, x, T, o, p.data());
    if (c < best) best = c, std::copy(p.begin(), p.end(), states);
  }
  return best;
}

namespace {
// The Viterbi run: in half precision where the CPU has AVX512-FP16 (2.3-2.9x faster, the same paths
// in most tiles and the same MSE within 0.1 %: docs/methods.md "Encoder"), unless
// LMPRESS_VITERBI=f32 asks for the f32 run every other x86 CPU makes (f16: the default).
bool viterbi_f16() {
  static const bool on = [] {
    const char* e = std::getenv("LMPRESS_VITERBI");
    const std::string v = e ? e : "f16";
    if (v != "f16" && v != "f32") fail("trellis", "LMPRESS_VITERBI must be f16 or f32, not '" + v + "'");
    return v == "f16" && kern::trellis_viterbi_fp16_available();
  }();
  return on;
}

float run16(int k, const float* x, int64_t overlap, uint32_t* states, int T, int code) {
  if (active_simd_level() == SimdLevel::AVX512 && viterbi_f16())
    return kern::trellis_viterbi16_fp16(k, x, T, overlap, states, code);
  if (active_simd_level() == SimdLevel::AVX512)
    return kern::trellis_viterbi16_avx512(k, x, T, overlap, states, code);
  if (active_simd_level() == SimdLevel::AVX2) return kern::trellis_viterbi16_avx2(k, x, T, overlap, states, code);
  return kern::trellis_viterbi_generic(state_values(code), kL, k, x, T, overlap, states);
}
}  // namespace

void states_to_stream(const uint32_t* states, int k, uint8_t* stream) {
  const int n = kern::trellis::tile_bytes(k), nbits = 8 * n;
  std::memset(stream, 0, size_t(n));
  auto put = [&](int bit, uint32_t v, int len) {
    for (int j = 0; j < len; ++j) {
      const int b = (bit + j) % nbits;
      const uint8_t m = uint8_t(1u << (b % 8));
      stream[b / 8] = uint8_t(((v >> j) & 1) ? stream[b / 8] | m : stream[b / 8] & ~m);
    }
  };
  put(0, states[0], kL);
  for (int i = 1; i < kSeq; ++i) {
    if (16 + k * (i - 1) >= nbits) break;  // the wrapped bits are state 0's (checked below)
    put(kL + k * (i - 1), states[i] >> (kL - k), k);
  }
  for (int i = 0; i < kSeq; ++i)
    LMP_ASSERT(kern::trellis::state_at(stream, k, i) == states[i]);  // tail-biting consistency
}

float encode_sequence(const float* x, int k, uint8_t* stream, int code) {
  // QTIP's tail-biting approximation: the sequence rotated by half its length has the original
  // start in its middle, where a free Viterbi path is settled; its state there gives the overlap.
  // (lmpress: the free run covers the middle half of the rotated sequence only, positions
  // [64, 192]: a bitshift trellis forgets its past after L / k steps, so 64 steps on either side of
  // the state read settle it; the pass costs half of QTIP's.)
  constexpr int kLo = kSeq / 4, kHi = 3 * kSeq / 4;
  float xr[kSeq];
  uint32_t st[kSeq];
  for (int j = kLo; j <= kHi; ++j) xr[j - kLo] = x[(j + kSeq / 2) % kSeq];
  run16(k, xr, -1, st, kHi - kLo + 1, code);
  const int64_t overlap = int64_t(st[kSeq / 2 - kLo] & ((1u << (kL - k)) - 1));
  run16(k, x, overlap, st, kSeq, code);
  states_to_stream(st, k, stream);
  const float* v = state_values(code);
  float c = 0;  // the coded sequence's squared error (the run's own cost is f16-rounded on some CPUs)
  for (int i = 0; i < kSeq; ++i) c += (x[i] - v[st[i]]) * (x[i] - v[st[i]]);
  return c;
}

float row_scale(double rms, int code) {
  const double s = rms > 0 && std::isfinite(rms) ? rms * kScaleFactor / values_sd(code) : 1.0;
  const float f = round_scale_f16(float(std::max(s, 1e-7)));
  if (!std::isfinite(f)) fail("trellis", "row scale beyond the f16 range (weights too large)");
  return f;
}

void quantize_tile(const float* w, int64_t ld, const float* sc, int k, uint8_t* stream, float* out, int64_t ldo, int code) {
  float x[kSeq];
  for (int c = 0; c < kTile; ++c)
    for (int r = 0; r < kTile; ++r) x[kern::trellis::seq_index(r, c)] = w[r * ld + c] / sc[r];
  encode_sequence(x, k, stream, code);
  if (out)
    for (int c = 0; c < kTile; ++c)
      for (int r = 0; r < kTile; ++r)
        out[r * ldo + c] =
            sc[r] * float(kern::trellis::code_value(code, kern::trellis::state_at(stream, k, kern::trellis::seq_index(r, c))));
}

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, ThreadPool* pool) {
  if (!shape_ok(rows, cols)) fail("rtn", shape_problem(s, rows, cols));
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    double q = 0;
    for (int64_t c = 0; c < cols; ++c) {
      if (!std::isfinite(w[r * cols + c])) fail("rtn", "non-finite weight at row " + std::to_string(r));
      q += double(w[r * cols + c]) * w[r * cols + c];
    }
    qm.scales[size_t(r)] = row_scale(std::sqrt(q / double(cols)), s.variant);
  }
  const int64_t cts = cols / kTile, ntiles = rows / kTile * cts, tb = kern::trellis::tile_bytes(s.bits);
  auto body = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t rt = t / cts, ct = t % cts;
      quantize_tile(w + rt * kTile * cols + ct * kTile, cols, qm.scales.data() + rt * kTile, s.bits,
                    qm.q.data() + t * tb, nullptr, 0, s.variant);
    }
  };
  if (pool && pool->size() > 1)
    pool->parallel_for(ntiles, [&](int, int64_t b, int64_t e) { body(b, e); });
  else if (ntiles > 8 && default_threads() > 1) {
    ThreadPool p(default_threads());
    p.parallel_for(ntiles, [&](int, int64_t b, int64_t e) { body(b, e); });
  } else {
    body(0, ntiles);
  }
  return qm;
}

std::vector<float> dequantize_dense(const QuantizedMatrix& qm) {
  const int k = qm.spec.bits;
  const int64_t cts = qm.cols / kTile, tb = kern::trellis::tile_bytes(k);
  std::vector<float> out(size_t(qm.rows * qm.cols));
  for (int64_t rt = 0; rt < qm.rows / kTile; ++rt)
    for (int64_t ct = 0; ct < cts; ++ct) {
      const uint8_t* t = qm.q.data() + (rt * cts + ct) * tb;
      for (int c = 0; c < kTile; ++c)
        for (int r = 0; r < kTile; ++r) {
          const int64_t R = rt * kTile + r;
          out[size_t(R * qm.cols + ct * kTile + c)] =
              qm.scales[size_t(R)] *
              float(kern::trellis::code_value(qm.spec.variant, kern::trellis::state_at(t, k, kern::trellis::seq_index(r, c))));
        }
    }
  return out;
}

QuantizedMatrix random_matrix(const QuantSpec& s, int64_t rows, int64_t cols, uint32_t seed) {
  if (!shape_ok(rows, cols)) fail("trellis", shape_problem(s, rows, cols));
  QuantizedMatrix qm;
  qm.init(s, rows, cols);
  std::mt19937 rng(seed);
  for (auto& b : qm.q) b = uint8_t(rng());
  for (auto& sc : qm.scales) sc = f16_to_f32(f32_to_f16(0.001f + float(rng() % 1000) * 1e-5f));
  return qm;
}

}  // namespace trellis

namespace {

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Trellis && s.bits >= 2 && s.bits <= 4 && s.group == 0 && s.sym && s.sparse == 0 &&
         s.group2 == 0 && !s.colnorm && s.param == 0 && (s.variant == 0 || s.variant == 1);
}

// trellis<k> (the 1MAD code), trellis<k>h (the hashed-table code, variant 1)
std::string name_of(const QuantSpec& s) { return "trellis" + std::to_string(s.bits) + (s.variant ? "h" : ""); }

bool parse(const std::string& n, QuantSpec* out) {
  if (n.size() < 8 || n.size() > 9 || n.compare(0, 7, "trellis") != 0 || n[7] < '2' || n[7] > '4') return false;
  if (n.size() == 9 && n[8] != 'h') return false;
  *out = QuantSpec{n[7] - '0', 0, true, FormatFamily::Trellis};
  out->variant = n.size() == 9 ? 1 : 0;
  return true;
}

void list(std::vector<QuantSpec>& v) {
  for (int code = 0; code <= 1; ++code)
    for (int k = 2; k <= 4; ++k) {
      QuantSpec s{k, 0, true, FormatFamily::Trellis};
      s.variant = code;
      v.push_back(s);
    }
}

// Codes [rows / 16][cols / 16][32 k], then f16 row scales [rows]. A shape that is not a multiple of
// 16 is refused here (as the ggml family refuses columns that are not a multiple of its block), so
// planning a quantization names the tensor before any work.
PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  if (!trellis::shape_ok(rows, cols)) fail("", trellis::shape_problem(s, rows, cols));
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.group = cols;
  g.groups_per_row = 1;
  g.blocks_per_row = (cols + 31) / 32;
  g.q_bytes = trellis::code_bytes(s.bits, rows, cols);
  g.scale_bytes = 2 * rows;
  g.scale_size = 2;
  g.total_bytes = g.q_bytes + g.scale_bytes;
  return g;
}

void pack(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where) {
  if (!trellis::shape_ok(g.rows, g.cols)) fail(where, trellis::shape_problem(qm.spec, g.rows, g.cols));
  if (int64_t(qm.q.size()) != g.q_bytes)
    fail(where, "trellis code stream: " + std::to_string(qm.q.size()) + " bytes, expected " + std::to_string(g.q_bytes));
  if (int64_t(qm.scales.size()) != g.rows)
    fail(where, "trellis row scales: " + std::to_string(qm.scales.size()) + ", expected " + std::to_string(g.rows));
  std::memcpy(out, qm.q.data(), size_t(g.q_bytes));
  fmt::pack_f16_scales(qm, g, out, where);
}

void unpack_params(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm) {
  qm.q.assign(data, data + g.q_bytes);
  fmt::unpack_f16_scales(data, g, qm);
}

void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where) {
  if (!trellis::shape_ok(g.rows, g.cols)) fail(where, trellis::shape_problem(s, g.rows, g.cols));
  fmt::check_f16_scales(data, g, where);
}

kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  kern::QWeights w;
  w.q = base;
  w.scales = reinterpret_cast<const uint16_t*>(base + g.q_bytes);
  w.rows = g.rows;
  w.cols = g.cols;
  w.nb = (g.cols + 31) / 32;
  w.row_bytes = 0;
  w.groups = 1;
  w.group = g.cols;
  w.bits = s.bits;
  w.zero_sym = kern::trellis::code_bias(s.variant);
  w.trellis_code = s.variant;
  return w;
}

std::unique_ptr<Grid> grid(const QuantSpec& s) {
  fail("", format_name(s) + ": a trellis format's weights are values of trellis states (a tile is one Viterbi-coded "
                            "sequence), so it has no scalar grid; quantize to it with qtip:" + format_name(s) +
                            " (or rtn:" + format_name(s) + ", no error feedback)");
}

}  // namespace

const FormatTraits trellis_format = {
    FormatFamily::Trellis, "trellis",
    "QTIP bitshift trellis (L = 16, k bits per weight): 16 x 16 tiles, each a tail-biting Viterbi-coded sequence; "
    "value of a state by integer hashing; f16 row scales",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, pack, unpack_params, check, view, grid,
    {&kern::trellis_kernels_scalar, &kern::trellis_kernels_avx2, &kern::trellis_kernels_avx512},
    false, nullptr, true,
};

}  // namespace lmpress
