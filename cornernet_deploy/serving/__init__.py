"""Serving on top of the runtime: a Triton Inference Server model repository for a detector.

``repository.write_repository`` (``cornernet-deploy triton``) writes the repository;
``triton_model.py`` is the Python-backend model it carries (pre/post-processing around the
network); ``local_server.LocalTritonServer`` starts a real ``tritonserver`` from the
``nvidia-pytriton`` wheel on loopback ports (tests and ``benchmarks/bench_serving.py``).
Nothing here imports torch.
"""
