#!/usr/bin/env bash
# Issue 11's device check in one run, for a session lent a GPU (device tool, 15 minutes in all):
# the GPU tests (attention backends vs eager in bf16 with gradients, fused layers, faiss-gpu vs
# faiss-cpu, ZeRO-1/2 kill + resume), then benchmarks/gpu_encoder.py at base size. About 8-9
# minutes on an H200; every part has its own timeout so one hang does not cost the rest.
#
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=590, carry=[".gpuwheels"])
#
# The device image has torch, transformers and pytest but no registry: packages it lacks (faiss-gpu,
# deepspeed, xxhash, ...) go in .gpuwheels/ (ignored by git, carried), installed here offline.
# Results: $OUT (the device tool's folder) or runs/gpu_check: env.txt, tests.log, gpu_encoder.json, bench.log.
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1
if compgen -G ".gpuwheels/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --find-links .gpuwheels .gpuwheels/*.whl 2>&1 | tail -3
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch; print(torch.__version__, torch.version.cuda)"; } > "$OUT/env.txt" 2>&1
for t in tests/model/test_encoder.py tests/model/test_fused.py tests/pipelines/mine/test_search.py tests/training/test_deepspeed.py; do
    timeout 150 $PY -m pytest -q -p no:cacheprovider -rs "$t" 2>&1 | tail -25
done | tee "$OUT/tests.log"
# auto = varlen on an H200 in bf16 (flash-attn absent); the per-document `sdpa` loop (0.05x) and flex
# (80 GiB, long compiles) are left out to fit the lease; -unfused shows what the fused layers add.
for p in "long 128" "short 2048"; do
    set -- $p
    timeout 200 $PY benchmarks/gpu_encoder.py --size base --protocols "$1" --docs "$2" --backends auto njt \
        --unfused auto --out "$OUT/gpu_encoder_$1.json" 2>&1 | grep -v Warning
done | tee "$OUT/bench.log"
