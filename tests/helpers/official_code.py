"""Loading the REAL official code from a CornerNet-Lite checkout (for the opt-in comparisons in
tests/runtime/test_official_compiled.py and benchmarks/bench_postprocess.py --official).

Build the checkout's extension first (see tests/runtime/test_official_compiled.py)."""
import glob
import importlib.util
import sys
import types
from pathlib import Path


def load_official(root):
    """``(nms, utils)``: the compiled ``core/external/nms`` extension and
    ``core/models/py_utils/utils.py`` (``_decode``) of the checkout ``root``.

    Raises ``FileNotFoundError`` without a built extension, ``ImportError`` when it does not
    import in this Python."""
    found = sorted(glob.glob(str(Path(root) / "core" / "external" / "nms*.so")))
    if not found:
        raise FileNotFoundError(f"no compiled nms extension in {root}/core/external")
    spec = importlib.util.spec_from_file_location("nms", found[0])
    nms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nms)
    # utils.py imports the compiled corner pools, used only by the model: a stub stands in
    pkg = types.ModuleType("official_py_utils")
    pkg.__path__ = []
    pools = types.ModuleType("official_py_utils._cpools")
    for name in ("TopPool", "BottomPool", "LeftPool", "RightPool"):
        setattr(pools, name, None)
    sys.modules.update({"official_py_utils": pkg, "official_py_utils._cpools": pools})
    spec = importlib.util.spec_from_file_location(
        "official_py_utils.utils", Path(root) / "core" / "models" / "py_utils" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return nms, utils
