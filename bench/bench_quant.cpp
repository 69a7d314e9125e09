// Quantized matmul benchmarks (packed formats x ISA level), 2 threads unless LMPRESS_BENCH_THREADS:
//  decode/<fmt>/<isa>/<rows>x<cols>     matrix-vector, GB/s of packed weights streamed. One matrix
//                                       of TinyLlama's FFN fits the 32 MB L3 of small servers;
//  decode_dram/<fmt>/<isa>              the same over 12 distinct copies (about 80 MB at 4.5 bpw),
//                                       so the weights come from DRAM as in a real decode step;
//  prefill/<fmt>/<isa>/<rows>x<cols>    n = 128 tokens, GFLOP/s counted as 2*rows*cols*n, for the
//                                       integer-dot kernels and for dequantize + OpenBLAS sgemm;
//  model_decode|model_prefill128/tinyllama-1.1b/<fmt>/<isa>
//                                       every linear layer of TinyLlama once per token (matmuls
//                                       only): tokens/s, an upper bound for the engine; int
//                                       formats, the other families (nf4, fp4, mxfp4, lut, fp8) and llama.cpp's
//                                       types (q4_0 ... q6_k, iq4_*: ggml family, random blocks), SpQR's
//                                       spqr3g16 / spqr3g32r32 (SpQR's round to nearest), NUPES's pow4g64 / pow3g64
//                                       and BitMoD's bitmod4g64 / bitmod4g128 / bitmod3g128 next to w4g64 / w3g64;
//                                       VPTQ's vq formats (random codes and codebooks) next to w2g64 / w3g64 / w4g64;
//                                       QTIP's trellis2/3/4 (random streams) next to w2g32 / w3g32 / w4g32 (above).
// The label says which ISA ran; the context line names the CPU features.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <set>
#include <memory>
#include <random>

#include "formats/formats_internal.h"
#include "formats/ggml_family.h"
#include "formats/trellis.h"
#include "formats/vq.h"
#include "lmpress/engine.h"

using namespace lmpress;

namespace {

int bench_threads() {
  const char* e = std::getenv("LMPRESS_BENCH_THREADS");
  return e ? std::max(1, std::atoi(e)) : 2;
}
ThreadPool& pool() {
  static ThreadPool p(bench_threads());
  return p;
}

const Tensor& packed(const QuantSpec& s, int64_t rows, int64_t cols) {
  static std::map<std::tuple<uint32_t, int64_t, int64_t>, Tensor> cache;
  auto key = std::make_tuple(format_id(s), rows, cols);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (s.family == FormatFamily::Ggml) {  // llama.cpp's block types: random blocks (imported, not made)
    std::vector<uint8_t> bytes(size_t(packed_geometry(s, rows, cols).total_bytes));
    ggml_random_blocks(uint32_t(s.bits), rows, cols, 1, 0.001f, bytes.data());
    return cache[key] = make_owned_tensor("w", DType::Q, {rows, cols}, std::move(bytes), format_id(s));
  }
  // vq (VPTQ codebooks): random codes and codebooks. k-means over TinyLlama's 1.1 B weights on two
  // cores would take hours, and the kernels' cost does not depend on the values.
  if (s.family == FormatFamily::Vq) return cache[key] = pack_tensor("w", vq::random_matrix(s, rows, cols, 1));
  // trellis (QTIP): random streams (the Viterbi encoder over 1.1 B weights takes hours on two cores).
  if (s.family == FormatFamily::Trellis) return cache[key] = pack_tensor("w", trellis::random_matrix(s, rows, cols, 1));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> w(size_t(rows * cols));
  for (auto& v : w) v = nd(rng);
  if (!s.sparse) return cache[key] = pack_tensor("w", quantize_rtn_ref(w.data(), rows, cols, s));
  // Sparse outliers: the dense format's codes plus sparse_count(s) random positions.
  QuantSpec dense = s;
  dense.sparse = 0;
  QuantizedMatrix qm = quantize_rtn_ref(w.data(), rows, cols, dense);
  qm.spec = s;
  std::set<uint32_t> pos;
  const int64_t nnz = sparse_count(s, rows, cols);
  while (int64_t(pos.size()) < nnz) pos.insert(uint32_t(rng() % uint64_t(rows * cols)));
  qm.sp_idx.assign(pos.begin(), pos.end());
  qm.sp_val.assign(pos.size(), 0.0625f);
  return cache[key] = pack_tensor("w", qm);
}

std::vector<float> activations(int64_t n, int64_t cols) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(n * cols));
  for (auto& v : x) v = nd(rng);
  return x;
}

bool level_ok(benchmark::State& st, SimdLevel l) {
  if (l > cpu_simd_level()) {
    st.SkipWithError("ISA level not supported by this CPU");
    return false;
  }
  return true;
}

void label(benchmark::State& st) {
  st.SetLabel(std::string(simd_level_name(active_simd_level())) + " " + std::to_string(pool().size()) + "t");
}

void bm_decode(benchmark::State& st, QuantSpec s, SimdLevel l, int64_t rows, int64_t cols) {
  if (!level_ok(st, l)) return;
  ScopedSimdLevel sl(l);
  const Tensor& W = packed(s, rows, cols);
  auto x = activations(1, cols);
  std::vector<float> y(static_cast<size_t>(rows));
  for (auto _ : st) {
    matmul(W, x.data(), 1, y.data(), pool());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(W.nbytes));
  label(st);
}

void bm_decode_dram(benchmark::State& st, QuantSpec s, SimdLevel l) {
  if (!level_ok(st, l)) return;
  ScopedSimdLevel sl(l);
  const int64_t rows = 5632, cols = 2048;
  const Tensor& W0 = packed(s, rows, cols);
  const uint8_t* b0 = static_cast<const uint8_t*>(W0.data);
  std::vector<Tensor> ws;
  for (int i = 0; i < 12; ++i)
    ws.push_back(make_owned_tensor("w", DType::Q, W0.shape, std::vector<uint8_t>(b0, b0 + W0.nbytes), W0.format));
  auto x = activations(1, cols);
  std::vector<float> y(static_cast<size_t>(rows));
  for (auto _ : st) {
    for (const Tensor& W : ws) matmul(W, x.data(), 1, y.data(), pool());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(W0.nbytes) * int64_t(ws.size()));
  label(st);
}

void bm_prefill(benchmark::State& st, QuantSpec s, SimdLevel l, int64_t rows, int64_t cols, bool sgemm, bool amx) {
  if (!level_ok(st, l)) return;
  if (amx && !cpu_has_amx()) {
    st.SkipWithError("no AMX on this CPU / OS");
    return;
  }
  ScopedSimdLevel sl(l, amx);
  const int64_t n = 128;
  const Tensor& W = packed(s, rows, cols);
  auto x = activations(n, cols);
  std::vector<float> y(size_t(n * rows));
  for (auto _ : st) {
    if (sgemm)
      quant_matmul_dequant_sgemm(W, x.data(), n, y.data(), pool());
    else
      matmul(W, x.data(), n, y.data(), pool());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(rows * cols * n) / 1e9,
                                              benchmark::Counter::kIsRate);
  label(st);
}

// All linear layers of TinyLlama-1.1B (22 layers: q, k, v, o, gate, up, down; then the 32000-row
// classifier), distinct copies so every token streams ~0.6 GB from DRAM, as a real decode step
// does: tokens/s of the matmuls alone (attention, norms and the rest excluded), n = 1 or 128.
void bm_model(benchmark::State& st, QuantSpec s, SimdLevel l, int64_t n, bool amx) {
  if (!level_ok(st, l)) return;
  if (amx && !cpu_has_amx()) {
    st.SkipWithError("no AMX on this CPU / OS");
    return;
  }
  ScopedSimdLevel sl(l, amx);
  const int64_t dim = 2048, hidden = 5632, kv = 256, vocab = 32000;
  const std::pair<int64_t, int64_t> layer[] = {{dim, dim}, {kv, dim}, {kv, dim}, {dim, dim},
                                               {hidden, dim}, {hidden, dim}, {dim, hidden}};
  static std::map<uint32_t, std::vector<Tensor>> models;
  std::vector<Tensor>& ws = models[format_id(s)];
  if (ws.empty()) {
    auto copy = [&](int64_t r, int64_t c) {
      const Tensor& t = packed(s, r, c);
      const uint8_t* b = static_cast<const uint8_t*>(t.data);
      ws.push_back(make_owned_tensor("w", DType::Q, t.shape, std::vector<uint8_t>(b, b + t.nbytes), t.format));
    };
    for (int il = 0; il < 22; ++il)
      for (const auto& [r, c] : layer) copy(r, c);
    copy(vocab, dim);
  }
  size_t bytes = 0;
  for (const Tensor& w : ws) bytes += w.nbytes;
  auto x = activations(n, hidden);
  std::vector<float> y(size_t(n * vocab));
  for (auto _ : st) {
    for (const Tensor& w : ws) matmul(w, x.data(), n, y.data(), pool());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["tok/s"] = benchmark::Counter(double(st.iterations()) * double(n), benchmark::Counter::kIsRate);
  st.counters["GB/s"] = benchmark::Counter(double(st.iterations()) * double(bytes) / 1e9, benchmark::Counter::kIsRate);
  label(st);
}

const std::pair<const char*, SimdLevel> kLevels[] = {
    {"scalar", SimdLevel::Scalar}, {"avx2", SimdLevel::AVX2}, {"avx512", SimdLevel::AVX512}};

void register_all() {
  std::vector<QuantSpec> decode_fmts = {{2, 32, true}, {3, 32, true}, {4, 32, true},  {5, 32, true},
                                        {6, 32, true}, {8, 32, true}, {4, 128, false}, {4, 16, true},
                                        {4, 0, true}, parse_format_name("w4g32+s0.50"),
                                        parse_format_name("w3g32+s0.50")};
  const std::pair<int64_t, int64_t> shapes[] = {{2048, 5632}, {5632, 2048}};
  for (const auto& [lname, l] : kLevels) {
    for (const auto& s : decode_fmts) {
      if (l == SimdLevel::Scalar && !(s == QuantSpec{4, 32, true})) continue;
      for (const auto& [r, c] : shapes) {
        const std::string name = "decode/" + format_name(s) + "/" + lname + "/" + std::to_string(r) + "x" + std::to_string(c);
        benchmark::RegisterBenchmark(name.c_str(), bm_decode, s, l, r, c)->Unit(benchmark::kMicrosecond)->UseRealTime();
      }
    }
  }
  for (const auto& [lname, l] : kLevels) {
    if (l == SimdLevel::Scalar) continue;
    for (const auto& s : {QuantSpec{4, 32, true}, QuantSpec{3, 32, true}, QuantSpec{8, 32, true}}) {
      const std::string name = "decode_dram/" + format_name(s) + "/" + lname;
      benchmark::RegisterBenchmark(name.c_str(), bm_decode_dram, s, l)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  }
  for (const auto& [lname, l] : kLevels) {
    if (l == SimdLevel::Scalar) continue;
    for (const auto& s : {QuantSpec{4, 32, true}, QuantSpec{4, 128, false}, QuantSpec{2, 32, true},
                          QuantSpec{3, 32, true}, QuantSpec{8, 32, true}}) {
      const std::string base = "model_decode/tinyllama-1.1b/" + format_name(s) + "/" + lname;
      benchmark::RegisterBenchmark(base.c_str(), bm_model, s, l, int64_t(1), false)->Unit(benchmark::kMillisecond)->UseRealTime();
      if (s.bits != 4) continue;
      const std::string pre = "model_prefill128/tinyllama-1.1b/" + format_name(s) + "/" + lname;
      benchmark::RegisterBenchmark(pre.c_str(), bm_model, s, l, int64_t(128), false)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
    }
    // The other families next to w4g32 (the same bytes at 4.5 bpw for nf4g32 / fp4g32; lut4
    // 4.0 plus 18 bytes a row, mxfp4 4.25, fp8row 8.0): decode and prefill.
    // llama.cpp's types (GGUF imports) likewise: q4_0 / iq4_nl are 4.5 bpw like w4g32, q4_k 4.5,
    // q4_1 5.0, q5_k 5.5, q6_k 6.5625, q8_0 8.5, q3_k 3.4375, q2_k 2.625, iq4_xs 4.25. pow4g64 is
    // w4g64's bytes (4.25), bitmod4g64 4.375, bitmod4g128 4.1875, pow3g64 = w3g64 3.25, bitmod3g128 3.1875.
    for (const char* f : {"nf4g32", "nf4g64", "fp4g32", "mxfp4", "lut3", "lut4", "fp8row", "q4_0", "q4_1", "q5_0",
                          "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs", "w4g32+s0.50", "lut3+s0.45",
                          "spqr3g16", "spqr3g32r32", "spqr3g16+s0.30", "w4g64", "w3g64", "pow4g64", "pow3g64", "bitmod4g64",
                          "bitmod4g128", "bitmod3g128", "w2g64", "vq4k8", "vq4k8n", "vq8k8r8", "vq4k10", "vq4k12", "vq4k8r4",
                          "vq4k8r8", "vq2k8", "vq8k12", "trellis2", "trellis3", "trellis4", "trellis2h", "trellis3h", "trellis4h", "b1g128", "fp4g64", "w4g128", "fp3g64",
                          "fp4e3m0g64"}) {
      const QuantSpec s = parse_format_name(f);
      const std::string base = "model_decode/tinyllama-1.1b/" + format_name(s) + "/" + lname;
      benchmark::RegisterBenchmark(base.c_str(), bm_model, s, l, int64_t(1), false)->Unit(benchmark::kMillisecond)->UseRealTime();
      const std::string pre = "model_prefill128/tinyllama-1.1b/" + format_name(s) + "/" + lname;
      benchmark::RegisterBenchmark(pre.c_str(), bm_model, s, l, int64_t(128), false)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
    }
  }
  std::vector<QuantSpec> prefill_fmts = {{2, 32, true}, {3, 32, true}, {4, 32, true}, {5, 32, true},
                                         {6, 32, true}, {8, 32, true}, {4, 128, false}, {4, 16, true}};
  for (const auto& [lname, l] : kLevels) {
    if (l == SimdLevel::Scalar) continue;
    for (const auto& s : prefill_fmts) {
      for (const auto& [r, c] : shapes) {
        const std::string base = "prefill/" + format_name(s) + "/" + lname + "/" + std::to_string(r) + "x" + std::to_string(c);
        benchmark::RegisterBenchmark(base.c_str(), bm_prefill, s, l, r, c, false, false)->Unit(benchmark::kMillisecond)->UseRealTime();
        if (s == QuantSpec{4, 32, true})
          benchmark::RegisterBenchmark((base + "/dequant_sgemm").c_str(), bm_prefill, s, l, r, c, true, false)
              ->Unit(benchmark::kMillisecond)->UseRealTime();
      }
    }
  }
  // AMX int8 tiles (AVX-512 level + AMX): the repacked prefill kernel and the whole model's
  // prefill matmuls, next to the avx512 rows above.
  for (const auto& s : prefill_fmts)
    for (const auto& [r, c] : shapes) {
      const std::string base = "prefill/" + format_name(s) + "/amx/" + std::to_string(r) + "x" + std::to_string(c);
      benchmark::RegisterBenchmark(base.c_str(), bm_prefill, s, SimdLevel::AVX512, r, c, false, true)
          ->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  // (table families: their int8 table values in the repacked layout, session 11)
  for (const char* f : {"w4g32", "w2g32", "w3g32", "w8g32", "q4_0", "q8_0", "q4_k", "q6_k", "w4g64", "w3g64", "nf4g64",
                        "fp4g64", "fp3g64", "mxfp4", "lut3", "lut4", "pow3g64", "bitmod3g128", "b1g128"}) {
    const QuantSpec s = parse_format_name(f);
    const std::string pre = "model_prefill128/tinyllama-1.1b/" + format_name(s) + "/amx";
    benchmark::RegisterBenchmark(pre.c_str(), bm_model, s, SimdLevel::AVX512, int64_t(128), true)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::AddCustomContext("lmpress_cpu", cpu_feature_string() + " (best level: " +
                                                 simd_level_name(cpu_simd_level()) + ")");
  benchmark::AddCustomContext("lmpress_threads", std::to_string(bench_threads()));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
