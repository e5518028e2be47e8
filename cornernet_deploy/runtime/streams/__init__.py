"""Video streams through the runtime: files, cameras, RTSP/HTTP URLs, GStreamer pipelines, several
at once, pipelined (decode | pre-process | network | post-process) and batched across streams.

    from cornernet_deploy.runtime.streams import detect_streams

    with detect_streams("export/model.onnx", ["clip.mp4", "rtsp://cam/stream", 0], batch_size=3) as run:
        for result in run:                         # FrameResult, per stream in frame order
            print(result.source, result.index, result.detections.filter(0.5))
    print([s.describe() for s in run.states])     # frames decoded, processed, dropped, status

``sources.py`` reads, ``runner.py`` runs the stages (``CornerNetPipeline``'s own ``prepare``,
``network`` and ``finish``), ``outputs.py`` writes annotated videos and JSON Lines (the
``stream`` command). Torch-free, like the rest of the runtime. docs/streams.md has the commands.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .runner import STAGE_NAMES, FrameResult, StageStats, StreamRun, StreamState
from .sources import SourceSpec, VideoSource, parse_source

__all__ = ["detect_streams", "StreamRun", "StreamState", "FrameResult", "StageStats", "STAGE_NAMES",
           "SourceSpec", "VideoSource", "parse_source", "default_batch_size"]


def default_batch_size(pipeline, streams: int) -> int:
    """One frame of every stream per network call, as far as the model's batch allows; a model
    with a fixed batch gets exactly its batch (short batches are padded anyway)."""
    if pipeline.max_batch is None:
        return max(1, streams)
    if pipeline.static_batch:
        return pipeline.max_batch
    return max(1, min(streams, pipeline.max_batch))


def detect_streams(model, sources: Sequence, *, batch_size: Optional[int] = None, device=None,
                   provider=None, threads=None, backend_options=None, **options) -> StreamRun:
    """A ``StreamRun`` over ``sources`` (video files, camera indices, URLs, GStreamer pipelines)
    for ``model``: a model file (opened as ``Detector.load`` does, with ``device``/``provider``/
    ``threads``), a ``Detector`` or a ``CornerNetPipeline``. ``batch_size``: frames per network
    call (default ``default_batch_size``); ``options``: those of ``StreamRun``. Iterate over it
    for ``FrameResult``s; close it (or use ``with``) to release the sources and the model's
    threads."""
    from ..detector import Detector
    from ..pipeline import CornerNetPipeline

    owned = None
    if isinstance(model, CornerNetPipeline):
        pipeline = model
    elif isinstance(model, Detector):
        pipeline = model.pipeline
    else:
        owned = Detector.load(model, device=device, provider=provider, threads=threads,
                              backend_options=backend_options)
        pipeline = owned.pipeline
    if batch_size is None:
        batch_size = default_batch_size(pipeline, len(sources))
    try:
        run = StreamRun(pipeline, sources, batch_size=batch_size, **options)
    except BaseException:
        if owned is not None:
            owned.close()
        raise
    if owned is not None:
        run.owned.append(owned)          # the model it opened goes when the run is closed
    return run
