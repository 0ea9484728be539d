#!/bin/bash
# The GPU table of book/reproducing.md, as one prepared script for a single H200-class GPU.
# Runs from the repository root with only torch, transformers and peft installed (no notebook tooling):
#   bash configs/gpu_checks.sh [OUT_DIR]
# Writes one JSON per configuration (environment + rows), prints the tables, then each row beside its
# CPU estimate (results/performance). About 5-8 minutes.
set -euo pipefail
OUT=${1:-${OUT:-_runs/bench}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"
B="python -m lorafair.cli bench --scale paper --steps 8 --warmup 3"
# vision, fp32 weights + bf16 autocast (the training loop's setting) and bf16 weights, eager and compiled
$B --workloads vit_base:full vit_base:lora --batch-size 256 --precision autocast --out "$OUT/vit_autocast.json"
$B --workloads vit_base:full vit_base:lora --batch-size 256 --precision bf16 --out "$OUT/vit_bf16.json"
$B --workloads vit_base:full --batch-size 256 --precision bf16 --compile --out "$OUT/vit_bf16_compile.json"
$B --workloads swinv2_large:full swinv2_large:lora --batch-size 64 --precision bf16 --out "$OUT/swin_bf16.json"
# Llama-2-7B architecture: LoRA, and full fine-tuning with checkpointing (fits one 141 GB GPU in bf16)
$B --workloads llama_7b:lora --batch-size 16 --seq-len 256 --precision bf16 --out "$OUT/llama_lora_bf16.json"
$B --workloads llama_7b:full --batch-size 16 --seq-len 256 --precision bf16 --checkpointing --out "$OUT/llama_full_bf16_ckpt.json"
# each measured row beside its CPU estimate (book/performance): measured MFU as a share of the eager ceiling
python -m lorafair.estimate "$OUT" results/performance | tee "$OUT/compare_with_estimates.txt"
