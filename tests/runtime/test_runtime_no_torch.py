"""The runtime must work without torch: a Jetson user runs it with numpy and OpenCV only."""
import ast
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIME = os.path.join(ROOT, "cornernet_deploy", "runtime")

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import cornernet_deploy.runtime as rt
    from cornernet_deploy.runtime import CornerNetPipeline, soft_nms, pair_corners, topk_corners
    from cornernet_deploy.runtime.decode import decode
    from cornernet_deploy.runtime.preprocess import preprocess
    from cornernet_deploy.runtime import saccade, postprocess, detections, pipeline, visualize
    from cornernet_deploy.runtime.streams import detect_streams, runner, sources, outputs
    from cornernet_deploy.contract.arch import get_arch

    rng = np.random.RandomState(0)
    h = lambda *s: rng.randn(*s).astype(np.float32)
    dets = decode(h(2, 4, 16, 16), h(2, 4, 16, 16), h(2, 1, 16, 16), h(2, 1, 16, 16),
                  h(2, 2, 16, 16), h(2, 2, 16, 16), k=10, ae_threshold=0.5, num_dets=50)
    assert dets.shape == (2, 50, 8)
    soft_nms(np.abs(h(20, 5)), method=2)

    spec = get_arch("cornernet-squeeze").replace(num_classes=4)
    def run(batch):
        n, (oh, ow) = batch.shape[0], spec.output_size(batch.shape[2:])
        return dict(tl_heat=h(n, 4, oh, ow), br_heat=h(n, 4, oh, ow), tl_tag=h(n, 1, oh, ow),
                    br_tag=h(n, 1, oh, ow), tl_off=h(n, 2, oh, ow), br_off=h(n, 2, oh, ow))
    out = CornerNetPipeline(spec, run)(rng.randint(0, 255, (60, 80, 3)).astype(np.uint8))
    assert len(out) > 0

    sacc = get_arch("cornernet-saccade").replace(num_classes=2)
    def srun(batch):
        n = batch.shape[0]
        d = dict(tl_heat=h(n, 2, 64, 64), br_heat=h(n, 2, 64, 64), tl_tag=h(n, 1, 64, 64),
                 br_tag=h(n, 1, 64, 64), tl_off=h(n, 2, 64, 64), br_off=h(n, 2, 64, 64))
        for j, s in enumerate((16, 32, 64)):
            d["att%d" % j] = rng.rand(n, 1, s, s).astype(np.float32) * 0.4
        return d
    CornerNetPipeline(sacc, srun)(rng.randint(0, 255, (90, 70, 3)).astype(np.uint8))

    bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH" if bad else "CLEAN", bad[:5])
""")


def test_runtime_runs_without_importing_torch():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("CLEAN"), res.stdout


def test_runtime_sources_do_not_mention_torch_imports():
    """Catches a lazy ``import torch`` inside a function, which the subprocess might not reach
    (the files of the torch-free pipeline and the backends other than PyTorch's)."""
    mine = ["__init__.py", "preprocess.py", "decode.py", "postprocess.py", "pipeline.py",
            "detections.py", "saccade.py", "detector.py", "backends/__init__.py", "backends/base.py",
            "backends/onnxruntime.py", "backends/tensorrt.py", "soft_nms_compiled.py", "families.py",
            "visualize.py", "streams/__init__.py", "streams/sources.py", "streams/runner.py",
            "streams/outputs.py"]
    for name in mine:
        tree = ast.parse(open(os.path.join(RUNTIME, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "torch" or n.startswith("torch.") for n in names), (name, names)


def test_engine_build_options_need_no_torch(tmp_path):
    """``build`` runs on a Jetson without torch: the builder and every check before TensorRT
    (``--input-size`` of a dynamic-size export included) import no torch; here the build gets as
    far as the missing TensorRT."""
    import torch

    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.models import build_model
    torch.manual_seed(0)
    onnx_path = tmp_path / "dynamic.onnx"
    export_onnx(model=build_model("cornernet-squeeze", num_classes=1, width=0.125), output=onnx_path,
                dynamic_size=True, progress=None, verify=False)
    code = textwrap.dedent(f"""
        import sys
        from cornernet_deploy.cli import main
        rc = main(["build", {str(onnx_path)!r}, "--input-size", "255x255",
                   "--output", {str(tmp_path / "x.engine")!r}])
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(rc, "TORCH" if bad else "CLEAN")
    """)
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["2", "CLEAN"], (res.stdout, res.stderr[-500:])
    assert "TensorRT is not installed" in res.stderr, res.stderr
