"""Ending the processes a test started, and only those: everything a test starts for Ray runs in
sessions of its own (`start_new_session=True`), and those sessions are what teardown ends.

`ray start` detaches its daemons (they are nobody's children) and Ray puts each worker in a
process group of its own, but all of them stay in the session of the command that started
them; a session id is not reused while any process is in it, so membership is proof of being
ours. Other Rays on the machine (other users' runs, `ray start` clusters) run on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

import psutil


def session_members(sessions: Collection[int]) -> list[psutil.Process]:
    """The live processes of these sessions (this process excluded)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return found


def end_sessions(sessions: Collection[int]) -> None:
    """SIGTERM every process of `sessions`, SIGKILL what is left after 10 s (gcs_server and the
    agents outlast a SIGTERM), and again for anything a dying raylet started meanwhile."""
    for _ in range(3):
        procs = session_members(sessions)
        if not procs:
            return
        for end in (psutil.Process.terminate, psutil.Process.kill):
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    end(proc)
            _, procs = psutil.wait_procs(procs, timeout=10)
    assert not session_members(sessions), "processes of the test's sessions survived SIGKILL"
