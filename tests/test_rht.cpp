// Randomized Hadamard transform (+h): Hadamard constructions and the fast transform against explicit
// double-precision matrix products, exact round trips, the rotated Hessian, the packed layout (ids,
// names, sign bits, corrupt bytes), the matmul front end's online rotations against the explicitly
// transformed weights, and a quantized model's logits against the same model with the dequantized,
// explicitly transformed weights.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "formats/formats_internal.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
using test::randn;

namespace {

// The sizes the shared and real models use (tinystories 64/192, babyllama 128/352, wiki5m 256/768,
// tinyllama 2048/5632) and the Paley bases (12 = 11+1, 20, 28 = 2 * (13+1), 36, 44, 60, 68, 76, 84).
const int64_t kSizes[] = {1,  2,  4,  8,  12, 16, 20, 24,  28,  36,  44,
                          48, 60, 64, 68, 76, 84, 96, 128, 192, 352, 768};

// Sylvester entry (-1)^popcount(i & j), written independently of the library's construction.
double sylvester(int64_t i, int64_t j) { return (__builtin_popcountll(uint64_t(i & j)) & 1) ? -1.0 : 1.0; }

}  // namespace

TEST(Rht, HadamardMatricesAreOrthogonal) {
  for (int64_t n : kSizes) {
    const HadamardPlan& P = hadamard_plan(n);
    ASSERT_EQ(P.blocks * P.m * P.p, n);
    if (n == 352 || n == 768 || n == 192 || n == 44 || n == 12) {
      EXPECT_EQ(P.blocks, 1) << n;  // a full Hadamard matrix
    }
    const std::vector<double> M = hadamard_matrix(P);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t k = 0; k < n; ++k) s += M[size_t(i * n + k)] * M[size_t(j * n + k)];
        ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-12) << "n=" << n << " (" << i << "," << j << ")";
      }
    // every entry +-1/sqrt(order) inside the blocks
    const double e = 1.0 / std::sqrt(double(P.m * P.p));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t bi = i / (P.m * P.p);
      for (int64_t j = bi * P.m * P.p; j < (bi + 1) * P.m * P.p; ++j)
        ASSERT_NEAR(std::fabs(M[size_t(i * n + j)]), e, 1e-15) << n;
    }
  }
  // powers of two: the plan is Sylvester's matrix itself
  const std::vector<double> M = hadamard_matrix(hadamard_plan(64));
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 64; ++j) ASSERT_EQ(M[size_t(i * 64 + j)], sylvester(i, j) / 8.0);
  // 5632 = 44 * 128 (tinyllama's FFN) has a full matrix; 11008 = 43 * 256 (llama-7b) falls back to blocks
  EXPECT_EQ(hadamard_plan(5632).m, 44);
  EXPECT_EQ(hadamard_plan(5632).blocks, 1);
  EXPECT_EQ(hadamard_plan(11008).blocks, 43);
  EXPECT_EQ(hadamard_plan(11008).p, 256);
  EXPECT_THROW(hadamard_plan(0), Error);
}

TEST(Rht, FastTransformMatchesExplicitProduct) {
  for (const SimdLevel lvl : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
    if (int(lvl) > int(cpu_simd_level())) {
      std::printf("SKIPPED: SIMD level %s not available on this CPU\n", simd_level_name(lvl));
      continue;
    }
    ScopedSimdLevel sl(lvl);
    for (int64_t n : kSizes) {
      const HadamardPlan& P = hadamard_plan(n);
      const std::vector<double> M = hadamard_matrix(P);
      const auto x = randn(size_t(n), uint32_t(n) + 5);
      for (bool tr : {false, true}) {
        std::vector<float> y(x);
        hadamard_apply(P, y.data(), tr);
        for (int64_t i = 0; i < n; ++i) {
          double e = 0;
          for (int64_t k = 0; k < n; ++k)
            e += (tr ? M[size_t(k * n + i)] : M[size_t(i * n + k)]) * x[size_t(k)];
          ASSERT_NEAR(y[size_t(i)], e, 1e-5 * (1 + std::fabs(e))) << "n=" << n << " tr=" << tr << " i=" << i;
        }
      }
      // with signs: forward = H D x, backward = D H^T x
      const auto sg = rht_random_signs(n, uint64_t(n));
      std::vector<float> f(x), b(x);
      rht_forward(P, sg.data(), f.data());
      rht_backward(P, sg.data(), b.data());
      auto d = [&](int64_t j) { return ((sg[size_t(j / 8)] >> (j % 8)) & 1) ? -1.0 : 1.0; };
      for (int64_t i = 0; i < n; ++i) {
        double ef = 0, eb = 0;
        for (int64_t k = 0; k < n; ++k) {
          ef += M[size_t(i * n + k)] * d(k) * x[size_t(k)];
          eb += d(i) * M[size_t(k * n + i)] * x[size_t(k)];
        }
        ASSERT_NEAR(f[size_t(i)], ef, 1e-5 * (1 + std::fabs(ef))) << n;
        ASSERT_NEAR(b[size_t(i)], eb, 1e-5 * (1 + std::fabs(eb))) << n;
      }
    }
  }
}

TEST(Rht, RoundTripsAreExactToFloatRounding) {
  for (int64_t n : {int64_t(7), int64_t(352), int64_t(768), int64_t(5632), int64_t(11008)}) {
    const HadamardPlan& P = hadamard_plan(n);
    const std::vector<uint8_t> s = rht_random_signs(n, 99);
    const auto x = randn(size_t(n), 3);
    std::vector<float> y(x);
    rht_forward(P, s.data(), y.data());
    double nx = 0, ny = 0;
    for (int64_t i = 0; i < n; ++i)
      nx += double(x[size_t(i)]) * x[size_t(i)], ny += double(y[size_t(i)]) * y[size_t(i)];
    EXPECT_NEAR(ny, nx, 1e-5 * nx) << n;  // orthogonal
    rht_backward(P, s.data(), y.data());
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(y[size_t(i)], x[size_t(i)], 2e-6 * (1 + std::fabs(x[size_t(i)]))) << n;
  }
  // weights: U^T (U W V^T) V = W, and the rotation spreads a single outlier over the whole matrix
  const int64_t rows = 96, cols = 352;
  auto w = randn(size_t(rows * cols), 8, 0.01f);
  w[size_t(5 * cols + 7)] = 4.f;
  const auto si = rht_random_signs(cols, 1), so = rht_random_signs(rows, 2);
  std::vector<float> r(w);
  rht_rotate_weights(r.data(), rows, cols, si.data(), so.data(), false);
  float amax = 0;
  for (float v : r) amax = std::max(amax, std::fabs(v));
  EXPECT_LT(amax, 0.1f);  // 4 / sqrt(96 * 352) = 0.022 plus the noise
  rht_rotate_weights(r.data(), rows, cols, si.data(), so.data(), true);
  for (size_t i = 0; i < w.size(); ++i) ASSERT_NEAR(r[i], w[i], 1e-6 + 1e-6 * std::fabs(w[i])) << i;
  // signs are deterministic per seed and differ between seeds
  EXPECT_EQ(rht_random_signs(1000, 5), rht_random_signs(1000, 5));
  EXPECT_NE(rht_random_signs(1000, 5), rht_random_signs(1000, 6));
}

TEST(Rht, RotatedHessianMatchesExplicit) {
  const int64_t n = 96;
  auto X = randn(size_t(200 * n), 4);
  std::vector<double> H(size_t(n * n), 0.0);
  for (int64_t t = 0; t < 200; ++t)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        H[size_t(i * n + j)] += double(X[size_t(t * n + i)]) * X[size_t(t * n + j)] / 200.0;
  const auto s = rht_random_signs(n, 11);
  const std::vector<double> Ht = rht_rotate_hessian(H, n, s.data());
  // explicit V = Hn D in double
  const std::vector<double> M = hadamard_matrix(hadamard_plan(n));
  auto V = [&](int64_t i, int64_t j) {
    return M[size_t(i * n + j)] * (((s[size_t(j / 8)] >> (j % 8)) & 1) ? -1.0 : 1.0);
  };
  for (int64_t i = 0; i < n; i += 7)
    for (int64_t j = 0; j < n; ++j) {
      double e = 0;
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) e += V(i, a) * H[size_t(a * n + b)] * V(j, b);
      ASSERT_NEAR(Ht[size_t(i * n + j)], e, 1e-10) << i << "," << j;
    }
}

TEST(Rht, FormatIdsNamesAndLayout) {
  const QuantSpec s = parse_format_name("w3g64+s0.50+h");
  EXPECT_TRUE(s.rht);
  EXPECT_EQ(s.sparse, 50);
  EXPECT_EQ(format_name(s), "w3g64+s0.50+h");
  EXPECT_EQ(format_spec(format_id(s)), s);
  EXPECT_TRUE(format_spec(format_id(parse_format_name("spqr3g16r32+h"))).rht);
  EXPECT_EQ(format_spec(format_id(parse_format_name("spqr3g16r32+h"))).group2, 32);
  EXPECT_FALSE(format_spec(format_id(parse_format_name("spqr3g16r32"))).rht);
  EXPECT_THROW(parse_format_name("w4g32+h+s0.50"), Error);  // +h comes last
  // bytes: the format without +h, then ceil(cols / 8) + ceil(rows / 8) sign bytes
  QuantSpec plain = s;
  plain.rht = false;
  const PackedGeometry g = packed_geometry(s, 37, 100), g0 = packed_geometry(plain, 37, 100);
  EXPECT_EQ(g.rht_offset, g0.total_bytes);
  EXPECT_EQ(g.total_bytes, g0.total_bytes + 13 + 5);
  // +hi: the input side only (bit 14 of the id), input signs only
  const QuantSpec si = parse_format_name("w3g64+s0.50+hi");
  EXPECT_EQ(si.rht, 2);
  EXPECT_EQ(format_name(si), "w3g64+s0.50+hi");
  EXPECT_EQ(format_spec(format_id(si)), si);
  EXPECT_EQ(format_id(si), format_id(s) | 0x4000u);
  EXPECT_EQ(packed_geometry(si, 37, 100).total_bytes, g0.total_bytes + 13);
  EXPECT_FALSE(format_id_valid(format_id(plain) | 0x4000u));  // bit 14 without the RHT flag
}

namespace {
// A packed +h tensor of `spec` made the way the pipeline does: rotate, round, append the signs.
Tensor rotated_tensor(const QuantSpec& spec, int64_t rows, int64_t cols, uint32_t seed,
                      std::vector<float>* wq_model) {
  auto w = randn(size_t(rows * cols), seed, 0.05f);
  const auto si = rht_random_signs(cols, seed + 1), so = rht_random_signs(rows, seed + 2);
  const bool both = spec.rht == 1;  // +h; +hi: the input side only (U = I)
  rht_rotate_weights(w.data(), rows, cols, si.data(), both ? so.data() : nullptr, false);
  QuantSpec plain = spec;
  plain.rht = false;
  plain.sparse = 0;
  QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, plain);
  qm.spec.sparse = spec.sparse;  // outliers at every k-th position, f16 values
  const int64_t nnz = sparse_count(spec, rows, cols);
  for (int64_t k = 0; k < nnz; ++k) {
    qm.sp_idx.push_back(uint32_t(k * (rows * cols / nnz)));
    qm.sp_val.push_back(f16_to_f32(f32_to_f16(0.03f * float(k % 7) - 0.1f)));
  }
  // the model-space weights, explicitly: D_out H_r^T Wq~ H_c D_in with dense double matrices
  const std::vector<float> wq = dequantize_matrix(qm);
  const std::vector<double> Hr = hadamard_matrix(hadamard_plan(rows)),
                            Hc = hadamard_matrix(hadamard_plan(cols));
  auto sg = [](const std::vector<uint8_t>& s, int64_t i) {
    return ((s[size_t(i / 8)] >> (i % 8)) & 1) ? -1.0 : 1.0;
  };
  std::vector<double> T(size_t(rows * cols), 0.0);  // H_r^T Wq~
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < rows; ++k) {
      const double h = both ? Hr[size_t(k * rows + r)] : (k == r ? 1.0 : 0.0);
      for (int64_t c = 0; c < cols; ++c) T[size_t(r * cols + c)] += h * wq[size_t(k * cols + c)];
    }
  wq_model->assign(size_t(rows * cols), 0.f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double e = 0;
      for (int64_t k = 0; k < cols; ++k) e += T[size_t(r * cols + k)] * Hc[size_t(k * cols + c)];
      (*wq_model)[size_t(r * cols + c)] = float((both ? sg(so, r) : 1.0) * e * sg(si, c));
    }
  qm.spec.rht = spec.rht;
  qm.rht_in = si;
  if (both) qm.rht_out = so;
  return pack_tensor("blk.0.ffn_down.weight", qm);
}
}  // namespace

TEST(Rht, PackedTensorDequantizesToTheExplicitTransform) {
  for (const char* f : {"w4g32+h", "w3g64a+h", "nf4g64+h", "w2g32+s0.50+h", "w4g32+hi", "w3g64+s0.50+hi"}) {
    std::vector<float> ref;
    const Tensor t = rotated_tensor(parse_format_name(f), 44, 96, 7, &ref);
    ASSERT_EQ(t.format, format_id(parse_format_name(f)));
    const std::vector<float> d = dequantize_ref(t);
    const QuantizedMatrix back = unpack_tensor(t);
    EXPECT_TRUE(back.spec.rht);
    const std::vector<float> d2 = dequantize_matrix(back);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(d[i], ref[i], 1e-5) << f << " " << i;
      ASSERT_NEAR(d2[i], ref[i], 1e-5) << f << " " << i;
    }
    std::vector<float> row(96);
    dequantize_row_ref(t, 5, row.data());
    for (int64_t c = 0; c < 96; ++c) ASSERT_NEAR(row[size_t(c)], ref[size_t(5 * 96 + c)], 1e-5);
  }
}

TEST(Rht, CorruptSignBitsAreRejected) {
  std::vector<float> ref;
  const Tensor t = rotated_tensor(parse_format_name("w4g32+h"), 44, 100, 9, &ref);  // 100 columns: 4 pad bits
  validate_packed(t, "x.lmp");
  std::vector<uint8_t> bytes(static_cast<const uint8_t*>(t.data),
                             static_cast<const uint8_t*>(t.data) + t.nbytes);
  const PackedGeometry g = packed_geometry(format_spec(t.format), 44, 100);
  bytes[size_t(g.rht_offset + 12)] |= 0x80;  // a sign past column 100
  const Tensor bad = make_owned_tensor(t.name, DType::Q, {44, 100}, bytes, t.format);
  try {
    validate_packed(bad, "x.lmp");
    FAIL() << "corrupt sign bits accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.lmp"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Hadamard"), std::string::npos) << e.what();
  }
  // truncated: the size check names the format
  const Tensor cut = make_owned_tensor(t.name, DType::Q, {44, 100},
                                       std::vector<uint8_t>(bytes.begin(), bytes.end() - 1), t.format);
  EXPECT_THROW(validate_packed(cut, "x.lmp"), Error);
  // no row access (the engine's embedding lookups)
  std::vector<float> row(100);
  EXPECT_THROW(quant_row(t, 0, row.data()), Error);
}

TEST(Rht, OnlineTransformsMatchExplicitWeights) {
  ThreadPool pool(2);
  for (const SimdLevel lvl : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
    if (int(lvl) > int(cpu_simd_level())) {
      std::printf("SKIPPED: SIMD level %s not available on this CPU\n", simd_level_name(lvl));
      continue;
    }
    ScopedSimdLevel sl(lvl);
    for (const char* f : {"w4g32+h", "nf4g64+h", "w3g64+s0.50+h", "w4g64+hi"}) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{96, 352}, {352, 96}, {12, 768}}) {
        std::vector<float> wm;
        const Tensor t = rotated_tensor(parse_format_name(f), rows, cols, uint32_t(rows + cols), &wm);
        for (int64_t n : {1, 3, 5, 64}) {
          auto x = randn(size_t(n * cols), 31);
          std::vector<float> y(size_t(n * rows));
          matmul(t, x.data(), n, y.data(), pool);
          std::vector<float> ys(size_t(n * rows));
          quant_matmul_dequant_sgemm(t, x.data(), n, ys.data(), pool);
          for (int64_t tk = 0; tk < n; ++tk)
            for (int64_t r = 0; r < rows; ++r) {
              double e = 0, m = 0;
              for (int64_t c = 0; c < cols; ++c) {
                e += double(wm[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
                m += std::fabs(double(wm[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
              }
              const size_t i = size_t(tk * rows + r);
              ASSERT_NEAR(ys[i], e, 1e-4 * m) << f << " n=" << n;
              ASSERT_NEAR(y[i], e, 0.02 * m) << f << " n=" << n;  // int8 activations of the rotated input
            }
        }
      }
    }
  }
  // q/k/v-style batch: three tensors sharing the input signs, one with other signs; all correct
  std::vector<float> w0, w1, w2;
  const Tensor a = rotated_tensor(parse_format_name("w4g32+h"), 64, 128, 5, &w0);
  const Tensor b = rotated_tensor(parse_format_name("w4g32+h"), 32, 128, 5, &w1);  // same input seed
  const Tensor c =
      rotated_tensor(parse_format_name("w4g32"), 32, 128, 6, &w2);  // no transform (RTN of rotated w)
  const int64_t n = 9;
  auto x = randn(size_t(n * 128), 2);
  std::vector<float> ya(size_t(n * 64)), yb(size_t(n * 32)), yc(size_t(n * 32)), ya1(ya.size()),
      yb1(yb.size()), yc1(yc.size());
  const MatmulJob jobs[3] = {
      {&a, x.data(), n, ya.data()}, {&b, x.data(), n, yb.data()}, {&c, x.data(), n, yc.data()}};
  matmul_batch(jobs, 3, pool);
  matmul(a, x.data(), n, ya1.data(), pool);
  matmul(b, x.data(), n, yb1.data(), pool);
  matmul(c, x.data(), n, yc1.data(), pool);
  EXPECT_EQ(ya, ya1);
  EXPECT_EQ(yb, yb1);
  EXPECT_EQ(yc, yc1);
}

TEST(Rht, QuantizedModelLogitsEqualExplicitlyTransformedWeights) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.oneline.txt");
  const Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  QuantizeOptions qo;
  qo.recipe = parse_recipe("gptq:w4g32+h");
  qo.calib = {test::shared("data/tinystories/calib.oneline.txt"), 4, 64, 1};
  qo.progress = false;
  QuantizeReport rep;
  const Model q = quantize_model(m, qo, &rep);
  // every linear layer rotated; the (tied) embedding is not
  EXPECT_FALSE(format_spec(q.tok_embd.format).rht);
  EXPECT_TRUE(format_spec(q.layers[0].w_down.format).rht);
  EXPECT_TRUE(format_spec(q.layers[2].wq.format).rht);
  // q/k/v share their input's signs (one rotation per input)
  const PackedGeometry gq =
      packed_geometry(format_spec(q.layers[1].wq.format), q.layers[1].wq.rows(), q.layers[1].wq.cols());
  const PackedGeometry gk =
      packed_geometry(format_spec(q.layers[1].wk.format), q.layers[1].wk.rows(), q.layers[1].wk.cols());
  EXPECT_EQ(0, std::memcmp(q.layers[1].wq.as<uint8_t>() + gq.rht_offset,
                           q.layers[1].wk.as<uint8_t>() + gk.rht_offset, size_t((gq.cols + 7) / 8)));
  // the same model with every packed linear layer replaced by its dequantized, explicitly transformed weights
  Model d;
  d.cfg = q.cfg;
  d.tok_embd = q.tok_embd;
  d.layers = q.layers;
  d.out_norm = q.out_norm;
  d.output = q.output;
  for (auto& L : d.layers)
    for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      *t = make_f32_tensor(t->name, t->shape, dequantize_ref(*t));
  const std::vector<int32_t> toks =
      m.tokenizer->encode("Once upon a time, there was a little cat named Tom.", true);
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = 64;
  std::vector<float> lq(toks.size() * size_t(q.cfg.vocab_size)), ld(lq.size()), lf(lq.size());
  Engine(q, eo).forward(toks.data(), int64_t(toks.size()), 0, lq.data(), true);
  Engine(d, eo).forward(toks.data(), int64_t(toks.size()), 0, ld.data(), true);
  Engine(m, eo).forward(toks.data(), int64_t(toks.size()), 0, lf.data(), true);
  double dmax = 0, fmax = 0;
  for (size_t i = 0; i < lq.size(); ++i) {
    dmax = std::max(dmax, double(std::fabs(lq[i] - ld[i])));
    fmax = std::max(fmax, double(std::fabs(lq[i] - lf[i])));
  }
  // The two differ by the int8 quantization of the (rotated) activations only: on this tiny model
  // that moves logits by a few tenths (the same recipe without +h: 2.8 between its packed and its
  // dequantized f32 model); the weights' quantization moves them by several units. A wrong sign or
  // a missing transform moves them by as much as the logits themselves.
  EXPECT_LT(dmax, 0.15 * fmax) << "quantized vs explicit " << dmax << ", vs f32 model " << fmax;
  const int64_t V = q.cfg.vocab_size;
  int agree = 0;
  for (size_t t = 0; t < toks.size(); ++t) {
    const float* a = lq.data() + t * size_t(V);
    const float* b = ld.data() + t * size_t(V);
    agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
  }
  EXPECT_GE(agree, int(toks.size()) - 1) << agree << " of " << toks.size() << " top-1 tokens agree";
}
