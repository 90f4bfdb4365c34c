#!/usr/bin/env bash
# Issue 17's GPU half as one prepared run: the product/gradient ratio of ResNet-lite (78k) and of
# a CIFAR ResNet-18 (11.2M) with kernels="landscope" beside kernels="torch", forward over reverse,
# cudnn.benchmark and channels_last, with the kernels of a product profiled; then a float32 top-10
# solve of ResNet-lite with its float64 reference; last, torch.compile of forward over reverse.
#
#   bash benchmarks/gpu_run.sh [OUT_DIR]        # default benchmarks/results; ~9.5 min on an H100
#   DEVICE=cpu EXTRA=--quick bash benchmarks/gpu_run.sh /tmp/smoke   # smoke test on a CPU
#
# Each step has its own time limit and writes its JSON/Markdown as it goes, so a step cut short
# keeps what it measured and the next one still runs. Products come first: they are the target.
#
# landscope need not be installed: src/ goes on PYTHONPATH. Dependencies missing on the machine
# (a stock CUDA image lacks pydantic) can come as wheels in WHEELS (default .whl), installed into
# a scratch folder first, e.g. fetched on a machine with pip for the GPU machine's Python:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#     -d .whl pydantic pydantic_core annotated-types typing-inspection typing_extensions
set -u
out=${1:-benchmarks/results}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 1
wheels=${WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
    || { echo "gpu_run.sh: could not install the wheels in $wheels" >&2; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -c "import landscope" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import landscope" || { echo "gpu_run.sh: landscope does not import (see above)" >&2; exit 1; }
export PYTHONUNBUFFERED=1
run() {  # seconds, then gpu_resnet.py arguments
  local limit=$1
  shift
  echo "== gpu_resnet.py $* (limit ${limit}s)"
  timeout "$limit" "$py" benchmarks/gpu_resnet.py --device "${DEVICE:-cuda}" --out "$out" "$@" ${EXTRA:-} \
    || echo "== exit $? (results written so far are kept)"
}
no_solves=(--skip landscope pyhessian eigenthings reference)
run 120 --sizes 2048 "${no_solves[@]}" --product-reps 5 --profile --out-name gpu_resnet_products
run 150 --arch resnet18 --sizes 512 "${no_solves[@]}" --product-reps 5 --profile --out-name gpu_resnet18_products
run 210 --sizes 2048 --skip pyhessian eigenthings products --reps 1 --ref-tol 1e-8 --out-name gpu_resnet_solve
# last, as it may not finish: torch.compile of the forward-over-reverse product (compiles in its first call)
run 90 --sizes 2048 "${no_solves[@]}" --product-reps 3 --compile --out-name gpu_resnet_compile
