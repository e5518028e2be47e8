"""Compare two models on the same images: raw-head differences and detection agreement.

Models: any two of a PyTorch checkpoint (or an architecture name: seeded random weights), an
ONNX file (ONNX Runtime on any provider) and a TensorRT engine, opened with
``runtime.backends.open_backend``. Model A is the reference.

**Raw heads** (both models must output them, i.e. ``--decode none`` exports; a graph-decode model
outputs top-K corners instead, and then only detections are compared), and **detections** (each
model's full test pipeline, ``CornerNetPipeline``: pre-processing, decode, flip test as the
architecture's official setting, soft-NMS, per-image limit; the attention/zoom passes for
Saccade): their statistics, the matching and the agreement are defined once, in
``contract.agreement``, and judged with its tolerance profiles.

**Inputs**: by default both models get the same pre-processed input (a fixed-size model's canvas,
else each image padded at scale 1), so that heads can be compared element by element. With
``native=True`` each model gets its own pre-processing (a fixed-size model resizes the image into
its canvas, a dynamic-size one pads it at scale 1, as the official test does): the detections then
show what an export's fixed input size costs; heads are compared only where both inputs have the
same size.

**Near-ties.** The test pipeline makes order decisions (the top-K corners, the per-image limit,
soft-NMS's order, Saccade's zoom order): two candidates whose scores differ in the 6th digit can be
ranked either way by two faithful backends, and the detections then differ although the networks
agree. Two rules keep such flips from failing a comparison:

* *swaps*: an unmatched A detection and an unmatched B detection of the same class whose scores
  differ by at most the profile's ``score_atol`` are one candidate ranked on either side of a cut;
  they count as a swap, not as missed + extra;
* *tie flips*: on an image whose raw heads agree within the FP32 allowance (summation order only,
  whatever the profile), both sides ran the same code on inputs that are equal to rounding, so
  every remaining detection difference there is a near-tie decided the other way: it is counted
  under ``tie_flips`` and not judged. Where heads are not compared (graph decode; native inputs of
  different sizes) or differ beyond that, every difference is judged.

A comparison in which nothing was compared (no raw heads and no detection over ``min_score``)
fails: a PASS always means something was checked.

**Tolerances** (``contract.agreement.TOLERANCES``; the profile is the lower precision of the two
models unless given): see docs/profiling.md.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..contract.agreement import (TOLERANCES, DetectionStats, HeadStats, Tolerance, allowance_used,
                                  choose_tolerance)
from ..errors import UserError
from ..runtime.families import family_of
from ..runtime.pipeline import CornerNetPipeline, NonFiniteOutput

__all__ = ["compare_backends", "choose_tolerance", "TOLERANCES"]

# ----------------------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------------------

def _pipeline(backend, canvas):
    return CornerNetPipeline.for_backend(backend, input_hw=canvas)


def _check_compatible(a, b, native: bool) -> Optional[Tuple[int, int]]:
    sa, sb = a.spec, b.spec
    if (sa.num_classes, sa.stride, family_of(sa)) != (sb.num_classes, sb.stride, family_of(sb)):
        raise UserError(f"the models are not comparable: {a.label} is {sa.name} with "
                        f"{sa.num_classes} classes (stride {sa.stride}), {b.label} is {sb.name} with "
                        f"{sb.num_classes} classes (stride {sb.stride})")
    if native:
        return None
    if a.input_hw and b.input_hw and tuple(a.input_hw) != tuple(b.input_hw):
        raise UserError(f"the models take different input sizes ({a.input_hw[0]}x{a.input_hw[1]} vs "
                        f"{b.input_hw[0]}x{b.input_hw[1]}); export them at the same size, or compare "
                        "them with --native-preprocess")
    return tuple(a.input_hw or b.input_hw or ()) or None


def compare_backends(a, b, images: Sequence[np.ndarray], tolerance: Tolerance,
                     min_score: Optional[float] = None, native: bool = False, progress=None) -> dict:
    """Compare backend ``b`` against ``a`` on ``images``; returns the report dict (``passed``,
    ``failures`` (one line each), ``heads``, ``detections`` ...). ``native``: each model gets its
    own pre-processing (see the module docstring)."""
    canvas = _check_compatible(a, b, native)
    min_score = tolerance.min_score if min_score is None else float(min_score)
    raw = a.decode == "none" and b.decode == "none"
    notes = []
    if not raw:
        graph = [r.label for r in (a, b) if r.decode != "none"]
        notes.append(f"raw heads not compared: {' and '.join(graph)} "
                     f"{'is a graph-decode model' if len(graph) == 1 else 'are graph-decode models'} "
                     "(outputs top-K corners, not heat maps); detections only")
    tie_level = TOLERANCES["fp32"]
    heads: Dict[str, HeadStats] = {}
    skipped_heads = 0
    non_finite: Dict[str, list] = {}          # side -> [images, first message]
    det = DetectionStats(min_score, tolerance.score_atol)
    canvas_a, canvas_b = (a.input_hw, b.input_hw) if native else (canvas, canvas)
    pipe_a, pipe_b = _pipeline(a, canvas_a), _pipeline(b, canvas_b)
    for k, image in enumerate(images):
        heads_agree = False
        if raw:
            xa, _ = pipe_a.preprocess(image)
            same_input = canvas_a == canvas_b and (a.mean, a.std, a.input_dtype) == (b.mean, b.std, b.input_dtype)
            xb = xa if same_input else pipe_b.preprocess(image)[0]
            if xa.shape == xb.shape:
                out_a, out_b = pipe_a.run_network(xa[None]), pipe_b.run_network(xb[None])
                if set(out_a) != set(out_b):
                    raise UserError(f"the models output different heads: {sorted(out_a)} vs {sorted(out_b)}")
                heads_agree = True
                for name in out_a:
                    heads.setdefault(name, HeadStats(name, tolerance)).add(out_a[name], out_b[name])
                    heads_agree &= allowance_used(out_a[name], out_b[name], tie_level) <= 1.0
            else:
                skipped_heads += 1
        dets = []
        for side, pipe in (("A", pipe_a), ("B", pipe_b)):
            try:
                dets.append(pipe(image))
            except NonFiniteOutput as exc:    # no detections to compare: a failure of its own
                non_finite.setdefault(side, [0, str(exc)])[0] += 1
        if len(dets) == 2:
            det.add(*dets, heads_agree=heads_agree)
        if progress:
            progress(f"image {k + 1}/{len(images)}")
    if skipped_heads:
        notes.append(f"raw heads not compared on {skipped_heads} of {len(images)} image(s): with "
                     "native pre-processing the two inputs differ in size; detections only there")
    head_summary = {name: h.summary() for name, h in heads.items()} if heads else None
    det_summary = det.summary()
    failures = []
    for name, h in (head_summary or {}).items():
        if not h["within_tolerance"]:
            w = h["worst"] or {}
            failures.append(
                f"head {name}: max |b-a| {h['max_abs']:.3g} (at {w.get('index')}: a={w.get('a', 0):.6g}, "
                f"b={w.get('b', 0):.6g}) exceeds {tolerance.name} tolerance {tolerance.head_atol:g} + "
                f"{tolerance.head_rtol:g}*|a| ({h['tolerance_used']:.3g}x the allowance)")
    if det_summary["agreement"] < tolerance.min_agreement:
        failures.append(
            f"detections: agreement {det_summary['agreement']:.3f} < {tolerance.min_agreement:g} "
            f"({det_summary['missed']} missed, {det_summary['extra']} extra of "
            f"{det_summary['count_a']} + {det_summary['count_b']} detections with score >= {min_score:g})")
    if det_summary["max_score_delta"] > tolerance.score_atol:
        failures.append(f"detections: max |score_b - score_a| {det_summary['max_score_delta']:.3g} "
                        f"> {tolerance.score_atol:g} ({tolerance.name} tolerance)")
    for side, (count, message) in sorted(non_finite.items()):
        label = (a if side == "A" else b).label
        failures.append(f"{side} ({label}) on {count} of {len(images)} image(s): {message}")
    if head_summary is None and det_summary["count_a"] + det_summary["count_b"] == 0 and not non_finite:
        failures.append(f"nothing was compared: no raw heads, and no detection of either model scores "
                        f">= {min_score:g} (lower --min-score, or give images with objects)")
    return {
        "schema": "cornernet_deploy.compare", "format": 1,
        "a": a.describe(), "b": b.describe(), "canvas_hw": list(canvas) if canvas else None,
        "preprocess": "native" if native else "shared",
        "images": len(images), "tolerance": asdict(tolerance), "min_score": min_score,
        "heads": head_summary, "note": "; ".join(notes) or None, "detections": det_summary,
        "failures": failures, "passed": not failures,
    }
