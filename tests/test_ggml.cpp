// The ggml family (llama.cpp's block types, src/formats/ggml.cpp):
//  GgmlFormats.*  names, exact bits per weight, refusals (quantizing to them, ragged rows),
//                 load-time scale checks;
//  GgmlNumpy.*    against an independent reference, the `gguf` package's numpy dequantization
//                 (tests/ggml_ref.py, run here with the Python that scripts/setup.sh prepares):
//                 dequantization and matmul of random blocks of every type at every ISA level, and
//                 a wiki5m model re-written in all twelve types loaded end to end, against the same
//                 model with numpy-dequantized f32 weights. Without that Python the tests skip loudly.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include "formats/formats_internal.h"
#include "formats/ggml_family.h"
#include "kernels/ggml_blocks.h"
#include "formats/traits.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;

namespace {

Tensor random_ggml(const char* name, int64_t rows, int64_t cols, uint64_t seed) {
  const QuantSpec s = parse_format_name(name);
  std::vector<uint8_t> bytes(size_t(packed_geometry(s, rows, cols).total_bytes));
  ggml_random_blocks(uint32_t(s.bits), rows, cols, seed, 0.01f, bytes.data());
  return make_owned_tensor("w", DType::Q, {rows, cols}, std::move(bytes), format_id(s));
}

}  // namespace

TEST(GgmlFormats, NamesAndExactBitsPerWeight) {
  const std::pair<const char*, double> kBpw[] = {
      {"q8_0", 8.5}, {"q4_0", 4.5},  {"q4_1", 5.0},     {"q5_0", 5.5},   {"q5_1", 6.0},    {"q2_k", 2.625},
      {"q3_k", 3.4375}, {"q4_k", 4.5}, {"q5_k", 5.5}, {"q6_k", 6.5625}, {"iq4_nl", 4.5}, {"iq4_xs", 4.25}};
  for (const auto& [n, bpw] : kBpw) {
    const QuantSpec s = parse_format_name(n);
    EXPECT_EQ(s.family, FormatFamily::Ggml);
    EXPECT_EQ(format_name(s), n);
    EXPECT_EQ(format_spec(format_id(s)), s);
    EXPECT_EQ(packed_bpw(s, 3, 2048), bpw) << n;
    EXPECT_EQ(ggml_type_format_name(uint32_t(s.bits)), std::string(n));
    // ragged rows are refused (GGUF rows are whole blocks)
    EXPECT_THROW(packed_geometry(s, 1, 2048 + 16), Error) << n;
    // lmpress does not quantize to these: a clear error, not a bad tensor
    std::vector<float> w(2 * 256, 0.5f);
    EXPECT_THROW(make_grid(s), Error);
    try {
      quantize_rtn_ref(w.data(), 2, 256, s);
      ADD_FAILURE() << n << ": quantizing should be refused";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("imported from GGUF"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(ggml_type_format_name(16), nullptr);  // IQ2_XXS: not run by lmpress
  for (const char* bad : {"q4_2", "Q4_0", "q4k", "q8_1", "iq4"}) EXPECT_THROW(parse_format_name(bad), Error) << bad;
}

TEST(GgmlFormats, ValidateRejectsNonFiniteScales) {
  for (const char* n : {"q4_0", "q4_1", "q2_k", "q3_k", "q6_k", "iq4_xs"}) {
    Tensor t = random_ggml(n, 3, 512, 5);
    EXPECT_NO_THROW(validate_packed(t, "m.gguf"));
    const auto* info = kern::ggml::type_info(uint32_t(format_spec(t.format).bits));
    for (int f = 0; f < info->n_f16; ++f) {
      std::vector<uint8_t> b(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes);
      const uint16_t inf = 0x7c00;
      std::memcpy(b.data() + 2 * info->bytes + info->f16_off[f], &inf, 2);  // block 2 of row 0 (512 cols)
      const Tensor bad = make_owned_tensor("w", DType::Q, t.shape, b, t.format);
      EXPECT_THROW(validate_packed(bad, "m.gguf"), Error) << n << " field " << f;
    }
  }
}

// Against numpy: dequantization (every level; exact up to one f32 rounding) and matmul (every
// level, decode and prefill token counts) of random blocks of every type.
TEST(GgmlNumpy, DequantAndMatmulMatchNumpy) {
  test::TempDir dir;
  std::string why;
  if (!test::run_ggml_ref("blocks " + dir / "blocks.gguf", &why)) {
    if (why.rfind("SKIPPED", 0) == 0) GTEST_SKIP() << why;
    FAIL() << why;
  }
  const GgufFile g = read_gguf(dir / "blocks.gguf");
  ThreadPool pool(2);
  int checked = 0;
  for (const kern::ggml::TypeInfo& ti : kern::ggml::kTypes) {
    const std::string n = ti.name;
    const GgufTensorInfo* q = g.find_tensor(n + ".q");
    const GgufTensorInfo* f = g.find_tensor(n + ".f");
    ASSERT_TRUE(q && f) << n;
    ASSERT_EQ(q->ggml_type, ti.type);
    const int64_t rows = q->ne[1], cols = q->ne[0];
    Tensor t = make_owned_tensor(n, DType::Q, {rows, cols}, std::vector<uint8_t>(q->data, q->data + q->nbytes),
                                 format_id(ggml_spec(ti.type)));
    validate_packed(t, "blocks.gguf");
    const float* ref = reinterpret_cast<const float*>(f->data);
    const std::vector<float> wd = dequantize_ref(t);
    for (int64_t i = 0; i < rows * cols; ++i)
      ASSERT_NEAR(wd[size_t(i)], ref[i], 2e-7 * std::fabs(ref[i]) + 1e-12) << n << " i=" << i;
    // matmul against the double product with numpy's weights; bound: int8 activation rounding
    const int64_t nmax = 9;
    auto x = test::randn(size_t(nmax * cols), 77 + ti.type);
    for (int64_t c = 0; c < cols; ++c) x[size_t(3 * cols + c)] *= 20.f;  // a token of another scale
    for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
      if (l > cpu_simd_level()) {
        std::printf("[ SKIPPED  ] GgmlNumpy %s level %s: not supported by this CPU\n", n.c_str(), simd_level_name(l));
        continue;
      }
      ScopedSimdLevel sl(l);
      std::vector<float> row(static_cast<size_t>(cols));
      quant_row(t, rows - 1, row.data());
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[size_t(c)], wd[size_t((rows - 1) * cols + c)]) << n;
      for (int64_t nt : {1, 3, 9}) {
        std::vector<float> y(size_t(nt * rows));
        matmul(t, x.data(), nt, y.data(), pool);
        for (int64_t tk = 0; tk < nt; ++tk)
          for (int64_t r = 0; r < rows; ++r) {
            double e = 0, bound = 0, mag = 0;
            for (int64_t b = 0; b < cols / 32; ++b) {
              float amax = 0;
              for (int64_t c = 32 * b; c < 32 * b + 32; ++c) amax = std::max(amax, std::fabs(x[size_t(tk * cols + c)]));
              for (int64_t c = 32 * b; c < 32 * b + 32; ++c) {
                const double w = ref[r * cols + c], xv = x[size_t(tk * cols + c)];
                e += w * xv;
                bound += std::fabs(w) * amax / 127.0 * 0.5;
                mag += std::fabs(w) * (std::fabs(xv) + amax / 127.0);
              }
            }
            ASSERT_NEAR(y[size_t(tk * rows + r)], e, bound + 2e-4 * mag)
                << n << " " << simd_level_name(l) << " n=" << nt << " t=" << tk << " r=" << r;
          }
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 12);
}

// End to end: wiki5m with every weight in one of the twelve types (ggml_ref.py model) against the
// same model with numpy-dequantized f32 weights: the only difference left is lmpress's int8
// activations, so perplexity, KL divergence and top-1 agreement must be close.
TEST(GgmlNumpy, QuantizedGgufModelMatchesDequantizedModel) {
  LMP_REQUIRE_SHARED("models/wiki5m/model-f32.gguf");
  LMP_REQUIRE_SHARED("data/wikitext-2/eval.txt");
  test::TempDir dir;
  std::string why;
  const std::string q = dir / "q.gguf", deq = dir / "deq.gguf";
  if (!test::run_ggml_ref("model " + test::shared("models/wiki5m/model-f32.gguf") + " " + q + " " + deq + " 2>/dev/null", &why)) {
    if (why.rfind("SKIPPED", 0) == 0) GTEST_SKIP() << why;
    FAIL() << why;
  }
  const Model mq = load_model(q), md = load_model(deq);
  int ggml_tensors = 0;
  std::set<uint32_t> types;
  for (const Tensor* t : mq.weight_tensors())
    if (t->dtype == DType::Q) {
      ++ggml_tensors;
      types.insert(t->format);
      EXPECT_EQ(format_spec(t->format).family, FormatFamily::Ggml);
    }
  EXPECT_EQ(types.size(), 12u);  // every type is in the model
  EXPECT_GE(ggml_tensors, 36);
  const std::string text = read_text_file(test::shared("data/wikitext-2/eval.txt")).substr(0, 60000);
  const auto tokens = mq.tokenizer->encode(text, true);
  PerplexityOptions po;
  po.n_ctx = 256;
  po.max_chunks = 12;
  po.progress = false;
  po.base = &md;
  const PerplexityResult r = perplexity(mq, tokens, po);
  std::printf("wiki5m all-ggml-types: PPL %.4f, numpy-dequantized f32 PPL %.4f, KLD %.5f, top-1 %.4f\n", r.ppl,
              r.ppl_base, r.kld, r.top1);
  EXPECT_NEAR(r.ppl / r.ppl_base, 1.0, 0.01);
  EXPECT_LT(r.kld, 0.005);
  EXPECT_GT(r.top1, 0.97);

  // Every command that takes a model works on it (quantize dequantizes the ggml tensors first).
  const std::string bin = LMPRESS_BINARY, out = dir / "out.txt";
  auto cli = [&](const std::string& args) {
    const int rc = std::system((bin + " " + args + " >" + out + " 2>&1").c_str());
    return std::make_pair(rc, read_text_file(out));
  };
  auto [rc1, inspect] = cli("inspect -m " + q);
  EXPECT_EQ(rc1, 0) << inspect;
  for (const char* n : {"q4_0", "q4_k", "q6_k", "q2_k", "iq4_xs"}) EXPECT_NE(inspect.find(n), std::string::npos) << n << "\n" << inspect;
  auto [rc2, gen] = cli("generate -m " + q + " -p 'The game' -n 8 -t 1");
  EXPECT_EQ(rc2, 0) << gen;
  auto [rc3, ppl] = cli("perplexity -m " + q + " -f " + test::shared("data/wikitext-2/eval.txt") + " --ctx 128 --chunks 2 -t 2");
  EXPECT_EQ(rc3, 0) << ppl;
  EXPECT_NE(ppl.find("PPL"), std::string::npos) << ppl;
  auto [rc4, bench] = cli("bench -m " + q + " -p 16 -n 4 -r 1 -t 2");
  EXPECT_EQ(rc4, 0) << bench;
  auto [rc5, quant] = cli("quantize -m " + q + " -r rtn:w4g32 -o " + dir / "re.lmp");
  EXPECT_EQ(rc5, 0) << quant;
  auto [rc6, ppl2] = cli("perplexity -m " + dir / "re.lmp" + " -f " + test::shared("data/wikitext-2/eval.txt") + " --ctx 128 --chunks 2");
  EXPECT_EQ(rc6, 0) << ppl2;
  // GGUF export writes the block types back as they came (a byte copy)
  auto [rc7, conv] = cli("convert -m " + q + " -o " + dir / "conv.gguf" + " --to gguf");
  ASSERT_EQ(rc7, 0) << conv;
  const GgufFile a = read_gguf(q), b = read_gguf(dir / "conv.gguf");
  int copied = 0;
  for (const GgufTensorInfo& t : a.tensors) {
    const GgufTensorInfo* u = b.find_tensor(t.name);
    ASSERT_TRUE(u) << t.name;
    if (t.ggml_type == 0) continue;
    EXPECT_EQ(u->ggml_type, t.ggml_type) << t.name;
    ASSERT_EQ(u->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << t.name;
    ++copied;
  }
  EXPECT_EQ(copied, ggml_tensors);
}

// Prefill over several token chunks and row tiles on two threads, decode of the same tokens, the
// dequantize + sgemm oracle, and NaN activations turning into NaN outputs, at every level.
TEST(GgmlKernels, PrefillChunksDecodeAndOracle) {
  ThreadPool pool(2);
  const int64_t rows = 37, cols = 4096, n = 131;  // 4096 x 131 int8 acts: more than one L2 chunk
  auto x = test::randn(size_t(n * cols), 22);
  for (const char* f : {"q4_0", "q8_0", "q5_1", "q4_k", "q6_k", "q3_k", "q2_k", "iq4_xs", "iq4_nl"}) {
    const Tensor t = random_ggml(f, rows, cols, 9);
    const auto wd = dequantize_ref(t);
    std::vector<float> yref(size_t(n * rows));
    {
      ScopedSimdLevel sc(SimdLevel::Scalar);
      matmul(t, x.data(), n, yref.data(), pool);
    }
    for (SimdLevel l : {SimdLevel::AVX2, SimdLevel::AVX512}) {
      if (l > cpu_simd_level()) {
        std::printf("[ SKIPPED  ] GgmlKernels %s level %s: not supported by this CPU\n", f, simd_level_name(l));
        continue;
      }
      ScopedSimdLevel sl(l);
      std::vector<float> y(size_t(n * rows)), ys(size_t(n * rows)), y1(static_cast<size_t>(rows));
      matmul(t, x.data(), n, y.data(), pool);
      quant_matmul_dequant_sgemm(t, x.data(), n, ys.data(), pool);
      for (int64_t tk = 0; tk < n; tk += 13) {
        matmul(t, x.data() + tk * cols, 1, y1.data(), pool);
        for (int64_t r = 0; r < rows; ++r) {
          double e = 0, m = 0;
          for (int64_t c = 0; c < cols; ++c) {
            e += double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)];
            m += std::fabs(double(wd[size_t(r * cols + c)]) * x[size_t(tk * cols + c)]);
          }
          const size_t i = size_t(tk * rows + r);
          EXPECT_NEAR(ys[i], e, 3e-5 * m) << f;
          EXPECT_NEAR(y[i], yref[i], 3e-4 * m) << f << " " << simd_level_name(l);
          EXPECT_NEAR(y1[size_t(r)], y[i], 3e-4 * m) << f << " " << simd_level_name(l);
          EXPECT_NEAR(y[i], e, 0.02 * m) << f;  // int8 activations
        }
      }
      auto xn = x;
      xn[5] = std::nanf("");
      matmul(t, xn.data(), 2, y.data(), pool);
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_TRUE(std::isnan(y[size_t(r)])) << f;
        EXPECT_FALSE(std::isnan(y[size_t(rows + r)])) << f;
      }
    }
  }
}
