"""A local run whose driver is SIGKILLed leaves Ray's agents behind; the next local start ends
them, and only them.

Three drivers start their local Ray the search's way (`search.pool.start_ray`), each in a
session of its own and all under this module's own Ray temp folder: A stays alive (another
live search), B is SIGKILLed once its Ray is up, C is the next run. Checked with psutil:
B's leftovers (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`, …) are alive right after the
kill and gone once C has started, while every process of A still runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from ray_sessions import end_sessions

from search.leftovers import MARKER

ROOT = Path(__file__).resolve().parents[2]
# Start the search's local Ray, say so, then live until killed (or `sys.argv[1]` seconds).
DRIVER = ("import sys, time, ray; from search.config import parse_search_config; from search.pool import start_ray;"
          "start_ray(parse_search_config({'models': {'example': True}, 'workers': {'count': 1, 'cpus': 1}}));"
          "print('READY', flush=True); time.sleep(float(sys.argv[1])); ray.shutdown()")


def _start(code_args: list[str], env: dict[str, str], sessions: list[int]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *code_args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(proc.pid)
    return proc


def _wait_ready(proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("READY"):
            return
    raise AssertionError("driver did not start its Ray: " + "".join(lines)[-3000:])


def _ray_tree(proc: subprocess.Popen, timeout: float = 120) -> list[psutil.Process]:
    """The driver's Ray processes once both agents are up (they are the raylet's children)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = psutil.Process(proc.pid).children(recursive=True)
        titles = {_title(p) for p in tree}
        if {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= titles:
            return tree
        time.sleep(0.2)
    raise AssertionError("the driver's Ray agents did not start")


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:  # gone (or a zombie) between the two questions
            pass
    return alive


def _title(p: psutil.Process) -> str:
    """A Ray process's title (`ray::DashboardAgent`); "" once it is gone or a zombie."""
    try:
        return (p.cmdline() or [""])[0]
    except psutil.Error:
        return ""


def _marker_of(ray_dir: Path, pid: int) -> Path:
    sessions = [s for s in ray_dir.glob("session_*") if not s.is_symlink()]  # not session_latest
    marks = [s / MARKER for s in sessions if (s / MARKER).exists() and json.loads((s / MARKER).read_text())["pid"] == pid]
    assert len(marks) == 1, sessions
    return marks[0]


@pytest.mark.slow
def test_next_start_ends_what_a_killed_driver_left_and_spares_a_live_run():
    tmp = Path(tempfile.mkdtemp(prefix="ss-left-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    sessions: list[int] = []
    try:
        live = _start(["600"], env, sessions)
        _wait_ready(live)
        live_tree = _ray_tree(live)
        killed = _start(["600"], env, sessions)
        _wait_ready(killed)
        killed_tree = _ray_tree(killed)
        killed_mark = _marker_of(tmp / "ray", killed.pid)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        left = _alive(killed_tree)
        assert any(_title(p) == "ray::DashboardAgent" for p in left), "nothing left to clean up"

        nxt = _start(["0"], env, sessions)
        out, _ = nxt.communicate(timeout=300)
        assert nxt.returncode == 0, out[-3000:]

        assert _alive(left) == [], [_title(p) for p in _alive(left)]
        assert not killed_mark.exists()  # looked at once, then forgotten
        assert _alive(live_tree) == live_tree and live.poll() is None  # the live run is untouched
        assert _marker_of(tmp / "ray", live.pid).exists()
    finally:
        end_sessions(sessions)
        shutil.rmtree(tmp, ignore_errors=True)
