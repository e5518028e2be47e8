"""Triton Python-backend model of a cornernet-deploy detector; copied as ``NAME/1/model.py``.

Runs only inside Triton's Python backend (it imports ``triton_python_backend_utils``). Clients send
images; this model decodes them, runs the torch-free pipeline (pre-process -> network -> decode ->
soft-NMS, ``cornernet_deploy.runtime``) and answers the detections of every image. The network is
either ONNX Runtime in this process (config parameter ``network: onnxruntime``, the ONNX file next
to this one) or the TensorRT model ``NAME_net`` of the same server, called through BLS
(``network: triton``).

Inputs (exactly one per request; up to ``max_batch_size`` images per request):
  ``IMAGE_BYTES`` TYPE_STRING [batch, 1]: encoded image files (JPEG, PNG, ...), decoded as
  ``cv2.imread`` reads a file; ``IMAGE`` TYPE_UINT8 [batch, H, W, 3]: raw BGR pixels.
Outputs (per image; padded to the most detections of an image in the request):
  ``NUM_DETECTIONS`` INT32 [batch, 1]: how many rows are real; ``BOXES`` FP32 [batch, D, 4]:
  x1, y1, x2, y2 in the image's pixels; ``SCORES`` FP32 [batch, D]; ``CLASSES`` INT32 [batch, D]:
  0-based class (line of ``labels.txt``), -1 in padding rows. Sorted by score, descending.

Requests the dynamic batcher hands over together run as one pipeline batch. A bad request (not
an image, an empty batch, both or neither input, more pixels than the config parameter
``max_pixels`` allows: refused from the file's header, before decoding) gets an error response
naming the problem. When the batch fails as a whole (an image the model cannot take, memory), every
request is run again on its own (``Detector.batch_groups``): only the request that fails alone gets
an error, and the others get exactly the detections they get alone, learning nothing of it.
"""
import json
import os
import sys
import traceback

import numpy as np
import triton_python_backend_utils as pb_utils

# The repository carries the torch-free runtime it was generated with next to this file; it goes
# first on sys.path so that another installed cornernet_deploy version cannot shadow it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cornernet_deploy.contract.manifest import EngineManifest  # noqa: E402
from cornernet_deploy.errors import UserError  # noqa: E402
from cornernet_deploy.runtime.backends import open_backend  # noqa: E402
from cornernet_deploy.runtime.backends.base import Backend  # noqa: E402
from cornernet_deploy.runtime.detector import Detector  # noqa: E402
from cornernet_deploy.runtime.preprocess import (DEFAULT_MAX_PIXELS, ImageTooLarge,  # noqa: E402
                                                  check_image, decode_image, out_of_memory)
from cornernet_deploy.runtime import postprocess  # noqa: E402

INPUT_BYTES, INPUT_PIXELS = "IMAGE_BYTES", "IMAGE"
OUTPUTS = ("NUM_DETECTIONS", "BOXES", "SCORES", "CLASSES")


class TritonNetworkBackend(Backend):
    """The TensorRT model ``NAME_net`` of this server behind the runtime's backend interface:
    ``run(batch NCHW) -> {output name: array}`` is one BLS request."""

    name = "triton-bls"

    def __init__(self, model_name: str, manifest: EngineManifest):
        self.model_name = model_name
        self.manifest = manifest
        self.model_metadata = manifest.metadata
        self.metadata = manifest.metadata.raw
        self.input_name = manifest.input_name
        self.output_names = list(manifest.outputs)
        self.input_hw = manifest.input_hw
        self.max_batch = manifest.max_batch
        self.static_batch = manifest.static_batch
        self.precision = manifest.precision
        self.device = "cuda"
        # outputs come back in CPU memory: the pipeline decodes them with numpy
        self._memory = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)

    def run(self, batch: np.ndarray) -> dict:
        request = pb_utils.InferenceRequest(
            model_name=self.model_name, requested_output_names=self.output_names,
            inputs=[pb_utils.Tensor(self.input_name, self.network_batch(batch))],
            preferred_memory=self._memory)
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.model_name}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy()
                for name in self.output_names}

    def close(self):
        pass


def images_of(request, max_pixels: int) -> list:
    """The request's images as HxWx3 uint8 BGR arrays; UserError naming what is wrong (an image of
    more than ``max_pixels`` pixels too; 0: no limit)."""
    encoded = pb_utils.get_input_tensor_by_name(request, INPUT_BYTES)
    pixels = pb_utils.get_input_tensor_by_name(request, INPUT_PIXELS)
    if (encoded is None) == (pixels is None):
        raise UserError(f"send exactly one of the inputs {INPUT_BYTES} (encoded image files) or "
                        f"{INPUT_PIXELS} (uint8 HxWx3 BGR pixels), not "
                        f"{'both' if encoded is not None else 'neither'}")
    if encoded is not None:
        data = encoded.as_numpy()
        if data.shape[0] == 0:
            raise UserError(f"empty batch: {INPUT_BYTES} holds no image")
        images = []
        for i, item in enumerate(data.reshape(data.shape[0], -1)[:, 0]):
            blob = item if isinstance(item, (bytes, bytearray)) else str(item).encode()
            try:
                images.append(decode_image(blob, f"{INPUT_BYTES}[{i}]", max_pixels=max_pixels))
            except ImageTooLarge:
                raise
            except UserError as exc:
                raise UserError(f"{exc} ({len(blob)} bytes that are not an encoded image)") from None
        return images
    data = pixels.as_numpy()
    if data.shape[0] == 0:
        raise UserError(f"empty batch: {INPUT_PIXELS} holds no image")
    return [check_image(np.ascontiguousarray(im), f"{INPUT_PIXELS}[{i}]", max_pixels)
            for i, im in enumerate(data)]


def detection_outputs(detections: list) -> list:
    """Output tensors for one request's images (padded to the largest detection count)."""
    most = max((len(d) for d in detections), default=0)
    n = len(detections)
    count = np.zeros((n, 1), np.int32)
    boxes = np.zeros((n, most, 4), np.float32)
    scores = np.zeros((n, most), np.float32)
    classes = np.full((n, most), -1, np.int32)
    for i, d in enumerate(detections):
        k = len(d)
        count[i, 0] = k
        boxes[i, :k] = d.boxes
        scores[i, :k] = d.scores
        classes[i, :k] = d.class_ids
    return [pb_utils.Tensor(name, value) for name, value in zip(OUTPUTS, (count, boxes, scores, classes))]


def error_response(exc: Exception):
    """The response of a request that failed: a user error's own line, else what broke (the
    server log has its traceback)."""
    message = str(exc) if isinstance(exc, UserError) else f"internal error: {type(exc).__name__}: {exc}"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.dirname(os.path.abspath(__file__))
        network = params["network"]
        if network == "onnxruntime":
            backend = open_backend(os.path.join(here, params["onnx_file"]),
                                   threads=int(params.get("threads") or 0) or None)
        elif network == "triton":
            path = os.path.join(here, params["network_manifest"])
            with open(path) as f:
                manifest = EngineManifest.from_dict(json.load(f), path)
            backend = TritonNetworkBackend(params["network_model"], manifest)
        else:
            raise pb_utils.TritonModelException(f"unknown network parameter {network!r}")
        self.detector = Detector(backend)
        self.score_threshold = float(params.get("score_threshold") or 0.0)
        self.max_pixels = int(params.get("max_pixels") or DEFAULT_MAX_PIXELS)
        self.logger = pb_utils.Logger
        # numba's compile (or cache load) now, at model load, not in the first request
        if postprocess.warm_up():
            self.logger.log_info("cornernet-deploy soft-NMS: compiled loops (numba)")
        else:
            self.logger.log_info("cornernet-deploy soft-NMS: numpy path (numba not installed: "
                                 "several times slower on crowded images)")

    def execute(self, requests):
        responses = [None] * len(requests)
        groups, owners = [], []          # every good request's images, run as one pipeline batch
        for r, request in enumerate(requests):
            try:
                groups.append(images_of(request, self.max_pixels))
                owners.append(r)
            except UserError as exc:
                responses[r] = error_response(exc)
        # a failing batch is run again request by request: one request's error is only its own
        results = self.detector.batch_groups(groups) if groups else []
        for r, group, found in zip(owners, groups, results):
            if isinstance(found, MemoryError):
                largest = max((im.shape[:2] for im in group), key=lambda hw: hw[0] * hw[1])
                found = out_of_memory(f"the largest of the request's {len(group)} image(s)", largest)
            if isinstance(found, Exception):
                if not isinstance(found, UserError):
                    self.logger.log_error("".join(traceback.format_exception(
                        type(found), found, found.__traceback__)))
                responses[r] = error_response(found)
            else:
                dets = [d.filter(self.score_threshold) for d in found]
                responses[r] = pb_utils.InferenceResponse(output_tensors=detection_outputs(dets))
        return responses

    def finalize(self):
        close = getattr(self.detector.backend, "close", None)
        if close:
            close()
