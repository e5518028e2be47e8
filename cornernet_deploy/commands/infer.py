"""``cornernet-deploy infer MODEL IMAGES...``: detections as COCO-style JSON, optional drawings.

Torch-free for .onnx and .engine models. One run's output is one whole: the results are put
together in a hidden folder next to ``--output`` and moved into place in one rename at the end.
A bad image stops the run with a one-line error and leaves nothing behind (``--skip-unreadable``:
files that cannot be decoded are skipped with a note and listed in ``skipped.json`` instead); an
``--output`` that holds anything is refused unless ``--overwrite`` is given and it holds an earlier
run's results.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..fileio import (atomic_dir, check_not_input, check_output_dir, json_text, name_max, swap_lock,
                      truncate_name)
from .common import add_device_arguments, backend_options, model_inputs, nonnegative_int, plural, positive_int, score

RESULT_FILES = ("detections.json", "images.json")
SKIPPED_FILE = "skipped.json"   # only with --skip-unreadable, when something was skipped


def add_arguments(parser):
    from ..runtime.preprocess import DEFAULT_MAX_PIXELS
    from ..runtime.visualize import DRAW_SCORE_THRESHOLD

    parser.add_argument("model", help=".onnx from `export`, TensorRT .engine from `build`, OpenVINO "
                                      ".xml, or a checkpoint .pt/.pth/.pkl (runs the PyTorch model; "
                                      "needs torch)")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns (hidden "
                                                  "files and subfolders of a folder are skipped)")
    parser.add_argument("--output", default="detections",
                        help="output folder, new or empty (default: ./detections)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier infer run in --output")
    parser.add_argument("--recursive", action="store_true", help="also take the images of subfolders")
    parser.add_argument("--score-threshold", "--min-score", dest="score_threshold", type=score,
                        default=0.0, metavar="SCORE",
                        help="keep detections from this score up in the JSON (default 0: all, as the "
                             "official test)")
    parser.add_argument("--max-pixels", type=nonnegative_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"refuse images of more pixels, from their header before decoding "
                             f"(default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="skip (with a note, listed in skipped.json) images that cannot be read "
                             "or decoded, instead of stopping the run")
    parser.add_argument("--save-vis", action="store_true", help="also write images with labelled boxes")
    parser.add_argument("--vis-score-threshold", type=score, default=DRAW_SCORE_THRESHOLD,
                        metavar="SCORE",
                        help=f"draw detections from this score up (default {DRAW_SCORE_THRESHOLD}, as "
                             f"`demo`; the JSON keeps --score-threshold)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="force flip test-time augmentation")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="disable flip test-time augmentation")
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=positive_int, default=1,
                        metavar="N", help="images per backend call (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arguments(parser)


def _drawings_of_a_run(folder: Path):
    """The drawings an earlier run's ``images.json`` lists, or None when it is not one."""
    if not all((folder / name).is_file() for name in RESULT_FILES):
        return None
    try:
        records = json.loads((folder / "images.json").read_text())
        return {r["drawing"] for r in records if "drawing" in r}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def check_replaceable(folder: Path) -> None:
    """Refuse (UserError) to replace ``folder`` unless it holds exactly what an infer run writes:
    the two JSON files and the drawings its images.json lists (``--overwrite`` must never remove
    a user's photos)."""
    drawings = _drawings_of_a_run(folder)
    ours = set(RESULT_FILES) | {SKIPPED_FILE} | (drawings or set())
    foreign = sorted(p.name for p in folder.iterdir() if drawings is None or p.name not in ours
                     or not p.is_file())
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise UserError(f"--output {folder}: holds files that are not an infer run's results "
                        f"({shown}); --overwrite replaces only an earlier run's results, give a "
                        f"new folder")


def check_output(folder: Path, overwrite: bool) -> None:
    check_output_dir(folder, "--output", whole=True)
    with swap_lock(folder):                   # never look while another run swaps it
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise UserError(f"--output {folder}: folder is not empty; pass --overwrite to replace "
                                f"an earlier run's results, or give a new folder")
            check_replaceable(folder)


def drawing_name(image_id: int, path: Path, name_limit: int) -> str:
    """The file name of an image's drawing: unique by the image's id, recognisable by its own
    name, which is cut to fit ``name_limit`` bytes (the output filesystem's)."""
    head, tail = f"{image_id:06d}_", ".png"
    return head + truncate_name(path.stem, name_limit - len(head) - len(tail)) + tail


def detect(detector, paths, images, flip):
    """``detector.batch(images)``; an image that cannot be run is named in the error (the batch
    is run image by image to find it: ``Detector.batch_groups``)."""
    from ..runtime.preprocess import out_of_memory

    found = detector.batch_groups([[image] for image in images], flip=flip)
    for path, image, result in zip(paths, images, found):
        if isinstance(result, UserError):
            raise UserError(f"{path}: {result}") from None
        if isinstance(result, MemoryError):
            raise out_of_memory(str(path), image.shape[:2]) from None
        if isinstance(result, Exception):
            raise result
    return [dets for group in found for dets in group]


def run(args) -> int:
    import cv2
    from tqdm import tqdm

    from ..runtime.detector import Detector
    from ..runtime.images import collect_images, read_image
    from ..runtime.preprocess import ImageTooLarge
    from ..runtime.visualize import draw_detections

    def note(message):
        tqdm.write(f"note: {message}", file=sys.stderr)

    out_dir = Path(args.output)
    check_output_dir(out_dir, "--output", whole=True)
    paths = collect_images(args.images, recursive=args.recursive, note=note)
    check_not_input(out_dir, model_inputs([args.model]) + [("the input image", p) for p in paths],
                    "--output", whole_folder=True)
    check_output(out_dir, args.overwrite)
    name_limit = name_max(out_dir)             # of the drawings' names, known before the work
    detector = Detector.load(args.model, **backend_options(args))
    results, per_image, skipped = [], [], []
    start = time.perf_counter()
    may_replace = check_replaceable if args.overwrite else None
    with atomic_dir(out_dir, may_replace, "--output") as staging:
        # a context, so that a stopped run ends the bar's line before the error is printed
        with tqdm(total=len(paths), unit="img", disable=args.no_progress, desc="infer") as bar:
            for i in range(0, len(paths), args.batch_size):
                batch_paths = paths[i:i + args.batch_size]
                chunk, images = [], []
                for p in batch_paths:
                    try:
                        images.append(read_image(p, note, args.max_pixels))
                        chunk.append(p)
                    except UserError as exc:
                        if not args.skip_unreadable:
                            hint = ("--max-pixels raises the limit, " if isinstance(exc, ImageTooLarge)
                                    else "")
                            raise UserError(f"{exc}; {hint}--skip-unreadable goes on without it") from None
                        note(f"skipped {exc}")
                        skipped.append({"file_name": str(p), "reason": str(exc)})
                detections = detect(detector, chunk, images, args.flip) if chunk else []
                for p, image, dets in zip(chunk, images, detections):
                    image_id = len(per_image) + 1
                    dets = dets.filter(args.score_threshold)
                    for entry, name in zip(dets.to_coco(image_id, detector.category_ids, decimals=None),
                                           dets.class_names):
                        results.append({**entry, "file_name": str(p), "category_name": name})
                    record = {"id": image_id, "file_name": str(p), "width": image.shape[1],
                              "height": image.shape[0], "detections": len(dets)}
                    if args.save_vis:
                        record["drawing"] = drawing_name(image_id, p, name_limit)
                        ok, buf = cv2.imencode(".png", draw_detections(image, dets, args.vis_score_threshold))
                        if not ok:
                            raise UserError(f"could not encode the drawing of {p}")
                        (staging / record["drawing"]).write_bytes(buf.tobytes())
                    per_image.append(record)
                bar.update(len(batch_paths))
        if not per_image:
            raise UserError(f"no image could be read ({plural(len(paths), 'file')} tried)")
        if skipped:
            (staging / SKIPPED_FILE).write_text(json_text(skipped, indent=1))
        (staging / "images.json").write_text(json_text(per_image, indent=1))
        (staging / "detections.json").write_text(json_text(results))
    seconds = time.perf_counter() - start
    print(f"{plural(len(per_image), 'image')}, {plural(len(results), 'detection')} in {seconds:.2f} s "
          f"({len(per_image) / seconds:.1f} img/s) -> {out_dir / 'detections.json'}")
    if skipped:
        print(f"skipped {plural(len(skipped), 'unreadable image')}: listed in {out_dir / SKIPPED_FILE}")
    return 0
