"""A stand-in OpenAI-compatible judge server on loopback (stdlib http.server in a thread).

Real HTTP, scripted behaviour: the request's `model` names the mode — "good" answers a
well-formed verdict (the shorter answer wins conciseness, ties elsewhere), "flaky429"
rate-limits the first try of each request, "error500" fails and echoes the credentials
(a careless server), "slow" holds the request until the test releases it (`state.release`,
at most 10 s) and counts the replies it then sends in `state.answered`, "badbody" and "garbage" answer unreadable
bodies. With `required_key`, requests without that bearer key get 401. "<mode>@<seconds>"
answers as <mode> after that many seconds: a judge of fixed latency (bench/overlap.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _State:
    def __init__(self, required_key: str | None) -> None:
        self.required_key = required_key
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.auth: list[str] = []
        self.release = threading.Event()  # "slow" requests wait for this
        self.answered: Counter[str] = Counter()  # replies sent, by mode


def _block(user: str, label: str) -> str:
    m = re.search(rf"<<<{label}_(\w+)>>>\n(.*?)\n<<<END_{label}_\1>>>", user, re.S)
    assert m, f"no {label} block"
    return m.group(2)


def _good_reply(user: str) -> str:
    dims = json.loads(user.rsplit("keys: ", 1)[1])
    a, b = _block(user, "ANSWER_A"), _block(user, "ANSWER_B")
    verdict = {d: "tie" for d in dims}
    verdict["conciseness"] = "A" if len(a) < len(b) else "B" if len(b) < len(a) else "tie"
    return "Here is my verdict:\n```json\n" + json.dumps(verdict) + "\n```"


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left: that is the point of the "slow" mode

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": {"message": "not found"}}')
                return
            if state.required_key and self.headers.get("Authorization") != f"Bearer {state.required_key}":
                self._send(401, b'{"error": {"message": "bad key"}}')
                return
            req = json.loads(body)
            mode, _, delay = req["model"].partition("@")
            if delay:  # "good@2.5": a judge of fixed latency
                time.sleep(float(delay))
            user = req["messages"][1]["content"]
            with state.lock:
                state.requests[mode] += 1
                state.auth.append(self.headers.get("Authorization", ""))
                digest = hashlib.sha256(body).hexdigest()
                first_time = digest not in state.seen
                state.seen.add(digest)
            if mode == "error500":
                # A careless server echoing the credentials: the client must scrub them.
                msg = f"internal error, auth was {self.headers.get('Authorization')}"
                self._send(500, json.dumps({"error": {"message": msg}}).encode())
                return
            if mode == "flaky429" and first_time:
                self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0"})
                return
            if mode == "slow":
                state.release.wait(10.0)
            if mode == "badbody":
                self._send(200, b"<html>this is not json")
                return
            content = "I think both are fine, really. No JSON today." if mode == "garbage" else _good_reply(user)
            resp = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": mode,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            with state.lock:
                state.answered[mode] += 1
            self._send(200, json.dumps(resp).encode())

    return Handler


class JudgeServer:
    """`with JudgeServer() as srv:` serves on an ephemeral port; `srv.url` ends in /v1."""

    def __init__(self, required_key: str | None = None) -> None:
        self.state = _State(required_key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "JudgeServer":
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
