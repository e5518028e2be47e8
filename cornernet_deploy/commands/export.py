"""``cornernet-deploy export``: checkpoint -> ONNX (see ``cornernet_deploy.exporter``)."""
from __future__ import annotations

from ..errors import UserError, require_torch
from ..contract.arch import ARCHS
from ..contract.metadata import INPUT_DTYPES
from ..contract.precision import EXPORT_PRECISIONS
from .common import positive_int

SIZE_RULE = ("sides k*M-1 with M = output stride x 2^levels: 128 for cornernet and "
             "cornernet-squeeze, 32 for cornernet-saccade; fewer levels, smaller M: a 3-level "
             "squeeze takes k*64-1")


def _opset_range() -> str:
    try:
        from ..exporter import MIN_OPSET, max_opset
    except ImportError:  # no torch: the command itself says so when it runs
        return "17 up to the newest the installed PyTorch writes"
    return f"{MIN_OPSET}..{max_opset()}"


def add_arguments(parser):
    from ..presets import preset_help

    parser.add_argument("--arch", choices=list(ARCHS),
                        help="architecture (read from the checkpoint when it records one or its key "
                             "names tell; widths, depth, stacks and classes are read from its tensors)")
    parser.add_argument("--checkpoint", help="official .pkl or our .pt (or a plain state_dict() file); "
                                             "random weights when omitted")
    parser.add_argument("--output", help="output file (default: export/ARCH.onnx)")
    parser.add_argument("--input-size", metavar="HxW",
                        help=f"a fixed input size ({SIZE_RULE}); without it CornerNet and "
                             "CornerNet-Squeeze get a dynamic size (each image padded at scale 1, as the "
                             "official test) and CornerNet-Saccade its official crop size. A fixed size "
                             "shrinks larger images: the export prints what that costs")
    parser.add_argument("--preset", help="named option set (explicit flags win): " + preset_help("export/presets.json"))
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", "--batch-size", type=positive_int, default=None,
                       help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", default=None, help="dynamic batch dimension")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--dynamic-size", action="store_true", default=None,
                      help="dynamic height/width (the default for CornerNet and CornerNet-Squeeze); with "
                           "--input-size, that is the size traced and verified at")
    size.add_argument("--fixed-size", dest="dynamic_size", action="store_false", default=None,
                      help="fixed input at --input-size or the architecture's official size")
    parser.add_argument("--opset", type=int, default=17, metavar="N",
                        help=f"ONNX opset to write: {_opset_range()} (default 17)")
    parser.add_argument("--corner-pool", choices=["plugin", "onnx"], default=None,
                        help="plugin: one CornerPool custom node per pool (TensorRT plugin; ONNX Runtime runs "
                             "its function body); onnx: standard ops only")
    parser.add_argument("--decode", choices=["none", "graph"], default=None,
                        help="graph: sigmoid, peak suppression and top-K inside the model")
    parser.add_argument("--precision", choices=EXPORT_PRECISIONS, default=None,
                        help="fp16: half-precision network (for strongly typed TensorRT builds)")
    parser.add_argument("--input", dest="input_dtype", choices=INPUT_DTYPES, default=None,
                        help="uint8: the network takes raw BGR pixels and normalises them in the graph "
                             "(bit-identical; a quarter of the bytes to copy to the GPU, no normalisation "
                             "on the CPU); float32 (default): normalised input. CornerNet and "
                             "CornerNet-Squeeze only")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the ONNX Runtime vs PyTorch comparison")


def run(args) -> int:
    if not args.arch and not args.checkpoint:
        raise UserError("give --arch, --checkpoint, or both")
    require_torch("exporting")
    from ..exporter import check_opset, export_onnx, parse_hw
    from ..fileio import check_output_file
    from ..presets import apply_preset

    # plain mistakes first, before torch is imported and the checkpoint read
    check_opset(args.opset)
    if args.input_size is not None:
        parse_hw(args.input_size)
    if args.output:
        check_output_file(args.output, "--output")
    apply_preset(args, "export/presets.json", args.preset,
                 defaults=dict(batch=1, dynamic_batch=False, corner_pool="plugin", decode="none",
                               precision="fp32", input_dtype="float32"))
    result = export_onnx(args.arch, args.checkpoint, args.output, input_size=args.input_size,
                         batch=args.batch, dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                         opset=args.opset, corner_pool=args.corner_pool, decode=args.decode,
                         precision=args.precision, input_dtype=args.input_dtype, verify=args.verify)
    return 0 if result.path.exists() else 1
