#!/usr/bin/env python
"""Train the demo model: a tiny CornerNet-Squeeze on the synthetic shapes dataset, then evaluate it.

Steps (each skipped when its output already exists, so the script can be re-run / resumed):
1. generate ``train`` and ``val`` shapes datasets (PNG + COCO JSON) under ``--out``;
2. train with the official sampler, augmentation and loss and Adam at 1e-3, divided by 10 for the
   last 10 % of the iterations (what the bundled model was trained with, as the ``recipe`` in its
   checkpoint records; the official 2.5e-4 is for the full-size model), via
   ``cornernet_deploy.train.trainer`` -> ``--out/run/last.pt`` (resumes from it if present);
3. evaluate the checkpoint on ``val`` through the torch-free runtime pipeline (official test-time
   decode and soft-NMS) with pycocotools -> ``--out/metrics.json``.

Examples:
    python scripts/train_demo_model.py --quick                 # minutes on a CPU: a sanity check
    python scripts/train_demo_model.py --bundle cornernet_deploy/assets/demo_squeeze_shapes.pt
                                                               # the bundled demo model (~20-40 min CPU)
    python scripts/train_demo_model.py --eval-only runs/demo_model/run/last.pt
    python scripts/train_demo_model.py --data-only val          # only the 200 held-out scenes (seconds)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cornernet_deploy.data import generate_shapes_dataset  # noqa: E402
from cornernet_deploy.fileio import write_text_atomic  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo_model", help="working directory")
    p.add_argument("--num-train", type=int, default=4000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--image-size", type=int, nargs=2, default=(128, 256), metavar=("MIN", "MAX"),
                   help="scene sides are drawn in [MIN, MAX]")
    p.add_argument("--data-seed", type=int, default=2024)
    p.add_argument("--arch", default="cornernet-squeeze")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--stacks", type=int, default=1)
    p.add_argument("--input-size", type=int, default=127)
    p.add_argument("--iterations", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam lr (official 2.5e-4 is for the full-size model; the tiny one trains faster at 1e-3)")
    p.add_argument("--lr-step", type=int, help="lr / 10 from here (default: at 90%% of the run)")
    p.add_argument("--snapshot", type=int, default=500)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=317)
    p.add_argument("--eval-only", metavar="CKPT", help="only evaluate this checkpoint on val")
    p.add_argument("--data-only", nargs="?", const="all", choices=("train", "val", "all"),
                   help="only generate the dataset(s) under --out/data and stop (val: the held-out "
                        "split `cornernet-deploy eval` measures the bundled model on)")
    p.add_argument("--quick", action="store_true",
                   help="tiny everything (64/16 images, 150 iterations, width 0.125): a smoke run")
    p.add_argument("--bundle", metavar="PATH",
                   help="also write the weights (no optimizer) here, e.g. cornernet_deploy/assets/demo_squeeze_shapes.pt")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val = 64, 16
        args.iterations, args.batch_size, args.width, args.levels = 150, 8, 0.125, 2
        args.snapshot = 50
    if args.lr_step is None:
        args.lr_step = int(args.iterations * 0.9)
    return args


def make_data(out: Path, args, splits=("train", "val")):
    sets = {}
    for name, n, seed in (("train", args.num_train, args.data_seed),
                          ("val", args.num_val, args.data_seed + 1)):
        if name not in splits:
            continue
        root = out / "data" / name
        ann = root / "annotations.json"
        if ann.exists() and len(json.loads(ann.read_text())["images"]) == n:
            print(f"[data] {name}: reusing {ann}")
        else:
            t0 = time.time()
            generate_shapes_dataset(root, n, seed=seed, image_size=(tuple(args.image_size),),
                                    num_objects=(1, 5))
            print(f"[data] {name}: {n} images in {time.time() - t0:.1f}s -> {ann}")
        sets[name] = (ann, root / "images")
    return sets


def train(out: Path, sets, args) -> Path:
    from cornernet_deploy.train.trainer import TrainConfig, train as run_training
    run_dir = out / "run"
    last = run_dir / "last.pt"
    ann, images = sets["train"]
    cfg = TrainConfig(arch=args.arch, data=str(ann), images=str(images), output=str(run_dir),
                      width=args.width, levels=args.levels, stacks=args.stacks,
                      input_size=args.input_size, iterations=args.iterations,
                      batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step,
                      seed=args.seed, snapshot=args.snapshot, workers=args.workers,
                      device=args.device, resume=str(last) if last.exists() else None,
                      # no last.pt yet: whatever an earlier attempt left (logs) is restarted
                      overwrite=not last.exists(), progress=not args.no_progress)
    t0 = time.time()
    result = run_training(cfg)
    print(f"[train] {result['iterations']} iterations in {time.time() - t0:.0f}s; "
          f"last losses {result['losses']}")
    return Path(result["checkpoint"])


def evaluate(ckpt: Path, sets, out: Path, device: str = "auto") -> dict:
    """COCO bbox mAP of ``ckpt`` on val through the runtime pipeline (official decode + soft-NMS),
    with the PyTorch backend: the same code path as ``cornernet-deploy eval``."""
    import torch

    from cornernet_deploy.evaluation import evaluate as coco_evaluate
    from cornernet_deploy.runtime.backends.pytorch import PyTorchBackend
    from cornernet_deploy.runtime.detector import Detector

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ann, images = sets["val"]
    t0 = time.time()
    metrics = coco_evaluate(Detector(PyTorchBackend(ckpt, device=device)), ann, images, progress=False)
    print(metrics.pop("summary"), end="")
    metrics = {"checkpoint": str(ckpt), "seconds": round(time.time() - t0, 1),
               **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    print(f"[eval] AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  "
          f"({metrics['images']} images, {metrics['seconds']:.1f}s) -> {out / 'metrics.json'}")
    return metrics


def bundle(ckpt: Path, dest: Path, metrics: dict, args) -> None:
    """Weights only (no optimizer state), with how they were made and how good they are."""
    from cornernet_deploy.models import build_model, load_checkpoint, save_checkpoint
    from cornernet_deploy.models.checkpoint import spec_from_checkpoint

    model = build_model(spec_from_checkpoint(ckpt))
    meta = load_checkpoint(model, ckpt)
    recipe = {k: v for k, v in vars(args).items() if k not in ("bundle", "eval_only", "no_progress")}
    save_checkpoint(model, dest, iteration=int(meta.get("iteration", 0)), recipe=recipe,
                    val_metrics={k: metrics[k] for k in ("AP", "AP50", "AP75", "images")})
    print(f"[bundle] {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data_only:
        make_data(out, args, ("train", "val") if args.data_only == "all" else (args.data_only,))
        return 0
    sets = make_data(out, args, ("val",) if args.eval_only else ("train", "val"))
    ckpt = Path(args.eval_only) if args.eval_only else train(out, sets, args)
    metrics = evaluate(ckpt, sets, out, args.device)
    if args.bundle:
        bundle(ckpt, Path(args.bundle), metrics, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
