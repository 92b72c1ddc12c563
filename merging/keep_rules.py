"""Which entries of a task vector a sparsifying method keeps, as data.

A method says what to keep (`TopK`, `RankWindow`, `RandomDrop`, `DellaDrop`, one per
model); `merging.task_vectors` turns each rule into the few scalars the fused mixing pass
evaluates per entry. Keeping the rule declarative is what lets one pass apply every rule
instead of materializing sparsified deltas.

density ≥ 1 keeps everything and density ≤ 0 nothing, for every rule (mergekit).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from merging.kernels import draw_uniform


@dataclass(frozen=True)
class TopK:
    """TIES trim: keep the k = max(1, ⌊density·n⌋) largest magnitudes (ties in index order)."""

    density: float
    rescale_norm: str | None = None


@dataclass(frozen=True)
class RankWindow:
    """Model Breadcrumbs: keep ascending magnitude ranks [n_bot, n_bot + ⌊density·n⌋),
    n_bot = max(0, n − ⌊density·n⌋ − ⌊gamma·n⌋)."""

    density: float
    gamma: float
    rescale_norm: str | None = None


@dataclass(frozen=True)
class RandomDrop:
    """DARE: keep each entry independently with probability density; draws are
    `uniform_draws(seed, index)`, the same on every device and in both code paths."""

    density: float
    seed: int = 0
    rescale_norm: str | None = None


@dataclass(frozen=True)
class DellaDrop:
    """DELLA MagPrune: keep entry i of a row with probability p = density − ε + 2ε·r_i, r_i
    its normalized magnitude rank in the row at bin resolution (`merging.kernels.DELLA_BINS`:
    16 bins per binade below the row's largest magnitude), and draw
    `uniform_draws(seed, index)` like `RandomDrop`."""

    density: float
    epsilon: float
    seed: int = 0
    rescale_norm: str | None = None

    def __post_init__(self) -> None:
        if 0 < self.density < 1:  # density 0 and 1 keep nothing and everything whatever ε is (mergekit)
            check_della(self.density, self.epsilon)


def check_della(density: float, epsilon: float) -> None:
    if density - epsilon <= 0 or density + epsilon >= 1:
        raise ValueError(f"della: keep probabilities density ± epsilon must lie in (0, 1); "
                         f"got density={density}, epsilon={epsilon}")


KeepRule = TopK | RankWindow | RandomDrop | DellaDrop


def trivial(rule: KeepRule | None) -> str | None:
    """"all" when the rule keeps every entry, "none" when it keeps none, else None."""
    if rule is None or rule.density >= 1:
        return "all"
    if rule.density <= 0:
        return "none"
    return None


def top_k_count(density: float, n: int) -> int:
    return max(1, int(density * n))


def window_ranks(rule: RankWindow, n: int) -> tuple[int, int]:
    """The ascending magnitude ranks [start, stop) that Breadcrumbs keeps."""
    target, n_top = int(rule.density * n), int(rule.gamma * n)
    n_bot = max(0, n - target - n_top)
    return n_bot, n_bot + target


RESCALE_EPS = 1e-7  # mergekit: no L1 rescale when either norm is below this


def prev_float32(value: float) -> float:
    """The largest float32 below `value`: |x| > prev(t) ⇔ |x| ≥ t for float32 x."""
    t = torch.tensor(value, dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(-math.inf, dtype=torch.float32)))


def prime_at_least(n: int) -> int:
    """Sampling strides are prime so that they do not alias with row lengths (powers of 2)."""
    n = max(n, 2)
    while any(n % p == 0 for p in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def model_seed(seed: int, model: int) -> int:
    """The 32-bit draw seed of one model's task vector in one tensor."""
    return zlib.crc32(f"{int(seed)}:{model}".encode())


def uniform_draws(seed: int, start: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """u(seed, i) for i in [start, start + n): the draws DARE and DELLA keep entries by
    (`merging.kernels.draw_uniform`), so a mask depends only on the seed and the position,
    not on the device, thread count or chunking."""
    return draw_uniform(seed, torch.arange(start, start + n, dtype=torch.int64, device=device))
