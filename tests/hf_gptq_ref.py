#!/usr/bin/env python3
"""Independent numpy reference for Hugging Face GPTQ (AutoGPTQ / GPTQModel) and AWQ (AutoAWQ
"gemm") checkpoints, used by tests/test_hf_quant.cpp. Needs only numpy (Debian's python3-numpy);
safetensors files are read and written here by hand (u64 header length, JSON header, raw data).

  hf_gptq_ref.py make OUTDIR
      Writes tiny Llama directories OUTDIR/<case>/ quantized as GPTQ (2/3/4/8 bits, sym/asym,
      checkpoint_format v1/v2, consecutive or act-order g_idx, bf16 scales, per-module "dynamic"
      bits) and AWQ, from known random integer codes, scales and zeros; beside each, the numpy
      dequantization of every quantized layer (F32 [out, in], the layer's HF ".weight" name) in
      OUTDIR/<case>/reference.safetensors; OUTDIR/cases.json lists the cases with the lmpress
      format each layer is expected to map to ("f32": dequantized).
  hf_gptq_ref.py seed OUT.safetensors
      One 3-bit GPTQ layer [32, 64] (w.qweight, w.qzeros, w.scales, w.g_idx) with its
      quantization_config, out and in in the metadata: the seed of fuzz/fuzz_hf_quant.cpp.
  hf_gptq_ref.py read DIR OUT.safetensors
      Reads a GPTQ directory (lmpress's export), checks its quantization_config against its
      tensors (group sizes through "dynamic", desc_act false, g_idx consecutive), and writes the
      numpy dequantization of every quantized layer to OUT (F32 [out, in], ".weight" names).

Value of a weight: scale[g][o] * (q[i][o] - zero[g][o]), g = g_idx[i], computed in float32
(exact: an f16 / bf16 scale times a small integer). v1 ("gptq") files store zero - 1.
"""
import json
import os
import re
import struct
import sys

import numpy as np

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U8": np.uint8, "BF16": np.uint16}


# ---- safetensors ----------------------------------------------------------------------------------
def save_st(path, tensors, meta=None):
    """tensors: dict name -> (dtype name, numpy array with the raw little-endian values)."""
    header, blobs, off = {"__metadata__": dict({"format": "pt"}, **(meta or {}))}, [], 0
    for name, (dt, a) in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_st(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        lo, hi = e["data_offsets"]
        a = np.frombuffer(b[base + lo:base + hi], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = (e["dtype"], a)
    return out


def f32_of(dt, a):
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


# ---- GPTQ packing (codes down each column, a little-endian bit stream per column) ---------------
def pack_rows(v, bits):
    """v: uint [n, m] codes; packs along axis 0 into uint32 [n * bits / 32, m]."""
    n, m = v.shape
    if bits in (2, 4, 8):
        per = 32 // bits
        v = v.astype(np.uint64).reshape(n // per, per, m)
        shifts = (np.arange(per, dtype=np.uint64) * bits)[None, :, None]
        return (v << shifts).sum(axis=1).astype(np.uint32)
    # any width: the bits of code k at stream positions k*bits .. k*bits+bits-1
    bitv = ((v[:, None, :].astype(np.uint64) >> np.arange(bits, dtype=np.uint64)[None, :, None]) & 1)
    bitv = bitv.reshape(n * bits // 32, 32, m)
    return (bitv << np.arange(32, dtype=np.uint64)[None, :, None]).sum(axis=1).astype(np.uint32)


def pack_rows_3bit_autogptq(v):
    """3-bit packing spelled out as AutoGPTQ's loop lays it out: 32 codes in 3 words; code 10 is
    split 2 + 1 bits across words 0/1, code 21 1 + 2 bits across words 1/2."""
    n, m = v.shape
    v = v.astype(np.uint32)
    out = np.zeros((n // 32 * 3, m), dtype=np.uint32)
    for blk in range(n // 32):
        c = v[32 * blk:32 * blk + 32]
        w0, w1, w2 = (np.zeros(m, dtype=np.uint32) for _ in range(3))
        for j in range(10):
            w0 |= c[j] << (3 * j)
        w0 |= (c[10] << 30) & 0xFFFFFFFF
        w1 |= (c[10] >> 2) & 1
        for j in range(10):
            w1 |= c[11 + j] << (3 * j + 1)
        w1 |= (c[21] << 31) & 0xFFFFFFFF
        w2 |= (c[21] >> 1) & 3
        for j in range(10):
            w2 |= c[22 + j] << (3 * j + 2)
        out[3 * blk], out[3 * blk + 1], out[3 * blk + 2] = w0, w1, w2
    return out


def unpack_rows(w, bits, n):
    """Inverse of pack_rows: uint32 [n * bits / 32, m] -> codes [n, m]."""
    w = w.astype(np.uint64)
    k = np.arange(n)
    word, sh = (k * bits) // 32, ((k * bits) % 32).astype(np.uint64)
    lo = w[word] >> sh[:, None]
    nxt = np.minimum(word + 1, w.shape[0] - 1)
    hi = np.where(((sh + bits) > 32)[:, None], w[nxt] << (np.uint64(32) - sh)[:, None], 0)
    return ((lo | hi) & np.uint64((1 << bits) - 1)).astype(np.int64)


def awq_pack(v):
    """v: codes [n, out] -> uint32 [n, out / 8], AutoAWQ's nibble order."""
    n, m = v.shape
    v = v.astype(np.uint32).reshape(n, m // 8, 8)
    out = np.zeros((n, m // 8), dtype=np.uint32)
    for k in range(8):
        out |= v[:, :, AWQ_ORDER[k]] << (4 * k)
    return out


def dequant(q, scale, zero, gidx):
    """q [in, out], scale / zero [groups, out] (float32 / int), gidx [in] -> W [out, in] float32."""
    return (scale[gidx] * (q - zero[gidx]).astype(np.float32)).astype(np.float32).T.copy()


# ---- the tiny model -------------------------------------------------------------------------------
DIM, HIDDEN, HEADS, KV, VOCAB = 128, 256, 4, 2, 64
LINEARS = [("self_attn.q_proj", DIM, DIM), ("self_attn.k_proj", DIM // HEADS * KV, DIM),
           ("self_attn.v_proj", DIM // HEADS * KV, DIM), ("self_attn.o_proj", DIM, DIM),
           ("mlp.gate_proj", HIDDEN, DIM), ("mlp.up_proj", HIDDEN, DIM), ("mlp.down_proj", DIM, HIDDEN)]


def config(qc, layers, tied=True):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
            "intermediate_size": HIDDEN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
            "num_key_value_heads": KV, "hidden_act": "silu", "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied,
            "vocab_size": VOCAB, "torch_dtype": "float16", "quantization_config": qc}


def random_scales(rng, shape, bf16):
    s = rng.uniform(2e-3, 2e-2, size=shape).astype(np.float32)
    if bf16:
        b = (s.view(np.uint32) >> 16).astype(np.uint16)  # truncate to bf16 (exact in f16 too)
        return "BF16", b, f32_of("BF16", b)
    h = s.astype(np.float16)
    return "F16", h, h.astype(np.float32)


def make_case(root, name, case, rng, cases):
    """case: dict(method, bits, group, sym, v1, act_order, no_gidx, bf16, dynamic, lm_head, zero_max)."""
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    method, layers = case.get("method", "gptq"), 1
    tensors, ref, expect = {}, {}, {}
    tied = not case.get("lm_head", False)
    tensors["model.embed_tokens.weight"] = ("F16", rng.normal(0, 0.5, (VOCAB, DIM)).astype(np.float16))
    tensors["model.norm.weight"] = ("F32", np.ones(DIM, dtype=np.float32))
    mods = []
    for l in range(layers):
        tensors[f"model.layers.{l}.input_layernorm.weight"] = ("F32", rng.uniform(0.5, 1.5, DIM).astype(np.float32))
        tensors[f"model.layers.{l}.post_attention_layernorm.weight"] = ("F32", rng.uniform(0.5, 1.5, DIM).astype(np.float32))
        mods += [(f"model.layers.{l}.{n}", o, i) for n, o, i in LINEARS]
    if not tied:
        mods.append(("lm_head", VOCAB, DIM))
    dynamic = {}
    for prefix, out, inp in mods:
        bits, group = case["bits"], case["group"]
        if case.get("dynamic") and prefix.endswith("q_proj"):
            bits = 8
            dynamic["+:" + re.escape(prefix) + "$"] = {"bits": 8}
        G = inp if group == -1 else group
        ng = inp // G
        maxq = (1 << bits) - 1
        q = rng.integers(0, maxq + 1, size=(inp, out))
        if case["sym"]:
            zero = np.full((ng, out), 1 << (bits - 1))
        elif case.get("v1"):
            zero = rng.integers(1, maxq + 1, size=(ng, out))  # v1 cannot store a zero of 0
            if case.get("zero_max"):
                zero[0, :5] = maxq + 1  # stored field all ones: AutoGPTQ reads zero 2^bits
        else:
            zero = rng.integers(0, maxq + 1, size=(ng, out))
        if case.get("act_order"):
            gidx = (np.arange(inp) // G)[rng.permutation(inp)].astype(np.int32)
        else:
            gidx = (np.arange(inp) // G).astype(np.int32)
        sdt, sraw, sval = random_scales(rng, (ng, out), case.get("bf16", False))
        if method == "awq":
            tensors[prefix + ".qweight"] = ("I32", awq_pack(q).view(np.int32))
            tensors[prefix + ".qzeros"] = ("I32", awq_pack(zero).view(np.int32))
        else:
            qw = pack_rows(q, bits)
            if bits == 3:
                assert np.array_equal(qw, pack_rows_3bit_autogptq(q)), "3-bit layout self-check"
            assert np.array_equal(unpack_rows(qw, bits, inp), q), "unpack self-check"
            stored = zero - (1 if case.get("v1") else 0)
            qz = pack_rows(stored.T.astype(np.uint64) & np.uint64(maxq), bits).T
            tensors[prefix + ".qweight"] = ("I32", qw.view(np.int32))
            tensors[prefix + ".qzeros"] = ("I32", np.ascontiguousarray(qz).view(np.int32))
            if not case.get("no_gidx"):
                tensors[prefix + ".g_idx"] = ("I32", gidx)
        tensors[prefix + ".scales"] = (sdt, sraw)
        ref[prefix + ".weight"] = ("F32", dequant(q, sval, zero, gidx))
        if case.get("act_order") or (case.get("zero_max") and bits == 8):
            expect[prefix] = "f32"
        else:
            sym = case["sym"] or (method == "awq" and case.get("zero8"))
            expect[prefix] = f"w{bits}" + ("row" if group == -1 else f"g{group}") + ("" if sym else "a")
    if method == "awq":
        qc = {"quant_method": "awq", "bits": case["bits"], "group_size": case["group"], "zero_point": True,
              "version": "gemm"}
    else:
        fmt = "gptq" if case.get("v1") else "gptq_v2"
        qc = {"quant_method": "gptq", "bits": case["bits"], "group_size": case["group"],
              "desc_act": bool(case.get("act_order")), "sym": case["sym"], "lm_head": not tied,
              "checkpoint_format": fmt, "dynamic": dynamic or None}
        if case.get("format_key"):
            qc["format"] = fmt
            qc["checkpoint_format"] = "gptq_v2" if fmt == "gptq" else "gptq"  # "format" wins
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config(qc, layers, tied), f, indent=1)
    save_st(os.path.join(d, "model.safetensors"), tensors)
    save_st(os.path.join(d, "reference.safetensors"), ref)
    cases.append({"name": name, "dir": d, "expect": expect})


def make(root):
    rng = np.random.default_rng(12345)
    os.makedirs(root, exist_ok=True)
    cases = []
    groups = {2: 32, 3: 64, 4: 128, 8: -1}
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            for v1 in (True, False):
                make_case(root, f"gptq-b{bits}-{'sym' if sym else 'asym'}-{'v1' if v1 else 'v2'}",
                          {"bits": bits, "group": groups[bits] if sym else 32, "sym": sym, "v1": v1}, rng, cases)
    make_case(root, "gptq-b4-actorder", {"bits": 4, "group": 32, "sym": False, "v1": True, "act_order": True}, rng, cases)
    make_case(root, "gptq-b3-actorder", {"bits": 3, "group": 64, "sym": True, "v1": False, "act_order": True}, rng, cases)
    make_case(root, "gptq-b4-nogidx-bf16", {"bits": 4, "group": 64, "sym": False, "v1": False, "no_gidx": True,
                                            "bf16": True}, rng, cases)
    make_case(root, "gptq-b4-dynamic-lmhead", {"bits": 4, "group": 32, "sym": True, "v1": True, "dynamic": True,
                                               "lm_head": True, "format_key": True}, rng, cases)
    make_case(root, "gptq-b4-v1-zero16", {"bits": 4, "group": 32, "sym": False, "v1": True, "zero_max": True}, rng, cases)
    make_case(root, "gptq-b8-v1-zero256", {"bits": 8, "group": 64, "sym": False, "v1": True, "zero_max": True}, rng, cases)
    make_case(root, "awq-g128", {"method": "awq", "bits": 4, "group": 128, "sym": False}, rng, cases)
    make_case(root, "awq-g32", {"method": "awq", "bits": 4, "group": 32, "sym": False}, rng, cases)
    make_case(root, "awq-g64-zero8", {"method": "awq", "bits": 4, "group": 64, "sym": True, "zero8": True}, rng, cases)
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


# ---- reading lmpress's export -------------------------------------------------------------------
def read(d, out_path):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg["quantization_config"]
    with open(os.path.join(d, "quantize_config.json")) as f:
        assert json.load(f) == qc, "quantize_config.json differs from config.json's quantization_config"
    assert qc["quant_method"] == "gptq" and qc["desc_act"] is False and qc["pack_dtype"] == "int32"
    fmt = qc.get("format", qc.get("checkpoint_format"))
    assert fmt in ("gptq", "gptq_v2") and qc["checkpoint_format"] == fmt
    v1 = fmt == "gptq"
    st = load_st(os.path.join(d, "model.safetensors"))
    dynamic = qc.get("dynamic") or {}

    def override(module):  # GPTQModel's rule: "-:" excludes, else the first matching pattern
        for pat, ov in dynamic.items():
            if pat.startswith("-:"):
                if re.match(pat[2:], module):
                    return None
            elif re.match(pat[2:] if pat.startswith("+:") else pat, module):
                return ov
        return {}

    ref = {}
    for name in sorted(n for n in st if n.endswith(".qweight")):
        prefix = name[:-len(".qweight")]
        ov = override(prefix)
        assert ov is not None, prefix + " is quantized but excluded by dynamic"
        bits, group = ov.get("bits", qc["bits"]), ov.get("group_size", qc["group_size"])
        sym = ov.get("sym", qc["sym"])
        qw = st[name][1].view(np.uint32)
        sdt, sraw = st[prefix + ".scales"]
        assert sdt == "F16"
        scale = f32_of(sdt, sraw)
        ng, out = scale.shape
        inp = qw.shape[0] * 32 // bits
        assert qw.shape == (inp * bits // 32, out), name
        G = inp if group == -1 else group
        assert inp % G == 0 and ng == inp // G, prefix + ": group size and scales disagree"
        gidx = st[prefix + ".g_idx"][1]
        assert np.array_equal(gidx, np.arange(inp) // G), prefix + ": g_idx is not consecutive"
        q = unpack_rows(qw, bits, inp)
        qz = st[prefix + ".qzeros"][1].view(np.uint32)
        assert qz.shape == (ng, out * bits // 32)
        zero = unpack_rows(np.ascontiguousarray(qz.T), bits, out).T + (1 if v1 else 0)
        if sym:
            assert np.all(zero == 1 << (bits - 1)), prefix + ": sym layer with other zeros"
        ref[prefix + ".weight"] = ("F32", dequant(q, scale, zero, gidx))
    for name in st:
        if name.endswith(".weight") and name[:-7] + ".qweight" in st:
            raise AssertionError(name + " and its qweight both present")
    save_st(out_path, ref)


def seed(path):
    rng = np.random.default_rng(1)
    out, inp, bits, G = 32, 64, 3, 32
    q = rng.integers(0, 8, size=(inp, out))
    zero = rng.integers(0, 8, size=(inp // G, out))
    qc = {"quant_method": "gptq", "bits": bits, "group_size": G, "sym": False, "checkpoint_format": "gptq_v2"}
    save_st(path, {"w.qweight": ("I32", pack_rows(q, bits).view(np.int32)),
                   "w.qzeros": ("I32", np.ascontiguousarray(pack_rows(zero.T, bits).T).view(np.int32)),
                   "w.scales": ("F16", rng.uniform(1e-3, 1e-2, (inp // G, out)).astype(np.float16)),
                   "w.g_idx": ("I32", (np.arange(inp) // G).astype(np.int32))},
            {"quantization_config": json.dumps(qc), "out": str(out), "in": str(inp)})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "seed":
        seed(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
