"""Model keys → folders: the configured base and sources, or the example family (prepared on first use)."""

from __future__ import annotations

from collections.abc import Sequence

from search.config import SearchConfig


def resolve_models(config: SearchConfig, *, homogeneous: Sequence[str] = ()) -> tuple[dict[str, str], list[str]]:
    """Model keys → folders, and the source keys (everything but "base"); preflight checks them.
    `homogeneous`: with the example family, also its seeded re-runs of these methods (`dpo-s1`)."""
    if config.models.example:
        from search.example import prepare_example

        paths = {k: str(v) for k, v in prepare_example(homogeneous=tuple(homogeneous)).items()}
    else:
        paths = {"base": config.models.base, **config.models.sources}
    return paths, [k for k in paths if k != "base"]
