"""Writing a merged model folder: sharded safetensors + index + config + tokenizer.

The folder appears all at once or not at all: everything is written into a temporary
folder next to the destination (same filesystem, so the final rename is atomic) and a
failure (disk full, permission denied, bad tensor) removes it. An existing destination
is only replaced with `force=True`, and survives a failed replacement. The OS refusing a
write is raised as ModelWriteError: one line naming the destination, the reason and the step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
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


class ModelWriteError(OSError):
    """The OS refused a write of the model folder (disk full, permission denied, ...).

    One message naming the destination, the OS reason and the step, so the CLI can print it
    as one line instead of a traceback that ends in a temporary file's name."""

    def __str__(self) -> str:
        return self.strerror


# safetensors raises its own error for I/O failures; the OS error number is only in the text.
_SAFETENSORS_OS_ERROR = re.compile(r"\(os error (\d+)\)")


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
    with _writing(out_dir, "creating a temporary folder next to it"):
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
            with _writing(out_dir, f"writing shard {n_shards + 1}, {shard_bytes:,} bytes"):
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
        with _writing(out_dir, "writing the shard index"):
            _name_shards(tmp, n_shards, weight_map, total_bytes)
        with _writing(out_dir, f"copying config and tokenizer files from {base_dir}"):
            _copy_metadata(base_dir, tmp, out_dtype)
        for fname, text in (extra_files or {}).items():
            with _writing(out_dir, f"writing {fname}"):
                (tmp / fname).write_text(text)
        with _writing(out_dir, "moving the finished folder into place"):
            _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder to `out_dir`; an old `out_dir` is kept if that fails."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    try:
        out_dir.rename(trash / "old")
    except BaseException:
        trash.rmdir()
        raise
    try:
        tmp.rename(out_dir)
    except BaseException:
        (trash / "old").rename(out_dir)  # if even this fails, the old model stays in `trash`, not deleted
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _writing(out_dir: Path, what: str) -> Iterator[None]:
    """Turn an OS failure of the step `what` into a ModelWriteError naming `out_dir` and the reason.

    Only write steps are wrapped: an error raised while computing the tensors (an unreadable
    input checkpoint, a non-finite merge) is not a failure to write and keeps its own type."""
    try:
        yield
    except ModelWriteError:
        raise
    except OSError as err:
        if err.errno is None:
            raise
        raise _write_error(err.errno, out_dir, what) from err
    except SafetensorError as err:
        found = _SAFETENSORS_OS_ERROR.search(str(err))
        if found is None:
            raise
        raise _write_error(int(found.group(1)), out_dir, what) from err


def _write_error(code: int, out_dir: Path, what: str) -> ModelWriteError:
    return ModelWriteError(code, f"could not write model to {out_dir}: {os.strerror(code)} ({what})")


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
