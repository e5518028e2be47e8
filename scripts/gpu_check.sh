#!/usr/bin/env bash
# GPU proof kit for the corner-pool plugin: one command on a machine with an NVIDIA GPU, the CUDA toolkit
# (nvcc), a CUDA PyTorch and (optionally) CuPy - no TensorRT, no network. Every step has a time limit and
# the limits add up to 470 s, so the whole check fits one 10-minute call on a lent GPU machine; a step that
# would start after 500 s is recorded as skipped instead.
#
# Staging (the GPU machine gets only the working tree, at most 64 MiB, and no network):
#   here, once:   bash scripts/gpu_check.sh --stage
#                 copies the TensorRT headers (default ../shared/tensorrt-headers/11.1/include, or
#                 $TENSORRT_INCLUDE_DIR) and pytest (pure-Python wheels) into .gpu-stage/ (about 7 MB),
#                 which git ignores: it is a transport copy, never part of the project.
#   there:        carry the path ".gpu-stage" with the working tree (the device tool's carry=[".gpu-stage"]),
#                 then run exactly:   bash scripts/gpu_check.sh
# Results: $OUT (if set) else build/gpu_check/: gpu_check.json (rewritten after every step, so a hang or a
# kill still returns what was measured), gpu_check.log, and the raw files of each step.
#
# Steps (each timed, logged and recorded in the JSON):
#   environment      GPU, driver, nvcc, Python, torch, CuPy, pytest, sanitizer/ncu availability       15 s
#   harness_build    nvcc builds plugins/tests/cornerPoolPluginGpuHarness.cpp with the plugin's sources
#                    against the staged TensorRT headers (header-only interfaces: no TensorRT library)    60 s
#   ---- needs a GPU from here; without one the script stops, says why on stderr and exits 3 ----
#   kernel_tests     tests/plugins/test_plugin_kernel_gpu.py: every mode/direction, FP32/FP16, vector and element-
#                    wise paths, narrow maps, NaN/+-inf, wide rows, W = 2^30 refused, streams, bit-exact
#                    against torch.cummax on the GPU (all-skipped counts as failed)                     100 s
#   harness_run      the plugin through its IPluginV3 call sequence (creator -> createPlugin -> configure ->
#                    serialize -> createPlugin(kRUNTIME) -> attachToContext -> onShapeChange -> enqueue) on
#                    cudaMalloc buffers, bit-exact against the CPU reference                             40 s
#   sanitizer        compute-sanitizer memcheck, racecheck, synccheck on the harness (quick case set);
#                    "unavailable" when the tool is missing                                        3 x 25 s
#   ncu              Nsight Compute on the fused kernel, FP32/FP16, batch 1 x 128 and 8 x 256 channels:
#                    DRAM throughput (% of peak) and issue-slot utilisation; "unavailable" when ncu is
#                    missing or has no counter permission                                                40 s
#   benchmark        benchmarks/bench_corner_pool_gpu.py --require-gpu: time, GB/s and share of the measured
#                    copy bandwidth, FP32/FP16, batch 1 and 8, 128/256 channels, vs PyTorch               50 s
#   benchmark_flush  the same with L2 flushed before every call                                          40 s
#   torch_fp16       benchmarks/bench_gpu_torch.py: PyTorch CUDA FP32 vs FP16 for the three architectures 50 s
#
# What it proves: the kernels and the plugin's own call sequence are correct on this GPU (bit-exact), free
# of memory errors, shared-memory races and barrier misuse that the sanitizers can see, and how close they
# come to the copy bandwidth. What it cannot prove: anything inside TensorRT or ONNX Runtime (engine build,
# tactic selection, the parser, plugin loading by a real TensorRT - the harness calls the plugin's methods
# itself), other GPUs than this one, and Jetson (other memory system, CUDA 12.6, TensorRT 10.3).
#
# Environment: PYTHON (interpreter with the CUDA torch; default python3, else .venv/bin/python),
# TENSORRT_INCLUDE_DIR (default .gpu-stage/tensorrt-include, else ../shared/tensorrt-headers/11.1/include),
# CUDACXX (nvcc), CUDA_ARCH (default: native with a GPU, 90 without).
# Exit status: 0 every step passed; 1 a step failed; 3 stopped before the GPU steps (no usable GPU).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAGE=$ROOT/.gpu-stage
OUT_DIR=${OUT:-$ROOT/build/gpu_check}
BIN=$ROOT/build/gpu_check/bin
DEADLINE_S=500   # no step starts after this: the remaining ones are recorded as skipped
mkdir -p "$OUT_DIR" "$BIN"

if [ "${1:-}" = "--stage" ]; then
    headers=${TENSORRT_INCLUDE_DIR:-$ROOT/../shared/tensorrt-headers/11.1/include}
    [ -f "$headers/NvInferRuntime.h" ] || { echo "error: no TensorRT headers at $headers" >&2; exit 2; }
    rm -rf "$STAGE" && mkdir -p "$STAGE"
    cp -r "$headers" "$STAGE/tensorrt-include"   # git-ignored transport copy, never part of the project
    # pure-Python wheels; tomli and exceptiongroup are what pytest needs on Python < 3.11
    python3 -m pip install -q --no-deps --target "$STAGE/pydeps" pytest pluggy iniconfig packaging tomli \
        exceptiongroup || exit 2
    echo "staged $(du -sh "$STAGE" | cut -f1) in $STAGE (ignored by git)."
    echo "On the GPU machine: carry the path .gpu-stage with the working tree, then run: bash scripts/gpu_check.sh"
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
SANITIZER=$(command -v compute-sanitizer || ls "$(dirname "$NVCC")/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)

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

# The JSON report, rewritten from the log and the step table after every step.
write_json() {
    "$PY" - "$STEPS" "$JSON" "$OUT_DIR" "$STARTED" "$HAVE_GPU" "$GPU_REASON" "$1" <<'EOF'
import json, re, sys
from pathlib import Path
steps_file, json_file, out_dir, started, have_gpu, reason, phase = sys.argv[1:8]
out = Path(out_dir)
log = (out / "gpu_check.log").read_text(errors="replace")
steps = []
for line in Path(steps_file).read_text().splitlines():
    name, rc, seconds = line.split("\t")
    rc = int(rc)
    entry = {"step": name, "exit": rc, "seconds": int(seconds), "passed": rc == 0}
    if rc == 124:
        entry["timed_out"] = True
    section = log.split(f"=== {name}:", 1)[-1].split("\n=== ", 1)[0]
    if rc == 200:  # see `step`: not run
        entry.update(passed=None, skipped=section.strip().splitlines()[-1] if section.strip() else "not run")
    if name == "harness_run" or name.startswith("sanitizer"):
        m = re.search(r"(\d+) checks, (\d+) failed", section)
        entry["checks"], entry["failed_checks"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        if name == "harness_run":
            entry["passed"] = rc == 0 and m is not None and m.group(2) == "0"
    if name.startswith("sanitizer") and rc != 200:
        m = re.search(r"ERROR SUMMARY: (\d+) error", section)
        entry["sanitizer_errors"] = int(m.group(1)) if m else None
        entry["passed"] = rc == 0 and m is not None and m.group(1) == "0"
    if name == "kernel_tests" and (out / "kernel_tests.xml").is_file():
        xml = (out / "kernel_tests.xml").read_text()
        counts = {k: int(v) for k, v in re.findall(r'\b(tests|failures|errors|skipped)="(\d+)"', xml)[:4]}
        entry.update(counts)
        entry["passed"] = rc == 0 and counts.get("tests", 0) > counts.get("skipped", 0)  # all skipped is no proof
    if name.startswith("benchmark"):
        bench = out / ("bench.json" if name == "benchmark" else "bench_flush_l2.json")
        if bench.is_file():
            rows = json.loads(bench.read_text() or "[]")
            entry["results"] = rows
            entry["copy_share"] = [{k: r[k] for k in ("mode", "dtype", "N", "C")} | {"copy_share": round(r["copy_share"], 3),
                                   "ours_us": round(r["ours_us"], 2), "exact_match": r["exact_match"]}
                                  for r in rows if "copy_share" in r]
            entry["passed"] = entry["passed"] and all(r["exact_match"] for r in rows) and len(rows) == 16
    if name == "ncu" and (out / "ncu.csv").is_file():
        import csv
        lines = [l for l in (out / "ncu.csv").read_text(errors="replace").splitlines() if l.startswith('"')]
        rows = list(csv.DictReader(lines))
        keep = ("Kernel Name", "Grid Size", "Block Size", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
                "sm__inst_issued.avg.pct_of_peak_sustained_active", "gpu__time_duration.sum", "dram__bytes.sum")
        entry["kernels"] = [{k: r.get(k) for k in keep if k in r} for r in rows[1:]]  # row 0: units
        entry["configs"] = re.findall(r"^config (.*)$", section, re.M)
    if name == "torch_fp16":
        entry["table"] = [l for l in section.splitlines() if re.match(r"^(cornernet\S*)\s", l)]
        entry["passed"] = rc == 0 and "skipped" not in section and len(entry["table"]) == 3
    if name in ("sanitizer_memcheck", "sanitizer_racecheck", "sanitizer_synccheck", "ncu") and "unavailable:" in section:
        entry.update(passed=None, unavailable=re.search(r"unavailable: (.*)", section).group(1))
    steps.append(entry)
failed = [s["step"] for s in steps if s["passed"] is False]
skipped = [s["step"] for s in steps if "skipped" in s]
if phase == "running":
    status = "running"
elif have_gpu != "1":
    status = "stopped: no GPU"
else:
    status = "failed" if failed else ("incomplete" if skipped else "passed")
report = {"started": started, "status": status, "failed_steps": failed, "skipped_steps": skipped, "reason": reason or None, "steps": steps,
          "log": str(out / "gpu_check.log"),
          "proves": "kernels and the plugin's IPluginV3 call sequence bit-exact on this GPU; sanitizer findings; "
                    "bandwidth share of this GPU's copy",
          "cannot_prove": "anything inside TensorRT or ONNX Runtime (engine build, parser, plugin loading by a "
                          "real TensorRT), other GPUs, Jetson"}
Path(json_file).write_text(json.dumps(report, indent=1))
if phase != "running":
    print(f"\n{status}" + (f" ({reason})" if reason else "") + (f"; failed: {failed}" if failed else "") + f"; {json_file}")
EOF
}

# step NAME TIMEOUT_S CMD... : run, log, record "name<TAB>rc<TAB>seconds", rewrite the JSON.
step() {
    local name=$1 limit=$2; shift 2
    say ""
    say "=== $name: $*"
    local t0=$SECONDS rc
    if [ "$SECONDS" -ge "$DEADLINE_S" ]; then
        say "skipped: the check has run ${SECONDS} s; no step starts after ${DEADLINE_S} s (one 10-minute call)"
        rc=200
    else
        timeout -k 5 "$limit" bash -c '"$@"' step "$@" >> "$LOG" 2>&1   # bash -c: steps may be shell functions
        rc=$?
    fi
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STEPS"
    say "=== $name: exit $rc after $((SECONDS - t0)) s"
    write_json running
    return $rc
}

environment() {
    echo "date: $(date -u)"; echo "host: $(uname -a)"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
        --format=csv || echo "nvidia-smi: not found"
    "$NVCC" --version | tail -2 || echo "nvcc: not found at $NVCC"
    echo "compute-sanitizer: ${SANITIZER:-not found}"; echo "ncu: ${NCU:-not found}"
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
for name in ("cupy", "pytest", "numpy"):
    try:
        module = __import__(name)
        print(name, module.__version__)
    except Exception as exc:
        print(f"{name}: not importable:", type(exc).__name__)
EOF
    echo "TensorRT headers: $TRT_INCLUDE ($(grep -hE '#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? [0-9]' "$TRT_INCLUDE/NvInferVersion.h" 2>/dev/null | awk '{print $3}' | paste -sd.))"
}

harness_build() {
    [ -f "$TRT_INCLUDE/NvInferRuntime.h" ] || { echo "no TensorRT headers at $TRT_INCLUDE (run --stage where shared/ is, carry .gpu-stage)"; return 2; }
    local arch_flag="-arch=native"
    [ "$ARCH" = native ] || arch_flag="-arch=sm_$ARCH"
    "$NVCC" -std=c++17 -O2 -lineinfo "$arch_flag" -Xcompiler -Wall,-Wextra -I plugins -I plugins/cornerPoolPlugin -I plugins/tests \
        -isystem "$TRT_INCLUDE" plugins/tests/cornerPoolPluginGpuHarness.cpp plugins/cornernetDeployPlugins.cpp \
        plugins/common/pluginLogging.cpp plugins/cornerPoolPlugin/cornerPoolPlugin.cpp \
        plugins/cornerPoolPlugin/cornerPoolKernel.cu -ldl -o "$BIN/cornerPoolPluginGpuHarness"
}

sanitize() {  # sanitize TOOL: the quick harness cases under compute-sanitizer --tool TOOL
    [ -n "$SANITIZER" ] || { echo "unavailable: compute-sanitizer not found next to nvcc or on PATH"; return 0; }
    [ -x "$BIN/cornerPoolPluginGpuHarness" ] || { echo "harness not built"; return 2; }
    CORNERPOOL_HARNESS_QUICK=1 "$SANITIZER" --tool "$1" --error-exitcode 9 "$BIN/cornerPoolPluginGpuHarness"
}

ncu_read() {  # ncu_read: DRAM throughput and issue utilisation of the fused kernel at CornerNet sizes
    [ -n "$NCU" ] || { echo "unavailable: ncu (Nsight Compute) not found"; return 0; }
    local metrics=dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_issued.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,dram__bytes.sum
    "$NCU" --csv --page raw --metrics "$metrics" --kernel-name regex:cornerPoolKernel --target-processes all \
        "$PY" - > "$OUT_DIR/ncu.csv" 2> "$OUT_DIR/ncu.err" <<'EOF'
import tempfile
from pathlib import Path
import torch
from cornernet_deploy.tensorrt import plugin_build
lib = plugin_build.load_kernel_library(plugin_build.compile_kernel_library(
    Path(tempfile.gettempdir()) / "cornernet_deploy_tests" / "gpu-kernels", arch="native"))
for dtype, code in ((torch.float32, 0), (torch.float16, 1)):
    for n, c in ((1, 128), (8, 256)):
        a = torch.randn(n, c, 128, 128, device="cuda").to(dtype)
        b, out = torch.randn_like(a), torch.empty_like(a)
        assert lib.cornerPoolForward(0, code, a.data_ptr(), b.data_ptr(), out.data_ptr(), n, c, 128, 128, None) == 0
        torch.cuda.synchronize()
EOF
    local rc=$?
    cat "$OUT_DIR/ncu.err"
    for cfg in "float32 1x128" "float32 8x256" "float16 1x128" "float16 8x256"; do echo "config top_left $cfg x128x128"; done
    if grep -q "ERR_NVGPUCTRPERM\|permission" "$OUT_DIR/ncu.err"; then
        echo "unavailable: ncu has no permission to read the GPU performance counters (ERR_NVGPUCTRPERM)"; return 0
    fi
    return $rc
}

export -f environment harness_build sanitize ncu_read
export PY NVCC TRT_INCLUDE ARCH BIN SANITIZER NCU OUT_DIR
say "GPU check of cornernet-deploy's corner-pool plugin, $STARTED; results: $JSON (rewritten after every step)"
say "command: bash scripts/gpu_check.sh   (staged with --stage; carry .gpu-stage)"
step environment 15 environment
step harness_build 60 harness_build

if [ "$HAVE_GPU" = 1 ]; then
    step kernel_tests 100 "$PY" -m pytest -q -rs -p no:cacheprovider tests/plugins/test_plugin_kernel_gpu.py \
        --junitxml="$OUT_DIR/kernel_tests.xml"
    step harness_run 40 "$BIN/cornerPoolPluginGpuHarness"
    step sanitizer_memcheck 25 sanitize memcheck
    step sanitizer_racecheck 25 sanitize racecheck
    step sanitizer_synccheck 25 sanitize synccheck
    step ncu 40 ncu_read
    step benchmark 50 "$PY" benchmarks/bench_corner_pool_gpu.py --require-gpu --iters 100 --json "$OUT_DIR/bench.json"
    step benchmark_flush 40 "$PY" benchmarks/bench_corner_pool_gpu.py --require-gpu --iters 60 --flush-l2 \
        --json "$OUT_DIR/bench_flush_l2.json"
    step torch_fp16 50 "$PY" benchmarks/bench_gpu_torch.py --iters 20 --warmup 5 --json "$OUT_DIR/torch"
else
    say ""
    say "STOPPED before the GPU steps (kernel_tests, harness_run, sanitizer_*, ncu, benchmark*, torch_fp16): $GPU_REASON"
    echo "gpu_check FAILED: $GPU_REASON" >&2
fi

write_json final | tee -a "$LOG"
STATUS=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['status'])" "$JSON")
case "$STATUS" in
    passed) exit 0 ;;
    stopped*) exit 3 ;;
    *) exit 1 ;;
esac
