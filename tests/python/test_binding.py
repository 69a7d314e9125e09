"""Tests of the Python binding (python/lmpress_py.cpp), run by ctest (tests/CMakeLists.txt) with
PYTHONPATH set to the built module. Independent references: the `lmpress` CLI's JSON output (the
same evaluation run as a separate program) and a float64 numpy computation of the perplexity from
the binding's logits. Tests needing ../shared models skip loudly when they are absent."""
import json
import math
import os
import subprocess

import numpy as np
import pytest

import lmpress

SHARED = os.environ.get("LMPRESS_SHARED_DIR", "")
BIN = os.environ.get("LMPRESS_BINARY", "")
TINY = os.path.join(SHARED, "models/tinystories-279k/model.bin")
TEXT = os.path.join(SHARED, "data/tinystories/eval.txt")


def need(path):
    if not os.path.exists(path):
        pytest.skip("SKIPPED: " + path + " missing (../shared not beside the checkout)")


def cli_json(*args):
    # the CLI keeps this process's OpenBLAS kernels (no re-exec with OPENBLAS_CORETYPE), so both
    # sum in the same order
    env = dict(os.environ, LMPRESS_BLAS_REEXEC_DONE="1")
    out = subprocess.run([BIN, *args, "--json"], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def read_text(n=None):
    with open(TEXT, encoding="utf-8") as f:
        t = f.read()
    return t if n is None else t[:n]


def test_model_and_tokenizer():
    need(TINY)
    m = lmpress.Model(TINY, threads=1)
    c = m.config
    info = cli_json("inspect", "-m", TINY)
    assert m.n_params == info["params"]
    assert c["vocab_size"] > 0 and c["n_layers"] >= 1
    ids = m.tokenize("Once upon a time there was a cat.")
    assert ids[0] == 1  # BOS
    assert m.detokenize(ids[1:]).strip() == "Once upon a time there was a cat."
    names = [t["name"] for t in m.tensors()]
    assert "token_embd.weight" in names
    w = m.weight("token_embd.weight")
    assert w.dtype == np.float32 and w.shape == (c["vocab_size"], c["dim"])
    with pytest.raises(RuntimeError, match="no tensor named"):
        m.weight("nope")


def test_logits_give_the_clis_perplexity():
    """The binding's logits, scored in float64 numpy with llama.cpp's protocol (second half of each
    BOS-led chunk), equal the CLI's perplexity of the same text."""
    need(TINY)
    need(TEXT)
    ctx, chunks = 128, 3
    m = lmpress.Model(TINY, threads=1)
    text = read_text(20000)
    toks = m.tokenize(text)
    nll, count = 0.0, 0
    for k in range(chunks):
        chunk = list(toks[k * ctx:(k + 1) * ctx])
        chunk[0] = 1
        lg = m.logits(chunk).astype(np.float64)
        assert lg.shape == (ctx, m.config["vocab_size"])
        for i in range(ctx // 2, ctx - 1):
            row = lg[i]
            mx = row.max()
            lse = mx + math.log(np.exp(row - mx).sum())
            nll += lse - row[chunk[i + 1]]
            count += 1
    ppl_numpy = math.exp(nll / count)
    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "lmpress_py_text_%d.txt" % os.getpid()), "w") as f:
        f.write(text)
        path = f.name
    try:
        cli = cli_json("perplexity", "-m", TINY, "-f", path, "--ctx", str(ctx), "--chunks", str(chunks), "-t", "1")
    finally:
        os.unlink(path)
    py = m.perplexity(text, ctx=ctx, chunks=chunks)
    assert py["scored_tokens"] == count == cli["scored_tokens"]
    assert abs(py["ppl"] - cli["ppl"]) <= 1e-9 * cli["ppl"]
    assert abs(ppl_numpy - cli["ppl"]) <= 1e-4 * cli["ppl"]


def test_quantize_round_trip(tmp_path):
    need(TINY)
    need(TEXT)
    m = lmpress.Model(TINY, threads=1)
    out = str(tmp_path / "q.lmp")
    rep = m.quantize("rtn:w4g32", out)
    assert os.path.exists(out) and 4.0 < rep["bpw"] < 9.0
    with pytest.raises(RuntimeError, match="exists"):
        m.quantize("rtn:w4g32", out)
    q = lmpress.Model(out, threads=1)
    formats = {t["format"] for t in q.tensors()}
    assert "w4g32" in formats
    info = cli_json("inspect", "-m", out)
    assert abs(info["bpw"] - rep["bpw"]) < 1e-9
    text = read_text(20000)
    r = q.perplexity(text, ctx=128, chunks=3, base=m)
    assert r["kld"] > 0 and r["top1"] > 0.5 and r["ppl"] < 2 * r["ppl_base"]
    # the dequantized weights are close to the originals (4-bit: within 20% relative RMS)
    a, b = m.weight("blk.0.attn_q.weight"), q.weight("blk.0.attn_q.weight")
    assert np.sqrt(((a - b) ** 2).mean() / (a ** 2).mean()) < 0.2
    # greedy generation is deterministic and matches the CLI's
    g1 = q.generate("Once upon a time", n=8)
    g2 = q.generate("Once upon a time", n=8)
    assert g1 == g2 and len(g1) > 0
    cli = subprocess.run([BIN, "generate", "-m", out, "-p", "Once upon a time", "-n", "8", "--temp", "0", "-t", "1"],
                         check=True, capture_output=True, text=True).stdout
    assert g1.strip() in cli


def test_errors_are_runtime_errors(tmp_path):
    with pytest.raises(RuntimeError, match="nope.bin"):
        lmpress.Model(str(tmp_path / "nope.bin"))
    need(TINY)
    m = lmpress.Model(TINY, threads=1)
    with pytest.raises(RuntimeError, match="outside the vocabulary"):
        m.logits([1, 10 ** 6])
    with pytest.raises(RuntimeError, match="recipe"):
        m.quantize("frobnicate:w4g32", str(tmp_path / "x.lmp"))
    assert not os.path.exists(tmp_path / "x.lmp")
    assert "q4_k" in lmpress.formats() and "w4g32" in lmpress.formats()
