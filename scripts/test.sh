#!/usr/bin/env bash
# The test command (README "Quickstart", .ci/run): prepares the test-only environments, then runs
# `python -m pytest -q` with any extra arguments. Run it inside the project venv, from anywhere.
#
# Prepared once, kept afterwards (all git-ignored), each skipped when it cannot be made (the tests
# that need it then skip and say why; with CI=1 they fail instead):
# - .venv-triton: the Python environment of the real tritonserver that tests/serving/test_triton_server.py
#   starts (nvidia-pytriton bundles Triton 2.51 with its Python backend, which needs numpy < 2);
# - .venv/lean-tensorrt/{10,11}: the real plugin registries of TensorRT 10.16 and 11.4 (PyPI lean
#   wheels, no GPU needed) that tests/plugins/test_plugin_compile.py loads each plugin build into; both
#   wheel pairs are named tensorrt_lean_bindings, so each has its own folder;
# - .venv/cuda-tools: cuobjdump and nvdisasm (PyPI wheels of the CUDA toolkit's tools) for
#   tests/plugins/test_plugin_sass.py, where the installed CUDA toolkit lacks them;
# - the TensorRT headers of 10.3, 10.16 and 11.1 are read where they lie
#   ($CORNERNET_DEPLOY_TRT_HEADERS, default ../shared/tensorrt-headers; never copied here).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import cornernet_deploy" 2>/dev/null || {
    echo "error: run this inside the project venv (. .venv/bin/activate), after the README's set-up" >&2
    exit 2
}
setup_start=$SECONDS
note() { echo "test set-up: $*" >&2; }

# (re)installed when the model's requirements change, not only when the venv is missing: a new
# requirement must reach the server that the tests start
triton_reqs=cornernet_deploy/serving/requirements-python-model.txt
triton_stamp=".venv-triton/installed-$(sha256sum "$triton_reqs" | cut -c1-16)"
if [ ! -x .venv-triton/bin/python ] || [ ! -e "$triton_stamp" ] ||
   ! .venv-triton/bin/python -c "import pytriton" 2>/dev/null; then
    { { [ -x .venv-triton/bin/python ] || python3 -m venv .venv-triton; } &&
      .venv-triton/bin/python -m pip install -q nvidia-pytriton==0.7.0 -r "$triton_reqs" &&
      rm -f .venv-triton/installed-* && touch "$triton_stamp"; } ||
        note "could not make .venv-triton: the real-server Triton tests will skip"
fi

lean=$(python -c "import sys; print(sys.prefix)")/lean-tensorrt
for pair in "10 cu12 10.16.1.11" "11 cu13 11.4.0.106"; do
    read -r major cuda version <<< "$pair"
    if [ ! -d "$lean/$major/tensorrt_lean_${cuda}_libs-$version.dist-info" ] ||
       [ ! -d "$lean/$major/tensorrt_lean_${cuda}_bindings-$version.dist-info" ]; then
        python -m pip install -q --no-deps --upgrade --target "$lean/$major" \
            "tensorrt-lean-$cuda-bindings==$version" "tensorrt-lean-$cuda-libs==$version" ||
            note "could not install the TensorRT $version lean wheels: its registry tests will skip"
    fi
done
export CORNERNET_DEPLOY_LEAN_TENSORRT_DIRS="$lean/10:$lean/11"

tools=$(python -c "import sys; print(sys.prefix)")/cuda-tools
if ! command -v cuobjdump >/dev/null 2>&1 && ! ls "$tools"/nvidia/cu*/bin/cuobjdump >/dev/null 2>&1; then
    python -m pip install -q --no-deps --upgrade --target "$tools" \
        nvidia-cuda-cuobjdump==13.2.51 nvidia-cuda-nvdisasm==13.2.51 ||
        note "could not install cuobjdump/nvdisasm: the SASS tests will skip"
fi

if headers=$(cd "${CORNERNET_DEPLOY_TRT_HEADERS:-../shared/tensorrt-headers}" 2>/dev/null && pwd); then
    export CORNERNET_DEPLOY_TRT_INCLUDE_DIRS="$headers/10.3/include:$headers/10.16/include:$headers/11.1/include"
else
    note "no TensorRT headers at ${CORNERNET_DEPLOY_TRT_HEADERS:-../shared/tensorrt-headers}: the plugin build tests will skip"
fi
note "$((SECONDS - setup_start)) s"
exec python -m pytest -q "$@"
