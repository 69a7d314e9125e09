// The trellis family (QTIP bitshift trellis codes, formats/trellis.h) and the qtip method: the state
// value function, the Viterbi encoder against brute force (free and tail-biting), the L = 16 SIMD
// encoder against the reference, names / ids / bytes, pack round trip, every kernel level against
// the dequantized weights, corrupt files, LDLQ against no feedback, end to end on tinystories.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "engine/matmul_ext.h"
#include "formats/formats_internal.h"
#include "formats/traits.h"
#include "formats/trellis.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
using test::randn;
using test::proxy_loss;

namespace {

const uint8_t* bytes_of(const Tensor& t) { return static_cast<const uint8_t*>(t.data); }

// Cost of a path of states under values v.
float path_cost(const float* v, const float* x, const uint32_t* s, int T) {
  float c = 0;
  for (int i = 0; i < T; ++i) {
    const float d = x[i] - v[s[i]];
    c += d * d;
  }
  return c;
}

}  // namespace

// The value of a state against a byte-by-byte reading of its definition; the histogram's moments.
TEST(Trellis, StateValueFunction) {
  double m = 0, q = 0;
  int lo = 1000, hi = -1000;
  for (uint32_t s = 0; s < 65536; ++s) {
    const uint64_t x = (uint64_t(34038481u) * s + 76625530u) % (uint64_t(1) << 32);
    int sum = 0;
    for (int b = 0; b < 4; ++b) sum += int((x >> (8 * b)) & 63);
    ASSERT_EQ(kern::trellis::state_value(s), sum - 126) << s;
    ASSERT_EQ(trellis::state_values()[s], float(sum - 126));
    m += sum - 126;
    q += double(sum - 126) * (sum - 126);
    lo = std::min(lo, sum - 126), hi = std::max(hi, sum - 126);
  }
  m /= 65536;
  const double sd = std::sqrt(q / 65536 - m * m);
  std::printf("[ trellis  ] state values: mean %.4f sd %.3f range [%d, %d]\n", m, sd, lo, hi);
  EXPECT_NEAR(m, 0.0, 0.05);
  EXPECT_NEAR(sd, 36.95, 0.1);  // sqrt(4 (64^2 - 1) / 12) = 36.94 for independent uniform bytes
  EXPECT_GE(lo, -126);
  EXPECT_LE(hi, 126);
}

// Code 1 (trellis<k>h): the table from its definition (N(0, 1) quantiles at (h + 0.5) / 256 times 44,
// rounded; an inverse normal by bisection on erfc, independent of the generator) and the hash.
TEST(Trellis, HashedTableCode) {
  for (int h = 0; h < 256; ++h) {
    const double p = (h + 0.5) / 256.0;
    double lo = -10, hi = 10;
    for (int it = 0; it < 200; ++it) {
      const double mid = 0.5 * (lo + hi);
      (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    ASSERT_EQ(int(kern::trellis::kHashTable[h]), int(std::lround(44.0 * 0.5 * (lo + hi)))) << h;
  }
  double m = 0, q = 0;
  for (uint32_t st = 0; st < 65536; ++st) {
    const int h = int(((st * 40503u) & 0xffffu) >> 8);
    const int v = kern::trellis::kHashTable[h];
    ASSERT_EQ(kern::trellis::code_value(1, st), v) << st;
    ASSERT_EQ(trellis::state_values(1)[st], float(v));
    m += v, q += double(v) * v;
  }
  m /= 65536;
  EXPECT_NEAR(m, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(q / 65536 - m * m), 43.9, 0.1);
  EXPECT_EQ(kern::trellis::code_bias(1), 127);
  EXPECT_EQ(format_name(parse_format_name("trellis3h")), "trellis3h");
  EXPECT_EQ(parse_format_name("trellis3h").variant, 1);
  EXPECT_EQ(format_name(parse_format_name("trellis2h+h")), "trellis2h+h");
  EXPECT_NE(format_id(parse_format_name("trellis3h")), format_id(parse_format_name("trellis3")));
  for (const char* bad : {"trellis3x", "trellis5h", "trellish", "trellis3hh"}) EXPECT_THROW(parse_format_name(bad), Error) << bad;
}

TEST(Trellis, NamesIdsAndBytes) {
  for (int k = 2; k <= 4; ++k) {
    const std::string n = "trellis" + std::to_string(k);
    const QuantSpec s = parse_format_name(n);
    EXPECT_EQ(s.family, FormatFamily::Trellis);
    EXPECT_EQ(s.bits, k);
    EXPECT_EQ(format_name(s), n);
    const uint32_t id = format_id(s);
    EXPECT_EQ(id, uint32_t(k) | 5u << 8 | 1u << 16 | 11u << 24);
    EXPECT_EQ(format_spec(id), s);
    // the RHT bits 14 / 15 are masked off by every decode of the id
    const QuantSpec h = parse_format_name(n + "+h"), hi = parse_format_name(n + "+hi");
    EXPECT_EQ(format_id(h), id | 1u << 15);
    EXPECT_EQ(format_id(hi), id | 1u << 15 | 1u << 14);
    EXPECT_EQ(format_spec(format_id(h)), h);
    EXPECT_EQ(format_spec(format_id(hi)), hi);
    EXPECT_FALSE(format_id_valid(id | 1u << 14));  // input-only without the RHT flag
    EXPECT_FALSE(format_id_valid(id | 1u << 17));  // no sparse outliers
    EXPECT_FALSE(format_id_valid((id & ~0xf00u) | 2u << 8));  // no groups
    // exact bytes: 256 k bits per 16 x 16 tile, an f16 scale per row
    for (int64_t rows : {16, 64, 2048})
      for (int64_t cols : {16, 256, 5632}) {
        const PackedGeometry g = packed_geometry(s, rows, cols);
        EXPECT_EQ(g.total_bytes, rows * cols * k / 8 + 2 * rows);
        EXPECT_DOUBLE_EQ(packed_bpw(s, rows, cols), k + 16.0 / double(cols));
      }
  }
  for (const char* bad : {"trellis1", "trellis5", "trellis", "trellis3+s0.5", "trellis3g32"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  try {
    (void)packed_geometry(parse_format_name("trellis3"), 20, 64);
    ADD_FAILURE() << "20 rows accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of 16"), std::string::npos) << e.what();
  }
}

// Viterbi against brute force on a tiny trellis (L = 6, k = 2, T = 6): the free optimum over every
// path, and the tail-biting optimum over every cyclic bitstream of T k bits.
TEST(Trellis, ViterbiMatchesBruteForce) {
  const int L = 6, k = 2, T = 6, S = 1 << L;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> v(S), x(T);
    for (auto& a : v) a = nd(rng);
    for (auto& a : x) a = nd(rng);
    // free: every start state and every k-bit input sequence
    float best_free = INFINITY;
    for (uint32_t s0 = 0; s0 < uint32_t(S); ++s0)
      for (uint32_t in = 0; in < (1u << (k * (T - 1))); ++in) {
        uint32_t s = s0, p[T];
        p[0] = s;
        for (int i = 1; i < T; ++i) p[i] = s = (s >> k) | ((in >> (k * (i - 1))) & 3u) << (L - k);
        best_free = std::min(best_free, path_cost(v.data(), x.data(), p, T));
      }
    uint32_t st[T];
    const float vf = trellis::viterbi_ref(v.data(), L, k, x.data(), T, -1, st);
    EXPECT_FLOAT_EQ(vf, best_free);
    EXPECT_FLOAT_EQ(path_cost(v.data(), x.data(), st, T), vf);
    // tail-biting: state i = bits [k i, k i + L) of a cyclic stream of T k = 12 bits
    float best_tb = INFINITY;
    const int nb = T * k;
    for (uint32_t bits = 0; bits < (1u << nb); ++bits) {
      uint32_t p[T];
      for (int i = 0; i < T; ++i) {
        uint32_t s = 0;
        for (int j = 0; j < L; ++j) s |= ((bits >> ((k * i + j) % nb)) & 1u) << j;
        p[i] = s;
      }
      best_tb = std::min(best_tb, path_cost(v.data(), x.data(), p, T));
    }
    const float vt = trellis::viterbi_tailbiting_exact(v.data(), L, k, x.data(), T, st);
    EXPECT_FLOAT_EQ(vt, best_tb) << trial;
    // the path is tail-biting: s_0's low L - k bits are s_{T-1}'s high ones
    EXPECT_EQ(st[0] & ((1u << (L - k)) - 1), st[T - 1] >> k);
    for (int i = 1; i < T; ++i) EXPECT_EQ(st[i] & ((1u << (L - k)) - 1), st[i - 1] >> k);
    EXPECT_GE(vt, vf);
  }
}

// The L = 16 encoder at the AVX-512 level against the reference run (same costs, same path), and
// the production tail-biting encoder's stream decodes to its path.
TEST(Trellis, Viterbi16LevelsAndStream) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 36.95f);
  std::vector<float> x(256);
  for (int k = 2; k <= 4; ++k) {
    for (auto& a : x) a = nd(rng);
    std::vector<uint32_t> a(256), b(256);
    const float c0 = kern::trellis_viterbi_generic(trellis::state_values(), 16, k, x.data(), 256, -1, a.data());
    if (cpu_simd_level() >= SimdLevel::AVX512) {
      // (the same arithmetic up to FMA contraction in the AVX-512 unit: costs agree to rounding, and the
      // path found is one of equal cost)
      const float c1 = kern::trellis_viterbi16_avx512(k, x.data(), 256, -1, b.data());
      EXPECT_NEAR(c0, c1, 1e-5f * c0) << k;
      EXPECT_NEAR(path_cost(trellis::state_values(), x.data(), b.data(), 256), c1, 1e-4f * c1) << k;
      const int64_t o = int64_t(a[0] & 0xfff);
      const float d0 = kern::trellis_viterbi_generic(trellis::state_values(), 16, k, x.data(), 256, o, a.data());
      const float d1 = kern::trellis_viterbi16_avx512(k, x.data(), 256, o, b.data());
      EXPECT_NEAR(d0, d1, 1e-5f * d0) << k;
      EXPECT_NEAR(path_cost(trellis::state_values(), x.data(), b.data(), 256), d1, 1e-4f * d1) << k;
      EXPECT_EQ(b[0] & 0x3fffu >> (k - 2), uint32_t(o));
    } else {
      std::printf("[  SKIPPED ] avx512 Viterbi not supported by this CPU\n");
    }
    if (cpu_simd_level() >= SimdLevel::AVX2) {  // the AVX2 run: the same contract
      for (const int code : {0, 1}) {
        const float* vals = trellis::state_values(code);
        for (const int64_t o : {int64_t(-1), int64_t(a[0] & ((1u << (16 - k)) - 1))}) {
          std::vector<uint32_t> r(256);
          const float c2 = kern::trellis_viterbi_generic(vals, 16, k, x.data(), 256, o, r.data());
          const float c3 = kern::trellis_viterbi16_avx2(k, x.data(), 256, o, b.data(), code);
          EXPECT_NEAR(c2, c3, 1e-5f * c2) << k;
          EXPECT_NEAR(path_cost(vals, x.data(), b.data(), 256), c3, 1e-4f * c3) << k;
          if (o >= 0) {
            EXPECT_EQ(int64_t(b[0] & ((1u << (16 - k)) - 1)), o);
          }
        }
      }
    } else {
      std::printf("[  SKIPPED ] avx2 Viterbi not supported by this CPU\n");
    }
    uint8_t stream[128];
    const float ce = trellis::encode_sequence(x.data(), k, stream);
    float chk = 0;
    for (int i = 0; i < 256; ++i) {
      const float d = x[size_t(i)] - float(kern::trellis::state_value(kern::trellis::state_at(stream, k, i)));
      chk += d * d;
    }
    EXPECT_NEAR(chk, ce, 1e-3 * ce);
    // the tail-biting approximation costs little over the free optimum (whose 16 free start bits are
    // worth about 16 / 256 bits per weight, up to ~8% of distortion at these rates)
    EXPECT_GE(ce, c0 * 0.9999f);
    EXPECT_LT(ce, c0 * 1.06f) << k;
    std::printf("[ trellis  ] k=%d free Viterbi %.1f, tail-biting (QTIP approximation) %.1f\n", k, c0, ce);
  }
}

// The half-precision Viterbi (AVX512-FP16 where the CPU has it) against its scalar reference state
// for state and cost for cost, both codes, free and constrained runs, with targets beyond the clamp
// and runs of equal targets (ties); its paths cost what the f32 run's do (MSE within 0.5 % over 24
// sequences); and at L = 8 its path is within 0.1 % of the exact optimum.
TEST(Trellis, ViterbiHalfPrecision) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 36.95f);
  {
    const int L = 8, k = 2, T = 12;
    std::vector<float> v(size_t(1) << L), x(T);
    for (auto& a : v) a = float(int(nd(rng)));
    std::vector<uint32_t> a(T), b(T);
    for (int rep = 0; rep < 20; ++rep) {
      for (auto& e : x) e = nd(rng);
      const float best = trellis::viterbi_ref(v.data(), L, k, x.data(), T, -1, a.data());
      kern::trellis_viterbi_f16_generic(v.data(), L, k, x.data(), T, -1, b.data());
      EXPECT_LE(path_cost(v.data(), x.data(), b.data(), T), best * 1.001f + 1e-3f) << rep;
    }
  }
  if (!(cpu_simd_level() >= SimdLevel::AVX512 && kern::trellis_viterbi_fp16_available())) {
    std::printf("[  SKIPPED ] AVX512-FP16 Viterbi: this CPU has no AVX512-FP16 (the scalar reference was checked)\n");
    return;
  }
  for (int code = 0; code <= 1; ++code) {
    const float* vals = trellis::state_values(code);
    for (int k = 2; k <= 4; ++k) {
      const int T = 32;
      std::vector<float> x(T);
      for (auto& e : x) e = nd(rng);
      x[3] = 5000.f, x[4] = -5000.f, x[5] = 1320.f, x[9] = 130.f;  // beyond the clamp and the values
      for (int i = 20; i < 28; ++i) x[size_t(i)] = 7.25f;             // equal targets: ties
      for (const int64_t o : {int64_t(-1), int64_t(977) % (int64_t(1) << (16 - k))}) {
        std::vector<uint32_t> a(T), b(T);
        const float c0 = kern::trellis_viterbi_f16_generic(vals, 16, k, x.data(), T, o, a.data());
        const float c1 = kern::trellis_viterbi16_fp16(k, x.data(), T, o, b.data(), code);
        EXPECT_EQ(c0, c1) << "code " << code << " k " << k << " overlap " << o;
        EXPECT_EQ(a, b) << "code " << code << " k " << k << " overlap " << o;
        EXPECT_TRUE(std::isfinite(c1));
        if (o >= 0) {
          EXPECT_EQ(int64_t(b[0] & ((1u << (16 - k)) - 1)), o);
        }
      }
    }
  }
  for (int k = 2; k <= 4; ++k) {
    double e32 = 0, e16 = 0;
    std::vector<float> x(256);
    std::vector<uint32_t> a(256), b(256);
    for (int rep = 0; rep < 24; ++rep) {
      for (auto& e : x) e = nd(rng);
      kern::trellis_viterbi16_avx512(k, x.data(), 256, -1, a.data());
      kern::trellis_viterbi16_fp16(k, x.data(), 256, -1, b.data());
      e32 += path_cost(trellis::state_values(), x.data(), a.data(), 256);
      e16 += path_cost(trellis::state_values(), x.data(), b.data(), 256);
    }
    EXPECT_LT(e16, e32 * 1.005) << k;
    std::printf("[ trellis  ] k=%d squared error, 24 free runs: f32 %.1f, f16 %.1f (%+.3f %%)\n", k, e32, e16,
                100.0 * (e16 / e32 - 1));
  }
}

// Rate-distortion of the code on N(0, 1) (unit-variance sequences, scale sd / 36.95): QTIP reports
// MSE 0.069 for its 1MAD code at k = 2 (L = 16); the Lloyd-Max scalar quantizers have 0.1175 (2 bits),
// 0.0345 (3), 0.0095 (4); the Gaussian distortion-rate bound is 4^-k.
TEST(Trellis, CodeQuality) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  const double lloyd[5] = {0, 0, 0.1175, 0.0345, 0.0095};
  for (int code = 0; code <= 1; ++code)
  for (int k = 2; k <= 4; ++k) {
    double e = 0;
    const int nseq = 8;
    const double sd = code ? 43.93 : 36.95;
    for (int q = 0; q < nseq; ++q) {
      float x[256];
      for (float& a : x) a = nd(rng) * float(sd);
      uint8_t st[128];
      e += trellis::encode_sequence(x, k, st, code) / (sd * sd);
      // the stream decodes to the encoder's error
      double chk = 0;
      for (int i = 0; i < 256; ++i) {
        const double d = x[i] - kern::trellis::code_value(code, kern::trellis::state_at(st, k, i));
        chk += d * d;
      }
      const double ce = trellis::encode_sequence(x, k, st, code);
      EXPECT_NEAR(chk, ce, 1e-3 * ce);
    }
    const double mse = e / (256.0 * nseq);
    std::printf("[ trellis  ] code %d k=%d Gaussian MSE %.4f (Lloyd-Max %.4f, D(R) %.4f)\n", code, k, mse, lloyd[k],
                std::pow(4.0, -k));
    EXPECT_LT(mse, 0.8 * lloyd[k]) << k;
    EXPECT_GT(mse, std::pow(4.0, -k)) << k;
  }
}

// Pack / unpack round trip, dequantization = the dense values, corrupt bytes refused.
TEST(Trellis, PackRoundTripAndCorruptBytes) {
  const QuantSpec s = parse_format_name("trellis3");
  const QuantizedMatrix qm = trellis::random_matrix(s, 32, 48, 9);
  const Tensor t = pack_tensor("blk.0.ffn_up.weight", qm);
  EXPECT_EQ(int64_t(t.nbytes), 32 * 48 * 3 / 8 + 64);
  const QuantizedMatrix back = unpack_tensor(t);
  EXPECT_EQ(back.q, qm.q);
  EXPECT_EQ(back.scales, qm.scales);
  const std::vector<float> d = dequantize_ref(t), dd = trellis::dequantize_dense(qm);
  EXPECT_EQ(d, dd);
  EXPECT_EQ(dequantize_matrix(qm), dd);
  // the layout: tile (rt, ct) at (rt * 3 + ct) * 96; weight (r, c) of a tile is state 16 c + r
  const uint8_t* tile = bytes_of(t) + (1 * 3 + 2) * 96;
  EXPECT_EQ(d[size_t((16 + 5) * 48 + 32 + 7)],
            qm.scales[21] * float(kern::trellis::state_value(kern::trellis::state_at(tile, 3, 16 * 7 + 5))));
  auto corrupt = [&](auto edit) {
    std::vector<uint8_t> b(bytes_of(t), bytes_of(t) + t.nbytes);
    edit(b);
    return make_owned_tensor(t.name, DType::Q, t.shape, b, t.format);
  };
  auto expect_refused = [&](const Tensor& bad, const char* what) {
    try {
      validate_packed(bad, "model.lmp");
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("model.lmp"), std::string::npos) << m;
      EXPECT_NE(m.find("ffn_up"), std::string::npos) << m;
    }
  };
  expect_refused(corrupt([&](auto& b) { b[size_t(32 * 48 * 3 / 8 + 2 * 5 + 1)] = 0x7c; }), "infinite row scale");
  expect_refused(corrupt([&](auto& b) { b.resize(b.size() - 1); }), "truncated");
  expect_refused(corrupt([&](auto& b) { b.push_back(0); }), "too long");
  {  // a shape that is not whole tiles
    std::vector<uint8_t> b(size_t(20 * 48 * 3 / 8 + 40), 0);
    expect_refused(make_owned_tensor(t.name, DType::Q, {20, 48}, b, t.format), "20 rows");
  }
  QuantizedMatrix bad = qm;
  bad.scales[3] = 0.1f;  // not an f16 value
  EXPECT_THROW(pack_tensor("x", bad), Error);
  bad = qm;
  bad.q.pop_back();
  EXPECT_THROW(pack_tensor("x", bad), Error);
}

// Every level's decode and prefill products against the dequantized weights, and against the scalar
// reference; row splits over two threads; with +h.
TEST(Trellis, KernelsAllLevels) {
  ThreadPool pool1(1), pool2(2);
  if (cpu_simd_level() >= SimdLevel::AVX512 && !kern::trellis_vbmi_available())
    std::printf("[  SKIPPED ] avx512vbmi not supported by this CPU (its extraction path is not run)\n");
  for (int novbmi = 0; novbmi < 2; ++novbmi)
  for (const char* name : {"trellis2", "trellis3", "trellis4", "trellis3+h", "trellis2h", "trellis3h", "trellis4h", "trellis2h+h"}) {
    kern::trellis_disable_vbmi(novbmi == 1);
    QuantSpec s = parse_format_name(name);
    const int64_t rows = 48, cols = 112;
    QuantSpec plain = s;
    plain.rht = 0;
    QuantizedMatrix qm = trellis::random_matrix(plain, rows, cols, 17);
    qm.spec = s;
    if (s.rht) qm.rht_in = rht_random_signs(cols, 7), qm.rht_out = rht_random_signs(rows, 8);
    const Tensor t = pack_tensor("w", qm);
    const std::vector<float> wd = dequantize_ref(t);
    auto x = randn(size_t(40 * cols), 3);
    for (int64_t c = 32; c < 64; ++c) x[size_t(c)] = 0.f;  // an all-zero block
    for (int64_t n : {1, 2, 3, 8, 40}) {
      std::vector<float> yref(size_t(n * rows));
      {
        ScopedSimdLevel sl(SimdLevel::Scalar);
        matmul(t, x.data(), n, yref.data(), pool1);
      }
      for (auto [l, amx] : {std::pair{SimdLevel::Scalar, false}, std::pair{SimdLevel::AVX2, false},
                            std::pair{SimdLevel::AVX512, false}, std::pair{SimdLevel::AVX512, true}}) {
        if (l > cpu_simd_level() || (amx && !cpu_has_amx())) {
          std::printf("[  SKIPPED ] %s%s not supported by this CPU\n", simd_level_name(l), amx ? "+amx" : "");
          continue;
        }
        ScopedSimdLevel sl(l, amx);
        for (ThreadPool* p : {&pool1, &pool2}) {
          std::vector<float> y(size_t(n * rows), NAN);
          matmul(t, x.data(), n, y.data(), *p);
          for (int64_t tk = 0; tk < n; ++tk)
            for (int64_t r = 0; r < rows; ++r) {
              double e = 0, m = 0;
              for (int64_t c = 0; c < cols; ++c) {
                e += double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
                m += std::fabs(double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
              }
              const size_t i = size_t(tk * rows + r);
              // int8 activations: |error| <= sum |w| amax / 254 per block, bounded by m / 100 here
              ASSERT_NEAR(y[i], e, 0.02 * m + 1e-6) << name << " " << simd_level_name(l) << " amx " << amx << " n=" << n;
              ASSERT_NEAR(y[i], yref[i], 1e-4 * m + 1e-6)
                  << name << " " << simd_level_name(l) << " amx " << amx << " n=" << n << " novbmi=" << novbmi;
            }
        }
      }
    }
    kern::trellis_disable_vbmi(false);
  }
}

// LDLQ (qtip with a Hessian) against every tile coded on its own (rtn) on a layer with a
// correlated Hessian: lower proxy loss tr(D H D^T) / rows.
TEST(Trellis, LdlqBeatsNoFeedback) {
  const int64_t rows = 32, cols = 64;
  const auto w = randn(size_t(rows * cols), 21);
  const std::vector<double> H = test::random_hessian(cols, 4, 0.8, 7);
  ThreadPool pool(2);
  for (const char* n : {"trellis2", "trellis3"}) {
    const QuantSpec s = parse_format_name(n);
    const QuantizedMatrix a = trellis::quantize_rtn(w.data(), rows, cols, s);
    const QuantizedMatrix b = quantize_qtip(w.data(), rows, cols, s, &H, QtipOptions{}, pool);
    const double la = proxy_loss(w.data(), dequantize_matrix(a), rows, cols, H);
    const double lb = proxy_loss(w.data(), dequantize_matrix(b), rows, cols, H);
    std::printf("[ trellis  ] %s proxy loss: no feedback %.4f, LDLQ %.4f\n", n, la, lb);
    EXPECT_LT(lb, 0.9 * la) << n;
    // rtn = qtip without a Hessian
    const QuantizedMatrix c = quantize_qtip(w.data(), rows, cols, s, nullptr, QtipOptions{}, pool);
    EXPECT_EQ(c.q, a.q);
  }
}

TEST(Trellis, GenericPathsRefuseTheFamily) {
  try {
    (void)make_grid(parse_format_name("trellis3"));
    ADD_FAILURE() << "trellis3 has a grid";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qtip:trellis3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_rule("qtip:w4g32"), Error);
  EXPECT_THROW(parse_rule("qtip:trellis3,mse"), Error);
  EXPECT_THROW(parse_rule("rtn:trellis3,mse"), Error);
  EXPECT_NO_THROW(parse_rule("qtip:trellis3+h,damp=0.05"));
  EXPECT_NO_THROW(parse_rule("rtn:trellis2"));
  const Model m = synth_model("tiny", DType::F32, 1);  // vocab 300: the embedding is not whole tiles
  try {
    (void)plan_quantization(m, parse_recipe("gptq:trellis3;token_embd.weight=rtn:w8g32"));
    ADD_FAILURE() << "gptq:trellis3 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qtip:trellis3"), std::string::npos) << e.what();
  }
  try {
    (void)plan_quantization(m, parse_recipe("qtip:trellis3"));
    ADD_FAILURE() << "a [300, 64] embedding accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token_embd"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("multiples of 16"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(plan_quantization(m, parse_recipe("qtip:trellis3+h;token_embd.weight=rtn:w8g32;output.weight=rtn:w8g32")));
}

// End to end on tinystories-279k (dim 64, hidden 192: whole tiles): qtip trellis2 with +h against
// gptq of about equal bytes, .lmp save / load with the same KLD, a corrupt scale refused at load.
TEST(Trellis, QtipEndToEndOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  PerplexityOptions po;
  po.n_ctx = 128;
  po.max_chunks = 8;
  po.n_threads = 2;
  po.base = &m;
  po.progress = false;
  auto kld = [&](const std::string& recipe, Model* keep = nullptr) {
    QuantizeOptions qo;
    qo.recipe = parse_recipe(recipe);
    qo.calib = {test::shared("data/tinystories/calib.txt"), 16, 128, 0};
    qo.n_threads = 2;
    qo.progress = false;
    Model q = quantize_model(m, qo, nullptr);
    const double k = perplexity(q, toks, po).kld;
    if (keep) *keep = std::move(q);
    return k;
  };
  Model saved;
  const double qt = kld("qtip:trellis2+h;token_embd.weight=rtn:w8g32", &saved);
  const double rt = kld("rtn:w2g64+h;token_embd.weight=rtn:w8g32");
  const double gq = kld("gptq:w2g64+h;token_embd.weight=rtn:w8g32");
  std::printf("[ trellis  ] tinystories KLD: qtip trellis2+h %.4f, rtn w2g64+h %.4f, gptq w2g64+h %.4f\n", qt, rt, gq);
  EXPECT_TRUE(std::isfinite(qt));
  EXPECT_LT(qt, rt);
  EXPECT_LT(qt, gq);
  test::TempDir dir;
  const std::string path = dir.path + "/ts.lmp";
  write_lmpress_model(saved, path);
  const Model back = load_model(path);
  EXPECT_EQ(format_name(format_spec(back.layers[0].wq.format)), "trellis2+h");
  EXPECT_NEAR(perplexity(back, toks, po).kld, qt, 1e-9);
  std::string bytes = read_text_file(path);
  const Tensor& q0 = saved.layers[0].wq;
  const PackedGeometry g = packed_geometry(format_spec(q0.format), q0.rows(), q0.cols());
  const size_t at = bytes.find(std::string(static_cast<const char*>(q0.data), size_t(g.q_bytes + 8)));
  ASSERT_NE(at, std::string::npos);
  bytes[at + size_t(g.q_bytes) + 1] = char(0x7c);  // row 0's scale -> inf
  try {
    (void)parse_lmpress_buffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ts.lmp", LoadOptions{});
    ADD_FAILURE() << "an infinite row scale was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight"), std::string::npos) << e.what();
  }
}

// qtip rules as budget candidates: exact bytes in the table, an allocation assembles a model that runs.
TEST(Trellis, BudgetCandidates) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  const Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const CalibOptions co{test::shared("data/tinystories/calib.txt"), 4, 32, 0};
  const VariantDb db = build_variant_db(m, parse_candidates("qtip:trellis2+h qtip:trellis3+h gptq:w8g64"), co, 2, false);
  std::vector<std::vector<double>> cost(db.v.size());
  for (size_t i = 0; i < db.v.size(); ++i)
    for (size_t c = 0; c < db.candidates.size(); ++c) {
      const Variant& var = db.v[i][c];
      EXPECT_EQ(int64_t(var.t.nbytes), db.table.bytes[i][c]) << db.table.names[i];
      EXPECT_TRUE(std::isfinite(var.rep.err));
      cost[i].push_back(var.rep.err);
    }
  const int64_t budget = (db.table.min_bytes() + db.table.max_bytes()) / 2;
  const KnapsackResult k = solve_mckp(db.table.bytes, cost, budget - db.table.fixed_bytes);
  const Model q = assemble_model(m, db, k.choice);
  int n_t = 0;
  for (const Tensor* t : q.weight_tensors()) n_t += t->dtype == DType::Q && format_spec(t->format).family == FormatFamily::Trellis;
  EXPECT_GT(n_t, 0);
  Engine eng(q);
  std::vector<float> logits(size_t(q.cfg.vocab_size) * 5);
  const int32_t tok[5] = {1, 5, 9, 12, 40};
  eng.forward(tok, 5, 0, logits.data(), true);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  eng.forward(tok, 1, 5, logits.data(), false);
  for (int i = 0; i < q.cfg.vocab_size; ++i) ASSERT_TRUE(std::isfinite(logits[size_t(i)]));
}
