"""``cornernet-deploy demo``: the whole pipeline on a laptop CPU, offline.

Bundled tiny CornerNet-Squeeze (trained on synthetic shapes by ``scripts/train_demo_model.py``)
-> ONNX export (corner pool as the custom op, verified against PyTorch) -> ONNX Runtime on a
generated scene -> annotated PNG, detections JSON, and a latency table.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import UserError, require_torch
from ..fileio import atomic_files, check_not_input, check_output_dir, json_text
from ..runtime.visualize import DRAW_SCORE_THRESHOLD
from .common import console as make_console
from .common import nonnegative_int, positive_int

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
DEMO_CHECKPOINT = ASSET_DIR / "demo_squeeze_shapes.pt"
DRAW_THRESHOLD = DRAW_SCORE_THRESHOLD  # drawn and tabled; the JSON keeps every detection
DEMO_FILES = ("demo_model.onnx", "demo_input.png", "demo_detections.png", "demo_detections.json")
# generated scene sides: shapes are at least 16 px and the bundled model saw 128-256 px scenes
MIN_SCENE, MAX_SCENE = 32, 4096


def add_arguments(parser):
    parser.add_argument("--output", default="demo_output", help="folder for the model, image and JSON")
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="checkpoint to export (default: bundled)")
    parser.add_argument("--seed", type=nonnegative_int, default=7, help="scene seed")
    parser.add_argument("--image-size", type=positive_int, default=256,
                        help=f"scene side in pixels, {MIN_SCENE}..{MAX_SCENE} (the bundled model was "
                             "trained on 128-256)")
    parser.add_argument("--runs", type=positive_int, default=10, help="timed runs for the latency table")


def run(args) -> int:
    if not MIN_SCENE <= args.image_size <= MAX_SCENE:
        raise UserError(f"--image-size {args.image_size}: choose {MIN_SCENE}..{MAX_SCENE} pixels (shapes "
                        "are at least 16 px; the bundled model was trained on 128-256 px scenes)")
    out = check_output_dir(args.output, "--output")
    require_torch("the demo (it exports the bundled checkpoint)")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():  # anything else wrong with it: the checkpoint reader says what
        raise UserError(f"demo checkpoint not found: {checkpoint} (train one with scripts/train_demo_model.py)")
    for name in DEMO_FILES:
        check_not_input(out / name, [("--checkpoint", checkpoint)], "--output")
    # every file is made in a hidden folder and moved into --output at the end: a failed demo
    # (a full disk, Ctrl-C) adds nothing half-written
    console = make_console()
    start = time.perf_counter()
    with atomic_files(out, "--output") as staging:
        _demo(args, checkpoint, out, staging, console)
    console.print(f"wrote {out / 'demo_detections.png'}, {out / 'demo_detections.json'} and "
                  f"{out / 'demo_model.onnx'} in {time.perf_counter() - start:.1f} s")
    return 0


def _demo(args, checkpoint: Path, out: Path, staging: Path, console) -> None:
    """Export, detect and draw into ``staging``; what is printed names the files in ``out``."""
    import cv2
    from rich.table import Table

    from ..data.shapes import box_iou, render_scene
    from ..exporter import export_onnx
    from ..runtime.detector import Detector
    from ..runtime.visualize import draw_detections

    console.print(f"[bold]1/3 export[/] {checkpoint.name} -> ONNX")
    export_onnx(checkpoint=checkpoint, output=staging / "demo_model.onnx", dynamic_size=True,
                progress=lambda m: console.print(f"    {m.replace(str(staging), str(out))}"))

    console.print("[bold]2/3 detect[/] with ONNX Runtime on a generated scene")
    image, gt_boxes, gt_labels = render_scene(args.seed, image_size=args.image_size, num_objects=(3, 5))
    detector = Detector.load(staging / "demo_model.onnx")
    # network time per image, summed: Saccade runs the network more than once per image
    # (the attention pass, then its zoomed crops)
    inference_ms = []
    run_backend = detector.pipeline.run

    def timed_run(batch):
        t0 = time.perf_counter_ns()
        result = run_backend(batch)
        inference_ms[-1] += (time.perf_counter_ns() - t0) / 1e6
        return result

    # one untimed call first: it pays numba's JIT compile (first run after install) and ONNX
    # Runtime's first-run allocations, which would otherwise make the mean meaningless
    detector(image)
    detector.pipeline.run = timed_run
    end_to_end = []
    for _ in range(args.runs):
        inference_ms.append(0.0)
        t0 = time.perf_counter_ns()
        detections = detector(image)
        end_to_end.append((time.perf_counter_ns() - t0) / 1e6)
    shown = detections.filter(DRAW_THRESHOLD)

    console.print("[bold]3/3 write[/] annotated image and detections")
    ok, png = cv2.imencode(".png", draw_detections(image, shown))
    if not ok:
        raise UserError("could not encode the annotated image")
    (staging / "demo_detections.png").write_bytes(png.tobytes())
    ok, png = cv2.imencode(".png", image)
    (staging / "demo_input.png").write_bytes(png.tobytes())
    names = detector.class_names
    (staging / "demo_detections.json").write_text(json_text({
        "image": "demo_input.png", "score_threshold_for_drawing": DRAW_THRESHOLD,
        "detections": [{"bbox_xyxy": [round(float(v), 2) for v in b], "score": round(float(s), 4),
                        "class": n} for b, s, n in zip(detections.boxes, detections.scores, detections.class_names)],
        "ground_truth": [{"bbox_xyxy": [float(v) for v in b], "class": names[int(c)]}
                         for b, c in zip(gt_boxes, gt_labels)],
    }, indent=1))
    detector.close()

    table = Table(title=f"detections (score >= {DRAW_THRESHOLD}) vs the scene's ground truth")
    for col in ("class", "score", "box x1,y1,x2,y2", "best IoU with a true box"):
        table.add_column(col)
    for box, score, name, cls in zip(shown.boxes, shown.scores, shown.class_names, shown.class_ids):
        ious = [box_iou(box, g) for g, c in zip(gt_boxes, gt_labels) if int(c) == int(cls)]
        table.add_row(name, f"{score:.2f}", ",".join(f"{v:.0f}" for v in box), f"{max(ious, default=0):.2f}")
    console.print(table)

    e2e, inf = np.array(end_to_end), np.array(inference_ms)
    latency = Table(title=f"latency over {len(e2e)} runs after 1 warm-up, {image.shape[1]}x{image.shape[0]} image, ONNX Runtime CPU")
    for col in ("stage", "mean ms", "median ms", "min ms"):
        latency.add_column(col, justify="right" if col != "stage" else "left")
    pre_post = e2e - inf
    for name, values in (("inference (ONNX Runtime)", inf), ("pre + post-processing", pre_post), ("end to end", e2e)):
        latency.add_row(name, f"{values.mean():.1f}", f"{np.median(values):.1f}", f"{values.min():.1f}")
    console.print(latency)
