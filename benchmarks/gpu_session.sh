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
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# A device image lacks the platform's service packages (pydantic, fastapi, ...): name the gpu
# tests' own modules, which need only torch, numpy and Pillow.
# The real LPIPS-VGG16 file travels as a carried path; the loader looks inside the running environment.
lpips=.venv/share/facesurv/lpips_vgg16.safetensors
if [ -f "$lpips" ] && [ "$py" = python3 ]; then
  dest="$("$py" -c 'import sys; print(sys.prefix)')/share/facesurv"; mkdir -p "$dest" && cp "$lpips" "$dest/"
fi
parts="${GPU_PARTS:-tests generator projection}"   # a rerun may name fewer
want() { case " $parts " in *" $1 "*) return 0;; esac; return 1; }
want tests && { echo "== gpu tests"; timeout 120 "$py" -m pytest -q -m gpu \
  tests/projection/test_gpu.py tests/generator/test_generator_training_platform.py > "$out/gpu-tests.log" 2>&1
echo "rc=$?" >> "$out/gpu-tests.log"
tail -3 "$out/gpu-tests.log"; }
want generator && { echo "== generator training, 256 and 512, ADA on, bf16"
timeout 200 "$py" benchmarks/generator_train_gpu.py --out "$out/generator_train_gpu.json"; }
want projection || exit 0
echo "== projection: reference (1000 steps) and fast (encoder + k steps), batch from free memory"
# Capped batch and 2/8-step timings keep it inside this session's budget; rows past
# --time-budget are skipped (and listed), and the JSON is rewritten after every row.
# The standalone run (default budget 450 s) adds --compile.
timeout 170 "$py" benchmarks/projection_gpu.py --max-batch 64 --short 2 --long 8 --time-budget 150 \
  --out "$out/projection_gpu.json"
