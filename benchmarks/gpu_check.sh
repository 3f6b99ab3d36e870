#!/usr/bin/env bash
# One command for every GPU measurement of the paper's models (< 8 min on one H100/H200): run_all.py --gpu
# (LLM ~1B bf16 MFU and ours vs HF Llama, policy latency, robot loader), the latency of a Qwen3-VL-2B-shaped
# VLA (random init) per chunk, and 20 training steps of recipes/paper/foundry_qwen3vla_2b.yaml (random
# init): step time, samples/s/GPU, MFU, peak memory, data share. Writes benchmarks/results_gpu.json.
#   benchmarks/gpu_check.sh             # on a CUDA machine
#   benchmarks/gpu_check.sh --dry-run   # every piece on CPU at tiny size (results_gpu_dry_run.json)
# Details: benchmarks/_gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec uv run --locked python benchmarks/_gpu_check.py "$@"
