// SpQR rows (spqr family, kernels/qkernels.h QWeights::stats2): where a row's statistic codes are
// and how one group's scale s and offset m = s z decode. Shared by the scalar reference and the x86
// kernels' scalar tails, so every level decodes a group to the same f32 values.
#pragma once
#include "kernels/qkernels.h"

namespace lmpress::kern::spqr {

// The 6-bit statistic codes of row r (group g at bit 6g, LSB first): after the row's code blocks.
inline const uint8_t* stat_codes(const QWeights& w, int64_t r) {
  return w.q + r * w.row_bytes + w.nb * qblock_bytes(w.bits);
}
// Bytes of a row's statistic codes: 6 bits per group, rounded up to an even number of bytes (so
// the f16 statistics after the rows stay 2-byte aligned; nothing is added when 8 divides groups).
inline int64_t stat_bytes(int64_t groups) { return (6 * groups + 15) / 16 * 2; }
// The second-level statistics of row r's row group: [4][groups] f16.
inline const uint16_t* stats2_of(const QWeights& w, int64_t r) { return w.stats2 + (r / w.stat_rows) * 4 * w.groups; }

// Code of group g (scale code | zero code << 3) from a row's codes of `groups` groups.
inline uint32_t stat_code(const uint8_t* st, int64_t groups, int64_t g) {
  const int64_t bit = 6 * g, byte = bit / 8;
  uint32_t v = st[byte];
  if (byte + 1 < stat_bytes(groups)) v |= uint32_t(st[byte + 1]) << 8;
  return (v >> (bit % 8)) & 63;
}
// s = s_low + s_step * code_s, z = z_low + z_step * code_z, m = s * z (f32, each a product then a sum).
inline void group_factors(const uint16_t* p, int64_t groups, int64_t g, uint32_t code, float* s, float* m) {
  const float sc = f16_to_f32(p[groups + g]) + f16_to_f32(p[g]) * float(code & 7);
  const float z = f16_to_f32(p[3 * groups + g]) + f16_to_f32(p[2 * groups + g]) * float(code >> 3);
  *s = sc;
  *m = sc * z;
}

}  // namespace lmpress::kern::spqr
