"""Real OS faults while writing a merged model folder: disk full and permission denied.

A merge that dies while writing must not leave a half model folder behind (a later
`vllm serve OUT_DIR` or `from_pretrained` would load it, or fail confusingly), must not
destroy the model that `--force` was about to replace, and must tell the user in one line
where and why, not with a traceback. A mock would only prove that we call rmtree; here the
OS really fails the writes of a child process running the real CLI (`run_search.py merge`
and `run_search.py export --materialize`):

* disk full: RLIMIT_FSIZE below one shard's size, SIGXFSZ ignored, so the shard write fails
  with EFBIG exactly where a full disk fails with ENOSPC; and, where this test may mount,
  a small tmpfs filled up to a few KiB (a real ENOSPC), skipped with the reason otherwise;
* permission denied: the destination's parent is 0555. Root ignores modes, so as root the
  child runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (dropped from the capability
  bounding set before exec; the child stays root and can read the interpreter under /root,
  which the 'nobody' user could not). A probe checks the mode really stops the child.

Shards are 8 KiB (`--max-shard-size 8K`) against a ~33 KiB model, so the fault hits part-way
through, after real bytes of the model were written.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_llama_state
from merging import ModelFolder, write_model

ROOT = Path(__file__).resolve().parents[2]
SHARD = "8K"
FILE_LIMIT = 4096  # bytes per file: below one 8 KiB shard, above every small metadata file
FREE_ON_DISK = 8192  # what the full tmpfs keeps free: two pages, less than one shard
OBJECTIVES = ["safety", "factuality"]

# linux/prctl.h, linux/capability.h
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child after fork only calls it


def _limit_file_size() -> None:
    """Child setup: writing a file past FILE_LIMIT bytes fails with EFBIG instead of killing us."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def _drop_dac_capabilities() -> None:
    """Child setup (root only): file modes apply to the child after exec, as to any user."""
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(code)}")


@dataclass
class Fault:
    """Where the model goes, what the child's error must say, and how the OS is made to fail."""

    parent: Path
    reason: str  # os.strerror text the error line must carry
    preexec: Callable[[], None] | None = None
    arm: Callable[[], None] = lambda: None  # called once any old model is in place, right before the run
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def _run_child(args: list[str], preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, preexec_fn=preexec, capture_output=True,
                          text=True, timeout=180)


def _file_too_large(tmp_path: Path) -> Fault:
    parent = tmp_path / "models"
    parent.mkdir()
    return Fault(parent, os.strerror(errno.EFBIG), preexec=_limit_file_size)


def _no_space(tmp_path: Path) -> Fault:
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(disk)],
                                 capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command: cannot make a small filesystem for a real ENOSPC")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a real ENOSPC (needs root with CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    parent = disk / "models"
    parent.mkdir()

    def fill() -> None:
        """Leave FREE_ON_DISK bytes free, whatever the old model already takes."""
        stats = os.statvfs(disk)
        with open(disk / "ballast", "wb") as ballast:
            ballast.write(bytes(stats.f_bavail * stats.f_frsize - FREE_ON_DISK))

    return Fault(parent, os.strerror(errno.ENOSPC), arm=fill,
                 cleanups=[lambda: subprocess.run(["umount", str(disk)], check=True)])


def _permission_denied(tmp_path: Path) -> Fault:
    parent = tmp_path / "readonly"
    parent.mkdir()
    preexec = _drop_dac_capabilities if os.geteuid() == 0 else None
    parent.chmod(0o555)
    try:
        probe = _run_child(["-c", f"open({str(parent / 'probe')!r}, 'x')"], preexec)
    except subprocess.SubprocessError as err:  # the capability drop itself failed
        parent.chmod(0o755)
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE for the child, so a read-only folder would not stop it: {err}")
    parent.chmod(0o755)
    if probe.returncode == 0:
        pytest.skip("a 0555 folder does not stop the child's writes here (privileges or filesystem)")
    return Fault(parent, os.strerror(errno.EACCES), preexec=preexec, arm=lambda: parent.chmod(0o555),
                 cleanups=[lambda: parent.chmod(0o755)])


FAULTS = {"file-too-large": _file_too_large, "no-space": _no_space, "permission-denied": _permission_denied}


@pytest.fixture(params=list(FAULTS))
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    made = FAULTS[request.param](tmp_path)
    try:
        yield made
    finally:
        for cleanup in reversed(made.cleanups):
            cleanup()


def _plan(models: dict[str, str]) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": models["base"], "dtype": "float32",
            "models": [{"model": models["dpo"], "parameters": {"weight": 0.6}},
                       {"model": models["kto"], "parameters": {"weight": 0.4}}]}


def _old_model(out_dir: Path, base: Path) -> dict[str, str]:
    """A complete model already at OUT_DIR (what `--force` would replace); its files' hashes."""
    write_model(iter(tiny_llama_state(7).items()), out_dir, base_dir=base)
    return _snapshot(out_dir)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_failed_cleanly(proc: subprocess.CompletedProcess[str], out_dir: Path, reason: str,
                           old: dict[str, str] | None) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert str(out_dir) in errors[0] and reason in errors[0], errors[0]
    assert proc.returncode == 2, proc.stderr
    # nothing half-written next to the destination: no .OUT.tmp-*, no .OUT.old-*, no partial OUT
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ([out_dir.name] if old else [])
    if old is not None:
        assert _snapshot(out_dir) == old  # the model being replaced is untouched ...
        with ModelFolder(out_dir) as folder:  # ... and still loads, with the old weights
            loaded = dict(folder.iter_tensors())
        expected = tiny_llama_state(7)
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[n], expected[n]) for n in expected)


@pytest.mark.parametrize("replace", [False, True], ids=["new", "force-replace"])
def test_merge_cli_fails_cleanly(fault: Fault, replace: bool, tiny_family: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump(_plan({k: str(v) for k, v in tiny_family.items()}), sort_keys=False))
    out_dir = fault.parent / "merged"
    old = _old_model(out_dir, tiny_family["base"]) if replace else None
    fault.arm()
    proc = _run_child([str(ROOT / "run_search.py"), "merge", str(config), str(out_dir), "--max-shard-size", SHARD,
                       "--threads", "1", *(["--force"] if replace else [])], fault.preexec)
    _assert_failed_cleanly(proc, out_dir, fault.reason, old)


def _experiment(root: Path, family: dict[str, Path]) -> Path:
    """A finished one-trial search folder, written by the search's own result writers."""
    from search.config import parse_search_config
    from search.results import write_plan, write_references, write_results

    config = parse_search_config({
        "experiment": {"name": "shipped", "dir": str(root)},
        "models": {"base": str(family["base"]), "sources": {"dpo": str(family["dpo"]), "kto": str(family["kto"])}},
        "search": {"objectives": OBJECTIVES},
    })
    exp = config.experiment_dir()
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_plan(exp, 0, _plan({"base": "base", "dpo": "dpo", "kto": "kto"}))
    references = {name: {f"wtr.{o}": 0.2 for o in OBJECTIVES} for name in ("base", "dpo", "kto")}
    write_references(exp, references)
    write_results(exp, [{"trial_number": 0, "status": "ok", "method": "task_arithmetic", "safety": 0.7,
                         "factuality": 0.6}], references, OBJECTIVES, [])
    return exp


@pytest.mark.parametrize("fault", ["file-too-large"], indirect=True)
def test_export_materialize_fails_cleanly(fault: Fault, tiny_family: dict[str, Path], tmp_path: Path) -> None:
    """`export --materialize OUT --force` over an existing model: the shipped model survives the fault.

    One fault only (the one every Linux can inject): the writer is the same as `merge`'s, whose
    test covers every fault; this checks that the export path reports it the same clean way."""
    exp = _experiment(tmp_path / "runs", tiny_family)
    out_dir = fault.parent / "shipped"
    old = _old_model(out_dir, tiny_family["base"])
    fault.arm()
    proc = _run_child([str(ROOT / "run_search.py"), "export", str(exp), "--materialize", str(out_dir), "--force"],
                      fault.preexec)
    _assert_failed_cleanly(proc, out_dir, fault.reason, old)
