// The ggml family (llama.cpp's block types, src/formats/ggml.cpp):
//  GgmlFormats.*  names, exact bits per weight, refusals (ragged rows), load-time scale checks;
//  GgmlQuantize.* quantizing to the types (ggml_quant.cpp): the grid's values equal the reference
//                 decoder's bit for bit, pack / unpack round trips (also of foreign blocks), RTN
//                 error ordered by bits, GPTQ below RTN on the layer objective, and lmpress-made
//                 blocks decoded by numpy (GgmlNumpy.LmpressQuantizedModelDecodesInNumpy);
//  GgmlNumpy.*    against an independent reference, the `gguf` package's numpy dequantization
//                 (tests/ggml_ref.py, run here with the Python that scripts/setup.sh prepares):
//                 dequantization and matmul of random blocks of every type at every ISA level, and
//                 a wiki5m model re-written in all twelve types loaded end to end, against the same
//                 model with numpy-dequantized f32 weights. Without that Python the tests skip loudly.
#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <cstdlib>
#include <cstring>
#include <set>

#include "formats/formats_internal.h"
#include "formats/ggml_family.h"
#include "kernels/ggml_blocks.h"
#include "formats/traits.h"
#include "lmpress/engine.h"
#include "lmpress/compress.h"
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

// Quantizing to every type: the grid's dequantization (what the methods see) equals the reference
// decoder of the packed blocks bit for bit, unpack gives back codes and params, and packing again
// gives the same bytes; blocks made elsewhere (random codes and sub-scales: every field used)
// survive unpack + pack byte for byte.
TEST(GgmlQuantize, GridPackUnpackBitExact) {
  const int64_t rows = 3, cols = 512;
  auto w = test::randn(size_t(rows * cols), 11, 0.02f);
  for (int64_t i = 0; i < rows * cols; i += 97) w[size_t(i)] *= 12.f;  // outliers
  for (int64_t c = 256; c < 288; ++c) w[size_t(cols + c)] = 0.f;      // an all-zero sub-block
  for (const kern::ggml::TypeInfo& ti : kern::ggml::kTypes) {
    const QuantSpec s = ggml_spec(ti.type);
    const QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, s);
    ASSERT_EQ(qm.group_len(), ti.qk) << ti.name;
    const Tensor t = pack_tensor("w", qm);
    ASSERT_EQ(int64_t(t.nbytes), rows * cols / ti.qk * ti.bytes) << ti.name;
    EXPECT_NO_THROW(validate_packed(t, "w"));
    const std::vector<float> grid_w = dequantize_matrix(qm), ref_w = dequantize_ref(t);
    for (size_t i = 0; i < ref_w.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(grid_w[i]), std::bit_cast<uint32_t>(ref_w[i])) << ti.name << " i=" << i;
    const QuantizedMatrix back = unpack_tensor(t);
    EXPECT_EQ(back.q, qm.q) << ti.name;
    EXPECT_EQ(back.ggml, qm.ggml) << ti.name;
    const Tensor again = pack_tensor("w", back);
    ASSERT_EQ(again.nbytes, t.nbytes);
    EXPECT_EQ(std::memcmp(again.data, t.data, t.nbytes), 0) << ti.name;

    const Tensor foreign = random_ggml(ti.name, rows, cols, 3 + ti.type);
    const QuantizedMatrix fq = unpack_tensor(foreign);
    const Tensor repacked = pack_tensor("w", fq);
    EXPECT_EQ(std::memcmp(repacked.data, foreign.data, foreign.nbytes), 0) << ti.name;
    const std::vector<float> fg = dequantize_matrix(fq), fr = dequantize_ref(foreign);
    for (size_t i = 0; i < fr.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(fg[i]), std::bit_cast<uint32_t>(fr[i])) << ti.name << " foreign i=" << i;
  }
}

// Round-to-nearest error of Gaussian weights per type: every type reconstructs, more bits never do
// worse within a family, and the fitted params beat a plain per-block min-max encoder (computed
// here in double) for the k-quants at equal bits.
TEST(GgmlQuantize, RtnErrorOrderedByBits) {
  const int64_t rows = 8, cols = 1024;
  const auto w = test::randn(size_t(rows * cols), 5, 0.02f);
  auto rel_rmse = [&](const char* n) {
    const QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, parse_format_name(n));
    const std::vector<float> d = dequantize_matrix(qm);
    double e = 0, r = 0;
    for (size_t i = 0; i < d.size(); ++i) e += double(d[i] - w[i]) * (d[i] - w[i]), r += double(w[i]) * w[i];
    return std::sqrt(e / r);
  };
  std::map<std::string, double> e;
  for (const kern::ggml::TypeInfo& ti : kern::ggml::kTypes) {
    e[ti.name] = rel_rmse(ti.name);
    std::printf("rtn %-7s relative RMS error %.4f\n", ti.name, e[ti.name]);
    EXPECT_LT(e[ti.name], 0.5) << ti.name;
  }
  EXPECT_LT(e["q3_k"], e["q2_k"]);
  EXPECT_LT(e["q4_k"], e["q3_k"]);
  EXPECT_LT(e["q5_k"], e["q4_k"]);
  EXPECT_LT(e["q6_k"], e["q5_k"]);
  EXPECT_LT(e["q5_0"], e["q4_0"]);
  EXPECT_LT(e["q8_0"], e["q5_0"]);
  EXPECT_LT(e["q5_1"], e["q4_1"]);
  EXPECT_LT(e["iq4_nl"], e["q4_0"]);  // the non-uniform grid fits Gaussian weights better
  // Plain min-max 4-bit asymmetric per 32 weights (the unquantized-scale ideal of q4_1 / q4_k's
  // sub-blocks): q4_k's fitted, quantized scales stay within 10% of it.
  double emm = 0, r = 0;
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    const float* x = w.data() + 32 * b;
    const double lo = *std::min_element(x, x + 32), hi = *std::max_element(x, x + 32), sc = (hi - lo) / 15;
    for (int i = 0; i < 32; ++i) {
      const double q = std::clamp(std::nearbyint((x[i] - lo) / sc), 0.0, 15.0);
      emm += (lo + sc * q - x[i]) * (lo + sc * q - x[i]), r += double(x[i]) * x[i];
    }
  }
  std::printf("plain min-max 4-bit per 32: %.4f\n", std::sqrt(emm / r));
  EXPECT_LT(e["q4_k"], 1.10 * std::sqrt(emm / r));
}

// GPTQ on llama.cpp's grids: the block params are fitted first, then the Hessian-aware rounding;
// on a layer with correlated inputs it must reach a lower output error tr(D H D^T) than RTN with
// the same params fit, for every kind of type (legacy, k-quant, i-quant).
TEST(GgmlQuantize, GptqBeatsRtnOnLayerObjective) {
  const int64_t rows = 32, cols = 512, m = 2048;
  auto X = test::randn(size_t(m * cols), 21);
  for (int64_t t = 0; t < m; ++t)  // correlated, unevenly scaled inputs
    for (int64_t c = 1; c < cols; ++c) {
      float& x = X[size_t(t * cols + c)];
      x = 0.6f * X[size_t(t * cols + c - 1)] + 0.8f * x;
    }
  for (int64_t t = 0; t < m; ++t)
    for (int64_t c = 0; c < cols; c += 7) X[size_t(t * cols + c)] *= 4.f;
  std::vector<double> H(size_t(cols * cols), 0.0);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t i = 0; i < cols; ++i) {
      const double xi = X[size_t(t * cols + i)];
      for (int64_t j = 0; j < cols; ++j) H[size_t(i * cols + j)] += xi * X[size_t(t * cols + j)] / double(m);
    }
  const auto w = test::randn(size_t(rows * cols), 8, 0.02f);
  ThreadPool pool(2);
  for (const char* n : {"q4_0", "q4_1", "q8_0", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"}) {
    const QuantSpec s = parse_format_name(n);
    const QuantizedMatrix rq = quantize_rtn(w.data(), rows, cols, s, false, nullptr);
    const QuantizedMatrix gq = quantize_gptq(w.data(), rows, cols, s, H, GptqOptions{}, pool);
    const double er = layer_error(w.data(), rq, H), eg = layer_error(w.data(), gq, H);
    std::printf("%-7s layer error rtn %.4g gptq %.4g (%.2fx)\n", n, er, eg, er / eg);
    EXPECT_LT(eg, 0.9 * er) << n;
    // the GPTQ result packs and decodes to the values it optimised
    const Tensor t = pack_tensor("w", gq);
    const std::vector<float> a = dequantize_matrix(gq), b = dequantize_ref(t);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << n;
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

// lmpress-made blocks read by an independent decoder: wiki5m with every weight quantized by
// lmpress (RTN, round robin over the twelve types), written to GGUF (a byte copy of the blocks) and
// dequantized by the `gguf` package: numpy's values equal lmpress's reference decoder's.
TEST(GgmlNumpy, LmpressQuantizedModelDecodesInNumpy) {
  LMP_REQUIRE_SHARED("models/wiki5m/model-f32.gguf");
  test::TempDir dir;
  Model m = load_model(test::shared("models/wiki5m/model-f32.gguf"));
  size_t k = 0;
  std::set<uint32_t> types;
  for (Tensor* t : m.weight_tensors()) {
    if (t->shape.size() != 2) continue;
    const kern::ggml::TypeInfo& ti = kern::ggml::kTypes[k++ % std::size(kern::ggml::kTypes)];
    const std::vector<float> w = tensor_to_f32(*t);
    *t = pack_tensor(t->name, quantize_rtn_ref(w.data(), t->rows(), t->cols(), ggml_spec(ti.type)));
    types.insert(ti.type);
  }
  ASSERT_EQ(types.size(), 12u);
  const std::string q = dir / "lq.gguf", deq = dir / "deq.gguf";
  write_gguf_model(m, q, DType::F32, false);
  std::string why;
  if (!test::run_ggml_ref("dequant " + q + " " + deq, &why)) {
    if (why.rfind("SKIPPED", 0) == 0) GTEST_SKIP() << why;
    FAIL() << why;
  }
  const Model mq = load_model(q), md = load_model(deq);
  const auto tq = mq.weight_tensors(), td = md.weight_tensors();
  ASSERT_EQ(tq.size(), td.size());
  int compared = 0;
  for (size_t i = 0; i < tq.size(); ++i) {
    if (tq[i]->dtype != DType::Q) continue;
    ASSERT_EQ(tq[i]->name, td[i]->name);
    const std::vector<float> a = dequantize_ref(*tq[i]), b = tensor_to_f32(*td[i]);
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j)
      ASSERT_NEAR(a[j], b[j], 2e-7 * std::fabs(b[j]) + 1e-12) << tq[i]->name << " j=" << j;
    ++compared;
  }
  EXPECT_EQ(compared, int(k));
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
