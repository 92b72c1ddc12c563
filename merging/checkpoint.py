"""Reading Hugging Face model folders, lazily, one tensor at a time.

Supports a single `model.safetensors` or shards listed in `model.safetensors.index.json`,
bf16/fp16/fp32, and tied embeddings (a missing `lm_head.weight` reads as the input
embedding when the config ties them). Pickle checkpoints (`.bin`/`.pt`) can run code
when loaded, so they are refused unless the caller opts in with `allow_pickle`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
TIED_HEAD = "lm_head.weight"
EMBED_CANDIDATES = ("model.embed_tokens.weight", "transformer.wte.weight", "gpt_neox.embed_in.weight")


class CheckpointError(ValueError):
    """A model folder that cannot be read; the message names the folder and file."""


class ModelFolder:
    """Lazy, read-only view of one model folder's tensors and config."""

    def __init__(self, path: str | Path, *, allow_pickle: bool = False, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.label}: model folder {self.path} does not exist")
        self.config: dict[str, Any] = _read_json(self.path / "config.json") if (self.path / "config.json").exists() else {}
        self._files = ExitStack()
        self._pickle: dict[str, torch.Tensor] | None = None
        self._where: dict[str, Path] = self._locate_safetensors()
        if not self._where:
            self._pickle = self._load_pickle(allow_pickle)
        self._handles: dict[Path, Any] = {}
        self._alias: dict[str, str] = {}
        embed = next((n for n in EMBED_CANDIDATES if n in self._names()), None)
        if TIED_HEAD not in self._names() and embed and self.config.get("tie_word_embeddings", True):
            self._alias[TIED_HEAD] = embed

    # -- discovery -------------------------------------------------------------------------
    def _locate_safetensors(self) -> dict[str, Path]:
        index = self.path / INDEX_FILE
        if index.exists():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{self.label}: {index} has no `weight_map`")
            missing = sorted({f for f in weight_map.values() if not (self.path / f).exists()})
            if missing:
                raise CheckpointError(f"{self.label}: {INDEX_FILE} lists shard(s) that are missing: {', '.join(missing)}")
            return {name: self.path / f for name, f in weight_map.items()}
        files = [self.path / SINGLE_FILE] if (self.path / SINGLE_FILE).exists() else sorted(self.path.glob("*.safetensors"))
        where: dict[str, Path] = {}
        for file in files:
            try:
                with safe_open(file, framework="pt") as f:
                    for name in f.keys():
                        where[name] = file
            except Exception as err:  # safetensors raises its own error types
                raise CheckpointError(f"{self.label}: cannot read {file}: {err}") from None
        return where

    def _load_pickle(self, allow_pickle: bool) -> dict[str, torch.Tensor]:
        files = sorted(p for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not files:
            raise CheckpointError(f"{self.label}: no *.safetensors (or {INDEX_FILE}) in {self.path}")
        if not allow_pickle:
            raise CheckpointError(
                f"{self.label}: {self.path} holds only pickle checkpoint files ({', '.join(f.name for f in files)}); "
                "loading them can execute code. Convert the model to safetensors, or set `allow_pickle: true` "
                "in the config if you trust its origin.")
        state: dict[str, torch.Tensor] = {}
        for file in files:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise CheckpointError(f"{self.label}: {file} is not a state dict")
            state.update(loaded)
        return state

    def _names(self) -> set[str]:
        return set(self._pickle) if self._pickle is not None else set(self._where)

    # -- public ----------------------------------------------------------------------------
    def tensor_names(self) -> list[str]:
        """Names as stored (a tied head is not listed: it is the embedding)."""
        return sorted(self._names())

    def has(self, name: str) -> bool:
        return name in self._names() or name in self._alias

    def _resolve(self, name: str) -> str:
        if name in self._names():
            return name
        if name in self._alias:
            return self._alias[name]
        raise CheckpointError(f"{self.label}: tensor {name!r} is not in {self.path}")

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            self._handles[file] = self._files.enter_context(safe_open(file, framework="pt"))
        return self._handles[file]

    def shape(self, name: str) -> tuple[int, ...]:
        name = self._resolve(name)
        if self._pickle is not None:
            return tuple(self._pickle[name].shape)
        return tuple(self._handle(self._where[name]).get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        name = self._resolve(name)
        if self._pickle is not None:
            return self._pickle[name].dtype
        return _SAFE_DTYPES.get(self._handle(self._where[name]).get_slice(name).get_dtype(), torch.float32)

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (only that tensor's bytes are read from disk)."""
        name = self._resolve(name)
        if self._pickle is not None:
            return self._pickle[name]
        return self._handle(self._where[name]).get_tensor(name)

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.tensor_names():
            yield name, self.get(name)

    def n_layers(self) -> int:
        """Number of transformer blocks: from config.json, else from the tensor names."""
        from merging.names import layer_index

        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(self.config.get(key), int):
                return self.config[key]
        indices = [i for i in (layer_index(n) for n in self._names()) if i is not None]
        return max(indices) + 1 if indices else 1

    def vocab_size(self) -> int | None:
        value = self.config.get("vocab_size")
        return value if isinstance(value, int) else None

    def close(self) -> None:
        self._files.close()
        self._handles.clear()

    def __enter__(self) -> "ModelFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SAFE_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
                "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


class InMemoryModel:
    """The read interface of `ModelFolder` over a state dict already in memory.

    Lets the merger, validation and benchmarks work on tensors that never touched disk
    (e.g. a model held by a training process or generated for a benchmark).
    """

    def __init__(self, state: dict[str, torch.Tensor], *, label: str = "<in-memory>", config: dict | None = None):
        self.state = state
        self.label = label
        self.config = config or {}

    def tensor_names(self) -> list[str]:
        return sorted(self.state)

    def has(self, name: str) -> bool:
        return name in self.state

    def get(self, name: str) -> torch.Tensor:
        if name not in self.state:
            raise CheckpointError(f"{self.label}: tensor {name!r} is missing")
        return self.state[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.get(name).shape)

    def dtype(self, name: str) -> torch.dtype:
        return self.get(name).dtype

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.tensor_names():
            yield name, self.state[name]

    def n_layers(self) -> int:
        return ModelFolder.n_layers(self)  # type: ignore[arg-type]  (same logic, config or names)

    def vocab_size(self) -> int | None:
        return ModelFolder.vocab_size(self)  # type: ignore[arg-type]

    def _names(self) -> set[str]:
        return set(self.state)

    def close(self) -> None:
        pass

    def __enter__(self) -> "InMemoryModel":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
