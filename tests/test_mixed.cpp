// Mixed precision inside a tensor: the composite formats mix (MixLLM rows) and slim (SliM-LLM column
// groups) - ids, names, bytes written out from docs/formats.md, round trips, corrupt maps, products at
// every ISA level against the scalar level and a double-precision reference - and the methods: SliM's
// salience, SQC and bit-allocation search against plain double-precision computations, its GPTQ, MixLLM's
// row choice, and the mixllm allocator's budget.
// (The parts' formats are in the parity test of test_formats.cpp; composites have no kernels of their own.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "formats/composite.h"
#include "formats/formats_internal.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_quant_util.h"
#include "test_util.h"

using namespace lmpress;
using test::randn;

namespace {

int64_t a64(int64_t x) { return (x + 63) / 64 * 64; }
int64_t int_bytes(int64_t rows, int64_t cols, int bits, int group, bool sym) {
  const int64_t nb = (cols + 31) / 32, g = group ? group : cols, G = (cols + g - 1) / g;
  return rows * (nb * 4 * bits + G * (sym ? 2 : 3));
}
// docs/formats.md: mix = bitmap (padded to 64) + low part (padded to 64) + high part; slim = class map
// (padded to 64) + the N-bit asymmetric twin's bytes + 192; both rounded up to a multiple of 64.
int64_t doc_bytes(const QuantSpec& s, int64_t rows, int64_t cols) {
  if (s.family == FormatFamily::Mix) {
    const int64_t k = (rows * s.share + 999) / 1000;
    const int64_t lo = rows - k ? int_bytes(rows - k, cols, s.bits, s.group, s.sym) : 0;
    const int64_t hi = k ? int_bytes(k, cols, s.hi_bits, s.hi_group, s.hi_sym) : 0;
    return a64(a64((rows + 7) / 8) + a64(lo) + hi);
  }
  const int64_t G = (cols + s.group - 1) / s.group;
  return a64(a64((G + 3) / 4) + int_bytes(rows, cols, s.bits, s.group, false) + 192);
}

// A weight matrix with row and column scales spread over two decades (salience to find).
std::vector<float> weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> w = randn(size_t(rows * cols), seed, 0.05f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) w[size_t(r * cols + c)] *= float(0.3 + 3.0 * ((r * 7 + c / 32 * 13) % 11) / 10.0);
  return w;
}

}  // namespace

TEST(Composite, IdsNamesAndBytes) {
  for (const QuantSpec& s : composite::examples()) {
    const uint32_t id = format_id(s);
    EXPECT_TRUE(format_id_valid(id)) << format_name(s);
    EXPECT_EQ(format_spec(id), s) << format_name(s);
    EXPECT_EQ(parse_format_name(format_name(s)), s) << format_name(s);
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 200}, {64, 256}, {1, 96}, {1003, 128}})
      EXPECT_EQ(packed_geometry(s, rows, cols).total_bytes, doc_bytes(s, rows, cols)) << format_name(s) << " " << rows << "x" << cols;
  }
  EXPECT_EQ(format_name(parse_format_name("mixw4g64a_w8row_p100")), "mixw4g64a_w8row_p100");
  EXPECT_EQ(format_name(parse_format_name("slim2g128")), "slim2g128");
  EXPECT_EQ(composite::mix_hi_rows(parse_format_name("mixw4g64a_w8row_p100"), 37), 4);  // ceil(3.7)
  for (const char* bad : {"mixw4g64a_w8row_p1001", "mixw4g64a_w8row", "mixw4g64a_w8row_p010", "mixw4g64a_nf4g64_p10",
                          "mixw4g64a_w8row_p10+s0.50", "mixw4g64a_w8row_p10+h", "slim6g64", "slim1g64", "slim3g16",
                          "slim3row", "slim3g64+h", "slim3g64a"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  EXPECT_FALSE(format_id_valid(3u | 4u << 8 | 1u << 16 | 14u << 24));  // slim is asymmetric: no sym bit
  EXPECT_FALSE(format_id_valid(3u | 15u << 24));
  // every composite is refused by methods other than its own (and rtn)
  test::expect_recipes_refused({{"gptq:slim3g64", "made by slim"}, {"gptq:mixw4g64a_w8row_p100", "made by mixllm"},
                                {"slim:w3g64", "slim format"}, {"mixllm:w4g64", "mix format"},
                                {"rtn:slim3g64,mse", "clip and mse do not apply"}});
}

// Packing, unpacking and the reference dequantization agree exactly; the parts hold every weight once.
TEST(Composite, RoundTripAndParts) {
  for (const QuantSpec& s : composite::examples())
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 200}, {16, 384}}) {
      const std::string where = format_name(s) + " " + std::to_string(rows) + "x" + std::to_string(cols);
      const auto w = weights(rows, cols, uint32_t(rows + cols));
      const QuantizedMatrix q = quantize_rtn_ref(w.data(), rows, cols, s);
      const Tensor t = pack_tensor("w", q);
      ASSERT_EQ(int64_t(t.nbytes), doc_bytes(s, rows, cols)) << where;
      validate_packed(t, "test");
      const std::vector<float> d = dequantize_matrix(q), dr = dequantize_ref(t), du = dequantize_matrix(unpack_tensor(t));
      ASSERT_EQ(d, dr) << where;
      ASSERT_EQ(d, du) << where;
      const QuantizedMatrix u = unpack_tensor(t);
      EXPECT_EQ(u.part_of, q.part_of) << where;
      // every weight from the part its row / group names, at that part's precision: the error of a row
      // (mix) or group (slim) equals its part's own RTN error there
      if (s.family == FormatFamily::Mix) {
        EXPECT_EQ(std::count(q.part_of.begin(), q.part_of.end(), 1), composite::mix_hi_rows(s, rows)) << where;
        for (int p = 0; p < 2; ++p) {
          const std::vector<float> dp = dequantize_matrix(quantize_rtn_ref(w.data(), rows, cols, composite::part_spec(s, p)));
          for (int64_t r = 0; r < rows; ++r)
            if (q.part_of[size_t(r)] == p) {
              for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(d[size_t(r * cols + c)], dp[size_t(r * cols + c)]) << where;
            }
        }
      } else {
        int64_t n[3] = {0, 0, 0};
        for (uint8_t c : q.part_of) ++n[c];
        EXPECT_EQ(n[0], n[2]) << where;
        for (int p = 0; p < 3; ++p) {
          const std::vector<float> dp = dequantize_matrix(quantize_rtn_ref(w.data(), rows, cols, composite::part_spec(s, p)));
          for (int64_t c = 0; c < cols; ++c)
            if (q.part_of[size_t(c / s.group)] == p) {
              for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(d[size_t(r * cols + c)], dp[size_t(r * cols + c)]) << where;
            }
        }
      }
      // row access (the embedding path) equals the reference
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; r += 5) {
        quant_row(t, r, row.data());
        for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[size_t(c)], d[size_t(r * cols + c)]) << where << " row " << r;
      }
    }
}

// Products at every level the CPU has (and AMX), decode and prefill, against the scalar level and
// against the double-precision product of the dequantized weights (the parts read int8 activations:
// within max|x| sum |w| / 200 of it).
TEST(Composite, ProductsEveryLevel) {
  ThreadPool pool(2);
  int levels = 0;
  for (SimdLevel level : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512})
    for (bool amx : {false, true}) {
      if (level > cpu_simd_level() || (amx && (level != SimdLevel::AVX512 || !cpu_has_amx()))) {
        if (!amx) std::printf("SKIPPED: %s (not on this CPU)\n", simd_level_name(level));
        continue;
      }
      ++levels;
      for (const QuantSpec& s : composite::examples()) {
        const int64_t rows = 37, cols = 416;
        const auto w = weights(rows, cols, 7);
        const Tensor t = pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, s));
        const std::vector<float> d = dequantize_ref(t);
        for (int64_t n : {int64_t(1), int64_t(3), int64_t(33)}) {
          const auto x = randn(size_t(n * cols), uint32_t(n + 3));
          std::vector<float> y(size_t(n * rows)), ys(size_t(n * rows));
          {
            ScopedSimdLevel sl(SimdLevel::Scalar);
            matmul(t, x.data(), n, ys.data(), pool);
          }
          {
            ScopedSimdLevel sl(level, amx);
            matmul(t, x.data(), n, y.data(), pool);
          }
          for (int64_t k = 0; k < n; ++k)
            for (int64_t r = 0; r < rows; ++r) {
              double e = 0, a = 0, xm = 0;
              for (int64_t c = 0; c < cols; ++c) {
                e += double(d[size_t(r * cols + c)]) * x[size_t(k * cols + c)];
                a += std::fabs(d[size_t(r * cols + c)]);
                xm = std::max(xm, double(std::fabs(x[size_t(k * cols + c)])));
              }
              const size_t i = size_t(k * rows + r);
              const std::string where = format_name(s) + " " + simd_level_name(level) + (amx ? "+amx" : "") + " n=" + std::to_string(n);
              ASSERT_NEAR(ys[i], e, xm * a / 200 + 1e-6) << where;
              ASSERT_NEAR(y[i], ys[i], 1e-4 * (xm * a + 1e-3)) << where;
            }
        }
        if (level == SimdLevel::AVX512) {
          EXPECT_NE(quant_kernel_path(t, 1).find(format_name(s) + " = "), std::string::npos) << quant_kernel_path(t, 1);
        }
      }
    }
  EXPECT_GE(levels, 1);
  // Large enough for the gathers, scatters and sums to run on the pool's threads (n * width >= 2^15):
  // the same as the parts' products placed by hand.
  for (const char* name : {"slim3g64", "mixw4g64a_w8row_p100"}) {
    const QuantSpec s = parse_format_name(name);
    const int64_t rows = 600, cols = 256, n = 64;
    const Tensor t = pack_tensor("w", quantize_rtn_ref(weights(rows, cols, 5).data(), rows, cols, s));
    const auto x = randn(size_t(n * cols), 6);
    std::vector<float> y(size_t(n * rows)), want(size_t(n * rows), 0.f);
    matmul(t, x.data(), n, y.data(), pool);
    const auto L = composite::layout_cached(t);
    for (size_t p = 0; p < L->parts.size(); ++p) {
      const composite::Part& P = L->parts[p];
      if (P.rows * P.cols == 0) continue;
      const bool mix = s.family == FormatFamily::Mix;
      std::vector<float> xp(size_t(n * P.cols)), yp(size_t(n * P.rows));
      for (int64_t k = 0; k < n; ++k)
        for (int64_t i = 0; i < P.cols; ++i)
          xp[size_t(k * P.cols + i)] = x[size_t(k * cols + (mix ? i : L->index[p][size_t(i)]))];
      matmul(composite::part_tensor(t, *L, p), xp.data(), n, yp.data(), pool);
      for (int64_t k = 0; k < n; ++k)
        for (int64_t r = 0; r < P.rows; ++r) {
          float& w = want[size_t(k * rows + (mix ? L->index[p][size_t(r)] : r))];
          w = mix ? yp[size_t(k * P.rows + r)] : w + yp[size_t(k * P.rows + r)];
        }
    }
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], want[i], 1e-5f * (1.f + std::fabs(want[i]))) << name << " " << i;
  }
}

// The layout cache: a tensor of another shape (same bytes, format and map bytes) at the address of one
// already used gets its own layout (a streamed quantization frees finished layers; their addresses return).
TEST(Composite, LayoutCacheChecksShape) {
  const QuantSpec s = parse_format_name("slim3g64");
  const Tensor a = pack_tensor("a", quantize_rtn_ref(weights(768, 256, 1).data(), 768, 256, s));
  const Tensor b = pack_tensor("b", quantize_rtn_ref(weights(256, 768, 2).data(), 256, 768, s));
  ASSERT_EQ(a.nbytes, b.nbytes);  // the same bytes; a's 1-byte map equals the first byte of b's 3-byte map
  ThreadPool pool(2);
  const auto x = randn(size_t(4 * 768), 3);
  // b (256 x 768, 12 groups) is used at an address, then a (768 x 256, 4 groups) takes its place
  Tensor v = make_owned_tensor("v", DType::Q, {256, 768},
                               std::vector<uint8_t>(static_cast<const uint8_t*>(b.data), static_cast<const uint8_t*>(b.data) + b.nbytes),
                               b.format);
  std::vector<float> y(size_t(4 * 768)), want(size_t(4 * 768));
  matmul(v, x.data(), 4, y.data(), pool);  // caches b's layout at this address
  std::memcpy(const_cast<void*>(v.data), a.data, a.nbytes);
  v.shape = {768, 256};
  matmul(v, x.data(), 4, y.data(), pool);
  matmul(a, x.data(), 4, want.data(), pool);
  EXPECT_EQ(y, want);
}

// Hostile maps and sizes: one clear error naming the tensor, never a crash.
TEST(Composite, CorruptMapsRefused) {
  const int64_t rows = 37, cols = 200;
  const auto w = weights(rows, cols, 11);
  auto expect_refused = [&](const Tensor& t, const std::string& needle, const std::string& what) {
    try {
      validate_packed(t, "model.lmp");
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("model.lmp"), std::string::npos) << e.what();
    }
  };
  auto mutate = [&](const Tensor& t, const std::function<void(uint8_t*)>& f, int64_t cut = 0) {
    std::vector<uint8_t> b(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes - cut);
    f(b.data());
    return make_owned_tensor("blk.0.attn_q.weight", DType::Q, {rows, cols}, std::move(b), t.format);
  };
  const Tensor m = pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, parse_format_name("mixw4g64a_w8row_p100")));
  expect_refused(mutate(m, [](uint8_t* b) { b[0] ^= 1; }), "high-precision rows", "mix bitmap count");
  expect_refused(mutate(m, [](uint8_t* b) { b[4] |= 0x80; }), "past the 37 rows", "mix bitmap padding bit");
  expect_refused(mutate(m, [](uint8_t*) {}, 1), "truncated", "mix truncated");
  const Tensor s = pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, parse_format_name("slim3g32")));
  expect_refused(mutate(s, [](uint8_t* b) { b[0] |= 3; }), "class 3", "slim class 3");
  expect_refused(mutate(s, [](uint8_t* b) { b[1] = uint8_t((b[1] & ~0x30) | 0x00); b[1] = uint8_t(b[1] | 0x20); }),
                 "short last group", "slim ragged group class");
  expect_refused(mutate(s, [](uint8_t* b) { b[1] |= 0x80; }), "past the 7 groups", "slim map padding bit");
  // one more group at N+1 than at N-1 (group 0 moved up one class where it can)
  const QuantizedMatrix q = unpack_tensor(s);
  int64_t g0 = -1;
  for (int64_t j = 0; j < 6 && g0 < 0; ++j)
    if (q.part_of[size_t(j)] == 1) g0 = j;
  ASSERT_GE(g0, 0);
  expect_refused(mutate(s, [&](uint8_t* b) { b[g0 / 4] = uint8_t(b[g0 / 4] ^ (3 << (2 * (g0 % 4)))); }), "must be as many",
                 "slim unbalanced classes");
}

// SliM's group salience against the OBS saliency written out in double (explicit inverse of the
// dampened H and its Cholesky factor).
TEST(Slim, SalienceMatchesDouble) {
  const int64_t rows = 9, cols = 64, g = 16;
  const auto w = weights(rows, cols, 3);
  const std::vector<double> H = test::random_hessian(cols, 5);
  double md = 0;
  for (int64_t j = 0; j < cols; ++j) md += H[size_t(j * cols + j)];
  std::vector<double> A(H);
  for (int64_t j = 0; j < cols; ++j) A[size_t(j * cols + j)] += 0.01 * md / double(cols);
  // U with A^-1 = U^T U: the transpose of A^-1's lower Cholesky factor (only U's diagonal is read below)
  const std::vector<double> U = test::cholesky_lower(test::spd_inverse(A, cols), cols);
  const std::vector<double> sal = slim_salience(w.data(), rows, cols, g, H, 0.01);
  ASSERT_EQ(sal.size(), size_t(cols / g));
  for (int64_t j = 0; j < cols / g; ++j) {
    double e = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = j * g; c < j * g + g; ++c) e += std::pow(w[size_t(r * cols + c)] / U[size_t(c * cols + c)], 2);
    EXPECT_NEAR(sal[size_t(j)], e, 1e-6 * e) << j;
  }
}

// SQC: never worse than min-max on its own |.|^2.4 error, the zero point of min-max, the scale within
// [0.9, 1.1] of min-max's (f16 steps aside); binary groups keep their grid's params.
TEST(Slim, SqcParams) {
  const QuantSpec s3{3, 32, false, FormatFamily::Int};
  const auto g3 = make_grid(s3);
  const auto gb = make_grid(QuantSpec{1, 32, true, FormatFamily::Binary});
  int better = 0;
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    auto w = randn(32, seed);
    if (seed % 4 == 0) w[seed % 32] *= 6;  // an outlier now and then
    const GroupParams p = slim_sqc_params(*g3, w.data(), 32), m = g3->params(w.data(), 32, 1.f, nullptr);
    auto err = [&](const GroupParams& q) {
      double e = 0;
      for (float v : w) e += std::pow(std::fabs(double(v) - g3->dequantize(g3->quantize(v, q), q)), 2.4);
      return e;
    };
    EXPECT_LE(err(p), err(m) + 1e-12) << seed;
    better += err(p) < err(m) - 1e-12;
    EXPECT_GE(p.scale, 0.9f * m.scale * 0.999f);
    EXPECT_LE(p.scale, 1.1f * m.scale * 1.001f);
    const GroupParams b = slim_sqc_params(*gb, w.data(), 32), bm = gb->params(w.data(), 32, 1.f, nullptr);
    EXPECT_EQ(b.scale, bm.scale);
  }
  EXPECT_GT(better, 10);  // the search finds better ranges on most groups
}

// SBA's search: the KL of every beta against a plain double-precision recomputation (each beta's
// classes from scratch, RTN per class, outputs and clamped softmax KL in double), and the argmin.
TEST(Slim, BetaSearchMatchesDouble) {
  const int64_t rows = 24, cols = 256, T = 40;
  const QuantSpec s{2, 32, false, FormatFamily::Slim};
  const auto w = weights(rows, cols, 21);
  const auto X = randn(size_t(T * cols), 22);
  std::vector<double> sal(8);
  for (int j = 0; j < 8; ++j) sal[size_t(j)] = double((j * 5) % 8) + 0.5;  // a fixed salience order
  std::vector<double> kl;
  const int64_t beta = slim_search_beta(w.data(), rows, cols, s, sal, X.data(), T, &kl);
  ASSERT_EQ(kl.size(), 5u);
  std::vector<float> Wc[3];
  for (int c = 0; c < 3; ++c) Wc[c] = dequantize_matrix(quantize_rtn_ref(w.data(), rows, cols, composite::part_spec(s, c)));
  auto softmax = [](std::vector<double> v) {
    const double m = *std::max_element(v.begin(), v.end());
    double z = 0;
    for (double& x : v) z += x = std::exp(x - m);
    for (double& x : v) x = std::max(1e-6, x / z);
    return v;
  };
  int64_t best = 0;
  for (int64_t b = 0; b <= 4; ++b) {
    const std::vector<uint8_t> cls = composite::slim_classes(sal, cols, 32, b);
    double k = 0;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> yq(static_cast<size_t>(rows)), y0(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          yq[size_t(r)] += double(Wc[cls[size_t(c / 32)]][size_t(r * cols + c)]) * X[size_t(t * cols + c)];
          y0[size_t(r)] += double(w[size_t(r * cols + c)]) * X[size_t(t * cols + c)];
        }
      const auto p = softmax(yq), q = softmax(y0);
      for (int64_t r = 0; r < rows; ++r) k += p[size_t(r)] * (std::log(p[size_t(r)]) - std::log(q[size_t(r)]));
    }
    k /= double(T);
    EXPECT_NEAR(kl[size_t(b)], k, 1e-3 * k + 1e-7) << "beta " << b;
    if (k < kl[size_t(best)] - 1e-9 * k) best = b;
  }
  EXPECT_EQ(beta, int64_t(std::min_element(kl.begin(), kl.end()) - kl.begin()));
  // salience ascending: groups 0, 5, 2, 7, 4, 1, 6, 3
  EXPECT_EQ(composite::slim_classes(sal, cols, 32, 2), (std::vector<uint8_t>{0, 1, 1, 2, 1, 0, 2, 1}));
}

// GPTQ with per-group grids: one grid for every group reproduces plain GPTQ exactly; SliM's GPTQ beats
// SliM's RTN on the layer objective and keeps N bits on average.
TEST(Slim, GptqWithGroupGrids) {
  const int64_t rows = 32, cols = 256;
  const auto w = weights(rows, cols, 31);
  const std::vector<double> H = test::random_hessian(cols, 32);
  ThreadPool pool(2);
  const QuantSpec s3{3, 32, false, FormatFamily::Int};
  const auto grid = make_grid(s3);
  std::vector<const Grid*> same(8, grid.get());
  GptqOptions o;
  const QuantizedMatrix a = quantize_gptq(w.data(), rows, cols, s3, H, o, pool);
  o.group_grids = &same;
  const QuantizedMatrix b = quantize_gptq(w.data(), rows, cols, s3, H, o, pool);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.zeros, b.zeros);
  o.mse = true;  // the same with the mse range search (per-group grid vs the spec's)
  const QuantizedMatrix b2 = quantize_gptq(w.data(), rows, cols, s3, H, o, pool);
  o.group_grids = nullptr;
  const QuantizedMatrix a2 = quantize_gptq(w.data(), rows, cols, s3, H, o, pool);
  EXPECT_EQ(a2.q, b2.q);
  EXPECT_EQ(a2.scales, b2.scales);
  EXPECT_EQ(a2.zeros, b2.zeros);
  o.group_grids = &same;
  o.mse = false;
  o.act_order = true;
  EXPECT_THROW(quantize_gptq(w.data(), rows, cols, s3, H, o, pool), Error);
  const auto X = randn(size_t(64 * cols), 33);
  for (int n : {2, 3}) {
    const QuantSpec s{n, 32, false, FormatFamily::Slim};
    int64_t beta = -1;
    const QuantizedMatrix q = quantize_slim(w.data(), rows, cols, s, H, X.data(), 64, GptqOptions{}, SlimOptions{}, pool, &beta);
    EXPECT_GE(beta, 0);
    int64_t cnt[3] = {0, 0, 0};
    for (uint8_t c : q.part_of) ++cnt[c];
    EXPECT_EQ(cnt[0], beta);
    EXPECT_EQ(cnt[2], beta);
    const std::vector<float> dq = dequantize_matrix(q), dr = dequantize_matrix(quantize_rtn_ref(w.data(), rows, cols, s));
    const auto loss = [&](const std::vector<float>& d) {
      std::vector<float> q2(d);
      return test::proxy_loss(w.data(), q2, rows, cols, H);
    };
    EXPECT_LT(loss(dq), loss(dr)) << n;
    const Tensor t = pack_tensor("w", q);
    EXPECT_EQ(dequantize_ref(t), dq);
  }
}

// MixLLM within a tensor: the high rows are the top-k of the drop in d H d^T between the two GPTQ runs
// (row errors recomputed here in double).
TEST(Mixllm, RowsByErrorDrop) {
  const int64_t rows = 40, cols = 128;
  const auto w = weights(rows, cols, 41);
  const std::vector<double> H = test::random_hessian(cols, 42);
  ThreadPool pool(2);
  const QuantSpec s = parse_format_name("mixw2g32_w4g32_p250");
  const QuantizedMatrix q = quantize_mixllm(w.data(), rows, cols, s, H, GptqOptions{}, pool);
  const std::vector<float> dl = dequantize_matrix(quantize_gptq(w.data(), rows, cols, composite::part_spec(s, 0), H, {}, pool));
  const std::vector<float> dh = dequantize_matrix(quantize_gptq(w.data(), rows, cols, composite::part_spec(s, 1), H, {}, pool));
  auto rowerr = [&](const std::vector<float>& d, int64_t r) {
    double e = 0;
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b)
        e += (double(w[size_t(r * cols + a)]) - d[size_t(r * cols + a)]) * H[size_t(a * cols + b)] *
             (double(w[size_t(r * cols + b)]) - d[size_t(r * cols + b)]);
    return e;
  };
  std::vector<double> drop(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) drop[size_t(r)] = rowerr(dl, r) - rowerr(dh, r);
  const std::vector<double> el = row_errors(w.data(), dl, rows, cols, H);
  for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(el[size_t(r)], rowerr(dl, r), 1e-4 * rowerr(dl, r) + 1e-12);
  double min_hi = 1e300, max_lo = -1e300;
  for (int64_t r = 0; r < rows; ++r)
    (q.part_of[size_t(r)] ? min_hi : max_lo) = q.part_of[size_t(r)] ? std::min(min_hi, drop[size_t(r)]) : std::max(max_lo, drop[size_t(r)]);
  EXPECT_EQ(std::count(q.part_of.begin(), q.part_of.end(), 1), 10);
  EXPECT_GE(min_hi, max_lo * (1 - 1e-4));
  const std::vector<float> d = dequantize_matrix(q);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(d[size_t(r * cols + c)], (q.part_of[size_t(r)] ? dh : dl)[size_t(r * cols + c)]);
  // the global gains share the tensor's KL change by the rows' error drops
  const std::vector<double> g = mixllm_row_gains(0.5, 0.1, {4, 1, 0, 3}, {1, 2, 0, 1});
  EXPECT_NEAR(g[0], 0.4 * 3 / 5, 1e-12);
  EXPECT_EQ(g[1], 0.0);
  EXPECT_NEAR(g[3], 0.4 * 2 / 5, 1e-12);
  EXPECT_EQ(mixllm_row_gains(0.1, 0.2, {4, 1}, {1, 2}), (std::vector<double>{0, 0}));
}

// The mixllm and kl-rows allocators on a database: within the budget and within 1% of it, deterministic,
// some tensors mixed, the file written and loaded computes what the assembled model computes.
TEST(Mixllm, AllocatorMeetsBudget) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  const Model m = synth_model("tiny", DType::F32, 3);
  CalibOptions co{test::shared("data/tinystories/calib.txt"), 4, 32, 0};
  const VariantDb db = build_variant_db(m, parse_candidates("gptq:w2g32 gptq:w4g32 rtn:w8row"), co, 2, false);
  CalibOptions kc = co;
  kc.seed = 1;
  KlEvaluator kl(m, calibration_windows(m, kc), 2);
  test::TempDir dir;
  for (const char* alloc : {"mixllm", "kl-rows"})
  for (double bpw : {3.0, 4.9}) {
    AllocateOptions ao;
    ao.budget = bpw_to_bytes(bpw, db.table.params);
    ao.kl = &kl;
    ao.progress = false;
    ao.probe_windows = 2;
    ao.probe_tokens = 32;
    const AllocateResult a = find_allocator(alloc).run(db, m, ao);
    const AllocateResult b = find_allocator(alloc).run(db, m, ao);
    EXPECT_LE(a.bytes, ao.budget) << bpw;
    EXPECT_GE(double(a.bytes), 0.99 * double(ao.budget)) << bpw << " " << a.note;
    EXPECT_EQ(a.rules, b.rules);
    int mixed = 0;
    for (size_t i = 0; i < a.tensors.size(); ++i)
      if (!a.tensors[i].empty()) {
        ++mixed;
        EXPECT_EQ(format_spec(a.tensors[i].format).family, FormatFamily::Mix);
        EXPECT_EQ(std::memcmp(a.tensors[i].data, b.tensors[i].data, a.tensors[i].nbytes), 0);
      }
    EXPECT_GT(mixed, 0) << a.note;
    const std::string recipe = allocation_recipe(db, a.choice, &a.rules);
    const Recipe rc = parse_recipe(recipe);
    const auto plan = plan_quantization(m, rc);
    int64_t planned = 0;
    for (const auto& p : plan) planned += int64_t(p.nbytes);
    EXPECT_EQ(planned, a.bytes) << recipe;
    const Model q = assemble_model(m, db, a.choice, &a.tensors);
    test::expect_file_matches(m, q, plan, recipe, dir / (std::string(alloc) + std::to_string(int(bpw * 10)) + ".lmp"), a.bytes);
  }
}
