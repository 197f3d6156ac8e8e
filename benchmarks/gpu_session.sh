#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one go, in under ~8 minutes of its time.
# From the repository root on the device (the `run` tool): bash benchmarks/gpu_session.sh
# Results go to $OUT (default ./gpu-out): the gpu-marked tests' log and each benchmark's JSON.
set -u
out="${OUT:-gpu-out}"
mkdir -p "$out"
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
echo "== gpu tests"; timeout 120 "$py" -m pytest -q -m gpu tests > "$out/gpu-tests.log" 2>&1; echo "rc=$?" >> "$out/gpu-tests.log"
tail -3 "$out/gpu-tests.log"
echo "== generator training, 256 and 512, ADA on, bf16"
timeout 200 "$py" benchmarks/generator_train_gpu.py --out "$out/generator_train_gpu.json"
echo "== projection: reference (1000 steps) and fast (encoder + k steps), batch from free memory"
# Capped batch and 2/8-step timings keep it inside this session's budget; rows past
# --time-budget are skipped (and listed), and the JSON is rewritten after every row.
# The standalone run (default budget 450 s) adds --compile.
timeout 170 "$py" benchmarks/projection_gpu.py --max-batch 64 --short 2 --long 8 --time-budget 150 \
  --out "$out/projection_gpu.json"
