#include <random>

#include "lmpress/compress.h"

namespace lmpress {

std::vector<std::vector<int32_t>> calibration_windows(const Model& m, const CalibOptions& o) {
  if (o.nsamples < 1 || o.seqlen < 2) fail("calibration", "--nsamples must be >= 1 and --seqlen >= 2");
  if (!m.tokenizer) fail(m.path, "calibration needs a tokenizer");
  const std::string text = read_text_input(o.text_path);
  std::vector<int32_t> toks;
  try {
    toks = m.tokenizer->encode(text, true);
  } catch (const Error& e) {
    fail(o.text_path, e.what());
  }
  if (int64_t(toks.size()) < o.seqlen + 1)
    fail(o.text_path, "calibration text has " + std::to_string(toks.size()) + " tokens, fewer than --seqlen " +
                          std::to_string(o.seqlen) + " + 1");
  // Random windows (GPTQ's protocol: uniform start positions, may overlap); the first token of
  // each window is set to BOS, as in the evaluation protocol, so calibration sees the same
  // attention-sink position the evaluation does.
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> start(0, int64_t(toks.size()) - o.seqlen - 1);
  std::vector<std::vector<int32_t>> w(size_t(o.nsamples));
  for (auto& win : w) {
    const int64_t s = start(rng);
    win.assign(toks.begin() + s, toks.begin() + s + o.seqlen);
    if (m.tokenizer->bos() >= 0) win[0] = m.tokenizer->bos();
  }
  return w;
}

}  // namespace lmpress
