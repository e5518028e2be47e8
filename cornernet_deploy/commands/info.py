"""``cornernet-deploy info``: the model zoo with parameter counts and input/output sizes."""
from __future__ import annotations

from ..zoo import ARCHS, get_arch
from ..errors import UserError


def add_arguments(parser):
    parser.add_argument("--arch", help="show one architecture in detail")


def _heads(spec):
    """Channels of each TL/BR head (heat, tag, offset) and the attention map sizes."""
    h, w = spec.output_size(spec.input_size)
    heads = f"{spec.num_classes}/1/2"
    if spec.attention:
        heads += " + att " + ",".join(str(h >> i) for i in reversed(range(spec.levels)))
    return heads


def run(args) -> int:
    try:
        import torch
    except ImportError:
        torch = None
    try:
        names = [get_arch(args.arch).name] if args.arch else list(ARCHS)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    from rich.console import Console
    from rich.table import Table
    table = Table(title="cornernet-deploy model zoo")
    for col in ("architecture", "parameters", "used at test", "input", "stride", "output", "heads heat/tag/off"):
        table.add_column(col, justify="right" if col in ("parameters", "used at test", "stride") else "left")
    for name in names:
        spec = ARCHS[name]
        total = used = "(needs torch)"
        if torch is not None:
            from ..models import build_model, count_parameters, count_test_parameters
            with torch.device("meta"):  # shapes only: no memory, no time
                model = build_model(name)
            total, used = f"{count_parameters(model):,}", f"{count_test_parameters(model):,}"
        h, w = spec.output_size(spec.input_size)
        table.add_row(name, total, used, "x".join(map(str, spec.input_size)), str(spec.stride),
                      f"{h}x{w}", _heads(spec))
    console = Console()
    console.print(table)
    for name in names:
        spec = ARCHS[name]
        t = spec.test
        console.print(f"[bold]{name}[/]: {spec.description}; inputs of size k*{spec.size_multiple}-1; "
                      f"test: K={t.top_k}, num_dets={t.num_dets}, ae_threshold={t.ae_threshold}, "
                      f"flip={t.flip}, soft-NMS sigma={t.soft_nms_sigma}")
    return 0
