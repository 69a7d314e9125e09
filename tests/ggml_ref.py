#!/usr/bin/env python3
"""Independent reference for lmpress's ggml formats (llama.cpp block types), from the `gguf`
package (gguf.quants: numpy dequantization of every type, quantization of the legacy ones).

  ggml_ref.py blocks OUT.gguf [ROWS COLS]
      For every type: random blocks (random codes and sub-scales, sane f16 scales) as tensor
      '<type>.q' [rows, cols] of that type and numpy's dequantization as '<type>.f' (F32).
  ggml_ref.py model SRC.gguf OUT_Q.gguf OUT_DEQ.gguf
      SRC (an F32 llama GGUF) with every 2-D weight quantized to one of the types (round robin;
      legacy types by gguf.quants.quantize, k-quants and i-quants by the simple min/max encoders
      below), and the same model with those weights replaced by numpy's dequantization (F32).
      The encoders are checked against gguf.quants' decoder (relative RMSE) before writing.
  ggml_ref.py dequant SRC.gguf OUT.gguf
      SRC with every quantized tensor replaced by numpy's dequantization (F32): the reference a
      real quantized model (e.g. a llama.cpp Q4_1 file) is compared with (lmpress perplexity
      --base / kl divergence).

Run by tests/test_ggml.cpp (the setup script installs the pinned package into build/pyenv).
"""
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

TYPES = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q6_K, T.Q5_K, T.Q3_K, T.Q2_K, T.IQ4_NL, T.IQ4_XS]
# byte offsets of the f16 scale fields of a block (d, and dmin / m), for the random blocks
F16_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q4_K: [0, 2],
              T.Q6_K: [208], T.Q5_K: [0, 2], T.Q3_K: [108], T.Q2_K: [80, 82], T.IQ4_NL: [0], T.IQ4_XS: [0]}
IQ4 = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def f16_bytes(x):
    return np.asarray(x, dtype=np.float16).reshape(-1, 1).view(np.uint8)


# ---- minimal GGUF v3 writer (metadata copied byte for byte from a reader) ----------------------
def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path, kv_raw, n_kv, tensors):
    """tensors: list of (name, ggml type, ne (GGUF order), bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), n_kv) + kv_raw
    infos, data, off = b"", b"", 0
    for name, typ, ne, raw in tensors:
        infos += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", int(typ), off)
        pad = (-len(raw)) % 32
        data += raw + b"\0" * pad
        off += len(raw) + pad
    hdr = head + infos
    hdr += b"\0" * ((-len(hdr)) % 32)
    with open(path, "wb") as f:
        f.write(hdr + data)


def kv_of(reader, extra=()):
    raw, n = b"", 0
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        raw += b"".join(p.tobytes() for p in field.parts)
        n += 1
    for k, v in extra:
        raw += gguf_string(k) + struct.pack("<I", 8) + gguf_string(v)  # type 8: string
        n += 1
    return raw, n


# ---- blocks -----------------------------------------------------------------------------------
def random_blocks(typ, rows, cols, rng):
    qk, bs = gguf.GGML_QUANT_SIZES[typ]
    nb = rows * cols // qk
    b = rng.integers(0, 256, size=(nb, bs), dtype=np.uint8)
    for i, off in enumerate(F16_FIELDS[typ]):
        v = (0.5 + rng.random(nb)) * 0.01
        if i == 1 and typ in (T.Q4_1, T.Q5_1):
            v = -8 * v
        b[:, off:off + 2] = f16_bytes(v)
    return b.reshape(rows, cols // qk * bs)


def cmd_blocks(out, rows=7, cols=1024):
    rng = np.random.default_rng(1234)
    tensors = []
    for typ in TYPES:
        q = random_blocks(typ, rows, cols, rng)
        f = quants.dequantize(q, typ).astype(np.float32).reshape(rows, cols)
        name = typ.name.lower()
        tensors.append((name + ".q", typ, [cols, rows], q.tobytes()))
        tensors.append((name + ".f", T.F32, [cols, rows], f.tobytes()))
    kv = gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("ggml-blocks")
    write_gguf(out, kv, 1, tensors)


# ---- simple encoders for the types gguf.quants cannot quantize ----------------------------------
def signed_absmax(x, axis=-1):
    i = np.abs(x).argmax(axis=axis)
    return np.take_along_axis(x, np.expand_dims(i, axis), axis=axis)


def safe_div(a, b):
    return np.where(b == 0, 0, a / np.where(b == 0, 1, b))


def nearest_iq4(y):
    return np.abs(y[..., None] - IQ4).argmin(axis=-1).astype(np.uint8)


def pack_nibbles32(q):  # [..., 32] -> [..., 16]: weight i low nibble of byte i, i + 16 high
    return (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)


def k4_pack_scales(sc, m):  # [n, 8] 6-bit each -> [n, 12]
    s = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return s


def enc_iq4_nl(x):
    b = x.reshape(-1, 32)
    d = (signed_absmax(b) / -127).astype(np.float16).astype(np.float32)
    q = nearest_iq4(safe_div(b, d))
    return np.concatenate([f16_bytes(d), pack_nibbles32(q)], axis=1)


def enc_iq4_xs(x):
    b = x.reshape(-1, 8, 32)
    s = signed_absmax(b)[..., 0] / -127                  # per sub-block scale
    d = (np.abs(s).max(axis=1) / 31).astype(np.float16).astype(np.float32)
    ls = np.clip(np.rint(safe_div(s, d[:, None])), -32, 31).astype(np.int32)
    dl = d[:, None] * ls
    q = nearest_iq4(safe_div(b, dl[..., None]))
    u = (ls + 32).astype(np.uint8)
    scales_h = np.zeros(b.shape[0], dtype=np.uint16)
    for j in range(8):
        scales_h |= ((u[:, j] >> 4) & 3).astype(np.uint16) << (2 * j)
    scales_l = (u[:, 0::2] & 15) | ((u[:, 1::2] & 15) << 4)
    qs = pack_nibbles32(q).reshape(-1, 128)
    return np.concatenate([f16_bytes(d), scales_h.reshape(-1, 1).view(np.uint8), scales_l, qs], axis=1)


def enc_q4_q5_k(x, bits):
    b = x.reshape(-1, 8, 32)
    maxq = (1 << bits) - 1
    mn = np.minimum(b.min(axis=2), 0)
    mx = b.max(axis=2)
    scale, mins = (mx - mn) / maxq, -mn
    d = (scale.max(axis=1) / 63).astype(np.float16).astype(np.float32)
    dm = (mins.max(axis=1) / 63).astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(safe_div(scale, d[:, None])), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(safe_div(mins, dm[:, None])), 0, 63).astype(np.uint8)
    S, M = d[:, None] * sc, dm[:, None] * m
    q = np.clip(np.rint(safe_div(b + M[..., None], S[..., None])), 0, maxq).astype(np.uint8)  # [n, 8, 32]
    lo = q & 15
    qs = (lo[:, 0::2, :] | (lo[:, 1::2, :] << 4)).reshape(-1, 128)
    parts = [f16_bytes(d), f16_bytes(dm), k4_pack_scales(sc, m)]
    if bits == 5:
        qh = np.zeros((b.shape[0], 32), dtype=np.uint8)
        for j in range(8):
            qh |= ((q[:, j, :] >> 4) & 1) << j
        parts.append(qh)
    return np.concatenate(parts + [qs], axis=1)


def layout_128x4(q2):  # [n, 256] 2-bit -> [n, 64]: weight 128 h + 32 j + l at bits 2 j of byte 32 h + l
    q = q2.reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64).astype(np.uint8)


def enc_q2_k(x):
    b = x.reshape(-1, 16, 16)
    mn = np.minimum(b.min(axis=2), 0)
    scale, mins = (b.max(axis=2) - mn) / 3, -mn
    d = (scale.max(axis=1) / 15).astype(np.float16).astype(np.float32)
    dm = (mins.max(axis=1) / 15).astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(safe_div(scale, d[:, None])), 0, 15).astype(np.uint8)
    m = np.clip(np.rint(safe_div(mins, dm[:, None])), 0, 15).astype(np.uint8)
    S, M = d[:, None] * sc, dm[:, None] * m
    q = np.clip(np.rint(safe_div(b + M[..., None], S[..., None])), 0, 3).astype(np.uint8).reshape(-1, 256)
    return np.concatenate([sc | (m << 4), layout_128x4(q), f16_bytes(d), f16_bytes(dm)], axis=1)


def enc_q3_k(x):
    b = x.reshape(-1, 16, 16)
    s = signed_absmax(b)[..., 0] / -4
    d = (np.abs(s).max(axis=1) / 31).astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(safe_div(s, d[:, None])), -32, 31).astype(np.int32)
    S = d[:, None] * sc
    q = np.clip(np.rint(safe_div(b, S[..., None])) + 4, 0, 7).astype(np.uint8).reshape(-1, 256)
    hmask = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for j in range(8):
        hmask |= ((q[:, 32 * j:32 * j + 32] >> 2) & 1) << j
    u = (sc + 32).astype(np.uint8)  # 6-bit: low nibble i / 8 of byte i % 8, high 2 bits at byte 8 + i % 4
    sb = np.zeros((q.shape[0], 12), dtype=np.uint8)
    for i in range(16):
        sb[:, i % 8] |= (u[:, i] & 15) << (4 * (i // 8))
        sb[:, 8 + i % 4] |= ((u[:, i] >> 4) & 3) << (2 * (i // 4))
    return np.concatenate([hmask, layout_128x4(q & 3), sb, f16_bytes(d)], axis=1)


def enc_q6_k(x):
    b = x.reshape(-1, 16, 16)
    s = signed_absmax(b)[..., 0] / -32
    d = (np.abs(s).max(axis=1) / 127).astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(safe_div(s, d[:, None])), -127, 127).astype(np.int8)
    S = d[:, None] * sc
    q = np.clip(np.rint(safe_div(b, S[..., None])) + 32, 0, 63).astype(np.uint8).reshape(-1, 2, 4, 32)
    lo, hi = q & 15, q >> 4
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2).reshape(-1, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(-1, 64)
    return np.concatenate([ql, qh.astype(np.uint8), sc.view(np.uint8), f16_bytes(d)], axis=1)


ENCODERS = {T.IQ4_NL: enc_iq4_nl, T.IQ4_XS: enc_iq4_xs, T.Q4_K: lambda x: enc_q4_q5_k(x, 4),
            T.Q5_K: lambda x: enc_q4_q5_k(x, 5), T.Q2_K: enc_q2_k, T.Q3_K: enc_q3_k, T.Q6_K: enc_q6_k}
# relative RMSE a correct encoder stays below on Gaussian-like weights (a layout error is ~1)
MAX_RRMSE = {T.Q8_0: 0.02, T.Q4_0: 0.2, T.Q4_1: 0.2, T.Q5_0: 0.1, T.Q5_1: 0.1, T.Q4_K: 0.2, T.Q6_K: 0.06,
             T.Q5_K: 0.1, T.Q3_K: 0.35, T.Q2_K: 0.6, T.IQ4_NL: 0.2, T.IQ4_XS: 0.2}


def quantize(w, typ):
    rows, cols = w.shape
    if typ in ENCODERS:
        q = ENCODERS[typ](w.astype(np.float32)).reshape(rows, -1)
    else:
        q = quants.quantize(w.astype(np.float32), typ)
    back = quants.dequantize(q, typ).astype(np.float32).reshape(rows, cols)
    rrmse = float(np.sqrt(np.mean((back - w) ** 2) / max(np.mean(w ** 2), 1e-30)))
    if not rrmse < MAX_RRMSE[typ]:
        raise SystemExit(f"ggml_ref.py: {typ.name} encoder self-check failed: relative RMSE {rrmse:.3f}")
    return q, back


def cmd_model(src, out_q, out_deq):
    r = gguf.GGUFReader(src)
    kv, n_kv = kv_of(r)
    tq, tf, k = [], [], 0
    for t in r.tensors:
        ne = [int(x) for x in t.shape]  # GGUF order (ne[0] = columns)
        if t.tensor_type != T.F32:
            raise SystemExit(f"ggml_ref.py: {src}: expected F32 tensors, {t.name} is {t.tensor_type.name}")
        w = np.asarray(t.data, dtype=np.float32).reshape(list(reversed(ne)))
        if w.ndim != 2:
            tq.append((t.name, T.F32, ne, w.tobytes()))
            tf.append((t.name, T.F32, ne, w.tobytes()))
            continue
        typ = TYPES[k % len(TYPES)]
        k += 1
        if ne[0] % gguf.GGML_QUANT_SIZES[typ][0]:
            typ = T.Q8_0
        q, back = quantize(w, typ)
        tq.append((t.name, typ, ne, q.tobytes()))
        tf.append((t.name, T.F32, ne, back.tobytes()))
        print(f"{t.name}: {typ.name}", file=sys.stderr)
    write_gguf(out_q, kv, n_kv, tq)
    write_gguf(out_deq, kv, n_kv, tf)


def cmd_dequant(src, out):
    r = gguf.GGUFReader(src)
    kv, n_kv = kv_of(r)
    ts = []
    for t in r.tensors:
        ne = [int(x) for x in t.shape]
        if t.tensor_type == T.F32:
            ts.append((t.name, T.F32, ne, np.asarray(t.data).tobytes()))
            continue
        w = quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        ts.append((t.name, T.F32, ne, w.tobytes()))
    write_gguf(out, kv, n_kv, ts)


if __name__ == "__main__":
    if len(sys.argv) in (3, 5) and sys.argv[1] == "blocks":
        cmd_blocks(sys.argv[2], *[int(a) for a in sys.argv[3:]])
    elif len(sys.argv) == 5 and sys.argv[1] == "model":
        cmd_model(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "dequant":
        cmd_dequant(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
