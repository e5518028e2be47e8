"""TensorRT side: plugin library build/load, engine building, CUDA helpers.

Everything here imports ``tensorrt`` and CUDA bindings lazily, inside functions: the package
imports on machines without a GPU, and the tests that need TensorRT skip with a reason.
"""
