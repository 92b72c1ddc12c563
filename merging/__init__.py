"""Tensor math and checkpoint I/O for merging fine-tuned checkpoints of one base model.

No Ray and no serving here: usable alone, like a library, on CPU or GPU.

    from merging import Merger, load_plan
    merger = Merger({"base": "path/base", "dpo": "path/dpo", "kto": "path/kto"}, base="base")
    for name, tensor in merger.merge(plan): ...
"""

from merging.checkpoint import CheckpointError, ModelFolder
from merging.geometry import AngleRow, Geometry, NormRow, alignment_geometry, geometry_from_tensors
from merging.merger import Merger, NonFiniteMergeError, pick_device
from merging.plan import MergePlan, ModelEntry, PlanError, format_validation_error, load_plan, parse_plan, read_yaml
from merging.registry import METHODS, MethodSpec, get_method, method_names, register
from merging.validate import IncompatibleModelsError, check_compatible
from merging.writer import ModelWriteError, OutputExistsError, write_model

__all__ = [
    "AngleRow", "CheckpointError", "Geometry", "IncompatibleModelsError", "METHODS", "MergePlan", "Merger",
    "MethodSpec", "ModelEntry", "ModelFolder", "ModelWriteError", "NonFiniteMergeError", "NormRow",
    "OutputExistsError", "PlanError", "alignment_geometry", "check_compatible", "geometry_from_tensors",
    "format_validation_error", "get_method", "load_plan", "method_names", "parse_plan", "pick_device", "read_yaml",
    "register", "write_model",
]
