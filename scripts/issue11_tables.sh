#!/usr/bin/env bash
# Issue 11's quality tables (docs/results.md, "Session 9: issue 11 Pareto and small-model tables"): GPTQ, RHT+GPTQ
# (`+h`), QTIP trellis with and without `+h`, and VPTQ, by `lmpress sweep` on the llama.cpp protocol of each model
# (docs/evaluation.md; shared/benchmarks/anchors.md), the tied embedding/classifier at 8 bits
# (`;token_embd.weight=gptq:w8g32`). The sweep's table goes to OUT/MODEL-PART.log as each row finishes (a sweep stopped
# early keeps its finished rows), its JSON to OUT/MODEL-PART.json; scripts/pareto.py turns either into the table/SVG.
# Usage: scripts/issue11_tables.sh MODEL PART [THREADS] [OUT]
#   MODEL: wiki5m | babyllama-936k | tinystories-279k
#   PART:  wiki5m: trellis | trellish | gptq128 | gptq64 | vptq; small models: all
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; part=$2; threads=${3:-1}; out=${4:-build/issue11}
bin=${LMPRESS_BIN:-build/release/lmpress}
S=../shared
E=";token_embd.weight=gptq:w8g32"
case $name in
  babyllama-936k) calib=$S/data/tinystories/calib.oneline.txt; eval=$S/data/tinystories/eval.oneline.txt; ctx=128 ;;
  tinystories-279k) calib=$S/data/tinystories/calib.txt; eval=$S/data/tinystories/eval.txt; ctx=128 ;;
  wiki5m) calib=$S/data/wikitext-2/calib.txt; eval=$S/data/wikitext-2/eval.txt; ctx=256 ;;
  *) echo "unknown model $name" >&2; exit 2 ;;
esac
recipes=()
case $name/$part in
  wiki5m/trellis) recipes=(qtip:trellis2 qtip:trellis3 qtip:trellis4) ;;
  wiki5m/trellish) recipes=(qtip:trellis2+h qtip:trellis3+h qtip:trellis4+h) ;;
  wiki5m/gptq128 | wiki5m/gptq64)
    for b in 2 3 4; do recipes+=("gptq:w${b}g${part#gptq},mse" "gptq:w${b}g${part#gptq}+h,mse"); done ;;
  wiki5m/vptq) recipes=(vptq:vq4k8n+h vptq:vq4k9n+h vptq:vq2k6n+h vptq:vq2k8n+h) ;;
  */all)  # 4 bits first (llama.cpp's anchors on these models are at 4.5 bpw), then 3 and 2
    for b in 4 3 2; do
      recipes+=("gptq:w${b}g64,mse" "gptq:w${b}g64+h,mse" "qtip:trellis$b" "qtip:trellis$b+h")
      case $b in 4) recipes+=(vptq:vq2k8n+h) ;; 3) recipes+=(vptq:vq2k6n+h) ;; 2) recipes+=(vptq:vq2k4n+h vptq:vq4k8n+h) ;; esac
    done ;;
  *) echo "unknown part $part for $name" >&2; exit 2 ;;
esac
args=()
for r in "${recipes[@]}"; do args+=(-r "$r$E"); done
# wiki5m: the 4-bit VPTQ embedding ("Evq" of session 7) at the smallest budgets
[ "$name/$part" = wiki5m/vptq ] && args+=(-r "vptq:vq4k9n+h,refine=3;token_embd.weight=vptq:vq2k8n"
                                         -r "vptq:vq2k6n+h,refine=3;token_embd.weight=vptq:vq2k8n")
mkdir -p "$out"
$bin sweep -m $S/models/$name/model.bin --calib "$calib" -f "$eval" --ctx $ctx --seqlen $ctx --nsamples 32 \
  -t "$threads" --json "${args[@]}" >"$out/$name-$part.json" 2>"$out/$name-$part.log"
