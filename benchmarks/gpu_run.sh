#!/usr/bin/env bash
# The prepared GPU check for a lent device machine (see README "Performance"): installs the wheels
# the image lacks (carried in .whl/, built with `pip download` for cp312), then runs the benchmark
# on CUDA at the official size. Usage there: bash benchmarks/gpu_run.sh [extra bench args]
set -o pipefail
OUT=${OUT:-/tmp/segcli-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, av, pycocotools; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)" || exit 1
python3 -m segcli.bench --device cuda --json "$OUT/bench_cuda.json" "$@" 2>&1 | tee "$OUT/bench.log"
