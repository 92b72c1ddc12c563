"""A merge plan: mergekit's YAML schema (models / base_model / merge_method / parameters /
dtype), validated at load time, plus our extra methods in the same schema.

The same object drives `run_search.py merge` (models are folders on disk) and the
search (models are keys of the sources already resident in a `Merger`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from merging.params import ParamSetting
from merging.registry import MethodSpec, get_method

DType = Literal["float32", "bfloat16", "float16"]
ConfigT = TypeVar("ConfigT", bound=BaseModel)
# mergekit options that change memory use there and nothing in the result here.
IGNORED_FOR_COMPATIBILITY = frozenset({"int8_mask"})


class PlanError(ValueError):
    """A plan that cannot be merged; the message names the field."""


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    parameters: dict[str, ParamSetting] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _no_lora(cls, value: str) -> str:
        if "+" in value:
            raise ValueError(f"{value!r}: LoRA references (model+adapter) are not supported; merge the adapter first")
        return value


class MergePlan(BaseModel):
    """One merge, in mergekit's schema. Unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    models: list[ModelEntry] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, ParamSetting] = Field(default_factory=dict)
    dtype: DType | None = None
    out_dtype: DType | None = None
    tokenizer_source: Literal["base"] | None = None
    chat_template: str | None = None
    # soupsearch extensions
    seed: int = 0
    allow_pickle: bool = False
    trust_remote_code: bool = False

    @field_validator("merge_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        get_method(value)  # raises KeyError listing the known methods
        return value

    @model_validator(mode="before")
    @classmethod
    def _reject_slices(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("slices" in data or "modules" in data):
            key = "slices" if "slices" in data else "modules"
            raise ValueError(f"`{key}` (layer stacking) is not supported; list whole models under `models`")
        return data

    @model_validator(mode="after")
    def _fits_method(self) -> "MergePlan":
        spec = self.method
        if spec.base == "required" and not self.base_model:
            raise ValueError(f"merge_method {spec.name!r} needs `base_model`")
        n = len(self.merged_models())
        if n < spec.min_models or (spec.max_models is not None and n > spec.max_models):
            wanted = f"{spec.min_models}" + ("" if spec.max_models == spec.min_models else
                                            f"..{spec.max_models or 'N'}")
            raise ValueError(f"merge_method {spec.name!r} merges {wanted} models besides the base; "
                             f"`models` gives {n}")
        known_model = set(spec.model_params)
        known_shared = set(spec.shared_params) | known_model | IGNORED_FOR_COMPATIBILITY
        for key in self.parameters:
            if key not in known_shared:
                raise ValueError(f"parameters.{key}: not a parameter of {spec.name!r} "
                                 f"(known: {', '.join(sorted(known_shared - IGNORED_FOR_COMPATIBILITY)) or 'none'})")
        for i, entry in enumerate(self.models):
            for key in entry.parameters:
                if key not in known_model and entry.model != self.base_model:
                    raise ValueError(f"models[{i}].parameters.{key}: not a per-model parameter of {spec.name!r} "
                                     f"(per-model: {', '.join(sorted(known_model)) or 'none'})")
        for name, default in spec.model_params.items():
            if default is None and name not in self.parameters:
                for i, entry in enumerate(self.merged_models()):
                    if name not in entry.parameters:
                        raise ValueError(f"models[{self.models.index(entry)}] ({entry.model}): "
                                         f"{spec.name!r} needs parameters.{name}")
        return self

    @property
    def method(self) -> MethodSpec:
        return get_method(self.merge_method)

    def merged_models(self) -> list[ModelEntry]:
        """The models passed to the method as `tensors` (the base is separate unless the
        method treats it as an ordinary input)."""
        if self.method.base == "none":
            return list(self.models)
        return [m for m in self.models if m.model != self.base_model]

    def referenced_models(self) -> list[str]:
        names = [m.model for m in self.models]
        if self.base_model and self.base_model not in names:
            names.insert(0, self.base_model)
        return names


def format_validation_error(err: ValidationError, source: str, what: str = "merge config") -> str:
    """pydantic's errors as `source: invalid <what>` and one `  field: message` line each, without
    pydantic's "Value error, " prefix (the one formatter, behind `validate_mapping`)."""
    lines = [f"{source}: invalid {what}"]
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def validate_mapping(model: type[ConfigT], data: Any, source: str, error: type[Exception], what: str) -> ConfigT:
    """`data` (a user file's parsed content, `read_yaml`) validated as `model`; anything wrong raises
    `error` naming `source` and every bad field. Merge configs and search configs (search/config.py)
    both come through here, so they report bad input alike; a document that is not a mapping is
    told which keys a `what` needs, not pydantic's "Input should be a valid dictionary"."""
    if not isinstance(data, dict):
        required = [f"`{name}`" for name, info in model.model_fields.items() if info.is_required()]
        needs = f" with {' and '.join(required)}" if required else ""
        raise error(f"{source}: a {what} is a mapping{needs}, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(format_validation_error(err, source, what)) from None


def parse_plan(data: Any, source: str = "<plan>") -> MergePlan:
    try:
        return validate_mapping(MergePlan, data, source, PlanError, "merge config")
    except KeyError as err:  # unknown method from the registry
        raise PlanError(f"{source}: merge_method: {err.args[0]}") from None


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """A YAML file's content; a file that cannot be read or parsed raises `error` naming the file
    (callers catch only their own error class, so nothing else may escape from here)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a directory, no permission, ...
        raise error(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None
    except RecursionError:
        raise error(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as err:  # a scalar the safe loader cannot construct: 2001-13-01, a 5000-digit int
        raise error(f"{path}: a YAML value cannot be loaded: {err}") from None


def load_plan(path: str | Path) -> MergePlan:
    path = Path(path)
    plan = parse_plan(read_yaml(path, PlanError), str(path))
    # A relative model path is looked up next to the config file first, then in the cwd.
    return plan.model_copy(update={
        "models": [m.model_copy(update={"model": _resolve(path.parent, m.model)}) for m in plan.models],
        "base_model": _resolve(path.parent, plan.base_model) if plan.base_model else None,
    })


def _resolve(root: Path, ref: str) -> str:
    candidate = root / ref
    return str(candidate.resolve()) if not Path(ref).is_absolute() and candidate.exists() else ref
