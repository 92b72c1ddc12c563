"""A search on a two-node Ray cluster on one machine, with a worker killed mid-trial and a
rate-limiting judge that needs an API key.

`ray start --head` and a second `ray start --address ...` node each declare one
`merge_slot`, and the config asks one slot per worker: one merge worker per node, as on
a cluster with one worker per GPU. The driver (`run_search.py`, a separate process, as a
user runs it) joins through `experiment.ray_address`. While trials run, the test
SIGKILLs a worker process in the middle of one; Ray restarts it and the trial is
retried. The judge is an OpenAI-compatible server on loopback that answers only with the
right bearer key and rate-limits (429) the first try of every request.

Checked: every trial has a result, workers ran on both nodes, a worker was lost and
replaced, the key was used, and the key appears in no result file, Optuna storage,
driver output or Ray log. A second test puts a judge actor on each node: the one on the
second node gets cache hits for the verdicts the head's judge made, through the search's
verdict-cache owner actor, and judging goes on uncached once that owner is killed. The
cluster is this module's own (temp dir, ports, auth token) and its teardown ends only the
processes it started (tests/ray_sessions.py): other Rays on the machine run on.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import yaml
from judge_server import JudgeServer
from ray_sessions import end_sessions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
SECRET = "sk-e2e-SECRET-d41d8cd98f00b204"
KEY_ENV = "SOUPSEARCH_E2E_JUDGE_KEY"
# Enough trials that the worker being restarted after the kill is back before the other
# one has run them all (merges take well under a second now; a restart reloads the sources).
N_TRIALS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """Two Ray nodes on this machine, and everything started against them, in sessions of their own."""

    address: str
    env: dict[str, str]
    ray_dir: Path  # the nodes' temp dir: sessions, logs, sockets, the address file
    sessions: list[int] = field(default_factory=list)

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start `cmd` in a new session (`ray start` and the driver alike), ended at teardown."""
        proc = subprocess.Popen(cmd, env=kwargs.pop("env", self.env), start_new_session=True, **kwargs)
        self.sessions.append(proc.pid)  # a session leader's pid is its session id
        return proc

    def ours(self, proc: psutil.Process) -> bool:
        try:
            return os.getsid(proc.pid) in self.sessions
        except ProcessLookupError:
            return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two Ray nodes on this machine; the API key is in their environment, as it would be
    exported on every node of a real cluster (never put into a runtime_env or config).

    The cluster is this module's alone and disturbs no other Ray on the machine (`ray stop`
    would end every one, other users' runs included): its own temp dir (RAY_TMPDIR, also for
    the local Ray of the second test; nothing goes to /tmp/ray), its own ports and auth token
    (RAY_AUTH_TOKEN, not ~/.ray/auth_token), and teardown ends only the processes in the
    sessions this module started."""
    # A short path: Ray's Unix sockets live in the session dir and their paths must fit 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="ss-ray-", dir="/tmp"))
    port = _free_port()
    # The head turns Ray 2.60's token auth on; a joining node and a driver must say
    # RAY_AUTH_MODE=token to send the token.
    env = {**os.environ, KEY_ENV: SECRET, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": str(tmp)}
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(f"127.0.0.1:{port}", env, tmp / "ray")

    def node_flags() -> list[str]:  # each node its own agent port: the default (52365) is one per machine
        return ["--node-ip-address=127.0.0.1", '--resources={"merge_slot": 1}',
                f"--dashboard-agent-listen-port={_free_port()}"]

    # The head's other ports too: the defaults (8265, 10001) are taken by any other head here.
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=3", f"--ray-client-server-port={_free_port()}",
            f"--dashboard-port={_free_port()}", "--include-dashboard=false", "--disable-usage-stats", *node_flags()]
    second = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", *node_flags()]
    try:
        for cmd in (head, second):
            start = cluster.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            out, _ = start.communicate(timeout=120)
            assert start.returncode == 0, out[-3000:]
        yield cluster
    finally:
        end_sessions(cluster.sessions)
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_a_worker_mid_trial(exp: Path, proc: subprocess.Popen, cluster: Cluster, timeout: float = 600) -> int:
    """Once a first trial is on disk, SIGKILL one of this cluster's merge workers while it runs a trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before a worker could be killed"
        if (exp / "trials.parquet").exists():
            for p in psutil.process_iter(["cmdline"]):
                if " ".join(p.info["cmdline"] or []).startswith("ray::MergeWorker.run") and cluster.ours(p):
                    os.kill(p.pid, signal.SIGKILL)
                    return p.pid
        time.sleep(0.05)
    raise AssertionError("no trial in flight to kill")


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def test_search_on_two_nodes_survives_a_killed_worker_and_never_leaks_the_key(cluster, smollm_family, tmp_path):
    address = cluster.address
    with JudgeServer(required_key=SECRET) as judge:
        config = {
            "experiment": {"name": "twonode", "dir": str(tmp_path), "ray_address": address},
            "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                       "b": str(smollm_family["b"])}},
            "space": {"methods": ["linear", "task_arithmetic"]},
            "search": {"sampler": "random", "n_trials": N_TRIALS, "seed": 2, "trial_retries": 2,
                       "objectives": ["safety", "conciseness"]},
            "workers": {"count": 2, "cpus": 1, "resources": {"merge_slot": 1}, "max_restarts": 2},
            "serving": {"backend": "transformers", "generation": {"max_tokens": 8, "batch_size": 4}},
            "judging": {"judge": {"backend": "openai", "base_url": judge.url, "model": "flaky429",
                                  "api_key_env": KEY_ENV, "max_retries": 3, "backoff_s": 0.01,
                                  "backoff_max_s": 0.05, "both_orders": False, "timeout_s": 30}},
            "eval": {"set": "smoke", "subset": 4, "holdout": 0},
        }
        path = tmp_path / "search.yaml"
        path.write_text(yaml.safe_dump(config))
        exp = tmp_path / "twonode"
        log = tmp_path / "driver.log"
        with log.open("w") as out:
            proc = cluster.popen([sys.executable, str(ROOT / "run_search.py"), "--config", str(path)], cwd=ROOT,
                                 stdout=out, stderr=subprocess.STDOUT)
            try:
                _kill_a_worker_mid_trial(exp, proc, cluster)
                assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
        requests = sum(judge.state.requests.values())
        distinct = len(judge.state.seen)
        auth = set(judge.state.auth)

    driver = log.read_text()
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == N_TRIALS and sorted(trials.trial_number) == list(range(N_TRIALS))
    assert (trials.status == "ok").all(), trials[["status", "error"]]
    assert trials.workers_lost.sum() >= 1  # the killed trial was retried, not lost
    assert trials.node_id.nunique() == 2 and trials.worker.nunique() == 2  # both nodes did trials
    worker_lines = [line for line in driver.splitlines() if "-worker-" in line and "node " in line]
    assert len(worker_lines) == 2 and len({line.split("node ")[1].split(",")[0] for line in worker_lines}) == 2

    # The judge saw the key (so the check below is not vacuous), and 429s were retried.
    # Every distinct request was refused with 429 once and then answered (identical answers
    # of different trials hit the verdict cache and are never sent again).
    assert auth == {f"Bearer {SECRET}"} and distinct >= 4 and requests >= 2 * distinct
    secret = SECRET.encode()
    assert SECRET not in driver
    assert _files_containing(exp, secret) == []  # results, plans, config, verdict cache, optuna.db
    assert SECRET not in json.dumps(yaml.safe_load((exp / "config.yaml").read_text()))
    ray_logs = cluster.ray_dir / "session_latest" / "logs"
    assert ray_logs.is_dir() and _files_containing(ray_logs, secret) == []


def test_a_search_without_ray_address_starts_its_own_ray_beside_a_running_cluster(cluster):
    # A `ray start` cluster on the machine (and RAY_ADDRESS naming it) must not capture a
    # search configured for a local Ray: plain ray.init() would join it and then refuse
    # num_cpus with a ValueError.
    address, env = cluster.address, cluster.env
    code = ("import json, ray; from search.config import parse_search_config; from search.pool import start_ray;"
            "start_ray(parse_search_config({'models': {'example': True}, 'workers': {'count': 1, 'cpus': 1}}));"
            "print(json.dumps([ray.get_runtime_context().gcs_address, ray.cluster_resources().get('CPU')]));"
            "ray.shutdown()")
    run = cluster.popen([sys.executable, "-c", code], env={**env, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    gcs, cpus = json.loads(stdout.strip().splitlines()[-1])
    assert gcs != address and cpus == 1 + 1 + 1  # workers · cpus + judges + 1, not the cluster's 4


# A driver on the head that puts the search's verdict-cache owner on its own node, one judge
# actor on each node, and asks both about the same answers; then the owner is killed and the
# second judge asked again. Prints what each saw as JSON.
SHARED_CACHE_DRIVER = """
import json, sys, time
from pathlib import Path
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from judges import JudgeItem
from search.verdict_owner import start_verdict_owner
from search.workers import JudgeActor

ray.init(address=sys.argv[1], log_to_driver=False)
here = ray.get_runtime_context().get_node_id()
other = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here)
owner = start_verdict_owner(Path(sys.argv[2]), "verdicts", "cachetest", max_restarts=0)
judges = [JudgeActor.options(name=f"judge-{i}", namespace="cachetest", num_cpus=0,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
          .remote({"judge": {"backend": "rubric"}}, ("verdicts", "cachetest")) for i, node in enumerate((here, other))]
items = [JudgeItem(f"q{i}", f"Question {i}?", f"Gold answer number {i}.", f"Answer {i}.", "safe") for i in range(6)]
first, _ = ray.get(judges[0].judge_items.remote(items))
second, _ = ray.get(judges[1].judge_items.remote(items))
stats = ray.get(owner.stats.remote())
files = sorted(p.name for p in Path(sys.argv[2]).parent.iterdir())
ray.kill(owner, no_restart=True)
# ray.kill only asks: until the actor has died, calls may still reach it (seen once in CI).
for _ in range(150):
    try:
        ray.get(owner.stats.remote(), timeout=10)
    except Exception:
        break
    time.sleep(0.2)
else:
    raise SystemExit("the verdict owner did not die within 30 s of ray.kill")
extra = JudgeItem("q9", "Question 9?", "Gold answer number 9.", "Answer 9.", "safe")
without, _ = ray.get(judges[1].judge_items.remote(items + [extra]))
print(json.dumps({
    "nodes": [ray.get(j.info.remote())["node_id"] for j in judges], "owner_node": here, "stats": stats, "files": files,
    "first": [[v.ok, v.cached, {d: o.value for d, o in v.outcomes.items()}] for v in first],
    "second": [[v.ok, v.cached, {d: o.value for d, o in v.outcomes.items()}] for v in second],
    "without_owner": [[v.ok, v.cached] for v in without]}))
ray.shutdown()
"""


def test_judges_on_two_nodes_share_one_verdict_cache_held_by_an_owner_actor(cluster, tmp_path):
    path = tmp_path / "exp" / "verdicts.sqlite"
    run = cluster.popen([sys.executable, "-c", SHARED_CACHE_DRIVER, cluster.address, str(path)], cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    seen = json.loads(stdout.strip().splitlines()[-1])
    assert len(set(seen["nodes"])) == 2 and seen["nodes"][0] == seen["owner_node"]  # a judge on each node
    assert all(ok and not cached for ok, cached, _ in seen["first"])
    # The judge on the other node got every verdict from the first one's work, unchanged.
    assert all(ok and cached for ok, cached, _ in seen["second"])
    assert [o for *_, o in seen["second"]] == [o for *_, o in seen["first"]]
    assert seen["stats"]["verdicts"] == 6 and seen["stats"]["hits"] == 6
    # One process owns the file: SQLite keeps the WAL index in its memory, no -shm file to share.
    assert "verdicts.sqlite" in seen["files"] and "verdicts.sqlite-shm" not in seen["files"]
    # With the owner gone, judging goes on uncached instead of failing.
    assert seen["without_owner"] == [[True, False]] * 7
