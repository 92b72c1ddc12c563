"""Built-in merge methods: importing this package registers each one (one file per family)."""

from merging.methods import (  # noqa: F401
    breadcrumbs,
    dare,
    della,
    karcher,
    linear,
    model_stock,
    multislerp,
    slerp,
    task_arithmetic,
    ties,
    tsvm,
)
