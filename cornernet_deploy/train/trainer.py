"""Training loop: official sampler + loss + Adam, with atomic checkpoints and exact resume.

Data order and augmentation are a pure function of ``(seed, iteration)``: image slot ``s`` of
iteration ``i`` is position ``p = i * batch + s`` of epoch ``p // n`` in the permutation
``default_rng((seed, epoch))``, augmented with ``default_rng((seed, i, s))``. A resumed run
therefore continues with exactly the batches the uninterrupted run would have seen, whatever the
number of loader workers.

Checkpoints use the loader's format (``cornernet_deploy.models.checkpoint``):
``{"format": "cornernet_deploy", "arch": name, "spec": {...}, "state_dict": {...}}`` plus
``iteration``, ``optimizer`` (Adam state dict), ``train`` (the run's settings), ``torch_rng``,
``losses`` (the last batch's) and ``smoothed`` (their running means, continued on resume):
tensors, dicts, lists, strings and numbers only, so ``torch.load(..., weights_only=True)`` reads
them. One run at a time uses a run folder (``LOCK_FILE``, ``fileio.exclusive_folder``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..contract.arch import spec_from_dict
from ..errors import UserError
from ..fileio import exclusive_folder, write_errors_named, write_text_atomic
from ..runtime.families import family_of
from .augment import AugmentConfig
from .dataset import CocoDataset
from .losses import collate_targets, targets_to

OFFICIAL_LR = 2.5e-4
OFFICIAL_SEED = 317


@dataclass
class TrainConfig:
    """Settings of one run. ``None`` means "not given": on ``resume`` the interrupted run's value
    (its ``config.json``, kept in the checkpoint), else ``DEFAULTS``. See ``resolve_config``."""

    arch: str | None = None             # default cornernet-squeeze
    data: str | None = None             # COCO JSON
    images: str | None = None           # image directory
    output: str | None = None           # default runs/train, or the resumed checkpoint's folder
    width: float | None = None          # channel multiplier (ArchSpec.scaled)
    stacks: int | None = None
    levels: int | None = None
    input_size: int | tuple | None = None  # training input H or (H, W), sides k * size_multiple - 1
    iterations: int | None = None
    epochs: float | None = None
    batch_size: int | None = None       # default 4
    lr: float | None = None             # default OFFICIAL_LR
    lr_step: int | None = None          # divide the lr by 10 from this iteration on
    seed: int | None = None             # default OFFICIAL_SEED
    snapshot: int | None = None         # checkpoint every this many iterations (0: only at the end)
    keep_snapshots: bool | None = None  # also keep iter_XXXXXXX.pt besides last.pt
    workers: int = 0                    # this machine's: never taken from the resumed run
    device: str = "auto"
    resume: str | None = None
    init: str | None = None
    augment: bool | None = None         # default True
    border: int | None = None           # crop border (official 128); default scales with input
    log_every: int = 10
    progress: bool = True
    overwrite: bool = False             # replace the run files already in ``output``
    extra: dict = field(default_factory=dict)  # further ArchSpec overrides


DEFAULTS = dict(arch="cornernet-squeeze", batch_size=4, lr=OFFICIAL_LR, seed=OFFICIAL_SEED,
                snapshot=500, keep_snapshots=False, augment=True)
# what a resumed run takes from the interrupted one when not given (the rest is this machine's)
RESUMED = ("arch", "data", "images", "width", "stacks", "levels", "input_size", "iterations",
           "epochs", "batch_size", "lr", "lr_step", "seed", "snapshot", "keep_snapshots", "augment",
           "border", "extra")
# what defines the network or the data stream: a resumed run cannot change it
FIXED_ON_RESUME = ("arch", "width", "stacks", "levels", "input_size", "seed")
# the files a run writes into its folder (``--overwrite`` removes exactly these)
RUN_FILES = ("last.pt", "config.json", "train_log.jsonl", "train.log")
# held (flock) by the run using the folder; it records that run's pid
LOCK_FILE = ".train.lock"


def _same(name: str, a, b) -> bool:
    if name == "input_size":
        return _hw(a) == _hw(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _hw(size):
    """``127`` or ``(127, 255)`` -> ``(H, W)``; anything else unchanged."""
    if isinstance(size, bool) or size is None:
        return size
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return size


def resolve_config(cfg: TrainConfig, saved: dict | None) -> TrainConfig:
    """Fill every setting left at None: from the resumed run's ``saved`` settings, then from
    ``DEFAULTS``. A resumed run may extend ``iterations`` or change the lr and data paths, but not
    the network or the data order (``FIXED_ON_RESUME``)."""
    cfg = dataclasses.replace(cfg)
    if saved is not None:
        for name in FIXED_ON_RESUME:
            given, before = getattr(cfg, name), saved.get(name)
            if given is not None and before is not None and not _same(name, given, before):
                raise UserError(f"--resume: the run was started with --{name.replace('_', '-')} "
                                f"{_show(before)}; drop --{name.replace('_', '-')} {_show(given)} "
                                "(a resumed run keeps its network and data order) or start a new run")
        length_given = cfg.iterations is not None or cfg.epochs is not None
        for name in RESUMED:
            if name in ("iterations", "epochs") and length_given:
                continue                    # a new length replaces the old one, in either unit
            if name in saved and getattr(cfg, name) in (None, {}):
                setattr(cfg, name, saved[name])
    for name, value in DEFAULTS.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    cfg.input_size = _hw(cfg.input_size)
    return cfg


def _show(value) -> str:
    hw = _hw(value)
    if isinstance(hw, tuple):
        return f"{hw[0]}x{hw[1]}"
    return str(value)


def _run_files(out: Path) -> list:
    """The names of the run files in ``out`` (``RUN_FILES`` and kept snapshots)."""
    present = [name for name in RUN_FILES if (out / name).exists()]
    return present + (sorted(p.name for p in out.glob("iter_*.pt")) if out.is_dir() else [])


def check_output(cfg: TrainConfig) -> Path:
    """Before any work: the run folder can be written, and no file the run writes or removes
    there is one of its inputs (``--init`` or ``--data``; ``--resume`` reads its checkpoint
    before it is replaced)."""
    from ..fileio import check_not_input, check_output_dir
    out = check_output_dir(cfg.output, "--output")
    inputs = [("--init", cfg.init), ("--data", cfg.data)]
    for name in sorted(set(RUN_FILES) | set(_run_files(out))):
        check_not_input(out / name, inputs, "--output",
                        label=f"--output {out}: the run writes or removes its {name}, which")
    return out


def prepare_output(cfg: TrainConfig, out: Path) -> Path:
    """The run folder (held by this run, ``fileio.exclusive_folder``): a folder that already
    holds a run is continued only by ``--resume`` of its own checkpoint, replaced only with
    ``--overwrite``."""
    present = _run_files(out)
    if not present:
        return out
    resuming_here = cfg.resume is not None and Path(cfg.resume).resolve().parent == out.resolve()
    if resuming_here:
        return out
    if not cfg.overwrite:
        last = out / "last.pt"
        if last.exists():
            raise UserError(
                f"--output {out} already holds a run (last.pt of iteration {_iteration_of(last)}): "
                f"continue it with --resume {last}, keep it and give another --output, or replace "
                "it with --overwrite")
        # killed or stopped (a full disk) before its first checkpoint: nothing to resume
        raise UserError(
            f"--output {out} holds a run that saved no checkpoint ({', '.join(present)}: it was "
            "stopped before its first snapshot), so it cannot be resumed: start it again with "
            "--overwrite, or give another --output")
    for name in present:
        (out / name).unlink()
    return out


def _iteration_of(path: Path) -> str:
    try:
        return str(int(torch.load(path, map_location="cpu", weights_only=True).get("iteration", 0)))
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


# --------------------------------------------------------------------------- samples
class TrainSamples(torch.utils.data.Dataset):
    """``samples[(index, iteration, slot)]`` -> (image CHW float32, targets dict of numpy)."""

    def __init__(self, coco: CocoDataset, spec, input_hw, seed: int, augment: bool = True,
                 border: int = 128):
        self.coco = coco
        self.spec = spec
        self.input_hw = tuple(int(s) for s in input_hw)
        self.output_hw = spec.output_size(self.input_hw)
        self.seed = int(seed)
        self.augment = augment
        self.aug_cfg = AugmentConfig(input_size=self.input_hw, border=border)
        self.recipe = family_of(spec).training()

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, key):
        index, iteration, slot = key
        rng = np.random.default_rng((self.seed, int(iteration), int(slot)))
        image = self.coco.load_image(index)
        rec = self.coco.records[index]
        image, targets = self.recipe.sample(image, rec.boxes, rec.labels, rng, self.aug_cfg, self.spec,
                                            self.input_hw, self.output_hw, train=self.augment)
        return np.ascontiguousarray(image.transpose(2, 0, 1)), targets


class IterationSampler(torch.utils.data.Sampler):
    """Batches of ``(index, iteration, slot)`` keys for iterations ``start .. stop - 1``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int):
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self._perm_epoch, self._perm = None, None

    def _order(self, epoch):
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng((self.seed, epoch)).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def batch(self, iteration: int) -> list:
        keys = []
        for slot in range(self.batch_size):
            p = iteration * self.batch_size + slot
            keys.append((int(self._order(p // self.n)[p % self.n]), iteration, slot))
        return keys

    def __iter__(self):
        for it in range(self.start, self.stop):
            yield self.batch(it)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def collate(items):
    images = torch.from_numpy(np.stack([im for im, _ in items]))
    return images, collate_targets([t for _, t in items])


# --------------------------------------------------------------------------- model/spec
def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"bad --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    return device


def build_train_spec(cfg: TrainConfig, coco: CocoDataset):
    from ..models import build_spec
    overrides = dict(cfg.extra or {})
    if cfg.stacks is not None:
        overrides["stacks"] = cfg.stacks
    if cfg.levels is not None:
        overrides["levels"] = cfg.levels
    try:
        spec = build_spec(cfg.arch, num_classes=coco.num_classes, width=cfg.width, **overrides)
        spec = spec.replace(class_names=coco.class_names, category_ids=coco.category_ids)
        if cfg.input_size is not None:
            hw = _hw(cfg.input_size)
            spec.check_input_size(hw)
            spec = spec.replace(input_size=hw)
        else:
            spec.check_input_size(spec.input_size)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    return spec


def load_matching_weights(model, path) -> tuple[int, list]:
    """Initialise from a checkpoint (official or ours): every tensor whose name and shape match.

    Returns ``(loaded, skipped_names)``; raises UserError if less than half of the model's
    tensors match (wrong architecture). Heat heads of another class count are skipped, which is
    what fine-tuning a COCO model on a new dataset needs.
    """
    from ..models.checkpoint import read_checkpoint, unwrap_state_dict
    state, _ = unwrap_state_dict(read_checkpoint(path))
    own = model.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = sorted(k for k in own if k not in loadable and not k.endswith("num_batches_tracked"))
    counted = [k for k in own if not k.endswith("num_batches_tracked")]
    if len([k for k in loadable if not k.endswith("num_batches_tracked")]) < len(counted) / 2:
        raise UserError(f"--init {path}: only {len(loadable)} of {len(counted)} tensors fit "
                        f"architecture '{model.spec.name}' (wrong --arch/--width?)")
    own.update(loadable)
    model.load_state_dict(own)
    return len(loadable), skipped


def _config_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d))  # plain types only (weights_only-safe)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM that arrive inside the block take effect when it ends, so an optimizer
    step is never half applied when the run is interrupted (and the checkpoint saved)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append((signum, frame)))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signum, frame = pending[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def append_line(path: Path, line: str) -> None:
    """Append one line to a log of the run (a full disk is one line naming the file)."""
    with write_errors_named(path, "the run stopped (last.pt holds its last snapshot, if any)"), \
            open(path, "a") as f:
        f.write(line + "\n")


class RunLog:
    """Messages to the console and to ``train.log`` in the run folder (appended, timestamped)."""

    def __init__(self, echo, path: Path | None = None):
        self.echo, self.path = echo, path

    def __call__(self, message: str) -> None:
        if self.echo:
            self.echo(message)
        if self.path is not None:
            append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")


def save_training_checkpoint(path, model, optimizer, iteration: int, cfg: TrainConfig,
                             losses: dict | None = None, smoothed: dict | None = None) -> None:
    """``losses``: the last batch's; ``smoothed``: their running means, which a resumed run
    continues (the progress bar and the final line show them)."""
    from ..models.checkpoint import save_checkpoint
    save_checkpoint(model, path, iteration=int(iteration), optimizer=optimizer.state_dict(),
                    train=_config_dict(cfg), torch_rng=torch.get_rng_state(),
                    losses={k: float(v) for k, v in (losses or {}).items()},
                    smoothed={k: float(v) for k, v in (smoothed or {}).items()})


def _lr_at(cfg: TrainConfig, iteration: int) -> float:
    if cfg.lr_step is not None and iteration >= cfg.lr_step:
        return cfg.lr / 10
    return cfg.lr


# --------------------------------------------------------------------------- training
def _settle_request(cfg: TrainConfig):
    """``(cfg, resume checkpoint or None)``: the run's settings resolved (a resumed run keeps its
    own, ``resolve_config``) and checked before any work."""
    from ..models.checkpoint import read_checkpoint

    if cfg.resume and cfg.init:
        raise UserError("--resume and --init exclude each other")
    resume_obj = saved = None
    if cfg.resume:
        resume_obj = read_checkpoint(cfg.resume)
        if "iteration" not in resume_obj or "optimizer" not in resume_obj:
            raise UserError(f"--resume {cfg.resume}: not a training checkpoint (no iteration/"
                            "optimizer state); use --init to start from its weights")
        saved = dict(resume_obj.get("train") or {})
        if cfg.output is None:
            cfg = dataclasses.replace(cfg, output=str(Path(cfg.resume).parent))
    if cfg.output is None:
        cfg = dataclasses.replace(cfg, output="runs/train")
    cfg = resolve_config(cfg, saved)
    if cfg.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if cfg.lr <= 0:
        raise UserError("--lr must be positive")
    if not cfg.data or not cfg.images:
        raise UserError("give --data (COCO JSON) and --images (their folder)")
    if cfg.iterations is None and cfg.epochs is None:
        raise UserError("give --iterations or --epochs")
    return cfg, resume_obj


def _dataset_and_spec(cfg: TrainConfig, resume_obj):
    """The dataset (every image checked) and the network's spec (a resumed run's own)."""
    coco = CocoDataset(cfg.data, cfg.images, category_ids=None)
    coco.check_images()
    if resume_obj is not None and resume_obj.get("spec"):
        spec = spec_from_dict(resume_obj["spec"])
        if tuple(spec.category_ids) != tuple(coco.category_ids):
            raise UserError(f"--resume {cfg.resume}: trained on categories {list(spec.category_ids)}"
                            f", but {cfg.data} has {list(coco.category_ids)}")
    else:
        spec = build_train_spec(cfg, coco)
    return coco, spec


def _restore(cfg: TrainConfig, model, optimizer, resume_obj, log) -> int:
    """Weights (and optimizer and RNG state for --resume) of the start; the first iteration."""
    from ..models.checkpoint import load_state_dict_strict, unwrap_state_dict

    if resume_obj is not None:
        state, _ = unwrap_state_dict(resume_obj)
        load_state_dict_strict(model, state, source=str(cfg.resume))
        try:
            optimizer.load_state_dict(resume_obj["optimizer"])
        except (ValueError, KeyError) as exc:
            raise UserError(f"--resume {cfg.resume}: optimizer state does not fit ({exc})") from None
        if "torch_rng" in resume_obj:
            torch.set_rng_state(resume_obj["torch_rng"])
        log(f"resumed from {cfg.resume} at iteration {int(resume_obj['iteration'])}")
        return int(resume_obj["iteration"])
    if cfg.init:
        loaded, skipped = load_matching_weights(model, cfg.init)
        log(f"initialised {loaded} tensors from {cfg.init}"
            + (f"; {len(skipped)} kept fresh (e.g. {skipped[0]})" if skipped else ""))
    return 0


def _run_iterations(cfg: TrainConfig, model, optimizer, criterion, loader, device, out_dir: Path,
                    start: int, total: int, log, smoothed: dict) -> tuple:
    """The loop from ``start`` to ``total``: step, log, snapshot; Ctrl-C/SIGTERM saves
    ``last.pt`` at the last completed iteration and re-raises. ``smoothed``: the running means
    to continue (a resumed run's). Returns (iteration, losses, smoothed)."""
    model.train()
    last_path = out_dir / "last.pt"
    smoothed = dict(smoothed)
    log_path = out_dir / "train_log.jsonl"
    bar = None
    if cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True)
    t0 = time.time()
    iteration = start
    losses = {}

    def log_line():
        append_line(log_path, json.dumps({"iteration": iteration, "lr": _lr_at(cfg, iteration - 1),
                                          "time": round(time.time() - t0, 2), **losses,
                                          **{f"smoothed_{k}": v for k, v in smoothed.items()}}))

    try:
        for images, targets in loader:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, iteration)
            images = images.to(device, non_blocking=True)
            targets = targets_to(targets, device)
            outputs = model(images)
            loss, terms = criterion(outputs, targets)
            if not torch.isfinite(loss):
                raise UserError(f"loss became {loss.item()} at iteration {iteration} "
                                "(try a lower --lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with signals_deferred():   # the step and its count are one unit for an interrupt
                optimizer.step()
                iteration += 1
            losses = {"loss": float(loss.detach()), **{k: float(v) for k, v in terms.items()}}
            for k, v in losses.items():
                smoothed[k] = 0.9 * smoothed.get(k, v) + 0.1 * v
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in smoothed.items()}, refresh=False)
            if (cfg.log_every and iteration % cfg.log_every == 0) or iteration == total:
                log_line()
            if cfg.snapshot and iteration % cfg.snapshot == 0 and iteration < total:
                save_training_checkpoint(last_path, model, optimizer, iteration, cfg, losses, smoothed)
                if cfg.keep_snapshots:
                    save_training_checkpoint(out_dir / f"iter_{iteration:07d}.pt", model,
                                             optimizer, iteration, cfg, losses, smoothed)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        if iteration > start:
            if cfg.log_every and iteration % cfg.log_every:
                log_line()
            with signals_deferred():   # a second Ctrl-C does not cut the save short
                save_training_checkpoint(last_path, model, optimizer, iteration, cfg, losses, smoothed)
            log(f"interrupted: saved {last_path} at iteration {iteration}; continue with "
                f"cornernet-deploy train --resume {last_path}")
        else:
            log("interrupted before the first iteration completed: nothing saved")
        raise
    finally:
        if bar is not None:
            bar.close()
    return iteration, losses, smoothed


def train(cfg: TrainConfig, log=print) -> dict:
    """Train per ``cfg``; returns ``{"checkpoint", "iterations", "losses", "smoothed", "spec"}``
    (``losses``: the last batch's; ``smoothed``: the running means the progress bar shows).

    Ctrl-C or SIGTERM saves ``last.pt`` at the last completed iteration (resume exactly from it),
    then raises ``KeyboardInterrupt`` as usual. The steps: ``_settle_request``, the run folder
    (``check_output``, held alone by this process, ``prepare_output``), ``_dataset_and_spec``, the model and ``_restore``, the data stream and the family's recipe
    (``runtime.families``: augmentation, targets, loss), ``_run_iterations``, the last checkpoint."""
    cfg, resume_obj = _settle_request(cfg)
    out = check_output(cfg)
    # one run at a time in a folder: a second one would interleave the logs and race for last.pt
    with exclusive_folder(out, LOCK_FILE, "--output", "training run"):
        return _train_in(cfg, resume_obj, prepare_output(cfg, out), log)


def _train_in(cfg: TrainConfig, resume_obj, out_dir: Path, log) -> dict:
    """``train`` in its run folder, held by this process."""
    from ..models import build_model

    coco, spec = _dataset_and_spec(cfg, resume_obj)
    input_hw = tuple(spec.input_size)
    n = len(coco)
    total = int(cfg.iterations) if cfg.iterations is not None else \
        max(1, math.ceil(float(cfg.epochs) * n / cfg.batch_size))

    device = _pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(spec).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    log = RunLog(log, out_dir / "train.log")
    start = _restore(cfg, model, optimizer, resume_obj, log)
    if resume_obj is None and not cfg.init:
        log(f"training {spec.summary} at {input_hw[0]}x{input_hw[1]} on {n} images of {cfg.data}")
    # the running means go on from where the resumed run left them (checkpoints of an earlier
    # version have none: they start again from the first loss)
    smoothed = dict((resume_obj or {}).get("smoothed") or {})
    if start >= total:
        log(f"nothing to do: the checkpoint is at iteration {start} >= {total}")
        losses = dict(resume_obj.get("losses") or {})
        return {"checkpoint": str(cfg.resume), "iterations": start, "losses": losses,
                "smoothed": smoothed or losses, "spec": spec}
    write_text_atomic(out_dir / "config.json", json.dumps(_config_dict(cfg), indent=1))
    border = cfg.border if cfg.border is not None else min(128, max(input_hw) // 4 + 1)
    samples = TrainSamples(coco, spec, input_hw, cfg.seed, augment=cfg.augment, border=border)
    sampler = IterationSampler(n, cfg.batch_size, cfg.seed, start, total)
    loader = torch.utils.data.DataLoader(samples, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.workers, persistent_workers=False)
    criterion = family_of(spec).training().loss(spec)
    iteration, losses, smoothed = _run_iterations(cfg, model, optimizer, criterion, loader, device,
                                                  out_dir, start, total, log, smoothed)
    last_path = out_dir / "last.pt"
    save_training_checkpoint(last_path, model, optimizer, iteration, cfg, losses, smoothed)
    log(f"saved {last_path} (iteration {iteration})")
    return {"checkpoint": str(last_path), "iterations": iteration, "losses": losses,
            "smoothed": dict(smoothed), "spec": spec}
