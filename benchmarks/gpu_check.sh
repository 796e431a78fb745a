#!/usr/bin/env bash
# The checks of lrtune's CUDA path, run by hand on a GPU machine (CI has no GPU):
#   1. the `gpu` tests (tests/test_cuda.py): training in fp32/bf16/fp16, the range test,
#      a checkpoint's resume with the CUDA RNG, the main job on `worker --gpus 0` with
#      export --weights, and --nproc-per-trial beyond the GPUs there are;
#   2. the range test's speed on CUDA against a bare loop and torch-lr-finder;
#   3. the fast test path (no PostgreSQL, no browser) where `--device auto` means CUDA,
#      to see what else changes on a GPU (bounded by $FAST_SECONDS, default 240).
# Logs go to ${OUT:-gpu-check}/. Needs torch with CUDA and lrtune's requirements;
# lrtune itself is taken from this checkout.
#
#   bash benchmarks/gpu_check.sh
set -u
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u +%FT%TZ
    nvidia-smi -L
    python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'
    python3 -c 'import optuna; print("optuna", optuna.__version__)'
} 2>&1 | tee "$out/machine.log"

python3 -m pytest -p no:cacheprovider -n 0 -m gpu -rA tests/test_cuda.py 2>&1 |
    tee "$out/gpu-tests.log" | tail -25

python3 benchmarks/rangetest_speed.py --device cuda --repeats 5 2>&1 |
    tee "$out/rangetest-speed.log" | tail -12

timeout "${FAST_SECONDS:-240}" python3 -m pytest -p no:cacheprovider -q -n 8 \
    -m "not slow and not postgres and not browser and not gpu" 2>&1 |
    tee "$out/fast.log" | grep -E "^(FAILED|ERROR)|passed|failed" | tail -40
