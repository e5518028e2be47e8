"""Profiling and comparison of CornerNet-family models across backends and precisions.

* ``stats``: summary statistics (documented percentile rule) and ratios;
* ``timers``: host clock and the CUDA-event conventions;
* ``runners``: one interface over PyTorch (checkpoint or architecture name), ONNX Runtime and
  TensorRT, with per-stage timed runs;
* ``profile``: the staged timing loop and the JSON report; ``report``: table, schema check, plot;
* ``compare``: raw-head differences and detection agreement of two models, with tolerances.

Importing this package (or any of these modules) imports neither torch nor TensorRT: a runner
imports its framework when it is opened.
"""
