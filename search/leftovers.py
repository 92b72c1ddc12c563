"""What a local run whose driver was killed leaves of its Ray, found and ended by the next run.

`ray.init` ties gcs_server and the raylet to the driver, but the raylet's agents
(`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) outlive a SIGKILLed driver: they keep
memory, and the dashboard agent keeps its port (52365), which the next run's agent then
fails to bind. Ray cannot tell such orphans from a cluster someone started, so soupsearch
marks what it starts: a local run writes `soupsearch_driver.json` (its pid and start time)
into its Ray session folder, and every later local start ends the processes of marked
sessions whose driver is gone. Never touched: sessions without the mark (a `ray start`
cluster, another program's Ray), a session whose driver still runs (another live search),
and processes of other users.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

MARKER = "soupsearch_driver.json"


@dataclass(frozen=True)
class Ended:
    """One dead run's session and the processes of it that were ended."""

    session: Path
    driver_pid: int
    pids: tuple[int, ...]

    def message(self) -> str:
        return (f"ended {len(self.pids)} Ray process(es) left by a soupsearch run whose driver (pid "
                f"{self.driver_pid}) is gone: session {self.session.name}")


def record_local_session(session_dir: str | Path) -> None:
    """Mark `session_dir` as started by this process (a local Ray of this run)."""
    me = psutil.Process()
    (Path(session_dir) / MARKER).write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))


def end_dead_sessions(ray_temp_root: str | Path, grace_s: float = 5.0) -> list[Ended]:
    """End what dead soupsearch drivers left under `ray_temp_root` (Ray's temp folder, whose
    `session_*` folders hold the marks). A session whose leftovers are all gone loses its mark,
    so it is looked at once."""
    dead = [s for s in _marked_sessions(Path(ray_temp_root)) if not _driver_alive(s)]
    if not dead:
        return []
    ended = []
    for session in dead:
        procs = _processes_of(session)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:  # gcs_server and the agents may outlast a SIGTERM
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _, alive = psutil.wait_procs(alive, timeout=grace_s)
        if not alive:
            (session / MARKER).unlink(missing_ok=True)
        if procs:
            ended.append(Ended(session, _read(session).get("pid", -1), tuple(p.pid for p in procs)))
    return ended


def _marked_sessions(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [s for s in root.glob("session_*") if not s.is_symlink() and (s / MARKER).is_file()]


def _read(session: Path) -> dict:
    try:
        return json.loads((session / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _driver_alive(session: Path) -> bool:
    """The marked driver still runs: same pid *and* start time (a pid may be reused). An
    unreadable mark counts as alive, so nothing is ended on a guess."""
    data = _read(session)
    if "pid" not in data:
        return True
    try:
        return abs(psutil.Process(int(data["pid"])).create_time() - float(data["create_time"])) < 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, KeyError, ValueError):
        return True


def _processes_of(session: Path) -> list[psutil.Process]:
    """This user's processes of `session`: those whose command line names its folder (gcs_server,
    raylet, dashboard, log monitor) and those Ray retitled (`ray::…`: agents, workers) that hold
    a file of it open (their logs)."""
    folder = str(session.resolve())
    uid = os.getuid()
    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            cmdline = proc.info["cmdline"] or []
            if any(folder + os.sep in arg or arg.endswith(folder) for arg in cmdline):
                found.append(proc)
            elif cmdline and cmdline[0].startswith("ray::") and any(
                    f.path.startswith(folder + os.sep) for f in proc.open_files()):
                found.append(proc)
        except psutil.Error:
            continue
    return found
