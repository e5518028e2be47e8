#!/usr/bin/env bash
# GPU proof kit for the corner-pool plugin: one command on a machine with an NVIDIA GPU, the CUDA toolkit
# (nvcc) and a CUDA PyTorch - no TensorRT, no network needed. Under 8 minutes on a datacenter GPU.
#
#   bash scripts/gpu_check.sh           # run; results in $OUT (if set) else build/gpu_check/:
#                                       #   gpu_check.json (one entry per step) and gpu_check.log
#   bash scripts/gpu_check.sh --stage   # where the project's shared/ folder and PyPI are reachable: put
#                                       # what a bare GPU machine lacks into build/gpu_check/stage/ (TensorRT
#                                       # headers for the harness, pytest) to carry there with the checkout
#
# Steps (each timed, logged, and recorded in the JSON):
#   environment      GPU, driver, nvcc, Python, torch, CuPy versions
#   harness_build    nvcc builds plugins/tests/cornerPoolPluginGpuHarness.cpp with the plugin's own sources
#                    against TensorRT headers (header-only interfaces: no TensorRT library needed)
#   ---- needs a GPU from here; without one the script stops (exit 3) and says why ----
#   kernel_tests     tests/test_plugin_kernel_gpu.py: every mode and direction, FP32/FP16, odd sizes, NaN,
#                    +-inf, wide rows, streams, bit-exact against torch.cummax on the GPU
#   harness_run      the plugin through its IPluginV3 methods (creator -> createPlugin -> configurePlugin ->
#                    serialize -> createPlugin(kRUNTIME) -> attachToContext -> onShapeChange -> enqueue) on
#                    cudaMalloc buffers, bit-exact against the CPU reference
#   benchmark        benchmarks/bench_corner_pool_gpu.py (CUDA-graph timing): GB/s, share of peak, vs PyTorch,
#   benchmark_flush  at CornerNet sizes; once back to back and once with L2 flushed before each call
#
# Environment: PYTHON (interpreter with the CUDA torch; default: python3, else .venv/bin/python),
# TENSORRT_INCLUDE_DIR (default: build/gpu_check/stage/tensorrt-include, else ../shared/tensorrt-headers/
# 11.1/include), CUDACXX (nvcc), CUDA_ARCH (default: native with a GPU, 90 without).
# Exit status: 0 every step passed; 1 a step failed; 3 stopped before the GPU steps (no usable GPU).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAGE=$ROOT/build/gpu_check/stage
OUT_DIR=${OUT:-$ROOT/build/gpu_check}
BIN=$ROOT/build/gpu_check/bin
mkdir -p "$OUT_DIR" "$BIN"

if [ "${1:-}" = "--stage" ]; then
    headers=${TENSORRT_INCLUDE_DIR:-$ROOT/../shared/tensorrt-headers/11.1/include}
    [ -f "$headers/NvInferRuntime.h" ] || { echo "error: no TensorRT headers at $headers" >&2; exit 2; }
    rm -rf "$STAGE" && mkdir -p "$STAGE"
    cp -r "$headers" "$STAGE/tensorrt-include"   # a git-ignored transport copy, never part of the project
    # pure-Python wheels; tomli and exceptiongroup are what pytest needs on Python < 3.11
    python3 -m pip install -q --no-deps --target "$STAGE/pydeps" pytest pluggy iniconfig packaging tomli \
        exceptiongroup || exit 2
    echo "staged $(du -sh "$STAGE" | cut -f1) in $STAGE: carry build/gpu_check/stage with the checkout"
    exit 0
fi

LOG=$OUT_DIR/gpu_check.log
JSON=$OUT_DIR/gpu_check.json
STEPS=$OUT_DIR/steps.tsv
: > "$LOG"
: > "$STEPS"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
say() { echo "$*" | tee -a "$LOG"; }

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif python3 -c "import torch" 2>/dev/null; then PY=python3
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pytest" 2>/dev/null && [ -d "$STAGE/pydeps" ]; then
    export PYTHONPATH="$PYTHONPATH:$STAGE/pydeps"   # the staged pytest, only where none is installed
fi
NVCC=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ -n "${TENSORRT_INCLUDE_DIR:-}" ]; then TRT_INCLUDE=$TENSORRT_INCLUDE_DIR
elif [ -f "$STAGE/tensorrt-include/NvInferRuntime.h" ]; then TRT_INCLUDE=$STAGE/tensorrt-include
else TRT_INCLUDE=$ROOT/../shared/tensorrt-headers/11.1/include
fi

# step NAME TIMEOUT_S CMD... : run, log, record "name<TAB>rc<TAB>seconds"
step() {
    local name=$1 limit=$2; shift 2
    say ""
    say "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" bash -c '"$@"' step "$@" >> "$LOG" 2>&1   # bash -c: steps may be shell functions
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STEPS"
    say "=== $name: exit $rc after $((SECONDS - t0)) s"
    return $rc
}

# GPU present? nvidia-smi first, then the CUDA torch.
GPU_REASON=""
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 && [ "$(nvidia-smi -L | grep -c '^GPU')" -gt 0 ]; then
    HAVE_GPU=1
elif "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    HAVE_GPU=1
else
    HAVE_GPU=0
    GPU_REASON="no usable NVIDIA GPU: $(command -v nvidia-smi > /dev/null && echo "nvidia-smi -L: $(nvidia-smi -L 2>&1 | head -1)" \
        || echo 'nvidia-smi not found'); $("$PY" -c "import torch; print(f'torch {torch.__version__}: torch.cuda.is_available() is {torch.cuda.is_available()} (CUDA build {torch.version.cuda})')" 2>&1 | tail -1)"
fi
ARCH=${CUDA_ARCH:-$([ "$HAVE_GPU" = 1 ] && echo native || echo 90)}

environment() {
    echo "date: $(date -u)"; echo "host: $(uname -a)"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
        --format=csv || echo "nvidia-smi: not found"
    "$NVCC" --version | tail -2 || echo "nvcc: not found at $NVCC"
    "$PY" - <<'EOF'
import platform
print("python", platform.python_version())
try:
    import torch
    print("torch", torch.__version__, "cuda build", torch.version.cuda, "cuda available", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("torch device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
except ImportError as exc:
    print("torch: not importable:", exc)
try:
    import cupy
    print("cupy", cupy.__version__)
except Exception as exc:
    print("cupy: not importable:", type(exc).__name__)
try:
    import pytest
    print("pytest", pytest.__version__)
except ImportError:
    print("pytest: not importable")
EOF
    echo "TensorRT headers: $TRT_INCLUDE ($(grep -hE '#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? [0-9]' "$TRT_INCLUDE/NvInferVersion.h" 2>/dev/null | awk '{print $3}' | paste -sd.))"
}

harness_build() {
    [ -f "$TRT_INCLUDE/NvInferRuntime.h" ] || { echo "no TensorRT headers at $TRT_INCLUDE (run --stage where shared/ is)"; return 2; }
    local arch_flag="-arch=native"
    [ "$ARCH" = native ] || arch_flag="-arch=sm_$ARCH"
    "$NVCC" -std=c++17 -O2 "$arch_flag" -Xcompiler -Wall,-Wextra -I plugins -I plugins/cornerPoolPlugin -I plugins/tests \
        -isystem "$TRT_INCLUDE" plugins/tests/cornerPoolPluginGpuHarness.cpp plugins/cornernetDeployPlugins.cpp \
        plugins/common/pluginLogging.cpp plugins/cornerPoolPlugin/cornerPoolPlugin.cpp \
        plugins/cornerPoolPlugin/cornerPoolKernel.cu -ldl -o "$BIN/cornerPoolPluginGpuHarness"
}

export -f environment harness_build
export PY NVCC TRT_INCLUDE ARCH BIN
say "GPU check of cornernet-deploy's corner-pool plugin, $STARTED; results: $JSON"
step environment 120 environment
step harness_build 300 harness_build

if [ "$HAVE_GPU" = 1 ]; then
    step kernel_tests 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_plugin_kernel_gpu.py \
        --junitxml="$OUT_DIR/kernel_tests.xml"
    step harness_run 300 "$BIN/cornerPoolPluginGpuHarness"
    step benchmark 240 "$PY" benchmarks/bench_corner_pool_gpu.py --json "$OUT_DIR/bench.json"
    step benchmark_flush 240 "$PY" benchmarks/bench_corner_pool_gpu.py --flush-l2 --json "$OUT_DIR/bench_flush_l2.json"
else
    say ""
    say "STOPPED before the GPU steps (kernel_tests, harness_run, benchmark, benchmark_flush): $GPU_REASON"
fi

"$PY" - "$STEPS" "$JSON" "$OUT_DIR" "$STARTED" "$HAVE_GPU" "$GPU_REASON" <<'EOF'
import json, re, sys
from pathlib import Path
steps_file, json_file, out_dir, started, have_gpu, reason = sys.argv[1:7]
out = Path(out_dir)
log = (out / "gpu_check.log").read_text(errors="replace")
steps = []
for line in Path(steps_file).read_text().splitlines():
    name, rc, seconds = line.split("\t")
    entry = {"step": name, "exit": int(rc), "seconds": int(seconds), "passed": rc == "0"}
    section = log.split(f"=== {name}:", 1)[-1]
    if name == "harness_run":
        m = re.search(r"(\d+) checks, (\d+) failed", section)
        entry["checks"], entry["failed_checks"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        entry["passed"] = rc == "0" and m is not None and m.group(2) == "0"
    if name == "kernel_tests" and (out / "kernel_tests.xml").is_file():
        xml = (out / "kernel_tests.xml").read_text()
        counts = {k: int(v) for k, v in re.findall(r'\b(tests|failures|errors|skipped)="(\d+)"', xml)[:4]}
        entry.update(counts)
        entry["passed"] = rc == "0" and counts.get("tests", 0) > counts.get("skipped", 0)  # all skipped is no proof
    if name.startswith("benchmark"):
        bench = out / ("bench.json" if name == "benchmark" else "bench_flush_l2.json")
        if bench.is_file():
            entry["results"] = json.loads(bench.read_text())
    steps.append(entry)
status = ("passed" if all(s["passed"] for s in steps) else "failed") if have_gpu == "1" else "stopped: no GPU"
report = {"started": started, "status": status, "reason": reason or None, "steps": steps,
          "log": str(out / "gpu_check.log")}
Path(json_file).write_text(json.dumps(report, indent=1))
print(f"\n{status}" + (f" ({reason})" if reason else "") + f"; {json_file}")
EOF
rm -f "$STEPS"
STATUS=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['status'])" "$JSON")
case "$STATUS" in
    passed) exit 0 ;;
    stopped*) exit 3 ;;
    *) exit 1 ;;
esac
