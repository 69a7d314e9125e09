#!/usr/bin/env python3
"""Per-tensor layer objectives of two `lmpress quantize --json` reports (the `err` field,
tr((W-Q) H (W-Q)^T)/rows on the pipeline's Hessian): on how many linear layers B is lower than A,
the geometric mean and the worst of B/A. Tensors without an error (kept, or no calibration) and
the embedding/classifier are skipped.
Usage: scripts/compare_layer_errors.py A.json B.json [-v]"""
import json
import math
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
    la = {l["name"]: l for l in a["layers"]}
    lb = {l["name"]: l for l in b["layers"]}
    names = [n for n in la if n.startswith("blk.") and n in lb and la[n]["err"] and lb[n]["err"]]
    if not names:
        sys.exit("no layer has an error in both reports (were they made with --calib?)")
    ratios = [lb[n]["err"] / la[n]["err"] for n in names]
    if "-v" in sys.argv[3:]:
        for n, r in zip(names, ratios):
            print(f"{n:32s} {la[n]['err']:.6g} {lb[n]['err']:.6g} {r:.3f}")
    lower = sum(r < 1 for r in ratios)
    gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"B lower on {lower}/{len(names)} layers ({100 * lower / len(names):.0f}%), "
          f"geometric mean B/A {gm:.3f}, worst {max(ratios):.3f}")


if __name__ == "__main__":
    main()
