"""``cornernet-deploy info``: the model zoo, or one model file: its architecture with parameter
counts and sizes, then what the file holds (an export: precision, decode, corner pool, opset, input
size and batch, classes, quantization; a checkpoint: its iteration and stored validation metrics;
an engine: its manifest), as the file's backend describes it (``BackendInfo.describer``). The
tables fit 100 columns."""
from __future__ import annotations

from pathlib import Path

from ..contract.arch import ARCHS, get_arch
from ..errors import UserError, require_torch


def add_arguments(parser):
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="a checkpoint (.pt/.pth/.pkl), an exported .onnx or a TensorRT .engine (its "
                             "manifest): show its architecture and what the file holds")
    parser.add_argument("--arch", help="show one architecture of the zoo")


def _heads(spec):
    """Channels of each TL/BR head (heat, tag, offset) and the attention map sizes."""
    h, w = spec.output_size(spec.input_size)
    heads = f"{spec.num_classes}/1/2"
    if spec.attention:
        heads += " + att " + ",".join(str((spec.input_size[0] + 1) // r) for r in spec.attention_ratios())
    return heads


WIDTH = 100      # the tables fit a 100-column terminal, whatever the console's own width


def _describe(path: Path):
    """(spec, input size text, [(field, text)]) of a model file, from its backend's describer."""
    from ..runtime.backends import registry
    kind = registry.model_kinds().get(path.suffix.lower())
    info = registry.get(kind) if kind else None
    if info is None or info.describer is None:
        known = ", ".join(sorted(registry.model_kinds()))
        raise UserError(f"{path}: info reads model files ({known}), not '{path.suffix or path.name}'")
    if info.can("arch_names"):        # checkpoints: read with torch
        require_torch("reading a checkpoint")
    described, rows = info.describer(path)
    spec = getattr(described, "spec", described)
    hw = getattr(described, "input_hw", tuple(spec.input_size))
    size = "x".join(map(str, hw)) if hw else "dynamic"
    return spec, size, rows


def run(args) -> int:
    try:
        import torch
    except ImportError:
        torch = None
    if args.model and args.arch:
        raise UserError("give a MODEL file or --arch, not both")
    holds = []
    if args.model:
        path = Path(args.model)
        if not path.exists():
            raise UserError(f"{path}: no such file")
        spec, size, holds = _describe(path)
        rows = [(path.name, spec, size)]
    else:
        try:
            names = [get_arch(args.arch).name] if args.arch else list(ARCHS)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        rows = [(name, ARCHS[name], "x".join(map(str, ARCHS[name].input_size))) for name in names]

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from .common import console as make_console
    # what a file says (names, versions) is shown as plain text, never read as rich markup
    table = Table(title=Text("cornernet-deploy model zoo" if not args.model else str(args.model)))
    for col in ("model", "parameters", "used at test", "input", "stride", "output", "heads heat/tag/off"):
        table.add_column(col, justify="right" if col in ("parameters", "used at test", "stride") else "left",
                         overflow="fold")
    for label, spec, size in rows:
        total = used = "(needs torch)"
        if torch is not None:
            from ..models import CornerNet, count_parameters, count_test_parameters
            with torch.device("meta"):  # shapes only: no memory, no time
                model = CornerNet(spec)
            total, used = f"{count_parameters(model):,}", f"{count_test_parameters(model):,}"
        h, w = spec.output_size(spec.input_size)
        table.add_row(Text(label), total, used, size, str(spec.stride), f"{h}x{w} at {spec.input_size[0]}x"
                      f"{spec.input_size[1]}", _heads(spec))
    console = make_console()
    console.width = min(console.width, WIDTH)
    console.print(table)
    for label, spec, _ in rows:
        t = spec.test
        # wrapped at the width like the tables (the console does not wrap text for a pipe)
        console.print(f"[bold]{escape(label)}[/]: {escape(spec.summary)}; inputs of size k*{spec.size_multiple}-1; "
                      f"test: K={t.top_k}, num_dets={t.num_dets}, ae_threshold={t.ae_threshold}, "
                      f"flip={t.flip}, soft-NMS sigma={t.soft_nms_sigma}", soft_wrap=False)
    if holds:
        contents = Table(title="what the file holds", show_header=False)
        contents.add_column("field", style="bold", no_wrap=True)
        contents.add_column("value", overflow="fold")
        for field, value in holds:
            contents.add_row(field, Text(value))
        console.print(contents)
    return 0
