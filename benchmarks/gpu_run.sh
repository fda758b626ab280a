#!/usr/bin/env bash
# The prepared GPU check for a lent device machine (README "Performance"): installs the wheels
# the image lacks (carried in .whl/, fetched with `pip download` for cp312), checks the CUDA path
# against the CPU path (benchmarks/device_parity.py), then benchmarks at the official size
# (default CUDA variants, all tasks) and, with COMPILE=1, the compiled backbone (vis). Each step
# has its own time limit.   [COMPILE=1] bash benchmarks/gpu_run.sh   (OUT=folder for the logs)
set -o pipefail
OUT=${OUT:-/tmp/segcli-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, av, pycocotools; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)" || exit 1
timeout 150 python3 benchmarks/device_parity.py --device cuda 2>&1 | tee "$OUT/parity.log"
timeout 300 python3 benchmarks/bench.py --device cuda --frames 9 --warmup --json "$OUT/bench_cuda.json" 2>&1 \
  | tee "$OUT/bench.log"
if [ -n "$COMPILE" ]; then  # the compiled backbone: ~15 s of compilation per run
  timeout 200 python3 benchmarks/bench.py --device cuda --frames 9 --tasks vis --variants fp32-eager,fp16,fp16-compile \
    --json "$OUT/bench_compile.json" 2>&1 | tee "$OUT/bench_compile.log"
fi
