"""``cornernet-deploy train``: train or fine-tune on a COCO-format dataset (official recipe)."""
from __future__ import annotations

from ..errors import UserError, require_torch
from ..contract.arch import ARCHS
from .common import nonnegative_int, positive_float, positive_int, seed

RESUME_NOTE = "with --resume: the interrupted run's value when not given"


def add_arguments(parser):
    parser.add_argument("--arch", choices=list(ARCHS), default=None,
                        help="architecture (default cornernet-squeeze)")
    parser.add_argument("--width", type=positive_float, help="channel multiplier, e.g. 0.125 for a tiny model")
    parser.add_argument("--stacks", type=positive_int, help="number of hourglass stacks (default: official)")
    parser.add_argument("--levels", type=positive_int, help="hourglass depth (default: official)")
    parser.add_argument("--data", help=f"COCO JSON with images/annotations/categories ({RESUME_NOTE})")
    parser.add_argument("--images", help=f"directory holding the images ({RESUME_NOTE})")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=positive_int, help="optimisation steps in total")
    length.add_argument("--epochs", type=positive_float, help="passes over the data (sets --iterations)")
    parser.add_argument("--batch-size", type=positive_int, help="images per step (default 4)")
    parser.add_argument("--lr", type=positive_float, help="Adam learning rate (default: official 2.5e-4)")
    parser.add_argument("--lr-step", type=positive_int, help="divide the lr by 10 from this iteration on")
    parser.add_argument("--input-size", metavar="HxW",
                        help="training input, HxW or one side for a square (default: the architecture's, "
                             "511 or 255); sides k*M-1 with M = output stride x 2^levels: 128 for "
                             "cornernet and cornernet-squeeze, 32 for cornernet-saccade, smaller with "
                             "fewer --levels (a 3-level squeeze: k*64-1)")
    parser.add_argument("--output", help="run folder: last.pt, config.json, train.log (messages) and "
                                         "train_log.jsonl (losses every 10 iterations) (default: "
                                         "runs/train; with --resume, the checkpoint's folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --output (otherwise refused)")
    parser.add_argument("--snapshot", type=nonnegative_int,
                        help="write last.pt every N iterations (0: only at the end; default 500)")
    parser.add_argument("--keep-snapshots", action="store_true", default=None,
                        help="also keep iter_N.pt files")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue a run from its last.pt, with its settings (give --iterations to "
                             "extend it)")
    parser.add_argument("--init", metavar="CKPT",
                        help="start from these weights (official or ours); tensors of another "
                             "shape, e.g. heat heads of another class count, stay fresh")
    parser.add_argument("--seed", type=seed, help="data and init seed (default: official 317)")
    parser.add_argument("--workers", type=nonnegative_int, default=0, help="data loader processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                        help="no crop/flip/colour: resize and normalise only")
    parser.add_argument("--border", type=nonnegative_int,
                        help="random-crop centre border in pixels (official 128 at 511 input; "
                             "default scales with the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (messages still go "
                                                                   "to the console and train.log)")


def run(args) -> int:
    if args.resume and args.init:
        raise UserError("--resume and --init exclude each other")
    if not args.resume and not (args.data and args.images):
        raise UserError("give --data (COCO JSON) and --images (their folder), or --resume a run")
    require_torch("training")
    from ..contract.arch import parse_hw
    from ..train.trainer import TrainConfig, train

    input_size = parse_hw(args.input_size) if args.input_size is not None else None

    cfg = TrainConfig(
        arch=args.arch, data=args.data, images=args.images, output=args.output, width=args.width,
        stacks=args.stacks, levels=args.levels, input_size=input_size,
        iterations=args.iterations, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        lr_step=args.lr_step, seed=args.seed, snapshot=args.snapshot,
        keep_snapshots=args.keep_snapshots, workers=args.workers, device=args.device,
        resume=args.resume, init=args.init, augment=args.augment, border=args.border,
        progress=not args.no_progress, overwrite=args.overwrite)
    result = train(cfg)
    smoothed = ", ".join(f"{k} {v:.4f}" for k, v in result["smoothed"].items())
    print(f"done: {result['iterations']} iterations; running mean (as the progress bar): {smoothed}")
    print(f"checkpoint: {result['checkpoint']}")
    return 0
