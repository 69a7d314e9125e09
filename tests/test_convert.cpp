// lmpress convert of quantized models (docs/formats.md, "Writers"):
//  ConvertGguf.ExactTypes*     lmpress int formats written as llama.cpp blocks (w4g32 -> Q4_0, w5g32 ->
//                              Q5_0, w8g32 -> Q8_0, w4g32a -> Q4_1, w5g32a -> Q5_1, longer groups with the
//                              scale repeated) read back by lmpress's GGUF loader: symmetric maps
//                              bit-exact, asymmetric ones within the f16 rounding of m = -scale * zero
//                              (and exactly the error the writer reports); header keys; q/k rows of a
//                              "halves" model reordered (packed and ggml rows), checked by perplexity;
//  ConvertGguf.Numpy*          the written blocks decoded by the `gguf` package's numpy dequantization
//                              (tests/ggml_ref.py dequant), an independent reader;
//  ConvertGguf.Tinystories*    perplexity of `lmpress quantize -r rtn:w4g32` (and w4g32a) models equals the
//                              converted GGUF's, run by lmpress;
//  ConvertGguf.Refuses* / Requant*  formats without an exact type: one-line refusal, or --requant;
//  ConvertDense.*              --dtype: every family (sparse outliers, lut, ggml) dequantized, GGUF and HF.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <utility>
#include <cstring>
#include <filesystem>

#include "formats/ggml_family.h"
#include "lmpress/eval.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

LoadOptions no_check() {
  LoadOptions o;
  o.require_tokenizer = false;
  return o;
}

// The synthetic tiny model (dim 64, hidden 192, vocab 300, untied) with every 2-D weight quantized
// by RTN to formats[i % n] (in canonical order).
Model quantized_tiny(const std::vector<std::string>& formats, uint64_t seed = 11) {
  Model m = synth_model("tiny", DType::F32, seed);
  size_t i = 0;
  for (Tensor* t : m.weight_tensors()) {
    if (t->shape.size() != 2) continue;
    const QuantSpec s = parse_format_name(formats[i++ % formats.size()]);
    const std::vector<float> w = tensor_to_f32(*t);
    QuantizedMatrix qm = quantize_rtn_ref(w.data(), t->rows(), t->cols(), s);
    // sparse outliers (RTN leaves them empty): every k-th weight, its f16 residual
    const int64_t nnz = sparse_count(s, t->rows(), t->cols()), step = nnz ? t->numel() / nnz : 1;
    const std::vector<float> dense = nnz ? dequantize_matrix(qm) : std::vector<float>{};
    for (int64_t k = 0; k < nnz; ++k) {
      qm.sp_idx.push_back(uint32_t(k * step));
      qm.sp_val.push_back(f16_to_f32(f32_to_f16(w[size_t(k * step)] - dense[size_t(k * step)])));
    }
    *t = pack_tensor(t->name, qm);
  }
  return m;
}

// Weights of a model by canonical order, dequantized (packed) or as f32.
std::vector<std::vector<float>> weights_f32(const Model& m) {
  std::vector<std::vector<float>> v;
  for (const Tensor* t : m.weight_tensors()) v.push_back(t->dtype == DType::Q ? dequantize_ref(*t) : tensor_to_f32(*t));
  return v;
}

uint32_t gguf_u32(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  EXPECT_NE(v, nullptr) << key;
  return v ? uint32_t(v->u) : 0;
}

std::vector<int32_t> random_tokens(int64_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

double ppl(const Model& m, const std::vector<int32_t>& tokens, int32_t n_ctx, int64_t max_chunks = -1) {
  PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.max_chunks = max_chunks;
  po.progress = false;
  po.n_threads = 2;
  return perplexity(m, tokens, po).ppl;
}

struct Exact {
  const char* format;
  const char* ggml;  // lmpress name of the llama.cpp type
  uint32_t ftype;    // LLAMA_FTYPE
};
const Exact kExact[] = {
    {"w4g32", "q4_0", 2}, {"w5g32", "q5_0", 8},   {"w8g32", "q8_0", 7},   {"w4g32a", "q4_1", 3},
    {"w5g32a", "q5_1", 9}, {"w4g128", "q4_0", 2}, {"w8row", "q8_0", 7},   {"w5g64a", "q5_1", 9},
};

}  // namespace

TEST(ConvertGguf, ExactTypesReadBackBitExact) {
  TempDir d;
  for (const Exact& e : kExact) {
    SCOPED_TRACE(e.format);
    const QuantSpec s = parse_format_name(e.format);
    Model src = quantized_tiny({e.format});
    const std::string p = d / (std::string(e.format) + ".gguf");
    WriteOptions wo;
    const GgufWriteReport rep = write_gguf_model(src, p, wo);
    EXPECT_EQ(rep.file_type, e.ftype);
    ASSERT_EQ(rep.mapped.size(), 1u);
    EXPECT_EQ(rep.mapped.begin()->second, 16);  // 2 layers x 7 + embedding + output (untied)
    const GgufFile g = read_gguf(p);
    EXPECT_EQ(gguf_u32(g, "general.file_type"), e.ftype);
    EXPECT_EQ(gguf_u32(g, "general.quantization_version"), 2u);
    for (const GgufTensorInfo& t : g.tensors) {
      if (t.ne.size() == 1) {
        EXPECT_EQ(t.ggml_type, 0u) << t.name;  // norms stay f32
      } else {
        EXPECT_EQ(ggml_type_format_name(t.ggml_type), std::string(e.ggml)) << t.name;
      }
    }
    const Model back = load_model(p, no_check());
    const std::vector<const Tensor*> a = std::as_const(src).weight_tensors(), b = back.weight_tensors();
    ASSERT_EQ(a.size(), b.size());
    double max_abs = 0, sum_sq = 0, ref_sq = 0;
    int64_t changed = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i]->shape.size() != 2) continue;
      ASSERT_EQ(b[i]->dtype, DType::Q) << a[i]->name;
      EXPECT_EQ(format_name(format_spec(b[i]->format)), e.ggml) << a[i]->name;
      const std::vector<float> want = dequantize_ref(*a[i]), got = dequantize_ref(*b[i]);
      const QuantizedMatrix qm = unpack_tensor(*a[i]);
      for (int64_t r = 0; r < qm.rows; ++r)
        for (int64_t c = 0; c < qm.cols; ++c) {
          const size_t k = size_t(r * qm.cols + c);
          if (s.sym) {
            ASSERT_EQ(got[k], want[k]) << a[i]->name << " r=" << r << " c=" << c;  // bit-exact
            continue;
          }
          // asymmetric: d q + m with m the f16 nearest to -scale * zero: the change is at most half
          // an f16 ulp of scale * zero (plus one f32 rounding of the value)
          const GroupParams gp = qm.params(r, c / qm.group_len());
          const double sz = std::fabs(double(gp.scale) * gp.zero);
          const double half_ulp = sz < 6.103515625e-05 ? std::ldexp(1.0, -25) : std::ldexp(sz, -11);
          const double diff = std::fabs(double(got[k]) - double(want[k]));
          ASSERT_LE(diff, half_ulp + 1.2e-7 * std::fabs(want[k])) << a[i]->name << " r=" << r << " c=" << c;
          max_abs = std::max(max_abs, diff);
          sum_sq += diff * diff;
          ref_sq += double(want[k]) * want[k];
          changed += diff > 0;
        }
    }
    if (s.sym) {
      EXPECT_EQ(rep.n_asym, 0);
      EXPECT_EQ(rep.asym_max_abs, 0.0);
    } else {
      // the writer reports exactly what the loader reads back
      EXPECT_EQ(rep.n_asym, 16);
      EXPECT_EQ(rep.asym_max_abs, max_abs);
      EXPECT_NEAR(rep.asym_rel_rms, std::sqrt(sum_sq / ref_sq), 1e-9);
      EXPECT_GT(changed, 0) << "random weights: some -scale*zero are not f16 values";
      EXPECT_LT(rep.asym_rel_rms, 1e-3);
      std::printf("%s -> %s: %lld weights changed, max abs %.3g, relative RMS %.3g\n", e.format, e.ggml,
                  static_cast<long long>(changed), max_abs, rep.asym_rel_rms);
    }
  }
}

// q/k rows of a model whose RoPE rotates halves go out in GGUF's adjacent-pair order for packed
// tensors too (int formats re-encoded, ggml blocks copied): the same perplexity after conversion.
TEST(ConvertGguf, HalvesModelRowsReordered) {
  TempDir d;
  for (const char* fmt : {"w4g32", "w5g32a", "q8_0"}) {
    SCOPED_TRACE(fmt);
    Model src = synth_model("tiny", DType::F32, 5);
    const QuantSpec s = parse_format_name(fmt);
    for (Tensor* t : src.weight_tensors()) {
      if (t->shape.size() != 2) continue;
      if (s.family == FormatFamily::Ggml) {
        std::vector<uint8_t> bytes(size_t(packed_geometry(s, t->rows(), t->cols()).total_bytes));
        ggml_random_blocks(uint32_t(s.bits), t->rows(), t->cols(), 3, 0.02f, bytes.data());
        *t = make_owned_tensor(t->name, DType::Q, t->shape, std::move(bytes), format_id(s));
      } else {
        const std::vector<float> w = tensor_to_f32(*t);
        *t = pack_tensor(t->name, quantize_rtn_ref(w.data(), t->rows(), t->cols(), s));
      }
    }
    ASSERT_EQ(src.layers[0].wq.dtype, DType::Q);
    src.cfg.rope_style = RopeStyle::Halves;  // the same weights read as an HF-convention model
    const std::string p = d / (std::string(fmt) + ".gguf");
    write_gguf_model(src, p, WriteOptions{});
    const Model back = load_model(p, no_check());
    EXPECT_EQ(back.cfg.rope_style, RopeStyle::Interleaved);
    ASSERT_EQ(back.layers[1].wk.dtype, DType::Q);
    // the rows of q and k moved exactly as the dense permutation moves them
    const Tensor dq = make_f32_tensor("q", src.layers[1].wq.shape, dequantize_ref(src.layers[1].wq));
    const Tensor dk = make_f32_tensor("k", src.layers[1].wk.shape, dequantize_ref(src.layers[1].wk));
    const std::vector<float> wq = tensor_to_f32(permute_rope_rows(dq, src.cfg.n_heads, false));
    const std::vector<float> wk = tensor_to_f32(permute_rope_rows(dk, src.cfg.n_kv_heads, false));
    const std::vector<float> gq = dequantize_ref(back.layers[1].wq), gk = dequantize_ref(back.layers[1].wk);
    // asymmetric: m = -scale * zero rounded to f16, at most 2^-11 of the largest |value|
    double amax = 0;
    for (float v : wq) amax = std::max(amax, double(std::fabs(v)));
    for (float v : wk) amax = std::max(amax, double(std::fabs(v)));
    const double tol = s.family == FormatFamily::Int && !s.sym ? std::ldexp(amax, -10) : 0.0;
    for (size_t i = 0; i < wq.size(); ++i) ASSERT_NEAR(gq[i], wq[i], tol) << i;
    for (size_t i = 0; i < wk.size(); ++i) ASSERT_NEAR(gk[i], wk[i], tol) << i;
    // and the model computes the same thing
    const std::vector<int32_t> toks = random_tokens(256, src.cfg.vocab_size, 9);
    // (the kernels of the two families round in different orders, and the asymmetric offsets
    // moved; this random model's PPL is ~3e16, so int8 activation rounding flips amplify float
    // order: measured 0 .. 3.4e-4 on the AVX-512 VNNI prefill path, 2.1e-3 on the AMX path)
    const double a = ppl(src, toks, 128), b = ppl(back, toks, 128);
    EXPECT_NEAR(b / a, 1.0, tol > 0 ? 1e-3 : amx_active() ? 3e-3 : 2e-4) << a << " vs " << b;
  }
}

// The written blocks decoded by an independent reader: the `gguf` package's numpy dequantization.
TEST(ConvertGguf, NumpyDecodesExactTypes) {
  TempDir d;
  Model src = quantized_tiny({"w4g32", "w5g32", "w8g32", "w4g32a", "w5g32a", "w4g128"}, 21);
  const std::string p = d / "m.gguf", deq = d / "deq.gguf";
  write_gguf_model(src, p, WriteOptions{});
  std::string why;
  if (!test::run_ggml_ref("dequant " + p + " " + deq, &why)) {
    if (why.rfind("SKIPPED", 0) == 0) GTEST_SKIP() << why;
    FAIL() << why;
  }
  const GgufFile g = read_gguf(p), n = read_gguf(deq);
  const Model back = load_model(p, no_check());
  const std::vector<const Tensor*> a = std::as_const(src).weight_tensors(), b = back.weight_tensors();
  int checked = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i]->shape.size() != 2) continue;
    const std::string name = a[i]->name;
    const GgufTensorInfo* q = g.find_tensor(name);
    const GgufTensorInfo* f = n.find_tensor(name);
    ASSERT_TRUE(q && f) << name;
    ASSERT_NE(q->ggml_type, 0u) << name;
    ASSERT_EQ(f->ggml_type, 0u) << name;
    const float* ref = reinterpret_cast<const float*>(f->data);
    const std::vector<float> lmp = dequantize_ref(*a[i]), gguf_lmp = dequantize_ref(*b[i]);
    const bool sym = format_spec(a[i]->format).sym;
    double amax = 0;
    for (float v : lmp) amax = std::max(amax, double(std::fabs(v)));
    for (size_t k = 0; k < lmp.size(); ++k) {
      // numpy's d * q + m equals lmpress's reading of the file bit for bit ...
      ASSERT_EQ(ref[k], gguf_lmp[k]) << name << " k=" << k;
      // ... and lmpress's own values: exactly (symmetric), within m's f16 rounding (asymmetric)
      if (sym) ASSERT_EQ(ref[k], lmp[k]) << name << " k=" << k;
      else ASSERT_NEAR(ref[k], lmp[k], std::ldexp(amax, -10)) << name << " k=" << k;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 16);
}

// A model quantized by `lmpress quantize -r rtn:w4g32` (and w4g32a) against its GGUF export run by
// lmpress (llama.cpp's Q4_0 / Q4_1 blocks, the ggml family's kernels). The weights are the same
// (w4g32) or moved by the f16 offsets (w4g32a): the dequantized models' perplexities are equal /
// within 3e-4 (measured 1.2e-4 .. 1.8e-4). Run by the kernels, the two families round their float sums in
// different orders and int8 activation roundings flip (the asymmetric kernels subtract their zero
// terms differently): within 1e-3 / 3e-3 (measured 5e-5 .. 2.2e-4 / 7.5e-4 .. 1.4e-3; lmpress's own
// w4g32 kernels differ by 2.7e-4 between the scalar, AVX2 and AVX-512 levels on this model).
// tinystories has a tied embedding: no output.weight in the GGUF, as llama.cpp expects.
TEST(ConvertGguf, TinystoriesPerplexityUnchanged) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/eval.txt");
  TempDir d;
  const std::string bin = LMPRESS_BINARY, model = test::shared("models/tinystories-279k/model.bin");
  const std::string text = read_text_file(test::shared("data/tinystories/eval.txt"));
  for (const char* fmt : {"w4g32", "w4g32a"}) {
    SCOPED_TRACE(fmt);
    const bool sym = std::string(fmt) == "w4g32";
    const std::string lmp = d / (std::string(fmt) + ".lmp"), gg = d / (std::string(fmt) + ".gguf"), log = d / "log";
    ASSERT_EQ(std::system((bin + " quantize -m " + model + " -r rtn:" + fmt + " -o " + lmp + " -q >" + log + " 2>&1").c_str()), 0)
        << read_text_file(log);
    ASSERT_EQ(std::system((bin + " convert -m " + lmp + " -o " + gg + " >" + log + " 2>&1").c_str()), 0) << read_text_file(log);
    const std::string out = read_text_file(log);
    EXPECT_NE(out.find(std::string("36 x ") + fmt + " -> Q4_" + (sym ? "0" : "1")), std::string::npos) << out;
    EXPECT_EQ(out.find("relative RMS error") == std::string::npos, sym) << out;
    const GgufFile g = read_gguf(gg);
    EXPECT_EQ(g.find_tensor("output.weight"), nullptr);
    ASSERT_NE(g.find_tensor("token_embd.weight"), nullptr);
    const Model a = load_model(lmp), b = load_model(gg);
    EXPECT_TRUE(b.cfg.tied_embeddings);
    const std::vector<int32_t> toks = a.tokenizer->encode(text, true);
    ASSERT_EQ(toks, b.tokenizer->encode(text, true));
    const double pa = ppl(a, toks, 128, 12), pb = ppl(b, toks, 128, 12);
    // the same weights, dequantized to f32 (one dense path)
    WriteOptions f32;
    f32.dtype = DType::F32;
    f32.dequantize = true;
    write_gguf_model(a, d / "da.gguf", f32);
    write_gguf_model(b, d / "db.gguf", f32);
    const double da = ppl(load_model(d / "da.gguf"), toks, 128, 12), db = ppl(load_model(d / "db.gguf"), toks, 128, 12);
    std::printf("tinystories %s: PPL lmpress %.6f, converted GGUF %.6f; dequantized: %.6f, %.6f\n", fmt, pa, pb, da, db);
    if (sym) EXPECT_EQ(da, db);
    else EXPECT_NEAR(db / da, 1.0, 3e-4);
    EXPECT_NEAR(pb / pa, 1.0, sym ? 1e-3 : 3e-3);
  }
}

// Formats without an exact llama.cpp type are refused by name with the nearest exact choice;
// nothing is written.
TEST(ConvertGguf, RefusesInexactFormats) {
  TempDir d;
  const std::pair<const char*, const char*> kCases[] = {
      {"w3g64", "quantize with w4g32 (-> Q4_0) or pass --requant q4_0"},
      {"lut3", "quantize with w4g32 (-> Q4_0) or pass --requant q4_0"},
      {"w4g32+s0.20", "(sparse outliers); quantize with w4g32 (-> Q4_0)"},
      {"w4g16a", "(two scales per 32-weight block); quantize with w4g32a (-> Q4_1)"},
      {"nf4g64", "quantize with w4g32 (-> Q4_0)"},
      {"w8g32a", "quantize with w8g32 (-> Q8_0) or pass --requant q8_0"},
  };
  for (const auto& [fmt, advice] : kCases) {
    SCOPED_TRACE(fmt);
    Model m = quantized_tiny({fmt});
    m.path = "q.lmp";
    const std::string p = d / "x.gguf";
    try {
      write_gguf_model(m, p, WriteOptions{});
      ADD_FAILURE() << "not refused";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_EQ(msg.rfind("q.lmp: tensor token_embd.weight: " + std::string(fmt) + " has no exact llama.cpp type", 0), 0u)
          << msg;
      EXPECT_NE(msg.find(advice), std::string::npos) << msg;
    }
    EXPECT_TRUE(fs::is_empty(d.path));
  }
  // the same model converts with --dtype (dequantized) and to a Hugging Face directory
  Model m = quantized_tiny({"w3g64"});
  WriteOptions wo;
  wo.dtype = DType::F16;
  wo.dequantize = true;
  EXPECT_NO_THROW(write_gguf_model(m, d / "deq.gguf", wo));
  // bad --requant names
  for (const char* bad : {"q4_2", "w4g32", "f16"}) {
    WriteOptions r;
    r.requant = bad;
    EXPECT_THROW(write_gguf_model(m, d / "never.gguf", r), Error) << bad;
  }
  EXPECT_FALSE(file_exists(d / "never.gguf"));
}

// An asymmetric offset beyond the f16 range (scale 30000, zero 10: m = -300000) is an error naming
// the file, the tensor, the block and the row, not an infinite weight.
TEST(ConvertGguf, AsymmetricOffsetBeyondF16IsAnError) {
  const QuantSpec s = parse_format_name("w4g32a");
  QuantizedMatrix qm;
  qm.init(s, 2, 64);
  GroupParams p;
  p.scale = 30000.f;
  p.zero = 10;
  qm.set_params(1, 1, p);
  const Tensor t = pack_tensor("blk.0.attn_q.weight", qm);
  try {
    ggml_encode_exact(t, nullptr, "m.lmp");
    ADD_FAILURE() << "not refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("m.lmp: tensor blk.0.attn_q.weight: w4g32a -> Q4_1: offset", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("of block 1 of row 1 is beyond the f16 range"), std::string::npos) << e.what();
  }
  qm.set_params(1, 1, GroupParams{});  // scale 1, zero 0: fine
  GgmlExactError err;
  const Tensor ok = ggml_encode_exact(pack_tensor("w", qm), &err, "m.lmp");
  EXPECT_EQ(dequantize_ref(ok), dequantize_ref(pack_tensor("w", qm)));
  EXPECT_EQ(err.n_changed, 0);
}

// --requant: formats without an exact type are dequantized and re-quantized (RTN) to the given
// llama.cpp type, the added error reported per tensor against an independent recomputation.
TEST(ConvertGguf, RequantReportsAddedError) {
  TempDir d;
  Model m = quantized_tiny({"w3g64", "lut4", "w4g32"});
  WriteOptions wo;
  wo.requant = "q4_0";
  const GgufWriteReport rep = write_gguf_model(m, d / "r.gguf", wo);
  const Model back = load_model(d / "r.gguf", no_check());
  const std::vector<const Tensor*> a = std::as_const(m).weight_tensors(), b = back.weight_tensors();
  size_t k = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i]->shape.size() != 2) continue;
    const QuantSpec s = format_spec(a[i]->format);
    EXPECT_EQ(format_name(format_spec(b[i]->format)), "q4_0") << a[i]->name;
    if (ggml_exact_type(s, a[i]->cols())) continue;  // w4g32: exact, not re-quantized
    ASSERT_LT(k, rep.requant.size());
    const auto& r = rep.requant[k++];
    EXPECT_EQ(r.name, a[i]->name);
    EXPECT_EQ(r.from, format_name(s));
    EXPECT_EQ(r.to, "Q4_0");
    const std::vector<float> want = dequantize_ref(*a[i]), got = dequantize_ref(*b[i]);
    double sq = 0, ref = 0;
    for (size_t j = 0; j < want.size(); ++j) {
      sq += (double(got[j]) - want[j]) * (double(got[j]) - want[j]);
      ref += double(want[j]) * want[j];
    }
    EXPECT_NEAR(r.rel_rms, std::sqrt(sq / ref), 1e-9) << r.name;
    EXPECT_GT(r.rel_rms, 0.0) << r.name;
    EXPECT_LT(r.rel_rms, 0.25) << r.name;
  }
  EXPECT_EQ(k, rep.requant.size());
  EXPECT_EQ(k, 11u);  // 16 weights, every third exact
  EXPECT_GT(rep.requant_rel_rms, 0.0);
}

// --dtype: every family (int, lut, sparse outliers, ggml blocks) dequantized by the reference
// dequantization, to GGUF and to a Hugging Face directory (which, without --dtype, takes F32).
TEST(ConvertDense, EveryFamilyDequantized) {
  TempDir d;
  Model src = quantized_tiny({"w4g32+s0.20", "lut3", "nf4g64", "w3g64a", "fp8row", "w4g32"});
  // and a ggml-family tensor (llama.cpp blocks imported from GGUF)
  Tensor& up = src.layers[1].w_up;
  const QuantSpec q8 = parse_format_name("q8_0");
  std::vector<uint8_t> bytes(size_t(packed_geometry(q8, up.rows(), up.cols()).total_bytes));
  ggml_random_blocks(uint32_t(q8.bits), up.rows(), up.cols(), 4, 0.02f, bytes.data());
  up = make_owned_tensor(up.name, DType::Q, up.shape, std::move(bytes), format_id(q8));
  const std::vector<std::vector<float>> want = weights_f32(src);
  const std::vector<const Tensor*> src_ts = std::as_const(src).weight_tensors();
  for (DType dt : {DType::F32, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    WriteOptions wo;
    wo.dtype = dt;
    wo.dequantize = true;
    const std::string p = d / (std::string("m-") + dtype_name(dt) + ".gguf");
    const GgufWriteReport rep = write_gguf_model(src, p, wo);
    EXPECT_EQ(rep.n_dequantized, 16);
    EXPECT_TRUE(rep.mapped.empty());
    const GgufFile g = read_gguf(p);
    EXPECT_EQ(g.find("general.quantization_version"), nullptr);
    EXPECT_EQ(gguf_u32(g, "general.file_type"), dt == DType::F32 ? 0u : 1u);
    const Model back = load_model(p, no_check());
    const std::vector<std::vector<float>> got = weights_f32(back);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].size(), want[i].size());
      for (size_t k = 0; k < want[i].size(); ++k) {
        const bool round = dt == DType::F16 && src_ts[i]->shape.size() == 2;  // 1-D tensors stay f32
        const float w = round ? f16_to_f32(f32_to_f16(want[i][k])) : want[i][k];
        ASSERT_EQ(got[i][k], w) << i << " k=" << k;
      }
    }
  }
  // Hugging Face: q/k rows permuted to halves; the loader keeps them, so permute back to compare
  write_hf_model(src, d / "hf", WriteOptions{});
  const Model hf = load_model(d / "hf", no_check());
  EXPECT_EQ(hf.layers[0].wq.dtype, DType::F32);
  const std::vector<std::vector<float>> got = weights_f32(hf);
  const std::vector<const Tensor*> ts = hf.weight_tensors();
  for (size_t i = 0; i < want.size(); ++i) {
    std::vector<float> g = got[i];
    for (const LayerWeights& L : hf.layers) {
      if (ts[i] == &L.wq) g = tensor_to_f32(permute_rope_rows(*ts[i], hf.cfg.n_heads, false));
      if (ts[i] == &L.wk) g = tensor_to_f32(permute_rope_rows(*ts[i], hf.cfg.n_kv_heads, false));
    }
    ASSERT_EQ(g, want[i]) << ts[i]->name;
  }
}
