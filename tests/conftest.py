"""Shared by every test folder (tests/ mirrors the package: contract, models, export, runtime,
tensorrt, plugins, profiling, serving, train, cli, data; docs checks README.md and docs/)."""
import gzip
import json
import os
import signal
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
# the helpers every folder shares (support.py, reference_official.py, official_code.py) import by
# name from any test folder; only tests/helpers goes on sys.path (pyproject.toml: importlib mode)
sys.path.insert(0, str(TESTS / "helpers"))

# The machine running CI has few cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A shell without job control starts background commands with SIGINT ignored (`scripts/test.sh &`
# from a script, nohup, some CI runners), and Python then installs no Ctrl-C handler: the tests
# of what Ctrl-C does (in this process, and in the commands they start, which inherit an ignored
# signal but not a handler) would test an environment instead of the toolkit.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def official_keys():
    """Official state-dict key names, shapes and dtypes per architecture (see tests/data)."""
    with gzip.open(DATA / "official_state_dict_keys.json.gz", "rt") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def demo_exports(tmp_path_factory):
    """The bundled demo model exported with a dynamic size and batch: ``float32`` (normalised
    input) and ``uint8`` (pixels, normalised in the graph); shared by the stream tests."""
    pytest.importorskip("torch")
    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.exporter import export_onnx
    root = tmp_path_factory.mktemp("demo_exports")
    out = {}
    for dtype in ("float32", "uint8"):
        out[dtype] = root / f"demo_{dtype}.onnx"
        export_onnx(checkpoint=DEMO_CHECKPOINT, output=out[dtype], dynamic_size=True, dynamic_batch=True,
                    input_dtype=dtype, verify=False, progress=None)
    return out
