"""The Ray dashboard of a run: one line at start that says where it is, or why there is none.

A local run asks Ray for its dashboard the way Ray decides by default (`include_dashboard=None`):
started when `ray[default]`'s packages import, and a dashboard that fails to start is logged by
Ray, never a failed run. Ray binds it to 127.0.0.1 (port 8265, or the next free one when another
Ray holds it), so it is reachable from this machine only; from elsewhere, forward the port
(`ssh -L 8265:127.0.0.1:8265 HOST`). Ray 2.60 turns token auth on for a new local cluster: the
dashboard's login page then asks for the token `ray get-auth-token` prints, and the line says
so. A run that joins a cluster prints the head's dashboard. The line has no apostrophes: the
dashboard's log view colours the text after one as a string.
"""

from __future__ import annotations

import os
from typing import Any


def dependency_error() -> str:
    """Why Ray cannot run its dashboard in this environment ("" when it can): the import Ray
    itself tries before it starts one (`ray.dashboard.optional_deps`, what `ray[default]` adds)."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as err:
        return str(err) or type(err).__name__
    return ""


def dashboard_line(url: str | None, *, joined: bool, token_auth: bool, missing: str, logs: str) -> str:
    """The line a run prints once at start.

    `url`: Ray's dashboard address ("" or None when there is none); `joined`: the run joined a
    cluster (`experiment.ray_address`) instead of starting its own Ray; `token_auth`: Ray's token
    auth is on; `missing`: `dependency_error()`; `logs`: the Ray session's log folder, where Ray
    writes why a dashboard that should have started did not."""
    if url:
        url = url if "://" in url else f"http://{url}"
        login = "; log in with the token that ray get-auth-token prints" if token_auth else ""
        return f"Ray dashboard: {url} (Jobs: the log of this run; Actors: the merge workers and judges{login})"
    if joined:
        return ("no Ray dashboard: the head of the cluster runs none (ray start --head --include-dashboard=true "
                "starts one); the search runs without it")
    if missing:
        return (f"no Ray dashboard: ray[default] is not fully installed ({missing}); the search runs without it "
                f"(.venv/bin/pip install 'ray[default]' adds it)")
    return f"no Ray dashboard: it did not start (see {logs}/dashboard.log); the search runs without it"


def describe_dashboard(context: Any, *, joined: bool) -> str:
    """`dashboard_line` for the `RayContext` that `ray.init` returned."""
    session = (getattr(context, "address_info", None) or {}).get("session_dir") or "/tmp/ray/session_latest"
    return dashboard_line(getattr(context, "dashboard_url", None), joined=joined,
                          token_auth=os.environ.get("RAY_AUTH_MODE", "token").lower() == "token",
                          missing=dependency_error(), logs=f"{session}/logs")
