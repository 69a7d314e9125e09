// The vq format family and the vptq method (formats/vq.h, src/algo/vptq.cpp):
//  Vq.*  names / ids / exact bytes, the byte layout from docs/formats.md, pack / unpack round trip,
//        dequantization at every ISA level vs the reference, load-time rejection of corrupt bytes,
//        generic paths (grids, other methods) refusing the family with a clear message, the
//        weighted k-means step and the VPTQ sweep vs straightforward double-precision versions,
//        the method against plain k-means rounding, and an end-to-end quantization.
// The matmul parity of the kernels is in test_formats.cpp (kParity).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "engine/matmul_ext.h"
#include "formats/formats_internal.h"
#include "formats/traits.h"
#include "formats/vq.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_quant_util.h"
#include "test_util.h"

using namespace lmpress;
using test::randn;
using test::proxy_loss;

namespace {

const uint8_t* bytes_of(const Tensor& t) { return static_cast<const uint8_t*>(t.data); }

}  // namespace

TEST(Vq, NamesIdsAndBytes) {
  const QuantSpec s = parse_format_name("vq4k8");
  EXPECT_EQ(s.family, FormatFamily::Vq);
  EXPECT_EQ(s.group, 4);
  EXPECT_EQ(s.bits, 8);
  EXPECT_EQ(s.group2, 0);
  EXPECT_FALSE(s.colnorm);
  const QuantSpec r = parse_format_name("vq8k12r6n");
  EXPECT_EQ(r.group, 8);
  EXPECT_EQ(r.bits, 12);
  EXPECT_EQ(r.group2, 6);
  EXPECT_TRUE(r.colnorm);
  EXPECT_EQ(format_name(r), "vq8k12r6n");
  // id: bits | b2 << 4 | log2(v) << 8 | colnorm << 13 | sym << 16 | family 12 << 24; bit 12 (RHT) free
  EXPECT_EQ(format_id(s), 8u | 2u << 8 | 1u << 16 | 12u << 24);
  EXPECT_EQ(format_id(r), 12u | 6u << 4 | 3u << 8 | 1u << 13 | 1u << 16 | 12u << 24);
  EXPECT_EQ(format_spec(format_id(r)), r);
  EXPECT_FALSE(format_id_valid(format_id(s) | 1u << 12));  // the reserved bit
  EXPECT_FALSE(format_id_valid(format_id(s) | 1u << 17));  // no sparse outliers
  EXPECT_FALSE(format_id_valid(3u | 2u << 8 | 1u << 16 | 12u << 24));   // 3 index bits
  EXPECT_FALSE(format_id_valid(8u | 0u << 8 | 1u << 16 | 12u << 24));   // v = 1
  EXPECT_FALSE(format_id_valid(8u | 2u << 8 | 0u << 16 | 12u << 24));   // not sym
  for (const char* bad : {"vq", "vq4", "vq4k", "vq3k8", "vq4k3", "vq4k13", "vq4k8r", "vq4k8r2", "vq4k8x", "vq04k8", "vq4k8nn",
                          "vq16k8", "vq4k8+s0.10"})
    EXPECT_THROW(parse_format_name(bad), Error) << bad;
  // Exact bytes: 8 (scales) + codebooks + column norm + the code stream (+ 8 slack bytes).
  for (int64_t rows : {1, 3, 16, 17, 2048})
    for (int64_t cols : {1, 33, 2048}) {
      for (const char* n : {"vq4k8", "vq2k8n", "vq8k10", "vq4k8r4n", "vq4k12"}) {
        const QuantSpec q = parse_format_name(n);
        const int64_t K = (int64_t(1) << q.bits) + (q.group2 ? int64_t(1) << q.group2 : 0);
        const int64_t vecs = (rows + 15) / 16 * 16 / q.group * cols;
        const int64_t bytes = 8 + K * q.group + (q.colnorm ? 4 * cols : 0) + (vecs * (q.bits + q.group2) + 7) / 8 + 8;
        EXPECT_EQ(packed_geometry(q, rows, cols).total_bytes, bytes) << n << " " << rows << "x" << cols;
        EXPECT_DOUBLE_EQ(packed_bpw(q, rows, cols), double(bytes) * 8 / double(rows * cols));
      }
    }
  // The sizes: 2 bits per weight plus the codebook (v = 4, K = 256), 3 with K = 4096.
  EXPECT_NEAR(packed_bpw(s, 2048, 2048), 2.0 + (8 + 1024 + 8) * 8.0 / (2048.0 * 2048), 1e-12);
  EXPECT_NEAR(packed_bpw(parse_format_name("vq4k12"), 2048, 2048), 3.0 + (8 + 16384 + 8) * 8.0 / (2048.0 * 2048), 1e-12);
}

TEST(Vq, LayoutGolden) {
  // A hand-made [20, 3] vq4k4r4n tensor: 2 tiles of 16 rows, 4 vectors per tile-column, 8-bit codes.
  const QuantSpec s = parse_format_name("vq4k4r4n");
  QuantizedMatrix qm;
  qm.init(s, 20, 3);
  ASSERT_EQ(qm.vq_codes.size(), size_t(8 * 3));  // 32 padded rows / 4 = 8 row blocks
  for (size_t i = 0; i < qm.vq_codes.size(); ++i) qm.vq_codes[i] = uint32_t((i * 37 + 5) & 255);
  for (size_t i = 0; i < qm.vq_book.size(); ++i) qm.vq_book[i] = int8_t(int(i * 7 % 255) - 127);
  qm.vq_scale[0] = 0.5f;
  qm.vq_scale[1] = 0.125f;
  qm.col_scale = {1.5f, 2.f, 0.25f};
  qm.col_bias = {-1.f, 0.f, 3.f};
  const Tensor t = pack_tensor("t", qm);
  const uint8_t* b = bytes_of(t);
  float f[2];
  std::memcpy(f, b, 8);
  EXPECT_EQ(f[0], 0.5f);
  EXPECT_EQ(f[1], 0.125f);
  ASSERT_EQ(0, std::memcmp(b + 8, qm.vq_book.data(), 32 * 4));
  const uint8_t* cn = b + 8 + 128;
  EXPECT_EQ(f16_to_f32(uint16_t(cn[0] | cn[1] << 8)), 1.5f);
  EXPECT_EQ(f16_to_f32(uint16_t(cn[10] | cn[11] << 8)), 3.f);  // bias of column 2
  const uint8_t* codes = cn + 12;
  // code of vector i of tile t, column c at byte (t * 3 + c) * 4 + i (8-bit codes)
  for (int64_t rb = 0; rb < 8; ++rb)
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(codes[(rb / 4 * 3 + c) * 4 + rb % 4], qm.vq_codes[size_t(rb * 3 + c)]) << rb << " " << c;
  EXPECT_EQ(int64_t(t.nbytes), 8 + 128 + 12 + 24 + 8);
  // Values: (s1 b1[idx1][l] + s2 b2[idx2][l]) * colscale + colbias.
  const std::vector<float> d = dequantize_ref(t);
  for (int64_t r = 0; r < 20; ++r)
    for (int64_t c = 0; c < 3; ++c) {
      const uint32_t code = qm.vq_codes[size_t(r / 4 * 3 + c)];
      const float u = 0.5f * qm.vq_book[size_t((code & 15) * 4 + r % 4)] + 0.125f * qm.vq_book[size_t((16 + (code >> 4)) * 4 + r % 4)];
      EXPECT_EQ(d[size_t(r * 3 + c)], u * qm.col_scale[size_t(c)] + qm.col_bias[size_t(c)]) << r << " " << c;
    }
}

TEST(Vq, RoundTripAndDequantAllLevels) {
  for (const auto& s : all_formats()) {
    if (s.family != FormatFamily::Vq) continue;
    for (int64_t rows : {3, 40})
      for (int64_t cols : {1, 33, 130}) {
        const auto w = randn(size_t(rows * cols), uint32_t(rows * 17 + cols));
        const QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, s);
        const Tensor t = pack_tensor("w", qm);
        ASSERT_EQ(int64_t(t.nbytes), packed_geometry(s, rows, cols).total_bytes);
        EXPECT_NO_THROW(validate_packed(t, "f"));
        const QuantizedMatrix u = unpack_tensor(t);
        EXPECT_EQ(u.vq_codes, qm.vq_codes) << format_name(s);
        EXPECT_EQ(u.vq_book, qm.vq_book);
        EXPECT_EQ(u.vq_scale[0], qm.vq_scale[0]);
        EXPECT_EQ(u.vq_scale[1], qm.vq_scale[1]);
        EXPECT_EQ(u.col_scale, qm.col_scale);
        EXPECT_EQ(u.col_bias, qm.col_bias);
        // reference dequantization == the quantized matrix's values, exactly; and a sane error
        const std::vector<float> d = dequantize_ref(t), dm = dequantize_matrix(qm);
        ASSERT_EQ(d, dm) << format_name(s);
        double e = 0, n2 = 0;
        for (size_t i = 0; i < d.size(); ++i) e += (d[i] - w[i]) * (d[i] - w[i]), n2 += w[i] * w[i];
        EXPECT_LT(e, n2) << format_name(s) << " " << rows << "x" << cols;
        // every ISA level's dequant_rows (one decoded tile) gives the reference's values (exactly but
        // for the column norm's product and sum, which the SIMD compilers may fuse into one FMA)
        float amax = 0.f;
        for (float x : d) amax = std::max(amax, std::fabs(x));
        for (SimdLevel l : {SimdLevel::AVX2, SimdLevel::AVX512}) {
          if (l > cpu_simd_level()) {
            std::printf("[  SKIPPED ] %s not supported by this CPU\n", simd_level_name(l));
            continue;
          }
          const auto& tr = format_traits(s);
          std::vector<float> o(size_t(rows * cols), -7.f);
          tr.kernels[int(l)]->dequant_rows(detail::packed_view(t), 1, rows, o.data(), cols);
          for (int64_t i = 0; i < (rows - 1) * cols; ++i) {
            if (s.colnorm)
              ASSERT_NEAR(o[size_t(i)], d[size_t(cols + i)], 2.4e-7f * amax) << format_name(s) << " " << i;
            else
              ASSERT_EQ(o[size_t(i)], d[size_t(cols + i)]) << format_name(s) << " " << i;
          }
        }
        std::vector<float> row(static_cast<size_t>(cols));
        tensor_row_f32(t, rows - 1, row.data());
        for (int64_t c = 0; c < cols; ++c) ASSERT_NEAR(row[size_t(c)], d[size_t((rows - 1) * cols + c)], 2.4e-7f * amax);
      }
  }
}

TEST(Vq, CorruptBytesRejectedAtLoad) {
  const QuantSpec s = parse_format_name("vq4k6n");
  const auto w = randn(20 * 40, 3);
  const Tensor t = pack_tensor("blk.0.ffn_up.weight", quantize_rtn_ref(w.data(), 20, 40, s));
  const PackedGeometry g = packed_geometry(s, 20, 40);
  const vq::Layout L = vq::layout(s, 20, 40);
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
  const float nan = std::nanf(""), neg = -1.f, one = 1.f;
  expect_refused(corrupt([&](auto& b) { std::memcpy(b.data(), &nan, 4); }), "NaN codebook scale");
  expect_refused(corrupt([&](auto& b) { std::memcpy(b.data(), &neg, 4); }), "negative codebook scale");
  expect_refused(corrupt([&](auto& b) { std::memcpy(b.data() + 4, &one, 4); }), "residual scale without a residual stage");
  expect_refused(corrupt([&](auto& b) { b[size_t(L.colnorm + 2 * 7 + 1)] = 0x7c; }), "infinite column scale");
  expect_refused(corrupt([&](auto& b) { b[size_t(L.colnorm + 2 * 40 + 2 * 3 + 1)] = 0x7e; }), "NaN column bias");
  expect_refused(corrupt([&](auto& b) { b.resize(b.size() - 1); }), "truncated");
  expect_refused(corrupt([&](auto& b) { b.push_back(0); }), "too long");
  EXPECT_EQ(g.total_bytes, int64_t(t.nbytes));
  // pack refuses what the file could not hold
  QuantizedMatrix qm = quantize_rtn_ref(w.data(), 20, 40, s);
  QuantizedMatrix bad = qm;
  bad.vq_codes[3] = 64;  // 6-bit codes
  EXPECT_THROW(pack_tensor("x", bad), Error);
  bad = qm;
  bad.col_scale[2] = 0.1f;  // not an f16 value
  EXPECT_THROW(pack_tensor("x", bad), Error);
  bad = qm;
  bad.vq_book.pop_back();
  EXPECT_THROW(pack_tensor("x", bad), Error);
  bad = qm;
  bad.vq_scale[0] = INFINITY;
  EXPECT_THROW(pack_tensor("x", bad), Error);
}

TEST(Vq, GenericPathsRefuseTheFamily) {
  for (const char* n : {"vq4k8", "vq8k8r8n"}) {
    try {
      (void)make_grid(parse_format_name(n));
      ADD_FAILURE() << n << " has a grid";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("use vptq:") + n), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_rule("vptq:w4g32"), Error);
  EXPECT_THROW(parse_rule("vptq:vq4k8,mse"), Error);
  EXPECT_NO_THROW(parse_rule("vptq:vq4k8r8n,iters=5,damp=0.05,seed=3,act_order,block=64"));
  EXPECT_THROW(parse_rule("vptq:vq4k8,iters=-1"), Error);
  // gptq / rtn onto a vq format: refused when the output is planned, naming the method to use
  const Model m = synth_model("tiny", DType::F32, 1);
  for (const char* r : {"gptq:vq4k8", "rtn:vq4k8"}) {
    try {
      (void)plan_quantization(m, parse_recipe(r));
      ADD_FAILURE() << r << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("use vptq:vq4k8"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(plan_quantization(m, parse_recipe("vptq:vq4k8;*.ffn_down.weight=vptq:vq2k8n")));
}

// One Lloyd step of the weighted k-means vs a double-precision brute force from the same start.
TEST(Vq, WeightedKmeansStepMatchesDouble) {
  const int v = 4, k = 16;
  const int64_t n = 500;
  const auto x = randn(size_t(n * v), 5);
  std::vector<double> wt(static_cast<size_t>(n));
  std::mt19937 rng(6);
  for (auto& w : wt) w = 0.1 + double(rng() % 1000) / 100.0;
  std::vector<int32_t> a0;
  const std::vector<float> c0 = vq::kmeans(x.data(), n, v, wt.data(), k, 0, 42, nullptr, &a0);
  const std::vector<float> c1 = vq::kmeans(x.data(), n, v, wt.data(), k, 1, 42, nullptr);
  // brute force: nearest initial centroid in double, then weighted means
  std::vector<double> sum(size_t(k * v), 0.0), ws(size_t(k), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double best = INFINITY;
    int bj = -1;
    for (int j = 0; j < k; ++j) {
      double d = 0;
      for (int l = 0; l < v; ++l) d += std::pow(double(x[size_t(i * v + l)]) - c0[size_t(j * v + l)], 2);
      if (d < best) best = d, bj = j;
    }
    EXPECT_EQ(a0[size_t(i)], bj) << i;
    ws[size_t(bj)] += wt[size_t(i)];
    for (int l = 0; l < v; ++l) sum[size_t(bj * v + l)] += wt[size_t(i)] * x[size_t(i * v + l)];
  }
  int nonempty = 0;
  for (int j = 0; j < k; ++j) {
    if (ws[size_t(j)] == 0) continue;
    ++nonempty;
    for (int l = 0; l < v; ++l) EXPECT_NEAR(c1[size_t(j * v + l)], sum[size_t(j * v + l)] / ws[size_t(j)], 1e-5) << j;
  }
  EXPECT_GE(nonempty, k - 2);
  // more iterations never raise the weighted error (Lloyd)
  auto werr = [&](const std::vector<float>& c) {
    double e = 0;
    for (int64_t i = 0; i < n; ++i) {
      double best = INFINITY;
      for (int j = 0; j < k; ++j) {
        double d = 0;
        for (int l = 0; l < v; ++l) d += std::pow(double(x[size_t(i * v + l)]) - c[size_t(j * v + l)], 2);
        best = std::min(best, d);
      }
      e += wt[size_t(i)] * best;
    }
    return e;
  };
  EXPECT_LE(werr(vq::kmeans(x.data(), n, v, wt.data(), k, 10, 42, nullptr)), werr(c1) * (1 + 1e-9));
  EXPECT_LT(werr(c1), werr(c0));
}

// The VPTQ sweep vs a straightforward double-precision implementation: for each column in processing
// order, each vector to its nearest centroid (stage 2 on the rest), the error e = (w - q) / U_ii fed
// to every later column at once (w_j -= e U_ij), U the upper Cholesky factor of H^-1.
TEST(Vq, SweepMatchesDoubleReference) {
  ThreadPool pool(2);
  const int v = 4;
  const int64_t rows = 14, cols = 11;  // a partial last vector (rows 12, 13)
  const auto w = randn(size_t(rows * cols), 8);
  const auto b1 = randn(size_t(16 * v), 9);
  const auto b2 = randn(size_t(8 * v), 10, 0.3f);
  std::vector<double> H = test::random_hessian(cols, 11, 0.6, 5);
  for (int64_t j = 0; j < cols; ++j) H[size_t(j * cols + j)] += 0.05;
  for (bool act_order : {false, true})
    for (bool residual : {false, true}) {
      const std::vector<float> book2 = residual ? b2 : std::vector<float>{};
      std::vector<float> target;
      const std::vector<uint32_t> codes =
          vptq_sweep(w.data(), rows, cols, v, b1, book2, 4, H, /*block=*/3, act_order, pool, &target);
      // reference, in double
      std::vector<int64_t> perm(static_cast<size_t>(cols));
      std::iota(perm.begin(), perm.end(), int64_t(0));
      if (act_order)
        std::stable_sort(perm.begin(), perm.end(),
                         [&](int64_t a, int64_t b) { return H[size_t(a * cols + a)] > H[size_t(b * cols + b)]; });
      // U: H^-1 = U^T U. Hinv by Gauss-Jordan, then U from the Cholesky factor of the reversed Hinv.
      const int64_t n = cols;
      std::vector<double> A(size_t(n * 2 * n), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t k = 0; k < n; ++k) A[size_t(i * 2 * n + k)] = H[size_t(perm[size_t(i)] * n + perm[size_t(k)])];
        A[size_t(i * 2 * n + n + i)] = 1;
      }
      for (int64_t p = 0; p < n; ++p) {
        const double d = A[size_t(p * 2 * n + p)];
        for (int64_t k = 0; k < 2 * n; ++k) A[size_t(p * 2 * n + k)] /= d;
        for (int64_t i = 0; i < n; ++i)
          if (i != p) {
            const double f = A[size_t(i * 2 * n + p)];
            for (int64_t k = 0; k < 2 * n; ++k) A[size_t(i * 2 * n + k)] -= f * A[size_t(p * 2 * n + k)];
          }
      }
      // upper U with Hinv = U^T U: U_ii = sqrt(Hinv_ii - sum_{k<i} U_ki^2), U_ij = (Hinv_ij - sum_k U_ki U_kj) / U_ii
      std::vector<double> U(size_t(n * n), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) {
          double s = A[size_t(i * 2 * n + n + j)];
          for (int64_t k = 0; k < i; ++k) s -= U[size_t(k * n + i)] * U[size_t(k * n + j)];
          U[size_t(i * n + j)] = i == j ? std::sqrt(s) : s / U[size_t(i * n + i)];
        }
      std::vector<double> W(static_cast<size_t>(rows * n));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < n; ++i) W[size_t(r * n + i)] = w[size_t(r * n + perm[size_t(i)])];
      auto nearest = [&](const double* x, int nv, const std::vector<float>& book) {
        int best = 0;
        double bd = INFINITY;
        for (int j = 0; j < int(book.size()) / v; ++j) {
          double d = 0;
          for (int l = 0; l < nv; ++l) d += (x[l] - book[size_t(j * v + l)]) * (x[l] - book[size_t(j * v + l)]);
          if (d < bd) bd = d, best = j;
        }
        return best;
      };
      int mismatches = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t b = 0; b * v < rows; ++b) {
          const int nv = int(std::min<int64_t>(v, rows - b * v));
          double x[4], rest[4], q[4];
          for (int l = 0; l < nv; ++l) x[l] = W[size_t((b * v + l) * n + i)];
          const int j1 = nearest(x, nv, b1);
          int j2 = 0;
          for (int l = 0; l < nv; ++l) q[l] = b1[size_t(j1 * v + l)];
          if (residual) {
            for (int l = 0; l < nv; ++l) rest[l] = x[l] - q[l];
            j2 = nearest(rest, nv, b2);
            for (int l = 0; l < nv; ++l) q[l] += b2[size_t(j2 * v + l)];
          }
          const int64_t c = perm[size_t(i)];
          mismatches += codes[size_t(b * cols + c)] != (uint32_t(j1) | uint32_t(j2) << 4);
          for (int l = 0; l < nv; ++l) {
            EXPECT_NEAR(target[size_t((b * v + l) * cols + c)], x[l], 1e-4 * (1 + std::fabs(x[l])));
            const double e = (x[l] - q[l]) / U[size_t(i * n + i)];
            for (int64_t j = i + 1; j < n; ++j) W[size_t((b * v + l) * n + j)] -= e * U[size_t(i * n + j)];
          }
        }
      }
      EXPECT_EQ(mismatches, 0) << "act_order " << act_order << " residual " << residual;
    }
}

// The method: GPTQ's error feedback beats plain nearest-centroid rounding onto the same kind of
// codebook, and the residual stage and the column norm help, on the layer's proxy loss.
TEST(Vq, MethodBeatsKmeansRoundingOnProxyLoss) {
  ThreadPool pool(2);
  const int64_t rows = 64, cols = 48;
  auto w = randn(size_t(rows * cols), 12);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) w[size_t(r * cols + c)] *= 0.5f + float(c % 7) * 0.3f;  // columns of varied scale
  const std::vector<double> H = test::random_hessian(cols, 13, 0.6, 5);
  auto loss = [&](const QuantizedMatrix& qm) { return proxy_loss(w.data(), dequantize_matrix(qm), rows, cols, H); };
  VptqOptions o;
  o.iters = 15;
  const double rtn = loss(quantize_rtn_ref(w.data(), rows, cols, parse_format_name("vq4k6")));
  const double vp = loss(quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6"), H, o, pool));
  const double vpr = loss(quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6r4"), H, o, pool));
  const double vpn = loss(quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6n"), H, o, pool));
  o.refine = 3;
  const double vpf = loss(quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6"), H, o, pool));
  std::printf("[ vq       ] proxy loss with refine=3: %.4f\n", vpf);
  EXPECT_LE(vpf, vp * 1.02);  // (kept only when the dampened loss drops)
  o.refine = 0;
  o.act_order = true;
  const double vpa = loss(quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6"), H, o, pool));
  std::printf("[ vq       ] proxy loss: k-means rounding %.4f, vptq %.4f, act_order %.4f, +r4 %.4f, n %.4f\n", rtn, vp, vpa,
              vpr, vpn);
  EXPECT_LT(vp, 0.8 * rtn);
  EXPECT_LT(vpa, rtn);
  EXPECT_LT(vpr, 0.7 * vp);
  EXPECT_LT(vpn, vp);
  // deterministic for a seed
  o.act_order = false;
  const QuantizedMatrix a = quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6"), H, o, pool);
  const QuantizedMatrix b = quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6"), H, o, pool);
  EXPECT_EQ(a.vq_codes, b.vq_codes);
  EXPECT_EQ(a.vq_book, b.vq_book);
  // bad input: one clear error
  std::vector<double> Hbad = H;
  Hbad[5] = NAN;
  EXPECT_THROW(quantize_vptq(w.data(), rows, cols, parse_format_name("vq4k6"), Hbad, o, pool), Error);
  EXPECT_THROW(quantize_vptq(w.data(), rows, cols, parse_format_name("w4g32"), H, o, pool), Error);
}

// Prefill (tile path) and decode agree with the scalar reference on a tensor whose rows split into
// partial tiles over two threads; NaN activations poison only their token.
TEST(Vq, PrefillDecodeAndThreads) {
  ThreadPool pool(2);
  for (const char* name : {"vq4k8", "vq8k8r8n", "vq2k6n", "vq4k12"}) {
    const QuantSpec s = parse_format_name(name);
    const int64_t rows = 77, cols = 300, n = 21;
    const auto w = randn(size_t(rows * cols), 14);
    const Tensor t = pack_tensor("w", vq::random_matrix(s, rows, cols, 15));
    (void)w;
    auto x = randn(size_t(n * cols), 16);
    std::vector<float> yref(static_cast<size_t>(n * rows));
    {
      ScopedSimdLevel sc(SimdLevel::Scalar);
      matmul(t, x.data(), n, yref.data(), pool);
    }
    const auto wd = dequantize_ref(t);
    for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
      if (l > cpu_simd_level()) {
        std::printf("[  SKIPPED ] %s not supported by this CPU\n", simd_level_name(l));
        continue;
      }
      ScopedSimdLevel sl(l);
      std::vector<float> y(static_cast<size_t>(n * rows)), y1(static_cast<size_t>(rows));
      matmul(t, x.data(), n, y.data(), pool);
      for (int64_t tk = 0; tk < n; ++tk) {
        matmul(t, x.data() + tk * cols, 1, y1.data(), pool);
        for (int64_t r = 0; r < rows; ++r) {
          double e = 0, m = 0;
          for (int64_t c = 0; c < cols; ++c) {
            e += double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
            m += std::fabs(double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
          }
          const size_t i = size_t(tk * rows + r);
          ASSERT_NEAR(yref[i], e, 1e-5 * m) << name;
          ASSERT_NEAR(y[i], e, 1e-4 * m) << name << " " << simd_level_name(l);
          ASSERT_NEAR(y1[size_t(r)], e, 1e-4 * m) << name << " " << simd_level_name(l);
        }
      }
      auto xn = x;
      xn[5] = std::nanf("");
      matmul(t, xn.data(), 5, y.data(), pool);
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_TRUE(std::isnan(y[size_t(r)])) << name;
        EXPECT_FALSE(std::isnan(y[size_t(rows + r)])) << name;
      }
    }
  }
}

TEST(Vq, VptqEndToEndOnTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const auto toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.txt")), true);
  auto kld = [&](const std::string& recipe, bool calib, Model* keep = nullptr) {
    return test::quantized_kld(m, toks, recipe, calib ? test::shared("data/tinystories/calib.txt") : "", 16, keep);
  };
  Model saved;
  const double vp = kld("vptq:vq4k8,iters=10;token_embd.weight=rtn:w8g32", true);
  const double vpr = kld("vptq:vq4k8r6n,iters=10;token_embd.weight=rtn:w8g32", true, &saved);
  std::printf("[ vq       ] tinystories KLD: vptq vq4k8 %.4f, vq4k8r6n %.4f\n", vp, vpr);
  EXPECT_TRUE(std::isfinite(vp));
  EXPECT_LT(vpr, vp);
  EXPECT_LT(vp, 2.0);
  // The .lmp container: written, loaded (every vq tensor validated), the same KLD; a NaN codebook
  // scale in the file is refused at load, naming the tensor.
  test::TempDir dir;
  const std::string path = dir.path + "/ts.lmp";
  write_lmpress_model(saved, path);
  const Model back = load_model(path);
  EXPECT_EQ(format_name(format_spec(back.layers[0].wq.format)), "vq4k8r6n");
  PerplexityOptions po;
  po.n_ctx = 128;
  po.max_chunks = 8;
  po.n_threads = 2;
  po.base = &m;
  po.progress = false;
  EXPECT_NEAR(perplexity(back, toks, po).kld, vpr, 1e-9);
  std::string bytes = read_text_file(path);
  const Tensor& q0 = saved.layers[0].wq;
  const size_t at = bytes.find(std::string(static_cast<const char*>(q0.data), 8 + 64));
  ASSERT_NE(at, std::string::npos);
  const float nan = std::nanf("");
  std::memcpy(bytes.data() + at, &nan, 4);
  try {
    (void)parse_lmpress_buffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ts.lmp", LoadOptions{});
    ADD_FAILURE() << "a NaN codebook scale was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("codebook scale"), std::string::npos) << e.what();
  }
}

// vptq rules as budget candidates: the variant database quantizes every tensor with them, the byte
// table is the format's exact bytes, and an allocation between the candidates assembles a model
// that runs.
TEST(Vq, BudgetCandidates) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  const Model m = synth_model("tiny", DType::F32, 3);
  const CalibOptions co{test::shared("data/tinystories/calib.txt"), 4, 32, 0};
  const VariantDb db = build_variant_db(m, parse_candidates("vptq:vq4k6,iters=5 vptq:vq4k6r6n,iters=5 gptq:w8g64"), co, 2, false);
  ASSERT_EQ(db.v.size(), db.table.names.size());
  std::vector<std::vector<double>> cost(db.v.size());
  for (size_t i = 0; i < db.v.size(); ++i)
    for (size_t c = 0; c < db.candidates.size(); ++c) {
      const Variant& var = db.v[i][c];
      EXPECT_EQ(int64_t(var.t.nbytes), db.table.bytes[i][c]) << db.table.names[i];
      EXPECT_EQ(var.t.nbytes, size_t(packed_geometry(db.candidates[c].spec, var.t.rows(), var.t.cols()).total_bytes));
      EXPECT_TRUE(std::isfinite(var.rep.err));
      cost[i].push_back(var.rep.err);
    }
  // the residual stage lowers every tensor's proxy error (those with an input Hessian)
  for (size_t i = 0; i < db.v.size(); ++i) {
    if (db.v[i][0].rep.err > 0) {
      EXPECT_LT(db.v[i][1].rep.err, db.v[i][0].rep.err) << db.table.names[i];
    }
  }
  const int64_t budget = (db.table.min_bytes() + db.table.max_bytes()) / 2;
  const KnapsackResult k = solve_mckp(db.table.bytes, cost, budget - db.table.fixed_bytes);
  const Model q = assemble_model(m, db, k.choice);
  int n_vq = 0;
  for (const Tensor* t : q.weight_tensors()) n_vq += t->dtype == DType::Q && format_spec(t->format).family == FormatFamily::Vq;
  EXPECT_GT(n_vq, 0);
  EXPECT_LE(db.table.bytes_of(k.choice), budget);
  Engine eng(q);
  std::vector<float> logits(size_t(q.cfg.vocab_size) * 3);
  const int32_t tok[3] = {1, 5, 9};
  eng.forward(tok, 3, 0, logits.data(), true);  // prefill path
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  eng.forward(tok, 1, 3, logits.data(), false);  // decode path
  for (int i = 0; i < q.cfg.vocab_size; ++i) ASSERT_TRUE(std::isfinite(logits[size_t(i)]));
}

// With the randomized Hadamard transform (+h, the generic front end): id bit 15, the signs after the
// code stream, dequantization back in the model's space, and every level's product equal to it.
TEST(Vq, WithHadamardTransform) {
  const QuantSpec s = parse_format_name("vq4k8n+h");
  EXPECT_TRUE(s.rht);
  EXPECT_EQ(format_name(s), "vq4k8n+h");
  EXPECT_EQ(format_id(s), format_id(parse_format_name("vq4k8n")) | 1u << 15);
  EXPECT_EQ(format_spec(format_id(s)), s);
  const int64_t rows = 40, cols = 96, n = 5;
  QuantSpec plain = s;
  plain.rht = false;
  QuantizedMatrix qm = vq::random_matrix(plain, rows, cols, 4);
  qm.spec = s;
  qm.rht_in = rht_random_signs(cols, 7);
  qm.rht_out = rht_random_signs(rows, 8);
  const Tensor t = pack_tensor("w", qm);
  EXPECT_EQ(int64_t(t.nbytes), vq::layout(plain, rows, cols).total + (cols + 7) / 8 + (rows + 7) / 8);
  EXPECT_NO_THROW(validate_packed(t, "f"));
  const std::vector<float> wd = dequantize_ref(t);
  std::vector<float> rot = vq::dequantize_dense(qm);  // the rotated weights the codes hold
  rht_rotate_weights(rot.data(), rows, cols, qm.rht_in.data(), qm.rht_out.data(), /*inverse=*/true);
  for (size_t i = 0; i < wd.size(); ++i) ASSERT_NEAR(wd[i], rot[i], 1e-5f);
  ThreadPool pool(2);
  const auto x = randn(size_t(n * cols), 9);
  for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
    if (l > cpu_simd_level()) {
      std::printf("[  SKIPPED ] %s not supported by this CPU\n", simd_level_name(l));
      continue;
    }
    ScopedSimdLevel sl(l);
    for (int64_t nt : {int64_t(1), n}) {
      std::vector<float> y(size_t(nt * rows));
      matmul(t, x.data(), nt, y.data(), pool);
      for (int64_t tk = 0; tk < nt; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
          double e = 0, m = 0;
          for (int64_t c = 0; c < cols; ++c) {
            e += double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
            m += std::fabs(double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
          }
          ASSERT_NEAR(y[size_t(tk * rows + r)], e, 1e-4 * m + 1e-6) << simd_level_name(l) << " n=" << nt;
        }
    }
  }
}
