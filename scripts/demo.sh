#!/usr/bin/env bash
# Main job: install dependencies, build, quantize the default model with the default recipe and
# print size, perplexity, KL divergence and speed next to the uncompressed model's.
# Usage: scripts/demo.sh [MODEL [CALIB_TEXT EVAL_TEXT]]
#   default: ../shared/models/babyllama-936k/model.bin with ../shared/data/tinystories/{calib,eval}.oneline.txt
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
bin=build/release/lmpress
S=../shared
model=${1:-$S/models/babyllama-936k/model.bin}
calib=${2:-$S/data/tinystories/calib.oneline.txt}
text=${3:-$S/data/tinystories/eval.oneline.txt}
recipe=${LMPRESS_RECIPE:-"gptq:w4g32;token_embd.weight=rtn:w8g32"}
threads=${LMPRESS_THREADS:-2}
for f in "$model" "$calib" "$text"; do
  if [ ! -e "$f" ]; then
    echo "demo: $f not found." >&2
    echo "demo: usage: scripts/demo.sh MODEL CALIB_TEXT EVAL_TEXT (model: llama2.c .bin, .gguf, Hugging Face dir)" >&2
    exit 2
  fi
done
out=build/demo; mkdir -p $out
q=$out/$(basename "${model%.*}")-w4.lmp
echo "== inspect"; $bin inspect -m "$model"
echo "== quantize ($recipe)"
$bin quantize -m "$model" --recipe "$recipe" --calib "$calib" -o "$q" -t "$threads" --force | tail -n 1
echo "== generate (quantized)"; $bin generate -m "$q" -p "Once upon a time" -n 60 -t "$threads"
jnum() { grep -o "\"$1\": *[-0-9.e+]*" | head -n 1 | sed 's/.*: *//'; }
base_ppl_json=$($bin perplexity -m "$model" -f "$text" --ctx 128 -t "$threads" --json)
q_ppl_json=$($bin perplexity -m "$q" -f "$text" --ctx 128 -t "$threads" --kl-base "$model" --json)
base_bench=$($bin bench -m "$model" -t "$threads" -p 128 -n 32 -r 3 --json)
q_bench=$($bin bench -m "$q" -t "$threads" -p 128 -n 32 -r 3 --json)
base_info=$($bin inspect -m "$model" --json); q_info=$($bin inspect -m "$q" --json)
echo "== summary (eval: $text, llama.cpp protocol, ctx 128; bench: pp128/tg32, $threads threads)"
printf '| model | bpw | file bytes | PPL | KLD | top-1 | prefill tok/s | decode tok/s |\n|---|---|---|---|---|---|---|---|\n'
printf '| %s | %.3f | %s | %.4f | - | - | %.1f | %.1f |\n' "$(basename "$model")" "$(echo "$base_info" | jnum bpw)" \
  "$(echo "$base_info" | jnum file_bytes)" "$(echo "$base_ppl_json" | jnum ppl)" \
  "$(echo "$base_bench" | jnum prefill_tps)" "$(echo "$base_bench" | jnum decode_tps)"
printf '| %s | %.3f | %s | %.4f | %.5f | %.2f%% | %.1f | %.1f |\n' "$(basename "$q")" "$(echo "$q_info" | jnum bpw)" \
  "$(echo "$q_info" | jnum file_bytes)" "$(echo "$q_ppl_json" | jnum ppl)" "$(echo "$q_ppl_json" | jnum kld)" \
  "$(echo "$q_ppl_json" | jnum top1 | awk '{print $1*100}')" \
  "$(echo "$q_bench" | jnum prefill_tps)" "$(echo "$q_bench" | jnum decode_tps)"
