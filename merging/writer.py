"""Writing a merged model folder: sharded safetensors + index + config + tokenizer.

The folder appears all at once or not at all: everything is written into a temporary
folder next to the destination (same filesystem, so the final rename is atomic) and a
failure (disk full, permission denied, bad tensor) removes it. An existing destination
is only replaced with `force=True`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from merging.checkpoint import INDEX_FILE, SINGLE_FILE

# Files copied from the base so the merged folder loads with transformers/vLLM as is.
COPIED_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
    "chat_template.json",
)
DEFAULT_SHARD_BYTES = 2 * 1024**3
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


class OutputExistsError(FileExistsError):
    pass


def write_model(
    tensors: Iterable[tuple[str, torch.Tensor]],
    out_dir: str | Path,
    *,
    base_dir: str | Path | None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    force: bool = False,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Stream `(name, tensor)` pairs into a new model folder at `out_dir`; returns its path.

    Shards are flushed as soon as they are full, so peak memory is one shard, not the model.
    `extra_files` (name -> text) are written too, e.g. the merge config that made the model.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not force:
        raise OutputExistsError(f"{out_dir} already exists; pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is not
    try:
        current: dict[str, torch.Tensor] = {}
        n_shards = 0
        weight_map: dict[str, int] = {}
        shard_bytes = total_bytes = 0
        out_dtype = dtype

        def flush() -> None:
            nonlocal current, n_shards, shard_bytes
            save_file(current, str(tmp / f"shard-{n_shards:05d}.safetensors"), metadata={"format": "pt"})
            current, n_shards, shard_bytes = {}, n_shards + 1, 0

        for name, tensor in tensors:
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            out_dtype = out_dtype or tensor.dtype
            tensor = tensor.detach().to("cpu").contiguous()
            size = tensor.numel() * tensor.element_size()
            if current and shard_bytes + size > max_shard_bytes:
                flush()
            current[name] = tensor
            weight_map[name] = n_shards
            shard_bytes += size
            total_bytes += size
        if not weight_map:
            raise ValueError("no tensors to write")
        flush()
        _name_shards(tmp, n_shards, weight_map, total_bytes)
        _copy_metadata(base_dir, tmp, out_dtype)
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(trash / "old")
            tmp.rename(out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _name_shards(folder: Path, n: int, weight_map: dict[str, int], total_bytes: int) -> None:
    if n == 1:
        (folder / "shard-00000.safetensors").rename(folder / SINGLE_FILE)
        return
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for i, name in enumerate(names):
        (folder / f"shard-{i:05d}.safetensors").rename(folder / name)
    index = {"metadata": {"total_size": total_bytes},
             "weight_map": {t: names[i] for t, i in sorted(weight_map.items())}}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _copy_metadata(base_dir: str | Path | None, folder: Path, dtype: torch.dtype | None) -> None:
    if base_dir is None:
        return
    base_dir = Path(base_dir)
    config_path = base_dir / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        if dtype in _DTYPE_NAMES:
            keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["torch_dtype"]
            for key in keys:
                config[key] = _DTYPE_NAMES[dtype]
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for fname in COPIED_FILES:
        if (base_dir / fname).exists():
            shutil.copy2(base_dir / fname, folder / fname)
