#!/usr/bin/env bash
# Quality tables of issue 3: RTN and GPTQ at w8..w2 with g32 and g128, (a) every weight tensor
# quantized, (b) the (tied) embedding/classifier kept at 8 bits. Protocol: llama.cpp perplexity,
# KLD against the f32 model on the same scored tokens, calibration 32 windows x seqlen tokens.
# (wiki5m adds the group-64 / 8-bit-embedding rows of docs/results.md.)
# Usage: scripts/quality_tables.sh MODEL_NAME [THREADS]   (babyllama-936k | tinystories-279k | wiki5m)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; threads=${2:-2}
bin=${LMPRESS_BIN:-build/release/lmpress}
S=../shared
case $name in
  babyllama-936k) calib=$S/data/tinystories/calib.oneline.txt; eval=$S/data/tinystories/eval.oneline.txt; ctx=128; seqlen=128 ;;
  tinystories-279k) calib=$S/data/tinystories/calib.txt; eval=$S/data/tinystories/eval.txt; ctx=128; seqlen=128 ;;
  wiki5m) calib=$S/data/wikitext-2/calib.txt; eval=$S/data/wikitext-2/eval.txt; ctx=256; seqlen=256 ;;
  *) echo "unknown model $name" >&2; exit 2 ;;
esac
args=()
for variant in all emb8; do
  for method in rtn gptq; do
    for b in 8 6 5 4 3 2; do
      for g in 32 128; do
        r="$method:w${b}g$g"
        [ "$variant" = emb8 ] && r="$r;token_embd.weight=$method:w8g32"
        args+=(-r "$r")
      done
    done
  done
done
# wiki5m: also groups of 64 with the embedding at 8 bits (issue 3's targets), with act_order / mse variants.
if [ "$name" = wiki5m ]; then
  for b in 4 3; do
    args+=(-r "rtn:w${b}g64;token_embd.weight=rtn:w8g32")
    for opt in "" ",act_order" ",mse" ",act_order,mse"; do
      args+=(-r "gptq:w${b}g64$opt;token_embd.weight=gptq:w8g32")
    done
  done
fi
$bin sweep -m $S/models/$name/model.bin --calib "$calib" -f "$eval" --ctx $ctx --seqlen $seqlen --nsamples 32 \
  -t "$threads" --json "${args[@]}"
