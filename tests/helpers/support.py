"""Helpers shared by several test modules (importable by name from every test folder: conftest.py
puts tests/helpers on sys.path)."""
import dataclasses
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def fake_plugin_bytes(text: bytes, needed=("libnvinfer.so.10",)) -> bytes:
    """What the Triton generator accepts as our plugin library without loading it: a 64-bit ELF
    shared object (e_type ET_DYN) whose dynamic section lists ``needed`` (DT_NEEDED; the default is
    what a ``plugin build --static-registration`` library links, () the default build), carrying the
    TensorRT version tag of plugins/cornernetDeployPlugins.cpp. For tests where the library is
    copied, never loaded (the real libraries: tests/plugins/test_plugin_compile.py)."""
    import struct

    body = b"\0cornernet_deploy_tensorrt_headers=10.3.0\0" + text
    dynstr = b"\0"
    dynamic = b""
    for name in needed:
        dynamic += struct.pack("<qQ", 1, len(dynstr))          # DT_NEEDED, offset into .dynstr
        dynstr += name.encode() + b"\0"
    dynamic += struct.pack("<qQ", 0, 0)                          # DT_NULL
    dynstr_at = 64 + len(body)
    dynamic_at = dynstr_at + len(dynstr)
    sections_at = dynamic_at + len(dynamic)

    def section(kind, offset, size, link=0):                    # Elf64_Shdr
        return struct.pack("<IIQQQQIIQQ", 0, kind, 0, 0, offset, size, link, 0, 0, 0)
    sections = section(0, 0, 0) + section(3, dynstr_at, len(dynstr)) + section(6, dynamic_at, len(dynamic), 1)
    header = (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 0x3E, 1, 0, 0,
                                                               sections_at, 0, 64, 0, 0, 64, 3, 0))
    return header + body + dynstr + dynamic + sections


def random_tiny(arch, seed=0, num_classes=1):
    # One class and a loose embedding threshold (below): random weights put the top corners of
    # different classes in different maps, and the official class rule would reject every pair.
    # Heat biases of +2 (scores ~0.88) get Saccade's first-pass detections over its 0.3 cut.
    # Heat weights x100: at initialisation the heat logits vary by ~1e-6 across the map (2.00541
    # +- 5e-7 for the tiny Saccade), so every score ties with its neighbours to float rounding, and
    # which corners or zoom locations come first is decided by the backend's summation order (torch
    # on 1 thread vs 2 differs there) instead of by the model: Saccade's zoom order flipped with the
    # thread count an earlier test had left. x100 spreads the scores (gaps >= 1e-5, 10x the
    # ONNX Runtime vs PyTorch difference) so that the order is the model's.
    import torch

    from cornernet_deploy.models import build_model

    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes, width=0.125).eval()
    with torch.no_grad():
        for heads in (model.tl_heats, model.br_heats):
            heads[-1][1].bias.fill_(2.0)
            heads[-1][1].weight.mul_(100.0)
    return model


def loose(spec):
    # random weights give random embeddings and put many corners on the map border (which
    # Saccade's no_border rule rejects): accept every pair so that detections exist
    return dataclasses.replace(spec.test, ae_threshold=100.0, no_border=False)


def scene(seed=0, h=200, w=260):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(img, (40, 50), (150, 160), (20, 200, 30), -1)
    return img


def demo_exports(root: Path) -> dict:
    """The demo model exported the ways the engine-command tests build from: ``dynamic`` (batch and
    size), ``static`` (fixed size, batch 1) and ``fp16`` (dynamic, FP16 network)."""
    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.exporter import export_onnx

    made = {}
    for name, kw in (("dynamic", dict(dynamic_batch=True, dynamic_size=True)),
                     ("static", dict(dynamic_size=False)),
                     ("fp16", dict(dynamic_batch=True, dynamic_size=True, precision="fp16"))):
        made[name] = root / f"{name}.onnx"
        export_onnx(checkpoint=DEMO_CHECKPOINT, output=made[name], verify=False, progress=None, **kw)
    return made


def linked_library(path: Path, version: str, needs: str) -> Path:
    """A real shared object with the version tag of plugins/cornernetDeployPlugins.cpp and a DT_NEEDED
    entry for ``needs`` (a --static-registration build links libnvinfer.so.N; a stub of that soname
    is made beside it), compiled with the C compiler; skips the test without one. Never loaded."""
    import shutil
    import subprocess

    import pytest

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to make a shared object with a DT_NEEDED entry")
    stubs = path.parent / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    source = path.with_suffix(".c")
    source.write_text("int cornernet_deploy_stub;\n")
    subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{needs}", "-o", str(stubs / needs), str(source)],
                   check=True, capture_output=True)
    source.write_text(f'__attribute__((used)) const char tag[] = "cornernet_deploy_tensorrt_headers={version}";\n')
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(path), str(source), "-Wl,--no-as-needed", str(stubs / needs)],
                   check=True, capture_output=True)
    return path


def tagged_library(path: Path, version: str) -> Path:
    """A file carrying the version tag that plugins/cornernetDeployPlugins.cpp compiles into the library
    (the real libraries are checked in test_plugin_compile.py)."""
    path.write_bytes(b"\x7fELF\0padding\0cornernet_deploy_tensorrt_headers=" + version.encode() + b"\0more")
    return path


HEADS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")


def plant(h, b, kind, c, y, x, logit, tag=0.0, off=(0.0, 0.0)):
    h[f"{kind}_heat"][b, c, y, x] = logit
    h[f"{kind}_tag"][b, 0, y, x] = tag
    h[f"{kind}_off"][b, :, y, x] = off


def random_heads(rng, n, c, h, w, peaks=12):
    """Random low background plus planted corners with matching tags (many valid pairs)."""
    d = dict(tl_heat=(rng.randn(n, c, h, w) - 4).astype(np.float32),
             br_heat=(rng.randn(n, c, h, w) - 4).astype(np.float32),
             tl_tag=(rng.randn(n, 1, h, w) * 2).astype(np.float32),
             br_tag=(rng.randn(n, 1, h, w) * 2).astype(np.float32),
             tl_off=rng.rand(n, 2, h, w).astype(np.float32),
             br_off=rng.rand(n, 2, h, w).astype(np.float32))
    for b in range(n):
        for _ in range(peaks):
            cls = rng.randint(c)
            y1, x1 = rng.randint(0, h - 2), rng.randint(0, w - 2)
            y2, x2 = rng.randint(y1, h), rng.randint(x1, w)
            t = rng.randn()
            plant(d, b, "tl", cls, y1, x1, rng.uniform(-1, 3), t, rng.rand(2))
            plant(d, b, "br", cls, y2, x2, rng.uniform(-1, 3), t + rng.uniform(-0.6, 0.6),
                  rng.rand(2))
    return d


def random_boxes(seed, n, quantized):
    rng = np.random.RandomState(seed)
    xy = rng.rand(n, 2) * 40
    wh = rng.rand(n, 2) * 25
    sc = rng.rand(n, 3)
    if quantized:                           # exact duplicates, touching boxes, tied scores
        xy, wh = np.round(xy / 5) * 5, np.round(wh / 5) * 5
        sc[:, 0] = np.round(sc[:, 0] * 4) / 4
        sc[: n // 3, 0] *= 0.004            # some rows start near the threshold
    return np.concatenate([xy, xy + wh, sc], axis=1).astype(np.float32)


def wait_until(check, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll ``check()`` until it returns something true, at most ``timeout_s`` seconds; return that.
    For state another thread or process updates after the event a test waited for (a server's
    statistics, a log written by a separate thread): reading it once right after races."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout_s:g} s: {what} (last seen: {value!r})")
        time.sleep(interval_s)


def with_metadata(src, dst, change):
    """A copy of the export ``src`` at ``dst`` whose ``cornernet_deploy`` metadata is ``change``'s:
    a dict of keys to set, or a function of the metadata dict returning the new one (any JSON
    value, written as is: crafted metadata for the readers' tests)."""
    import json

    import onnx
    model = onnx.load(str(src))
    entry = next(p for p in model.metadata_props if p.key == "cornernet_deploy")
    meta = json.loads(entry.value)
    entry.value = json.dumps(change(meta) if callable(change) else {**meta, **change})
    onnx.save(model, str(dst))
    return Path(dst)


def scene_file(path, seed=0):
    """``scene(seed)`` written as an image file (the tiny random models find 14 to 74 detections
    in it for seeds < 30); returns the path."""
    assert cv2.imwrite(str(path), scene(seed))
    return path


def shapes_data(root, count=6):
    """A small shapes dataset for training tests: (annotations.json, images folder)."""
    from cornernet_deploy.data.shapes import generate_shapes_dataset
    generate_shapes_dataset(root, count, seed=5, image_size=((60, 90),), num_objects=(1, 3))
    return root / "annotations.json", root / "images"


def tiny_train_argv(ann, images, out, *extra):
    """`train` of a tiny 2-level CornerNet-Squeeze at 63x63 (seconds per iteration on a CPU)."""
    return ["train", "--arch", "cornernet-squeeze", "--width", "0.125", "--levels", "2",
            "--stacks", "1", "--input-size", "63x63", "--data", str(ann), "--images", str(images),
            "--batch-size", "2", "--output", str(out), "--no-progress", *extra]
