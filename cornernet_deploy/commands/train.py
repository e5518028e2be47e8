"""``cornernet-deploy train``: train or fine-tune on a COCO-format dataset (official recipe)."""
from __future__ import annotations

from ..errors import UserError

NAME = "train"
HELP = "Fine-tune a model on a COCO-format dataset"


def add_arguments(parser):
    parser.add_argument("--arch", default="cornernet-squeeze",
                        help="architecture (cornernet, cornernet-squeeze, cornernet-saccade)")
    parser.add_argument("--width", type=float, help="channel multiplier, e.g. 0.125 for a tiny model")
    parser.add_argument("--stacks", type=int, help="number of hourglass stacks (default: official)")
    parser.add_argument("--levels", type=int, help="hourglass depth (default: official)")
    parser.add_argument("--data", required=True, help="COCO JSON with images/annotations/categories")
    parser.add_argument("--images", required=True, help="directory holding the images")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, help="optimisation steps")
    length.add_argument("--epochs", type=float, help="passes over the data (sets --iterations)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2.5e-4, help="Adam learning rate (official 2.5e-4)")
    parser.add_argument("--lr-step", type=int, help="divide the lr by 10 from this iteration on")
    parser.add_argument("--input-size", type=int,
                        help="square input side, k*multiple-1 (default: the architecture's, 511/255)")
    parser.add_argument("--output", default="runs/train", help="directory for checkpoints and logs")
    parser.add_argument("--snapshot", type=int, default=500,
                        help="write last.pt every N iterations (0: only at the end)")
    parser.add_argument("--keep-snapshots", action="store_true", help="also keep iter_N.pt files")
    parser.add_argument("--resume", metavar="CKPT", help="continue a run from its last.pt")
    parser.add_argument("--init", metavar="CKPT",
                        help="start from these weights (official or ours); tensors of another "
                             "shape, e.g. heat heads of another class count, stay fresh")
    parser.add_argument("--seed", type=int, default=317, help="data and init seed (official 317)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-augment", action="store_true",
                        help="no crop/flip/colour: resize and normalise only")
    parser.add_argument("--border", type=int,
                        help="random-crop centre border in pixels (official 128 at 511 input; "
                             "default scales with the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.resume and args.init:
        raise UserError("--resume and --init exclude each other")
    if args.iterations is not None and args.iterations < 1:
        raise UserError("--iterations must be at least 1")
    if args.epochs is not None and args.epochs <= 0:
        raise UserError("--epochs must be positive")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("training needs PyTorch: pip install 'cornernet-deploy[torch]'") from None
    from ..train.trainer import TrainConfig, train

    cfg = TrainConfig(
        arch=args.arch, data=args.data, images=args.images, output=args.output, width=args.width,
        stacks=args.stacks, levels=args.levels, input_size=args.input_size,
        iterations=args.iterations, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        lr_step=args.lr_step, seed=args.seed, snapshot=args.snapshot,
        keep_snapshots=args.keep_snapshots, workers=args.workers, device=args.device,
        resume=args.resume, init=args.init, augment=not args.no_augment, border=args.border,
        progress=not args.no_progress)
    result = train(cfg)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result["losses"].items())
    print(f"done: {result['iterations']} iterations; {losses}")
    print(f"checkpoint: {result['checkpoint']}")
    return 0
