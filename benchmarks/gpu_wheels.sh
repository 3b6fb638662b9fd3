#!/usr/bin/env bash
# Wheels for a GPU machine without network whose image has torch, transformers' dependencies, peft and accelerate but
# not trl, datasets or bitsandbytes (the device machines of this project: Python 3.12, torch 2.11 + CUDA 13). Versions
# pinned to what the tests run against here. Fits the 64 MiB a device call may carry: bitsandbytes keeps only its
# CUDA 13 and CPU libraries (43 MB -> 7 MB).
#
#   bash benchmarks/gpu_wheels.sh            # -> .whl/ (git-ignored through .git/info/exclude)
# then, on the device (the `run` tool, carry [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#       && export PYTHONPATH=/tmp/site && bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p "$DEST"
PLATFORM=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)
# huggingface-hub 1.x (2.x needs httpx2, which the image lacks); transformers 5.24 accepts >= 1.31
for package in trl==1.16.0 transformers==5.24.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
    bitsandbytes==0.50.2 tokenizers==0.23.3 huggingface-hub==1.33.0 safetensors==0.8.0 peft==0.21.2 \
    accelerate==1.15.0 click==8.5.1 hf-xet==1.8.0 regex==2026.5.9 typer==0.29.2; do
    # a failed download stops the script (pipefail); only the pip index's location warnings are filtered out
    python3 -m pip download -q "${PLATFORM[@]}" -d "$DEST" "$package" 2>&1 | { grep -v "^WARNING: Location" || true; }
done
for wheel in "$DEST"/bitsandbytes-*.whl; do
    zip -q -d "$wheel" 'bitsandbytes/libbitsandbytes_cuda1[12]*' 'bitsandbytes/libbitsandbytes_rocm*' \
        'bitsandbytes/libbitsandbytes_xpu*' || true  # already stripped
done
du -sh "$DEST"
