"""``cornernet-deploy info``: the model zoo, or one model file, with parameter counts and sizes."""
from __future__ import annotations

from pathlib import Path

from ..contract.arch import ARCHS, get_arch
from ..errors import UserError
from .common import require_torch


def add_arguments(parser):
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="a checkpoint (.pt/.pth/.pkl) or an exported .onnx: show its architecture "
                             "as recorded (or read from its tensors)")
    parser.add_argument("--arch", help="show one architecture of the zoo")


def _heads(spec):
    """Channels of each TL/BR head (heat, tag, offset) and the attention map sizes."""
    h, w = spec.output_size(spec.input_size)
    heads = f"{spec.num_classes}/1/2"
    if spec.attention:
        heads += " + att " + ",".join(str((spec.input_size[0] + 1) // r) for r in spec.attention_ratios())
    return heads


def _model_spec(path: Path):
    """(spec, input text) of a model file; ONNX files are read without torch."""
    if path.suffix.lower() == ".onnx":
        from ..onnx_files import load_export
        metadata = load_export(path, load_external_data=False)[1]
        size = "x".join(map(str, metadata.input_hw)) if metadata.input_hw else "dynamic"
        return metadata.spec, size
    require_torch("reading a checkpoint")
    from ..models.checkpoint import spec_from_checkpoint
    spec = spec_from_checkpoint(path)
    return spec, "x".join(map(str, spec.input_size))


def run(args) -> int:
    try:
        import torch
    except ImportError:
        torch = None
    if args.model and args.arch:
        raise UserError("give a MODEL file or --arch, not both")
    rows = []
    if args.model:
        path = Path(args.model)
        if not path.exists():
            raise UserError(f"{path}: no such file")
        spec, size = _model_spec(path)
        rows.append((str(path), spec, size))
    else:
        try:
            names = [get_arch(args.arch).name] if args.arch else list(ARCHS)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        rows = [(name, ARCHS[name], "x".join(map(str, ARCHS[name].input_size))) for name in names]

    from rich.table import Table

    from .common import console as make_console
    table = Table(title="cornernet-deploy model zoo" if not args.model else "model")
    for col in ("model", "parameters", "used at test", "input", "stride", "output", "heads heat/tag/off"):
        table.add_column(col, justify="right" if col in ("parameters", "used at test", "stride") else "left")
    for label, spec, size in rows:
        total = used = "(needs torch)"
        if torch is not None:
            from ..models import CornerNet, count_parameters, count_test_parameters
            with torch.device("meta"):  # shapes only: no memory, no time
                model = CornerNet(spec)
            total, used = f"{count_parameters(model):,}", f"{count_test_parameters(model):,}"
        h, w = spec.output_size(spec.input_size)
        table.add_row(label, total, used, size, str(spec.stride), f"{h}x{w} at {spec.input_size[0]}x"
                      f"{spec.input_size[1]}", _heads(spec))
    console = make_console()
    console.print(table)
    for label, spec, _ in rows:
        t = spec.test
        console.print(f"[bold]{label}[/]: {spec.summary}; inputs of size k*{spec.size_multiple}-1; "
                      f"test: K={t.top_k}, num_dets={t.num_dets}, ae_threshold={t.ae_threshold}, "
                      f"flip={t.flip}, soft-NMS sigma={t.soft_nms_sigma}")
    return 0
