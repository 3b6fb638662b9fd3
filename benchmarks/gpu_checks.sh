#!/usr/bin/env bash
# The device checks of issue 15, as one script for a lent GPU (about 15 minutes of device time in all, the machine's
# start included: the steps below take at most ~7.5 min, so a partial rerun fits). Every step has its own timeout,
# writes its report under $OUT (default outputs/gpu) as it runs, and the script goes on when one fails. Record each
# figure with the device and the command in benchmarks/README.md.
#
#   OUT=outputs/gpu bash benchmarks/gpu_checks.sh            # every step
#   OUT=outputs/gpu bash benchmarks/gpu_checks.sh fit flex   # only the named steps (tests, sdpa, hh, fit, flex)
#
# On a machine without network, carry the wheels of the Python packages its image lacks (trl, datasets,
# bitsandbytes, ...; `bash benchmarks/gpu_wheels.sh` fetches them into .whl/) and put them on PYTHONPATH first:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#       && export PYTHONPATH=/tmp/site && OUT=$OUT bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-outputs/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TQDM_DISABLE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
STEPS=${*:-tests sdpa hh fit flex}
want() { [[ " $STEPS " == *" $1 "* ]]; }
stamp() { echo "== $1 $(date +%T)"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
$PY -c "import torch, transformers, trl, peft, datasets, bitsandbytes as b; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'datasets', \
datasets.__version__, 'bitsandbytes', b.__version__)" 2>&1 | tee -a "$OUT/device.txt"

MODEL=smollm2-135m  # SmolLM2-135M's shape (30 layers, hidden 576, 49,152 vocabulary), random weights, bf16
LAYOUTS=(--device cuda --model-config $MODEL --steps 5 --warmup 2)

# 1. CUDA tests: bf16, QLoRA with bitsandbytes' CUDA kernels, flex attention against padded SDPA (~1 min)
if want tests; then
    stamp tests
    timeout 110 $PY -m pytest tests/gpu tests/pro/test_pro_packing.py -k "cuda or gpu or flex" -q -p no:cacheprovider \
        2>&1 | tail -15 | tee "$OUT/tests.txt"
fi

# 2. PRO layouts with SDPA on the sparse-feedback rankings (n = 4), full length and short, against DPOTrainer on
#    each ranking's best pair (a ranking for the price of a pair?)
if want sdpa; then
    stamp sdpa
    timeout 100 $PY benchmarks/bench_layouts.py "${LAYOUTS[@]}" --attn sdpa --datasets sparse --sparse-batch-size 4 \
        --max-length 1024 --layouts padded padded:full-head prefix prefix+pf dpo 2>&1 | tee "$OUT/layouts_sparse_full.txt"
    timeout 70 $PY benchmarks/bench_layouts.py "${LAYOUTS[@]}" --attn sdpa --datasets sparse --sparse-batch-size 4 \
        --max-length 240 --layouts padded prefix prefix+pf dpo 2>&1 | tee "$OUT/layouts_sparse_short.txt"
fi

# 3. HH-RLHF pairs: PRO (n = 2) layouts against TRL's DPOTrainer, reference precomputed and on the fly
if want hh; then
    stamp hh
    timeout 60 $PY benchmarks/bench_layouts.py "${LAYOUTS[@]}" --attn sdpa --datasets hh --batch-size 8 \
        --max-length 512 --layouts padded prefix+pf dpo dpo+ref 2>&1 | tee "$OUT/layouts_hh.txt"
fi

# 4. The 7B fit in 46 GiB (4-bit NF4, LoRA r=16, gradient checkpointing), measured at 2 and 4 layers (~1.5 min)
if want fit; then
    stamp fit
    timeout 110 $PY benchmarks/bench_fit.py --device cuda --layers 2 4 --layouts padded prefix prefix+pf \
        --n 4 8 --lengths 512 1024 2048 2>&1 | tee "$OUT/fit.txt"
fi

# 5. Flex attention (compiled kernels: the slowest to start, so last), full-length rankings
if want flex; then
    stamp flex
    timeout 100 $PY benchmarks/bench_layouts.py "${LAYOUTS[@]}" --attn flex_attention --datasets sparse \
        --sparse-batch-size 4 --max-length 1024 --layouts padded prefix prefix+pf 2>&1 | tee "$OUT/layouts_flex.txt"
fi
stamp done
