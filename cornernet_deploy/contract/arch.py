"""Architectures: hyper-parameters, official test-time settings, and the spec's (de)serialisation.

The numbers are those of princeton-vl/CornerNet-Lite (``core/models/*.py``, ``configs/*.json``,
``core/dbs/detection.py``). Part of the contract package: plain dataclasses, no framework, so the
torch-free runtime, the exporter, the trainer and the engine builder all read the same table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from ..errors import UserError

# Normalisation of the official COCO loader (``core/dbs/coco.py``), in **BGR** order: images are
# read with cv2 and never converted to RGB.
COCO_MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
COCO_STD_BGR = (0.28863828, 0.27408164, 0.27809835)

# Heat-map channel c is COCO category COCO_CATEGORY_IDS[c] (the official ``_coco_cls_ids``).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class TestConfig:
    """Official test-time settings of one architecture (decode, merge and soft-NMS)."""

    top_k: int                  # K corners per heat map
    num_dets: int               # pairs kept by the decode, -1 rows included
    ae_threshold: float         # max |tl_tag - br_tag|
    nms_kernel: int = 3         # heat-map peak suppression window
    flip: bool = False          # flip test-time augmentation
    soft_nms_sigma: float = 0.5
    soft_nms_threshold: float = 0.001
    soft_nms_method: int = 2    # 2 = Gaussian (the only one the official configs use)
    soft_nms_nt: float = 0.5    # configs' nms_threshold: Nt of the linear/hard methods (Gaussian ignores it)
    keep_stale_rows: bool = True  # CornerNet/Squeeze ignore soft-NMS's keep list (official quirk)
    max_per_image: int = 100
    no_border: bool = False     # Saccade rejects pairs touching the map border
    clip_boxes: bool = True     # Saccade never clips


@dataclass(frozen=True)
class SaccadeConfig:
    """Official CornerNet-Saccade attention/zoom settings (``core/test/cornernet_saccade.py``)."""

    init_sizes: tuple = (192, 255)
    att_thresholds: tuple = (0.3,)
    att_scales: tuple = (1, 2, 4)       # zoom per attention map, innermost map first
    att_nms_kernels: tuple = (3, 3, 3)
    att_max_crops: int = 30
    ref_dets: bool = True
    location_nms_threshold: float = 16.0
    first_pass_score: float = 0.3       # first-pass detections kept
    ref_det_score: float = 0.5          # detections that become zoom locations


# The official attention maps (``core/dbs/detection.py``: ``att_ratios`` [16, 8, 4], ``att_ranges``
# [[96, 256], [32, 96], [0, 32]]; ``configs/CornerNet_Saccade.json``: ``att_scales`` [[1, 2, 4]]):
# a map whose cells span RATIO input pixels is trained on objects whose longer side lies in RANGE
# and its peaks are zoomed by SCALE at test time. Variants with other depths keep this meaning per
# cell size: a map finer than 8 px per cell is the small-object map, one coarser than 8 the large.
SACCADE_ATT_LAYOUT = ((16, (96, 256), 1), (8, (32, 96), 2), (4, (0, 32), 4))


def _att_layout_for_ratio(ratio: int) -> tuple:
    for layout_ratio, span, zoom in SACCADE_ATT_LAYOUT:
        if ratio >= layout_ratio:
            return layout_ratio, span, zoom
    return SACCADE_ATT_LAYOUT[-1]


@dataclass(frozen=True)
class ArchSpec:
    """Hyper-parameters of one hourglass corner detector; small variants come from ``replace``."""

    name: str
    block: str                  # "residual" (CornerNet, Saccade) or "fire" (Squeeze)
    stacks: int
    levels: int                 # hourglass recursion depth n
    dims: tuple                 # channels per hourglass level (levels + 1 entries)
    modules: tuple              # blocks per hourglass level (levels + 1 entries)
    pre_stride2_residuals: int  # residual blocks with stride 2 after the 7x7 stem conv
    upsample: str               # "nearest" or "deconv" (ConvTranspose2d 4x4 s2 p1 with bias)
    head_kernel: int            # first conv of every prediction head
    attention: bool             # Saccade attention heads
    input_size: tuple           # official train/test input (H, W)
    test: TestConfig
    stem_dim: int = 128         # 7x7 stem conv output
    pool_dim: int = 128         # corner-pool branch width
    head_dim: int = 256         # hidden width of the prediction heads
    num_classes: int = 80
    class_names: tuple = COCO_CLASS_NAMES
    category_ids: tuple = COCO_CATEGORY_IDS
    gaussian_iou: float = 0.3   # training target radius rule
    saccade: SaccadeConfig | None = None
    description: str = ""       # the family in words; ``summary`` adds this variant's numbers

    @property
    def cnv_dim(self) -> int:
        """Width of the stem output, the hourglass top level and the corner modules."""
        return self.dims[0]

    @property
    def stride(self) -> int:
        """Input pixels per output cell: the 7x7 conv and each stride-2 pre residual halve."""
        return 2 ** (1 + self.pre_stride2_residuals)

    @property
    def size_multiple(self) -> int:
        """Input sides must be ``k * size_multiple - 1`` so every hourglass level halves cleanly."""
        return self.stride * 2 ** self.levels

    @property
    def summary(self) -> str:
        """One line for people: family, stacks, depth, stride, classes (always this variant's)."""
        stacks = f"{self.stacks} stack{'s' if self.stacks != 1 else ''}"
        # the zoo's words for a known family: files written before 0.2 recorded the official
        # model's numbers ("(2 stacks)") in ``description``, whatever the variant
        official = ARCHS.get(self.name)
        family = official.description if official else (self.description or self.name)
        channels = "/".join(str(d) for d in self.dims)
        if official is None:
            width = f"channels {channels}"
        elif self.dims == official.dims:
            width = f"channels {channels} (the official widths)"
        else:  # a width variant: say so, or a 3M-parameter model reads like the 201M official one
            width = f"channels {channels} (official {'/'.join(str(d) for d in official.dims)})"
        return (f"{family}, {stacks}, {self.levels} hourglass levels, {width}, "
                f"output stride {self.stride}, {self.num_classes} classes")

    def attention_ratios(self) -> tuple:
        """Input pixels per cell of each attention map (Saccade), innermost (coarsest) first."""
        return tuple(self.stride * 2 ** (self.levels - 1 - i) for i in range(self.levels))

    def attention_ranges(self) -> tuple:
        """Object sizes (longer side, px) each attention map is trained on (``SACCADE_ATT_LAYOUT``)."""
        return tuple(_att_layout_for_ratio(r)[1] for r in self.attention_ratios())

    def attention_scales(self) -> tuple:
        """Test-time zoom of each attention map's peaks (``SACCADE_ATT_LAYOUT``)."""
        return tuple(_att_layout_for_ratio(r)[2] for r in self.attention_ratios())

    def saccade_config(self) -> "SaccadeConfig | None":
        """``saccade`` with one zoom scale and one peak kernel per attention map of this depth.

        The recorded settings are kept when they fit; a file written for another depth (e.g. the
        official three-map settings recorded with a two-level variant) gets the layout's.
        """
        sacc = self.saccade
        if sacc is None:
            return None
        scales = sacc.att_scales
        nested = len(scales) > 0 and isinstance(scales[0], (tuple, list))
        fits = all(len(s) == self.levels for s in scales) if nested else len(scales) == self.levels
        changes = {}
        if not fits:
            derived = self.attention_scales()
            changes["att_scales"] = tuple(derived for _ in scales) if nested else derived
        if len(sacc.att_nms_kernels) != self.levels:
            kernel = sacc.att_nms_kernels[0] if sacc.att_nms_kernels else 3
            changes["att_nms_kernels"] = (kernel,) * self.levels
        return dataclasses.replace(sacc, **changes) if changes else sacc

    def output_size(self, input_hw: Sequence[int]) -> tuple:
        return tuple((int(s) + 1) // self.stride for s in input_hw)

    def check_input_size(self, input_hw: Sequence[int]) -> None:
        """Raise ValueError naming the nearest valid sizes when the network cannot take ``input_hw``."""
        m = self.size_multiple
        if self.attention and len(input_hw) == 2 and int(input_hw[0]) != int(input_hw[1]):
            raise ValueError(
                f"{self.name} runs on square crops (the official attention/zoom test cuts square "
                f"windows), so its input must be square, e.g. {self.input_size[0]}x{self.input_size[1]}; "
                f"got {int(input_hw[0])}x{int(input_hw[1])}")
        for side in input_hw:
            side = int(side)
            if side < m - 1 or (side + 1) % m:
                lower = max(m - 1, ((side + 1) // m) * m - 1)
                raise ValueError(
                    f"{self.name} cannot take input side {side}: sides must be k*{m}-1 "
                    f"(e.g. {lower} or {lower + m})")

    def replace(self, **changes) -> "ArchSpec":
        """A variant of this spec; ``levels`` truncates ``dims``/``modules`` to match."""
        if "levels" in changes and "dims" not in changes:
            changes["dims"] = self.dims[: changes["levels"] + 1]
        if "levels" in changes and "modules" not in changes:
            changes["modules"] = self.modules[: changes["levels"] + 1]
        if "num_classes" in changes and "class_names" not in changes:
            n = changes["num_classes"]
            if n != len(self.class_names):
                changes["class_names"] = tuple(f"class_{i}" for i in range(n))
                changes["category_ids"] = tuple(range(1, n + 1))
        spec = dataclasses.replace(self, **changes)
        if spec.saccade is not None and "saccade" not in changes:
            spec = dataclasses.replace(spec, saccade=spec.saccade_config())
        spec.validate()
        return spec

    def scaled(self, width: float) -> "ArchSpec":
        """Same topology, every channel count multiplied by ``width`` (rounded to a multiple of 8)."""
        def w(c):
            return max(8, int(round(c * width / 8.0)) * 8)
        return self.replace(dims=tuple(w(d) for d in self.dims), stem_dim=w(self.stem_dim),
                            pool_dim=w(self.pool_dim), head_dim=w(self.head_dim))

    def validate(self) -> None:
        if self.block not in ("residual", "fire"):
            raise ValueError(f"block must be 'residual' or 'fire', not {self.block!r}")
        if self.upsample not in ("nearest", "deconv"):
            raise ValueError(f"upsample must be 'nearest' or 'deconv', not {self.upsample!r}")
        if len(self.dims) != self.levels + 1 or len(self.modules) != self.levels + 1:
            raise ValueError(f"dims and modules need levels + 1 = {self.levels + 1} entries, got "
                             f"{len(self.dims)} and {len(self.modules)}")
        if self.stacks < 1 or self.levels < 1 or min(self.modules) < 1:
            raise ValueError("stacks, levels and every modules entry must be >= 1")
        if len(self.class_names) != self.num_classes or len(self.category_ids) != self.num_classes:
            raise ValueError("class_names and category_ids need num_classes entries")
        if self.block == "fire" and any(d % 2 for d in self.dims):
            raise ValueError("fire modules need even channel counts")


_CORNERNET_TEST = TestConfig(top_k=100, num_dets=1000, ae_threshold=0.5, flip=True)

ARCHS: dict[str, ArchSpec] = {
    "cornernet": ArchSpec(
        name="cornernet", block="residual", stacks=2, levels=5,
        dims=(256, 256, 384, 384, 384, 512), modules=(2, 2, 2, 2, 2, 4),
        pre_stride2_residuals=1, upsample="nearest", head_kernel=3, attention=False,
        input_size=(511, 511), test=_CORNERNET_TEST,
        description="CornerNet, residual hourglass (Hourglass-104 at the official size and depth)"),
    "cornernet-squeeze": ArchSpec(
        name="cornernet-squeeze", block="fire", stacks=2, levels=4,
        dims=(256, 256, 384, 384, 512), modules=(2, 2, 2, 2, 4),
        pre_stride2_residuals=2, upsample="deconv", head_kernel=1, attention=False,
        input_size=(511, 511),
        test=TestConfig(top_k=20, num_dets=100, ae_threshold=0.5, flip=False),
        description="CornerNet-Squeeze, fire-module hourglass"),
    "cornernet-saccade": ArchSpec(
        name="cornernet-saccade", block="residual", stacks=3, levels=3,
        dims=(256, 384, 384, 512), modules=(1, 1, 1, 1),
        pre_stride2_residuals=1, upsample="nearest", head_kernel=3, attention=True,
        input_size=(255, 255),
        test=TestConfig(top_k=12, num_dets=12, ae_threshold=0.3, flip=False, soft_nms_sigma=0.7,
                        keep_stale_rows=False, no_border=True, clip_boxes=False),
        gaussian_iou=0.5, saccade=SaccadeConfig(),
        description="CornerNet-Saccade, hourglass with attention maps"),
}

# The official parameter counts (trainable parameters, as the official factory prints them).
OFFICIAL_PARAM_COUNTS = {"cornernet": 201_035_212, "cornernet-squeeze": 31_771_852,
                         "cornernet-saccade": 116_969_339}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of: {', '.join(ARCHS)}") from None


def parse_hw(text: str) -> tuple:
    """'511x383' or '511' -> (H, W)."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise UserError(f"input size must look like HxW (e.g. 511x511), got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise UserError(f"input size must look like HxW (e.g. 511x511), got {text!r}")
    return tuple(parts)


def spec_to_dict(spec: ArchSpec) -> dict:
    return dataclasses.asdict(spec)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _dataclass_from(cls, data):
    # keys a newer toolkit added are ignored; JSON lists become the dataclasses' tuples
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: _tuples(value) for key, value in data.items() if key in names})


def spec_from_dict(data: dict) -> ArchSpec:
    """``spec_to_dict``'s inverse, for checkpoints and export metadata alike. TypeError or
    KeyError when required fields are missing."""
    raw = dict(data)
    test = _dataclass_from(TestConfig, raw.pop("test"))
    saccade = raw.pop("saccade", None)
    spec = _dataclass_from(ArchSpec, dict(raw, test=test, saccade=_dataclass_from(SaccadeConfig, saccade)
                                          if saccade else None))
    if spec.name in ARCHS:  # older files copied the official model's "(2 stacks)" into variants
        spec = dataclasses.replace(spec, description=ARCHS[spec.name].description)
    return spec
