"""``cornernet-deploy export``: checkpoint -> ONNX (see ``cornernet_deploy.exporter``)."""
from __future__ import annotations

from ..errors import UserError
from ..zoo import ARCHS


def add_arguments(parser):
    parser.add_argument("--arch", choices=list(ARCHS), help="architecture (read from the checkpoint when it records one)")
    parser.add_argument("--checkpoint", help="official .pkl or our .pt; random weights when omitted")
    parser.add_argument("--output", help="output file (default: export/ARCH.onnx)")
    parser.add_argument("--input-size", help="HxW, sides of the form k*128-1 (default: the official size)")
    parser.add_argument("--preset", help="named option set from export/presets.json (explicit flags win)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", "--batch-size", type=int, default=None, help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", default=None, help="dynamic batch dimension")
    parser.add_argument("--dynamic-size", action="store_true", default=None,
                        help="dynamic height/width (any k*128-1 size, as the official test pipeline pads)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--corner-pool", choices=["plugin", "onnx"], default=None,
                        help="plugin: one CornerPool custom node per pool (TensorRT plugin; ONNX Runtime runs "
                             "its function body); onnx: standard ops only")
    parser.add_argument("--decode", choices=["none", "graph"], default=None,
                        help="graph: sigmoid, peak suppression and top-K inside the model")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default=None,
                        help="fp16: half-precision network (for strongly typed TensorRT builds)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the ONNX Runtime vs PyTorch comparison")


def run(args) -> int:
    if not args.arch and not args.checkpoint:
        raise UserError("give --arch, --checkpoint, or both")
    from ..exporter import export_onnx
    from ..presets import apply_preset
    apply_preset(args, "export/presets.json", args.preset,
                 defaults=dict(batch=1, dynamic_batch=False, dynamic_size=False, corner_pool="plugin",
                               decode="none", precision="fp32"))
    result = export_onnx(args.arch, args.checkpoint, args.output, input_size=args.input_size,
                         batch=args.batch, dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                         opset=args.opset, corner_pool=args.corner_pool, decode=args.decode,
                         precision=args.precision, verify=args.verify)
    return 0 if result.path.exists() else 1
