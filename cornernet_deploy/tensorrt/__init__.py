"""TensorRT build tooling: the plugin library's build (``plugin_build``) and the engine builder
(``builder``). Finding, checking and loading the plugin library at run time, TensorRT's runtime
plumbing and the CUDA helpers are the runtime's (``runtime/plugin_library.py``,
``runtime/tensorrt_common.py``, ``runtime/cuda.py``), so running an engine needs nothing here.

Everything here imports ``tensorrt`` and CUDA bindings lazily, inside functions: the package
imports on machines without a GPU, and the tests that need TensorRT skip with a reason.
"""
