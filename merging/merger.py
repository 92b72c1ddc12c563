"""Merging plans tensor by tensor, in memory: the engine under the CLI and the search.

A `Merger` opens the base and source models once and checks they are compatible. With
`resident=True` (the search) it keeps every tensor on its device — GPU memory, or host
memory (pinned when a GPU will consume it) — so each trial costs one pass over memory
and no disk I/O. With `resident=False` (one-off CLI merges) tensors are read lazily from
the safetensors files, one weight at a time, so a merge needs little more memory than one
weight of each model. `merge(plan)` yields `(name, tensor)` pairs and writes nothing:
callers push them into a running engine or stream them to `merging.writer`.
"""

from __future__ import annotations

import ctypes
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from merging.checkpoint import InMemoryModel, ModelFolder
from merging.finite import NonFiniteMergeError, all_finite
from merging.plan import MergePlan, PlanError
from merging.resolve import resolve_call_kwargs
from merging.validate import check_compatible

# Elementwise methods process big tensors in slices that stay in the CPU caches:
# inputs are upcast to float32 slice by slice instead of all at once.
CHUNK_ELEMENTS = 1 << 18


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def reuse_freed_memory() -> None:
    """Keep freed float32 temporaries in the heap instead of returning them to the OS.

    glibc serves allocations above 128 KiB with fresh mmap'd pages and unmaps them on
    free, so every per-tensor temporary of a merge page-faults its memory in again; that
    alone made CPU merges ~3x slower. Raising the mmap/trim thresholds lets the next
    merge reuse the same memory. A no-op where glibc is not the allocator.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 2 * 1024 * 1024 * 1024)


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return device


class Merger:
    """Base + sources opened once; merges any number of plans over them.

    `models` maps the names plans use (paths in a YAML config, or short keys in the
    search) to model folders or to state dicts already in memory; `base` is one of them.
    """

    def __init__(
        self,
        models: Mapping[str, str | Path | Mapping[str, torch.Tensor]],
        base: str | None,
        *,
        device: str | torch.device | None = "auto",
        resident: bool = True,
        offload: bool = False,
        allow_pickle: bool = False,
        check_finite: bool = True,
    ):
        if base is not None and base not in models:
            raise PlanError(f"base model {base!r} is not among the models {list(models)}")
        self.device = pick_device(device)
        reuse_freed_memory()
        self.base = base
        self.folders = {
            key: InMemoryModel(dict(src), label=key) if isinstance(src, Mapping)
            else ModelFolder(src, allow_pickle=allow_pickle, label=key)
            for key, src in models.items()}
        ref = base if base is not None else next(iter(models))
        others = {k: f for k, f in self.folders.items() if k != ref}
        self.names = check_compatible(ref, self.folders[ref], others)
        self.n_layers = self.folders[ref].n_layers()
        self.resident = resident
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        if resident:
            # Sources stay where the merge runs; with `offload` on a GPU machine they
            # stay in pinned host memory and are copied over per tensor instead.
            store = torch.device("cpu") if offload else self.device
            pin = offload and self.device.type == "cuda"
            for key, folder in self.folders.items():
                loaded = {}
                for name in self.names:
                    tensor = folder.get(name)
                    if check_finite and tensor.is_floating_point() and not all_finite(tensor):
                        raise ValueError(f"{key}: tensor {name} contains NaN or inf values")
                    tensor = tensor.to(store)
                    loaded[name] = tensor.pin_memory() if pin else tensor
                self._tensors[key] = loaded
                folder.close()
        self.check_finite = check_finite

    def tensor(self, model: str, name: str) -> torch.Tensor:
        """One stored tensor of one model, on the merge device (in its stored dtype)."""
        if model not in self.folders:
            raise PlanError(f"model {model!r} is not loaded in this merger (loaded: {', '.join(self.folders)})")
        tensor = self._tensors[model][name] if self.resident else self.folders[model].get(name)
        return tensor.to(self.device, non_blocking=True)

    def source_bytes(self) -> int:
        """Bytes of all model tensors: what one merge of every model reads."""
        total = 0
        for key, folder in self.folders.items():
            for name in self.names:
                t = self._tensors[key][name] if self.resident else None
                total += t.numel() * t.element_size() if t is not None else _nbytes(folder, name)
        return total

    def merge(self, plan: MergePlan) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield every merged tensor of `plan`, in the base's tensor order."""
        spec = plan.method
        entries = plan.merged_models()
        for ref in [e.model for e in entries] + ([plan.base_model] if plan.base_model else []):
            if ref not in self.folders:
                raise PlanError(f"plan model {ref!r} is not loaded in this merger (loaded: {', '.join(self.folders)})")
        out_dtype = _DTYPES.get(plan.out_dtype or plan.dtype or "")
        # Every parameter is resolved before the first tensor is produced, so a bad plan
        # fails before anything was pushed to an engine or written to disk.
        all_kwargs = {name: resolve_call_kwargs(plan, name, self.n_layers) for name in self.names}
        for name in self.names:
            inputs = [self.tensor(e.model, name) for e in entries]
            base = self.tensor(plan.base_model, name) if plan.base_model else None
            first = base if base is not None else inputs[0]
            if not first.is_floating_point():
                yield name, first.clone()  # integer buffers are not merged
                continue
            kwargs = dict(all_kwargs[name])
            if spec.randomized:
                kwargs["generator"] = _generator(plan.seed, name, self.device)
            dtype = out_dtype or first.dtype
            try:
                merged = self._merge_one(spec, inputs, base, kwargs, dtype, name, plan.merge_method)
            except NonFiniteMergeError:
                raise NonFiniteMergeError(f"{plan.merge_method}: merged tensor {name} contains NaN or inf") from None
            yield name, merged

    def _merge_one(self, spec, inputs, base, kwargs, dtype, name: str, method: str) -> torch.Tensor:
        # A fused method reads the stored dtype and checks its own output. An elementwise
        # one merges cache-sized float32 chunks.
        if spec.fused:
            return spec.fn(inputs, base, out_dtype=dtype, **kwargs)
        if spec.elementwise and inputs[0].numel() > CHUNK_ELEMENTS:
            return self._merge_chunked(spec.fn, inputs, base, kwargs, dtype, name, method)
        merged = spec.fn([t.float() for t in inputs], None if base is None else base.float(), **kwargs).to(dtype)
        self._check_finite(merged, name, method)
        return merged

    def merge_to_dict(self, plan: MergePlan) -> dict[str, torch.Tensor]:
        return dict(self.merge(plan))

    def close(self) -> None:
        for folder in self.folders.values():
            folder.close()

    def _check_finite(self, values: torch.Tensor, name: str, method: str) -> None:
        if self.check_finite and not all_finite(values):
            raise NonFiniteMergeError(f"{method}: merged tensor {name} contains NaN or inf")

    def _merge_chunked(self, fn, inputs, base, kwargs, dtype, name: str, method: str) -> torch.Tensor:
        first = base if base is not None else inputs[0]
        out = torch.empty(first.shape, dtype=dtype, device=first.device)
        flat_out = out.view(-1)
        flat = [t.reshape(-1) for t in inputs] + ([base.reshape(-1)] if base is not None else [])
        # float32 staging buffers, allocated once per tensor and refilled per chunk
        staging = [torch.empty(min(CHUNK_ELEMENTS, first.numel()), dtype=torch.float32, device=first.device)
                   for _ in flat]
        for start in range(0, first.numel(), CHUNK_ELEMENTS):
            stop = min(start + CHUNK_ELEMENTS, first.numel())
            parts = [buf[: stop - start].copy_(t[start:stop]) for buf, t in zip(staging, flat)]
            chunk = fn(parts[: len(inputs)], parts[-1] if base is not None else None, **kwargs)
            flat_out[start:stop].copy_(chunk)
            self._check_finite(flat_out[start:stop], name, method)  # after the cast: fp16 overflow too
        return out


def _generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    """Per-tensor RNG: the same plan seed gives the same merge whatever the tensor order."""
    generator = torch.Generator(device=device)
    generator.manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    return generator


def _nbytes(folder: ModelFolder, name: str) -> int:
    n = 1
    for d in folder.shape(name):
        n *= d
    return n * torch.empty((), dtype=folder.dtype(name)).element_size()
