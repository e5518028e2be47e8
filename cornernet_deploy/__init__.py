"""cornernet-deploy: CornerNet-family detectors from checkpoint to ONNX, TensorRT and detections.

Importing the package is cheap and torch-free: the runtime (``cornernet_deploy.runtime``) runs with
numpy, OpenCV and ONNX Runtime or TensorRT only. The torch side lives in ``models``, ``exporter``
and ``train``.
"""
__version__ = "0.1.0"
