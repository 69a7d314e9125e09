#!/usr/bin/env bash
# Main job: install dependencies, build, and run lmpress on the default model.
# Usage: scripts/demo.sh [MODEL]   (default: ../shared/models/babyllama-936k/model.bin)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
bin=build/release/lmpress
model=${1:-../shared/models/babyllama-936k/model.bin}
text=${LMPRESS_TEXT:-../shared/data/tinystories/eval.oneline.txt}
if [ ! -e "$model" ]; then
  echo "demo: default model $model not found." >&2
  echo "demo: pass a model: scripts/demo.sh PATH (llama2.c .bin, .gguf or Hugging Face directory)" >&2
  exit 2
fi
echo "== inspect"; $bin inspect -m "$model"
echo "== generate"; $bin generate -m "$model" -p "Once upon a time" -n 60
if [ -e "$text" ]; then
  echo "== perplexity ($text, ctx 128, llama.cpp protocol)"
  $bin perplexity -m "$model" -f "$text" --ctx 128
else
  echo "demo: evaluation text $text not found; skipping perplexity (set LMPRESS_TEXT)" >&2
fi
echo "== bench (2 threads)"; $bin bench -m "$model" -t 2 -p 128 -n 32 -r 3
