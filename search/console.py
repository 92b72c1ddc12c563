"""The one console every part of the search prints through.

`soft_wrap`: a driver log is often not a terminal (Ray job logs, `| tee`, CI), where rich
would wrap every line at 80 columns and cut a path or a table row in two."""

from rich.console import Console

console = Console(soft_wrap=True)
