#!/usr/bin/env python
"""What the Ray dashboard costs a local run: start-up time, processes, memory and idle CPU.

Every local run starts Ray with its dashboard (search/pool.py, `include_dashboard=None`). This
starts a local Ray the way a run does, alternately without and with the dashboard, and prints
per start: seconds until `ray.init` returns (and until the dashboard's page answers), then,
after the cluster settles, the number of Ray processes, their memory (PSS, so shared pages are
counted once) and the CPU seconds they use over an idle window.

    .venv/bin/python bench/ray_dashboard.py [--starts 5] [--idle 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import psutil
import ray


def ray_processes() -> dict[int, tuple[int, float]]:
    """pid -> (PSS bytes, CPU seconds so far) of every process below this one (Ray's)."""
    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
            out[proc.pid] = (proc.memory_full_info().pss, times.user + times.system)
        except psutil.Error:
            pass  # ended meanwhile
    return out


def one_start(dashboard: bool, idle_s: float) -> dict[str, object]:
    started = time.perf_counter()
    context = ray.init(address="local", num_cpus=2, include_dashboard=dashboard, log_to_driver=False)
    init_s = time.perf_counter() - started
    page_s = None
    if context.dashboard_url:
        while page_s is None and time.perf_counter() - started < 60:
            try:
                urllib.request.urlopen(f"http://{context.dashboard_url}/", timeout=2).read(64)
                page_s = time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
    out: dict[str, object] = {"dashboard": dashboard, "init_s": round(init_s, 2),
                              "page_s": None if page_s is None else round(page_s, 2)}
    if idle_s > 0:
        time.sleep(10)  # let the dashboard's modules finish starting
        before = ray_processes()
        time.sleep(idle_s)
        after = ray_processes()
        out |= {"processes": len(after), "pss_mib": round(sum(m for m, _ in after.values()) / 2**20),
                f"cpu_s_per_{idle_s:g}s_idle": round(sum(c - before[p][1] for p, (_, c) in after.items()
                                                         if p in before), 2)}
    ray.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=5, help="starts of each kind, alternating")
    ap.add_argument("--idle", type=float, default=30.0, help="idle seconds measured on the first start of each kind")
    args = ap.parse_args()
    runs = []
    for k in range(args.starts):
        for dashboard in (False, True):
            runs.append(one_start(dashboard, args.idle if k == 0 else 0.0))
            print(json.dumps(runs[-1]), flush=True)
    for dashboard in (False, True):
        times = [r["init_s"] for r in runs if r["dashboard"] is dashboard]
        print(f"dashboard {'on ' if dashboard else 'off'}: ray.init median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}) over {len(times)} starts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
