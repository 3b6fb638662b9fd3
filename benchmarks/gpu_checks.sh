#!/usr/bin/env bash
# The device checks of issue 15, as one script for a lent GPU (about 15 minutes of device time in all: run it with a
# timeout that leaves room for a rerun). Every step writes its report under $OUT (default outputs/gpu) and the script
# goes on when one fails; record each figure with the device and the command in benchmarks/README.md.
#
#   OUT=outputs/gpu bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD TQDM_DISABLE=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python -c "import torch, transformers, trl; print(torch.__version__, transformers.__version__, trl.__version__)" \
    | tee -a "$OUT/device.txt"

# 1. CUDA tests: bf16, QLoRA, flex attention against padded SDPA (~1 min)
timeout 180 python -m pytest tests/gpu tests/test_packing.py -k "cuda or gpu or flex" -q -x 2>&1 | tail -20 \
    | tee "$OUT/tests.txt"

# 2. Layouts at the SmolLM2-135M shape (random weights, bf16), SDPA and flex, rankings (short and full length) and
#    HH-RLHF pairs against DPOTrainer (~5 min)
MODEL=smollm2-135m
timeout 200 python benchmarks/bench_layouts.py --device cuda --model-config $MODEL --attn sdpa flex_attention \
    --datasets sparse --sparse-batch-size 4 --max-length 1024 --steps 5 --warmup 2 \
    --layouts padded padded:full-head prefix prefix+pf dpo --output "$OUT/layouts_sparse_full.md" 2>&1 | tail -40
timeout 120 python benchmarks/bench_layouts.py --device cuda --model-config $MODEL --attn sdpa flex_attention \
    --datasets sparse --sparse-batch-size 4 --max-length 240 --steps 5 --warmup 2 \
    --layouts padded prefix prefix+pf dpo --output "$OUT/layouts_sparse_short.md" 2>&1 | tail -30
timeout 120 python benchmarks/bench_layouts.py --device cuda --model-config $MODEL --attn sdpa \
    --datasets hh --batch-size 8 --max-length 512 --steps 5 --warmup 2 \
    --layouts padded prefix+pf dpo dpo+ref --output "$OUT/layouts_hh.md" 2>&1 | tail -20

# 3. The 7B fit in 46 GiB (4-bit NF4, LoRA r=16, gradient checkpointing), measured at 2 and 4 layers (~4 min)
timeout 300 python benchmarks/bench_fit.py --device cuda --layers 2 4 --layouts padded prefix prefix+pf \
    --n 4 8 --lengths 512 1024 2048 2>&1 | tee "$OUT/fit.txt" | tail -30
