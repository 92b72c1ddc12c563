"""Fused CPU kernels for the task-vector merges, compiled on first use.

Why native code: on a CPU, torch runs a sparsifying merge (TIES, DARE, Breadcrumbs) as
some twenty separate passes over float32 copies of every tensor (upcast, subtract, |·|,
counting passes of the threshold search, masks, sign election, disjoint mean, downcast),
which made them ~10x slower than a memory-bound merge. `kernels.c` does the same math
in one counting pass per model plus one mixing pass, reading the bf16/fp16/fp32 inputs
where they lie and writing the output dtype directly, in cache-sized chunks.

The C file is compiled with the machine's C compiler (`$CC`, else `cc`) the first time it
is needed, into a cache folder (`$SOUPSEARCH_CACHE`, else `~/.cache/soupsearch`) keyed
by the source, the flags and the CPU, and loaded with ctypes; Python threads run it on
disjoint ranges (ctypes releases the GIL). Without a compiler, or with
`SOUPSEARCH_NATIVE=0`, `library()` returns None and every method runs its torch code,
which gives the same results up to float rounding (tests compare the two).
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-strict-aliasing", "-ffp-contract=off", "-fPIC", "-shared"]
if platform.machine() in ("x86_64", "AMD64"):
    # GCC vectorizes with 256-bit registers on AVX-512 CPUs unless told otherwise; full-width
    # loops made DELLA 13 % and linear 10 % faster on a Xeon (no effect without AVX-512).
    FLAGS.append("-mprefer-vector-width=512")


def cache_dir() -> Path:
    return Path(os.environ.get("SOUPSEARCH_CACHE") or Path.home() / ".cache" / "soupsearch") / "kernels"


def _cpu_id() -> str:
    """What -march=native depends on: a library built on one CPU model may not run on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    machine = hashlib.sha256(f"{platform.machine()}\0{_cpu_id()}".encode()).hexdigest()[:8]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, *FLAGS]).encode()).hexdigest()[:16]
    target = cache_dir() / f"kernels-{machine}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One compile per machine: workers starting together wait for the first (20–30 s)
    # instead of all compiling; the result is renamed into place whole.
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(prefix=".kernels-", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            proc = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{compiler} failed on {SOURCE}:\n{proc.stderr[-2000:]}")
            os.replace(tmp, target)
            # This CPU's builds of older sources go (unlinking a loaded library is safe);
            # other CPUs' builds stay, for clusters that share a home folder.
            for stale in target.parent.glob(f"kernels-{machine}-*.so"):
                if stale != target:
                    stale.unlink(missing_ok=True)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (with one warning) where they cannot be built."""
    if os.environ.get("SOUPSEARCH_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        warnings.warn(f"no C compiler ({compiler!r}) found: sparsifying merges run on torch, ~10x slower "
                      "on CPU (install gcc, or set CC)", RuntimeWarning, stacklevel=2)
        return None
    try:
        return _declare(ctypes.CDLL(str(_build(compiler))))
    except (OSError, RuntimeError) as exc:
        warnings.warn(f"native merge kernels unavailable, using torch: {exc}", RuntimeWarning, stacklevel=2)
        return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    vp, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    lib.sel_pass.argtypes = [vp, i32, vp, i32, i64, i64, i64, vp, i32, vp, vp, i32, vp, vp, vp, i64, vp, vp]
    lib.sel_pass.restype = None
    lib.sample_mags.argtypes = [vp, vp, i32, i64, i64, i64, i32, vp]
    lib.sample_mags.restype = None
    lib.nth_equal.argtypes = [vp, vp, i32, i64, i64, f32, i64]
    lib.nth_equal.restype = i64
    lib.select_kth.argtypes = [vp, i64, i64, vp, vp, vp]
    lib.select_kth.restype = f32
    lib.l1_sums.argtypes = [vp, vp, i32, i64, i64, vp, vp, vp]
    lib.l1_sums.restype = None
    lib.drop_masks.argtypes = [vp, i32, vp, i32, i64, i64, i64, vp, vp, vp, vp]
    lib.drop_masks.restype = None
    lib.mix.argtypes = [vp, i32, vp, i32, vp, i32, i64, i64, vp, i32, i32, f32]
    lib.mix.restype = i64
    return lib


def available() -> bool:
    return library() is not None
