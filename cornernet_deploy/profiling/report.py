"""Presenting a profile report: the side-by-side rich table, a hand-written JSON schema check,
atomic JSON/PNG writing and a bar chart drawn with OpenCV (no matplotlib needed)."""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from ..fileio import write_bytes_atomic, write_json_atomic
from .stats import STAT_KEYS

__all__ = ["profile_table", "validate_report", "write_json", "write_plot", "write_png", "fmt_ms", "fmt_ratio",
           "STAGE_TITLES"]

STAGE_TITLES = {"preprocess": "preprocess", "h2d": "host to device", "inference": "inference",
                "d2h": "device to host", "postprocess": "post-process", "end_to_end": "end to end"}


def fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def profile_table(report: dict, title: Optional[str] = None):
    """One rich ``Table``: a section per stage, one row per configuration in each (so the
    configurations sit next to each other), six statistics in ms and the median's ratio to the
    first configuration; a last section with the throughput."""
    from rich.table import Table
    from rich.text import Text

    results = report["results"]
    warnings = report.get("warnings") or []
    table = Table(title=title or "Per-stage latency (ms); ratio = median / first row's median",
                  show_lines=False, header_style="bold",
                  caption=Text("\n".join(f"warning: {w}" for w in warnings), style="bold")
                  if warnings else None)
    table.add_column("stage", no_wrap=True)
    table.add_column("configuration", overflow="fold")
    for key in STAT_KEYS:
        table.add_column(key, justify="right")
    table.add_column("vs first", justify="right")
    table.add_column("img/s (vs first)", justify="right")
    for stage in report["stages"]:
        if all(r["stages"].get(stage) is None for r in results):
            continue
        for i, r in enumerate(results):
            s = r["stages"].get(stage)
            cells = [fmt_ms(s[k]) if s else "n/a" for k in STAT_KEYS]
            throughput = ""
            if stage == "end_to_end" and r.get("throughput_ips"):
                tr = r["ratios"].get("throughput") if i else 1.0
                throughput = f"{r['throughput_ips']:.1f} ({fmt_ratio(tr)})"
            table.add_row(STAGE_TITLES.get(stage, stage) if i == 0 else "", Text(r["label"]), *cells,
                          fmt_ratio(r["ratios"].get(stage)) if i else "1.00x" if s else "-",
                          throughput, end_section=i == len(results) - 1)
    return table


def layer_table(entry: dict, top: int = 10):
    """Top TensorRT layers of one configuration and the corner-pool plugin's share."""
    from rich.markup import escape
    from rich.table import Table

    layers = entry["layers"]
    share = layers.get("corner_pool_share")
    reformat_ms = layers.get("corner_pool_reformat_ms")
    reformats = (f" + {fmt_ms(reformat_ms)} ms in {layers.get('corner_pool_reformat_layers')} reformat layers "
                 "around it" if reformat_ms else "")
    table = Table(title=f"{escape(entry['label'])}: top layers (TensorRT IProfiler, mean of "
                        f"{layers.get('runs')} runs); corner-pool plugin "
                        f"{fmt_ms(layers.get('corner_pool_ms'))} ms = "
                        f"{'-' if share is None else f'{100 * share:.1f}%'} of "
                        f"{fmt_ms(layers.get('total_ms'))} ms{reformats}")
    table.add_column("layer", overflow="fold")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    for item in layers["top"][:top]:
        sh = item.get("share")
        table.add_row(escape(item["name"]), fmt_ms(item["ms"]), "-" if sh is None else f"{100 * sh:.1f}%")
    return table


# ----------------------------------------------------------------------------------------------
# schema check (hand-written: no jsonschema dependency)
# ----------------------------------------------------------------------------------------------

_NUM = (int, float)
_TOP = {"schema": str, "format": int, "created": str, "machine": dict, "versions": dict,
        "settings": dict, "units": str, "stages": list, "percentiles": str, "results": list}
_MACHINE = {"platform": str, "cpu": str, "logical_cpus": int, "gpus": list}
_SETTINGS = {"batch": int, "warmup": int, "iters": int, "images": str, "num_images": int,
             "flip": bool}
_RESULT = {"label": str, "model": str, "backend": str, "device": str, "precision": str,
           "arch": str, "decode": str, "timing": str, "batch": int, "network_batch": int,
           "stages": dict, "throughput_ips": _NUM, "ratios": dict}
_OPTIONAL_RESULT = {"input_hw": (list, type(None)), "threads": (int, type(None)),
                    "provider": (str, type(None)), "network": str,
                    "layers": (dict, type(None)), "inference_throughput_ips": _NUM + (type(None),)}


def _check_keys(obj, spec: dict, where: str, problems: List[str]) -> None:
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected an object, got {type(obj).__name__}")
        return
    for key, types in spec.items():
        if key not in obj:
            problems.append(f"{where}.{key}: missing")
        elif isinstance(obj[key], bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            problems.append(f"{where}.{key}: expected {types}, got bool")
        elif not isinstance(obj[key], types):
            problems.append(f"{where}.{key}: expected {types}, got {type(obj[key]).__name__}")


def validate_report(report: dict) -> None:
    """Raise ``ValueError`` listing every way ``report`` departs from the documented schema."""
    problems: List[str] = []
    _check_keys(report, _TOP, "report", problems)
    if problems:
        raise ValueError("; ".join(problems))
    if report["schema"] != "cornernet_deploy.profile" or report["format"] != 1:
        problems.append("report: schema/format must be cornernet_deploy.profile / 1")
    warnings = report.get("warnings", [])
    if not (isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)):
        problems.append("report.warnings: expected a list of strings")
    _check_keys(report["machine"], _MACHINE, "machine", problems)
    _check_keys(report["settings"], _SETTINGS, "settings", problems)
    if "cornernet_deploy" not in report["versions"]:
        problems.append("versions.cornernet_deploy: missing")
    stages = report["stages"]
    if not report["results"]:
        problems.append("results: empty")
    for i, r in enumerate(report["results"]):
        where = f"results[{i}]"
        _check_keys(r, _RESULT, where, problems)
        for key, types in _OPTIONAL_RESULT.items():
            if key in r and not isinstance(r[key], types):
                problems.append(f"{where}.{key}: wrong type {type(r[key]).__name__}")
        if not isinstance(r.get("stages"), dict):
            continue
        for stage in stages:
            if stage not in r["stages"]:
                problems.append(f"{where}.stages.{stage}: missing (null when not applicable)")
                continue
            s = r["stages"][stage]
            if s is None:
                if stage in ("preprocess", "inference", "postprocess", "end_to_end"):
                    problems.append(f"{where}.stages.{stage}: must be measured")
                continue
            for key in STAT_KEYS:
                v = s.get(key) if isinstance(s, dict) else None
                if not isinstance(v, _NUM) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    problems.append(f"{where}.stages.{stage}.{key}: expected a number >= 0")
            if isinstance(s, dict):
                if not isinstance(s.get("n"), int) or s.get("n", 0) < 1:
                    problems.append(f"{where}.stages.{stage}.n: expected a count >= 1")
                elif all(isinstance(s.get(k), _NUM) for k in STAT_KEYS) and not (
                        s["min"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]
                        and s["min"] <= s["mean"] <= s["max"]):
                    problems.append(f"{where}.stages.{stage}: statistics out of order")
        ratios = r.get("ratios")
        if isinstance(ratios, dict):
            for stage in list(stages) + ["throughput"]:
                if stage not in ratios:
                    problems.append(f"{where}.ratios.{stage}: missing")
                elif ratios[stage] is not None and not isinstance(ratios[stage], _NUM):
                    problems.append(f"{where}.ratios.{stage}: expected a number or null")
    if problems:
        raise ValueError("; ".join(problems))


def write_json(path, report: dict) -> None:
    validate_report(report)
    write_json_atomic(path, report, indent=1)


# ----------------------------------------------------------------------------------------------
# bar chart (OpenCV)
# ----------------------------------------------------------------------------------------------

_COLOURS = {"preprocess": (180, 119, 31), "h2d": (14, 127, 255), "inference": (44, 160, 44),
            "d2h": (40, 39, 214), "postprocess": (189, 103, 148)}       # BGR


def render_plot(report: dict) -> np.ndarray:
    """Horizontal stacked bars of the median stage times, one bar per configuration (BGR image)."""
    import cv2

    results = report["results"]
    stages = [s for s in ("preprocess", "h2d", "inference", "d2h", "postprocess")]
    totals = [sum((r["stages"].get(s) or {}).get("median", 0.0) for s in stages) for r in results]
    e2e = [(r["stages"].get("end_to_end") or {}).get("median", 0.0) for r in results]
    scale_max = max(totals + e2e + [1e-9])
    label_w, bar_w, row_h, top = 430, 620, 44, 70
    height = top + row_h * len(results) + 60
    img = np.full((height, label_w + bar_w + 140, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "median latency per stage (ms); | = end-to-end median", (10, 28), font, 0.6,
                (0, 0, 0), 1, cv2.LINE_AA)
    x = 10
    for s in stages:
        cv2.rectangle(img, (x, 40), (x + 14, 54), _COLOURS[s], -1)
        cv2.putText(img, s, (x + 18, 53), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + 9 * len(s)
    for i, r in enumerate(results):
        y = top + i * row_h
        label = r["label"] if len(r["label"]) <= 52 else r["label"][:49] + "..."
        cv2.putText(img, label, (10, y + 26), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x = label_w
        for s in stages:
            med = (r["stages"].get(s) or {}).get("median", 0.0)
            w = int(round(bar_w * med / scale_max))
            if w > 0:
                cv2.rectangle(img, (x, y + 8), (x + w, y + 34), _COLOURS[s], -1)
            x += w
        ex = label_w + int(round(bar_w * e2e[i] / scale_max))
        cv2.line(img, (ex, y + 4), (ex, y + 38), (0, 0, 0), 2)
        cv2.putText(img, fmt_ms(e2e[i]), (max(x, ex) + 6, y + 26), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, f"{report['machine'].get('cpu', '')}  |  {report['created']}",
                (10, height - 20), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    return img


def write_png(path, image: np.ndarray) -> None:
    """``image`` (BGR) as a PNG file, written atomically."""
    import cv2

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode the plot as PNG")
    write_bytes_atomic(path, data.tobytes())


def write_plot(path, report: dict) -> None:
    write_png(path, render_plot(report))
