"""Per-tensor parameter values: scalars, layer gradients and name filters (mergekit semantics).

A plan parameter may be
- a scalar: the same everywhere;
- a list of numbers: a gradient, linearly interpolated at t = layer/(n_layers−1)
  (t = 0 for tensors outside the blocks, as in mergekit); a list of n_layers values
  therefore gives every layer its own value;
- a list of `{filter, value}` entries: the first entry whose filter matches the tensor
  name wins; `value` may itself be a scalar or a gradient. A filter is a substring of the
  name (mergekit), a glob when it contains `*`/`?`, or a module-class shorthand
  (`attn`, `mlp`, `norm`, `embed`, `lm_head`, `q`, `k`, `v`, `o`, `gate`, `up`, `down`);
  an entry without filter (or `*`) matches everything.
Resolution happens once per tensor, outside the merge methods.
"""

from __future__ import annotations

import fnmatch
from typing import Union

from pydantic import BaseModel, ConfigDict

from merging.names import SHORTHANDS, module_class

Scalar = Union[bool, int, float, str]


class FilterEntry(BaseModel):
    """One `{filter, value}` entry of a filtered parameter."""

    model_config = ConfigDict(extra="forbid")
    filter: str | None = None
    value: Union[Scalar, list[Scalar]]


ParamSetting = Union[Scalar, FilterEntry, list[FilterEntry], list[Scalar]]


def filter_matches(pattern: str | None, name: str) -> bool:
    if pattern is None or pattern == "*":
        return True
    if pattern in SHORTHANDS:
        # `attn`/`mlp`/`norm`/... also keep their mergekit substring meaning.
        return module_class(name) in SHORTHANDS[pattern] or (len(pattern) > 1 and pattern in name)
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def interpolate(values: list[Scalar], t: float) -> Scalar:
    """mergekit gradient: numbers interpolate linearly, other values pick the nearest-below knot."""
    if not values:
        raise ValueError("empty gradient")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    if not numeric:
        return values[i0]
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * float(values[i0]) + frac * float(values[i1])


def evaluate(setting: ParamSetting | None, name: str, t: float) -> Scalar | None:
    """Value of one parameter for tensor `name` at gradient position `t` (None: no entry matched)."""
    if setting is None or isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, FilterEntry):
        setting = [setting]
    if isinstance(setting, list):
        if setting and all(isinstance(e, FilterEntry) for e in setting):
            for entry in setting:
                if filter_matches(entry.filter, name):
                    value = entry.value
                    return interpolate(value, t) if isinstance(value, list) else value
            return None
        return interpolate(setting, t)  # type: ignore[arg-type]
    raise TypeError(f"unexpected parameter setting {setting!r}")
