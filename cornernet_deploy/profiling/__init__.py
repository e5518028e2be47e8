"""Profiling and comparison of CornerNet-family models across backends and precisions, on top of
the runtime's backends (``runtime.backends.open_backend``); this package only measures.

* ``stats``: summary statistics (documented percentile rule) and ratios;
* ``profile``: the timing loop over the real pipeline's stages (``runtime.pipeline.StageClock``;
  CUDA events are recorded by the backends' ``run_timed``) and the JSON report; ``report``: table,
  schema check, plot;
* ``layers``: TensorRT per-layer times summarised (top layers, the corner-pool plugin's share);
* ``compare``: raw-head differences and detection agreement of two models, judged by the
  tolerances of ``contract.agreement``;
* ``benchmark``: every format of one model this machine can run, prepared (export, quantize,
  build), evaluated (``evaluation.evaluate``) and timed (``profile``) into one table.

Importing this package (or any of these modules) imports neither torch nor TensorRT: a backend
imports its framework when it is opened.
"""
