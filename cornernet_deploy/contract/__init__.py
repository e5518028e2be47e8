"""The contracts every part of the toolkit shares, at the bottom layer (docs/CONTRACTS.md).

* ``arch``: architecture specs (``ArchSpec``, ``TestConfig``, ``SaccadeConfig``), the official
  table ``ARCHS`` and the spec's (de)serialisation;
* ``metadata``: the export metadata: ``build_metadata`` writes it, ``parse_metadata`` is its one
  reader (checked, typed: ``ModelMetadata``);
* ``manifest``: ``EngineManifest``, written by ``build``, read by every engine consumer;
* ``op``: the corner-pool op's identity (ONNX node, TensorRT creator, plugin library tag);
* ``precision``: the precision names;
* ``agreement``: tolerance profiles, head statistics and detection matching (when two models agree).

This package imports nothing of the toolkit but ``errors``, and no framework (numpy only):
the torch-free runtime, the exporter, the engine builder, the trainer and a future C++ runtime
read the same definitions.
"""
