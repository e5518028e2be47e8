"""Inference backends: each loads one kind of model file and runs a preprocessed NCHW batch.

A backend exposes ``metadata`` (the export's ``cornernet_deploy`` dict), ``input_hw`` (fixed
(H, W) or None when dynamic), ``max_batch`` and ``run(batch) -> {output name: array}``.
"""
