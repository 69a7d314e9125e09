#!/usr/bin/env python3
"""Pareto table and KLD-vs-bpw SVG from `lmpress sweep` outputs (Python stdlib only).

Reads one or more sweep outputs — the JSON of `lmpress sweep --json` (stdout) or the sweep's
markdown table as it prints it (stderr with --json, stdout without: lines
`| recipe | bpw | PPL | KLD | top-1 | quantize s |`; a sweep stopped early keeps its finished rows) —
groups the rows into families by method and `+h`, marks the rows on the Pareto front (no other
lmpress row has bpw <= and KLD <=, one of them strictly), adds llama.cpp anchors as reference rows,
and checks the "half the KLD at no more bytes" targets against each anchor.

Usage:
  scripts/pareto.py --params N [--anchor NAME:BYTES:KLD[:PPL[:TOP1]]]... [--anchor-bpw NAME:BPW:KLD[:PPL[:TOP1]]]...
                    [--title TITLE] [--md OUT.md] [--svg OUT.svg] [--json OUT.json] INPUT[@NOTE]...
  INPUT: a sweep JSON or log; @NOTE (optional) is shown in the table's source column.
  bytes = bpw * params / 8 (the sweep's bpw counts every weight byte); an anchor's bpw = 8 * bytes / params.
"""
import argparse
import json
import math
import re
import sys

ROW_RE = re.compile(r"^\|\s*(?P<recipe>[^|]+?)\s*\|\s*(?P<bpw>[0-9.]+)\s*\|\s*(?P<ppl>[0-9.]+)\s*\|"
                    r"\s*(?P<kld>[0-9.eE+-]+)\s*\|\s*(?P<top1>[0-9.]+)%\s*\|\s*(?P<sec>[0-9.]+)\s*\|\s*$")


def read_rows(path):
    text = open(path, encoding="utf-8").read()
    try:
        j = json.loads(text)
        return [{"recipe": r["recipe"], "bpw": r["bpw"], "ppl": r["ppl"], "kld": r["kld"], "top1": r["top1"],
                 "seconds": r.get("quantize_seconds", 0.0)} for r in j["rows"]]
    except (ValueError, KeyError, TypeError):
        pass
    rows = []
    for line in text.splitlines():
        m = ROW_RE.match(line.strip())
        if m and m["recipe"] != "recipe":
            rows.append({"recipe": m["recipe"], "bpw": float(m["bpw"]), "ppl": float(m["ppl"]),
                         "kld": float(m["kld"]), "top1": float(m["top1"]) / 100, "seconds": float(m["sec"])})
    if not rows:
        sys.exit(f"{path}: neither sweep JSON nor a sweep table with finished rows")
    return rows


def family(recipe):
    first = recipe.split(";")[0]
    method, _, fmt = first.partition(":")
    fmt = fmt.split(",")[0]
    name = {"qtip": "trellis", "vptq": "VPTQ", "gptq": "GPTQ", "rtn": "RTN"}.get(method, method)
    if method == "rtn" and fmt.startswith("trellis"):
        name = "trellis (rtn)"
    if fmt.endswith("+hi"):
        name += "+hi"
    elif fmt.endswith("+h"):
        name += "+h"
    return name


def parse_anchor(spec, params, by_bytes):
    parts = spec.split(":")
    if len(parts) < 3:
        sys.exit(f"anchor '{spec}': NAME:{'BYTES' if by_bytes else 'BPW'}:KLD[:PPL[:TOP1]]")
    name, size, kld = parts[0], float(parts[1]), float(parts[2])
    ppl = float(parts[3]) if len(parts) > 3 and parts[3] else None
    top1 = float(parts[4]) / 100 if len(parts) > 4 and parts[4] else None
    nbytes = size if by_bytes else size * params / 8
    return {"recipe": name, "family": "llama.cpp", "bpw": 8 * nbytes / params, "bytes": int(round(nbytes)),
            "kld": kld, "ppl": ppl, "top1": top1, "anchor": True, "note": "llama.cpp b4747 (anchors.md)"}


def pareto(rows):
    for r in rows:
        r["pareto"] = not any((o["bpw"] <= r["bpw"] and o["kld"] <= r["kld"]) and
                              (o["bpw"] < r["bpw"] or o["kld"] < r["kld"]) for o in rows if o is not r)


def fmt_md(rows, anchors, params, title):
    out = [f"{title}\n", f"params {params:,}; bytes = bpw x params / 8; ◆ = on the Pareto front of the lmpress rows; "
           "reference rows are llama.cpp's.\n",
           "| bpw | weight bytes | recipe | family | PPL | KLD | top-1 | front | source |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows + anchors, key=lambda r: (r["bpw"], r["kld"])):
        ppl = f"{r['ppl']:.4f}" if r["ppl"] is not None else ""
        top1 = f"{100 * r['top1']:.2f}%" if r["top1"] is not None else ""
        rec = f"`{r['recipe']}`" if not r.get("anchor") else f"**{r['recipe']}** (reference)"
        front = "◆" if r.get("pareto") else ""
        out.append(f"| {r['bpw']:.4f} | {r['bytes']:,} | {rec} | {r['family']} | {ppl} | {r['kld']:.5f} | {top1} | "
                   f"{front} | {r.get('note', '')} |")
    if anchors:
        out += ["", "Targets: half of each anchor's KLD at no more weight bytes (best lmpress row of this table):", "",
                "| anchor | bytes | KLD | target KLD | best lmpress row at ≤ bytes | its bytes | its KLD | ratio | met |",
                "|---|---|---|---|---|---|---|---|---|"]
        for a in sorted(anchors, key=lambda a: a["bytes"]):
            fit = [r for r in rows if r["bytes"] <= a["bytes"]]
            if not fit:
                out.append(f"| {a['recipe']} | {a['bytes']:,} | {a['kld']:.5g} | {a['kld'] / 2:.5g} | none | | | | no |")
                continue
            b = min(fit, key=lambda r: r["kld"])
            ratio = b["kld"] / a["kld"]
            out.append(f"| {a['recipe']} | {a['bytes']:,} | {a['kld']:.5g} | {a['kld'] / 2:.5g} | `{b['recipe']}` | "
                       f"{b['bytes']:,} | {b['kld']:.5f} | {ratio:.2f}× | {'**yes**' if ratio <= 0.5 else 'no'} |")
    return "\n".join(out) + "\n"


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def esc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def fmt_svg(rows, anchors, title):
    W, H, L, R, T, B = 820, 520, 70, 200, 40, 50
    pts = rows + anchors
    x0 = math.floor(min(p["bpw"] for p in pts) * 2) / 2
    x1 = math.ceil(max(p["bpw"] for p in pts) * 2) / 2
    y0 = math.floor(math.log10(min(p["kld"] for p in pts)))
    y1 = math.ceil(math.log10(max(p["kld"] for p in pts)))
    x1 = max(x1, x0 + 0.5)
    y1 = max(y1, y0 + 1)

    def X(b):
        return L + (b - x0) / (x1 - x0) * (W - L - R)

    def Y(k):
        return T + (y1 - math.log10(k)) / (y1 - y0) * (H - T - B)

    s = [f'<?xml version="1.0" encoding="UTF-8"?>',
         f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2:.0f}" y="22" text-anchor="middle" font-size="14">{esc(title)}</text>',
         '<g stroke="#ddd" stroke-width="1">']
    b = x0
    while b <= x1 + 1e-9:
        s.append(f'<line x1="{X(b):.1f}" y1="{T}" x2="{X(b):.1f}" y2="{H - B}"/>')
        b += 0.5
    for e in range(y0, y1 + 1):
        for m in ([1] if e == y1 else range(1, 10)):
            k = m * 10 ** e
            minor = "" if m == 1 else ' stroke="#f2f2f2"'
            s.append(f'<line x1="{L}" y1="{Y(k):.1f}" x2="{W - R}" y2="{Y(k):.1f}"{minor}/>')
    s.append("</g>\n<g>")
    b = x0
    while b <= x1 + 1e-9:
        s.append(f'<text x="{X(b):.1f}" y="{H - B + 16}" text-anchor="middle">{b:.1f}</text>')
        b += 0.5
    for e in range(y0, y1 + 1):
        s.append(f'<text x="{L - 6}" y="{Y(10 ** e) + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    s.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 12}" text-anchor="middle">weight bits per parameter</text>')
    s.append(f'<text x="16" y="{(T + H - B) / 2:.0f}" text-anchor="middle" '
             f'transform="rotate(-90 16 {(T + H - B) / 2:.0f})">KLD vs the f32 model (log scale)</text>\n</g>')
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["bpw"])
    if len(front) > 1:
        s.append('<polyline fill="none" stroke="#555" stroke-width="1" stroke-dasharray="5,4" points="' +
                 " ".join(f"{X(r['bpw']):.1f},{Y(r['kld']):.1f}" for r in front) + '"><title>Pareto front</title>'
                 '</polyline>')
    fams = []
    for r in rows:
        if r["family"] not in fams:
            fams.append(r["family"])
    for i, f in enumerate(fams):
        col = COLOURS[i % len(COLOURS)]
        ps = sorted((r for r in rows if r["family"] == f), key=lambda r: r["bpw"])
        s.append(f'<g class="series" data-series="{esc(f)}">')
        for r in ps:
            stroke = ' stroke="black" stroke-width="1.5"' if r.get("pareto") else ""
            s.append(f'<circle cx="{X(r["bpw"]):.1f}" cy="{Y(r["kld"]):.1f}" r="4" fill="{col}"{stroke}>'
                     f'<title>{esc(r["recipe"])}: {r["bpw"]:.4f} bpw, KLD {r["kld"]:.5g}</title></circle>')
        ly = T + 10 + 18 * i
        s.append(f'<circle cx="{W - R + 22}" cy="{ly}" r="4" fill="{col}"/>'
                 f'<text x="{W - R + 34}" y="{ly + 4}">{esc(f)}</text>\n</g>')
    if anchors:
        s.append('<g class="series" data-series="llama.cpp">')
        for a in anchors:
            x, y = X(a["bpw"]), Y(a["kld"])
            s.append(f'<path d="M{x:.1f},{y - 6:.1f} L{x + 6:.1f},{y:.1f} L{x:.1f},{y + 6:.1f} L{x - 6:.1f},{y:.1f} Z" '
                     f'fill="none" stroke="black" stroke-width="1.5"><title>llama.cpp {esc(a["recipe"])}: '
                     f'{a["bpw"]:.3f} bpw, KLD {a["kld"]:.5g}</title></path>'
                     f'<text x="{x + 8:.1f}" y="{y - 6:.1f}" font-size="11">{esc(a["recipe"])}</text>')
            # the target: half the KLD at the same bytes
            s.append(f'<line x1="{x - 5:.1f}" y1="{Y(a["kld"] / 2):.1f}" x2="{x + 5:.1f}" y2="{Y(a["kld"] / 2):.1f}" '
                     f'stroke="black" stroke-width="1.5"><title>target: KLD {a["kld"] / 2:.5g}</title></line>')
        ly = T + 10 + 18 * len(fams)
        s.append(f'<path d="M{W - R + 22},{ly - 5} L{W - R + 27},{ly} L{W - R + 22},{ly + 5} L{W - R + 17},{ly} Z" '
                 f'fill="none" stroke="black"/><text x="{W - R + 34}" y="{ly + 4}">llama.cpp (— = half its KLD)</text>')
        s.append("</g>")
    ly = T + 10 + 18 * (len(fams) + (1 if anchors else 0))
    s.append(f'<line x1="{W - R + 12}" y1="{ly}" x2="{W - R + 32}" y2="{ly}" stroke="#555" stroke-dasharray="5,4"/>'
             f'<text x="{W - R + 34}" y="{ly + 4}">Pareto front (outlined)</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="sweep JSON or log, optionally PATH@NOTE")
    ap.add_argument("--params", type=int, required=True, help="the model's parameter count")
    ap.add_argument("--anchor", action="append", default=[], help="NAME:WEIGHT_BYTES:KLD[:PPL[:TOP1%%]]")
    ap.add_argument("--anchor-bpw", action="append", default=[], help="NAME:BPW:KLD[:PPL[:TOP1%%]]")
    ap.add_argument("--alias", action="append", default=[],
                    help="TEXT=SHORT: write TEXT of a recipe as SHORT in the table (e.g. ';token_embd.weight=gptq:w8g32= E8')")
    ap.add_argument("--title", default="KLD vs bits per weight")
    ap.add_argument("--md"), ap.add_argument("--svg"), ap.add_argument("--json")
    a = ap.parse_args()
    rows = {}
    for spec in a.inputs:
        path, _, note = spec.partition("@")
        for r in read_rows(path):
            r["note"] = note
            if r["recipe"] in rows:
                print(f"note: {r['recipe']} appears again in {path}; the later row is kept", file=sys.stderr)
            rows[r["recipe"]] = r
    rows = list(rows.values())
    for r in rows:
        r["family"] = family(r["recipe"])
        r["bytes"] = int(round(r["bpw"] * a.params / 8))
    pareto(rows)
    anchors = [parse_anchor(s, a.params, True) for s in a.anchor] + \
              [parse_anchor(s, a.params, False) for s in a.anchor_bpw]
    aliases = [x.rsplit("=", 1) for x in a.alias]
    for r in rows:
        r["full_recipe"] = r["recipe"]
        for text, short in aliases:
            r["recipe"] = r["recipe"].replace(text, short)
    md = fmt_md(rows, anchors, a.params, a.title)
    if a.md:
        open(a.md, "w", encoding="utf-8").write(md)
    if a.svg:
        open(a.svg, "w", encoding="utf-8").write(fmt_svg(rows, anchors, a.title))
    if a.json:
        json.dump({"params": a.params, "rows": sorted(rows + anchors, key=lambda r: r["bpw"])},
                  open(a.json, "w", encoding="utf-8"), indent=1)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
