"""The device part of a model as a file a small runtime runs: ONNX export (:mod:`.onnx`, needs torch) and the
torch-free runner a light sensor uses (:mod:`.runtime`, numpy and onnxruntime only).

This ``__init__`` imports nothing, and ``nairbus.models``'s own ``__init__`` imports nothing either, so
``import nairbus.models.export.runtime`` loads no torch: a sensor installed without torch can run what the hub
exported.
"""
