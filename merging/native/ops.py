"""Typed calls into the fused kernels: argument marshalling and the split over threads.

Each kernel runs single-threaded over an index range; a tensor is cut into block-aligned
ranges, one per thread (torch's thread count), run on a thread pool (ctypes releases the
GIL during the call). Per-block outputs land at the block's global index, so results do
not depend on the number of threads. Small side arrays are numpy, not torch: a torch op
big enough to go parallel leaves torch's OpenMP workers spinning for a while afterwards,
on the very cores the kernels' threads need (measured: a quarter of a TIES merge).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from merging.keep_rules import prime_at_least
from merging.native import library

BLOCK = 1 << 16  # must match BLOCK in kernels.c
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
MIN_ELEMENTS = 1 << 16  # smaller tensors stay on torch (call overhead; exact small-case tests)
_POOL: ThreadPoolExecutor | None = None


class KeepRule(ctypes.Structure):
    """keep_t in kernels.c: which entries of a delta survive, and their weight in the mix.

    An entry at index i with magnitude v is kept iff v > low(i) and v <= high(i) (and,
    when `random`, its draw u(seed, i) < density); low(i) is low_head for i < low_cut and
    low_tail from there on (likewise high), which is how ties at a threshold are split in
    index order. A `della` rule keeps entry i iff u(seed, i) < p(bin) and scales it by
    s(bin), from tables the kernel builds per row of `row_len` (keep_rules.DellaDrop). A
    `mask` (a bit per entry, from `drop_masks`) keeps only the entries whose bit is set.
    """

    _fields_ = [("low_cut", ctypes.c_int64), ("high_cut", ctypes.c_int64),
                ("low_head", ctypes.c_float), ("low_tail", ctypes.c_float),
                ("high_head", ctypes.c_float), ("high_tail", ctypes.c_float),
                ("density", ctypes.c_float), ("seed", ctypes.c_uint32), ("random", ctypes.c_int32),
                ("coef", ctypes.c_float), ("weight", ctypes.c_float),
                ("della", ctypes.c_int32), ("della_inverse", ctypes.c_int32), ("row_len", ctypes.c_int64),
                ("della_lo", ctypes.c_double), ("della_span", ctypes.c_double), ("mask", ctypes.c_void_p)]


def keep_everything() -> KeepRule:
    return KeepRule(low_cut=0, high_cut=0, low_head=-1.0, low_tail=-1.0, high_head=math.inf, high_tail=math.inf,
                    density=1.0, seed=0, random=0, coef=1.0, weight=1.0, della=0, della_inverse=0, row_len=0,
                    della_lo=0.0, della_span=0.0, mask=None)


def applies(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the kernels merge these tensors: on CPU, in dtypes they read, big enough to
    be worth a call, and built. The one place that decides it, for every caller."""
    return (tensors[0].device.type == "cpu" and tensors[0].numel() >= MIN_ELEMENTS
            and all(t.dtype in DTYPE_CODES for t in tensors) and library() is not None)


def one_dtype(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The kernels read a single input dtype: mixed inputs are upcast to float32."""
    if len({t.dtype for t in tensors}) > 1:
        return [t.float() for t in tensors]
    return list(tensors)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers != max(1, torch.get_num_threads() - 1):  # noqa: SLF001
        _POOL = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads() - 1), thread_name_prefix="merge-kernel")
    return _POOL


def thread_ranges(n: int) -> list[tuple[int, int]]:
    """[start, stop) ranges, block-aligned, one per thread (fewer for small tensors)."""
    blocks = -(-n // BLOCK)
    per = -(-blocks // max(1, min(torch.get_num_threads(), blocks)))
    return [(s, min(n, s + per * BLOCK)) for s in range(0, n, per * BLOCK)]


def _run(fn: Callable[[int, int, int], object], ranges: list[tuple[int, int]]) -> list:
    """fn(range number, start, stop) for every range: the first on this thread, the others on the pool's."""
    if len(ranges) == 1:
        return [fn(0, *ranges[0])]
    others = [_pool().submit(fn, r, *ranges[r]) for r in range(1, len(ranges))]
    first = fn(0, *ranges[0])
    return [first] + [f.result() for f in others]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    if t.device.type != "cpu" or t.dtype not in DTYPE_CODES:
        raise ValueError(f"native kernels take CPU float32/bfloat16/float16 tensors, got {t.dtype} on {t.device}")
    return t.contiguous().view(-1)


@dataclass
class Counts:
    """One selection pass over M models: per-pivot counts per block, and gathered magnitudes."""

    lt: np.ndarray                  # (M, blocks, P) int64: #(v < pivot)
    le: np.ndarray                  # (M, blocks, P) int64: #(v <= pivot)
    parts: np.ndarray               # (ranges, M·G, cap) float32: gathered magnitudes per thread range
    found: np.ndarray               # (ranges, M·G) int64: how many (> cap: too many, dropped)
    per_block: np.ndarray           # (M·G, blocks) int64: how many each block gave

    def values(self, model: int, interval: int, intervals: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The magnitudes gathered for one model's interval, in index order, and how many of
        them the blocks up to each one gave, cumulative (None: there were too many)."""
        g = model * intervals + interval
        counts = self.found[:, g]
        if (counts > self.parts.shape[2]).any():
            return None
        values = self.parts[0, g, : counts[0]] if len(counts) == 1 else \
            np.concatenate([self.parts[r, g, :c] for r, c in enumerate(counts)])
        return values, np.cumsum(self.per_block[g])


def selection_pass(xs: Sequence[torch.Tensor], b: torch.Tensor | None, pivots: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray, cap: int) -> Counts:
    """Counts of v = |x_m − b| below/at each of model m's pivots (pivots[m], P per model), and
    the v in each of its intervals (lo[m, g], hi[m, g]), in one pass over all M models."""
    lib = library()
    flats, bf = [_flat(x) for x in xs], _flat(b)
    n = flats[0].numel()
    m_count, p = pivots.shape
    g_count = lo.shape[1]
    piv = np.ascontiguousarray(pivots, dtype=np.float32)
    los, his = np.ascontiguousarray(lo, dtype=np.float32), np.ascontiguousarray(hi, dtype=np.float32)
    blocks = -(-n // BLOCK)
    lt = np.zeros((m_count, blocks, max(p, 1)), dtype=np.int64)
    le = np.zeros_like(lt)
    ranges = thread_ranges(n)
    parts = np.empty((len(ranges), m_count * g_count, cap), dtype=np.float32)
    found = np.zeros((len(ranges), m_count * g_count), dtype=np.int64)
    per_block = np.zeros((m_count * g_count, blocks), dtype=np.int64)
    if m_count * g_count > 64:
        raise ValueError("one selection pass takes at most 64 model intervals")
    pointers = (ctypes.c_void_p * m_count)(*[f.data_ptr() for f in flats])
    dt = DTYPE_CODES[flats[0].dtype]
    _run(lambda r, s, e: lib.sel_pass(pointers, m_count, _ptr(bf), dt, s, e, blocks, piv.ctypes.data, p,
                                      lt.ctypes.data, le.ctypes.data, g_count, los.ctypes.data, his.ctypes.data,
                                      parts[r].ctypes.data, cap, found[r].ctypes.data, per_block.ctypes.data),
         ranges)
    return Counts(lt, le, parts, found, per_block)


def sample_magnitudes(x: torch.Tensor, b: torch.Tensor | None, size: int, run: int = 16) -> np.ndarray:
    """About `size` magnitudes |x − b| (flattened), in runs of `run` consecutive elements
    spread evenly over the tensor with a prime stride (no aliasing with row lengths)."""
    xf, bf = _flat(x), _flat(b)
    n = xf.numel()
    runs = max(1, min(n // run, size // run))
    stride = prime_at_least(max(run, n // runs))
    runs = max(1, (n - run) // stride + 1) if n >= run else 1
    run = min(run, n)
    out = np.empty(runs * run, dtype=np.float32)
    library().sample_mags(_ptr(xf), _ptr(bf), DTYPE_CODES[xf.dtype], (n - (runs - 1) * stride - run) // 2, stride,
                          runs, run, out.ctypes.data)
    return out


# select_kth's reused buffer (no fresh pages per call): its callers, the threshold
# resolution in task_vectors, run on one thread.
_SCRATCH = np.empty(0, dtype=np.float32)


def select_kth(values: np.ndarray, r: int) -> tuple[float, int, int]:
    """The r-th smallest (0-based) of non-negative float32 values, how many are smaller and how
    many equal (select_kth in kernels.c: a radix select, fast on heavily tied values)."""
    global _SCRATCH
    if not 0 <= r < values.size:
        raise ValueError(f"rank {r} outside 0..{values.size - 1}")
    values = np.ascontiguousarray(values, dtype=np.float32)
    if _SCRATCH.size < values.size:
        _SCRATCH = np.empty(max(values.size, 2 * _SCRATCH.size), dtype=np.float32)
    less, equal = ctypes.c_int64(), ctypes.c_int64()
    t = library().select_kth(values.ctypes.data, values.size, r, _SCRATCH.ctypes.data, ctypes.byref(less),
                             ctypes.byref(equal))
    return float(t), less.value, equal.value


def nth_equal(x: torch.Tensor, b: torch.Tensor | None, start: int, stop: int, value: float, nth: int) -> int:
    """Index of the nth (1-based) element of [start, stop) with |x − b| == value (−1: none)."""
    xf, bf = _flat(x), _flat(b)
    return int(library().nth_equal(_ptr(xf), _ptr(bf), DTYPE_CODES[xf.dtype], start, stop, value, nth))


def l1_norms(x: torch.Tensor, b: torch.Tensor | None, rule: KeepRule) -> tuple[float, float]:
    """(‖d‖₁, ‖keep(d)‖₁) of d = x − b, summed per block in float64 and then in block order."""
    lib = library()
    xf, bf = _flat(x), _flat(b)
    blocks = -(-xf.numel() // BLOCK)
    total = np.zeros(blocks, dtype=np.float64)
    kept = np.zeros(blocks, dtype=np.float64)
    dt = DTYPE_CODES[xf.dtype]
    _run(lambda _, s, e: lib.l1_sums(_ptr(xf), _ptr(bf), dt, s, e, ctypes.addressof(rule), total.ctypes.data,
                                     kept.ctypes.data), thread_ranges(xf.numel()))
    return float(total.sum()), float(kept.sum())


def drop_masks(xs: Sequence[torch.Tensor], b: torch.Tensor | None, rules: Sequence[KeepRule]
               ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The kept entries of each model's random drop (DELLA or DARE rules) as bits (one row of
    the array per model, bit i of a row little-endian in byte i // 8), and each model's
    (‖d‖₁, ‖kept d‖₁), summed per block in float64 and then in block order, as `l1_norms`."""
    lib = library()
    flats, bf = [_flat(x) for x in xs], _flat(b)
    n = flats[0].numel()
    blocks = -(-n // BLOCK)
    masks = np.empty((len(flats), -(-n // 8)), dtype=np.uint8)
    total = np.zeros((len(flats), blocks), dtype=np.float64)
    kept = np.zeros_like(total)
    pointers = (ctypes.c_void_p * len(flats))(*[f.data_ptr() for f in flats])
    mask_pointers = (ctypes.c_void_p * len(flats))(*[masks[m].ctypes.data for m in range(len(flats))])
    keep = (KeepRule * len(rules))(*rules)
    dt = DTYPE_CODES[flats[0].dtype]
    _run(lambda _, s, e: lib.drop_masks(pointers, len(flats), _ptr(bf), dt, s, e, blocks, keep, mask_pointers,
                                        total.ctypes.data, kept.ctypes.data), thread_ranges(n))
    return masks, [(float(t.sum()), float(k.sum())) for t, k in zip(total, kept)]


def mix(xs: Sequence[torch.Tensor], b: torch.Tensor | None, out: torch.Tensor, rules: Sequence[KeepRule], *,
        consensus: bool, normalize: bool, lambda_: float) -> int:
    """Writes the merge into `out` (see mix() in kernels.c); returns how many values are NaN/inf."""
    lib = library()
    flats = [_flat(x) for x in xs]
    bf, of = _flat(b), _flat(out)
    if of.data_ptr() != out.data_ptr():
        raise ValueError("out must be contiguous")
    pointers = (ctypes.c_void_p * len(flats))(*[f.data_ptr() for f in flats])
    keep = (KeepRule * len(rules))(*rules)
    dt, out_dt = DTYPE_CODES[flats[0].dtype], DTYPE_CODES[of.dtype]
    bad = _run(lambda _, s, e: lib.mix(pointers, len(flats), _ptr(bf), dt, _ptr(of), out_dt, s, e, keep,
                                    int(consensus), int(normalize), float(lambda_)), thread_ranges(of.numel()))
    return int(sum(bad))
