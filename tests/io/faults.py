"""A fault-injecting HTTP proxy on loopback, in front of the loopback S3 server.

Clients talk to it as to S3 (``AWS_ENDPOINT_URL`` points at it); it forwards each request to the
real server, or answers it with a fault instead:

* ``slowdown``: ``503 SlowDown``, S3's throttling answer (the request is not forwarded);
* ``reset``: the connection is reset (RST) before any byte of an answer (not forwarded);
* ``stall``: nothing is sent for longer than the client's read timeout, then the connection closes
  (not forwarded);
* ``stall_body``: (reads) the answer's headers and half its body, then a stall;
* ``truncate``: (answers with a body: GET, listings) the headers with the full Content-Length and
  part of the body, then the connection closes;
* ``incomplete``: (requests with a body: PUT, POST) ``400 IncompleteBody``, S3's answer to a body
  shorter than its Content-Length (not forwarded);
* ``lost`` (only when asked for in ``kinds``): the request is forwarded (it takes effect), then the
  connection is reset before the answer: the client cannot know it succeeded.

Which request gets a fault is decided by a hash of (seed, request, how often that same request
was seen; a request is its method, path and query (without a multipart ``uploadId``), range, copy
source and body size): the same run gets the same faults, whatever the threads' timing. The n-th
try of one request faults with probability ``rate / n`` for the first ``max_faults`` tries and
never after, so every request succeeds within ``max_faults + 1`` tries: runs are bounded. The
first request of each kind always faults, and each kind of request goes through its applicable
faults in turn, so every kind of request meets every kind of fault. ``denied`` paths are
answered ``403 AccessDenied`` every time (a permanent fault).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import struct
import threading
import time
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
INCOMPLETE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>IncompleteBody</Code>'
              b"<Message>You did not provide the number of bytes specified by the Content-Length "
              b"HTTP header.</Message></Error>")
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


def request_kind(method: str, path: str, query: dict, headers) -> str:
    """GET, HEAD, LIST, PUT, COPY, POST (multi-delete, multipart) or DELETE."""
    if method == "GET" and ("list-type" in query or path.strip("/").count("/") == 0):
        return "LIST"
    if method == "PUT" and headers.get("x-amz-copy-source"):
        return "COPY"
    return method


def applicable(kind: str) -> tuple[str, ...]:
    if kind == "GET":
        return ("slowdown", "reset", "truncate", "stall_body", "stall")
    if kind == "LIST":
        return ("slowdown", "reset", "truncate", "stall")
    if kind in ("PUT", "POST"):
        return ("slowdown", "reset", "incomplete", "stall")
    return ("slowdown", "reset", "stall")  # HEAD, COPY, DELETE: no body either way


class FaultPlan:
    """Which request gets which fault (see the module doc); thread-safe; records what it did."""

    def __init__(self, seed: int = 0, rate: float = 0.2, max_faults: int = 2, kinds: tuple[str, ...] | None = None,
                 decay: bool = True):
        self.seed, self.rate, self.max_faults, self.decay = seed, rate, max_faults, decay
        self.kinds = kinds  # None: every applicable kind
        self.enabled = False  # a run without faults goes through the proxy too: switch them on for a faulty one
        self.denied: tuple[str, ...] = ()  # paths containing one of these are answered 403 AccessDenied
        self._lock = threading.Lock()
        self._seen: Counter = Counter()
        self._faults_of_kind: Counter = Counter()
        self.requests: Counter = Counter()  # request kind -> requests seen
        self.injected: Counter = Counter()  # (request kind, fault) -> faults injected
        self.faulted: list[str] = []  # the requests (method|path|...) that got a fault

    def _draw(self, key: str, n: int) -> float:
        h = hashlib.blake2b(f"{self.seed}|{key}|{n}".encode(), digest_size=8).digest()
        return struct.unpack("<Q", h)[0] / 2**64

    def decide(self, kind: str, key: str) -> str | None:
        with self._lock:
            if any(d in key for d in self.denied):
                self.injected[(kind, "denied")] += 1
                return "denied"
            if not self.enabled:
                return None
            self.requests[kind] += 1
            n = self._seen[key]
            self._seen[key] += 1
            if n >= self.max_faults:
                return None
            options = [f for f in (*applicable(kind), "lost") if f in (self.kinds or applicable(kind))]
            if not options:
                return None
            first_of_kind = self.requests[kind] == 1
            if not first_of_kind and self._draw(key, n) >= self.rate / (n + 1 if self.decay else 1):
                return None
            fault = options[self._faults_of_kind[kind] % len(options)]
            self._faults_of_kind[kind] += 1
            self.injected[(kind, fault)] += 1
            self.faulted.append(key)
            return fault

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (kind, fault), n in sorted(self.injected.items()):
            out.setdefault(kind, {})[fault] = n
        return out


class FaultProxy:
    """The proxy server: ``url`` is its address; ``stop()`` ends it."""

    def __init__(self, upstream: str, plan: FaultPlan, stall_s: float = 1.5):
        up = urlsplit(upstream)
        self.upstream = (up.hostname, up.port)
        self.plan = plan
        self.stall_s = stall_s
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client gone after a fault: expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        body = self._body()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        kind = request_kind(self.command, split.path, query, self.headers)
        stable = re.sub(r"uploadId=[^&]*", "uploadId", self.path)  # a new upload is the same request again
        key = "|".join([self.command, stable, self.headers.get("Range", ""),
                        self.headers.get("x-amz-copy-source", ""), str(len(body))])
        fault = self.owner.plan.decide(kind, key)
        if fault == "slowdown":
            return self._answer(503, SLOWDOWN)
        if fault == "incomplete":
            return self._answer(400, INCOMPLETE)
        if fault == "denied":
            return self._answer(403, DENIED)
        if fault == "reset":
            return self._reset()
        if fault == "stall":
            time.sleep(self.owner.stall_s)
            self.close_connection = True
            return
        status, reason, headers, data = self._forward(body)
        if fault == "lost":
            return self._reset()
        if fault in ("truncate", "stall_body") and len(data) >= 2:
            self._send_head(status, reason, headers)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if fault == "stall_body":
                time.sleep(self.owner.stall_s)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send_head(status, reason, headers)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, body: bytes):
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], data
        finally:
            conn.close()

    def _send_head(self, status: int, reason: str, headers) -> None:
        self.send_response_only(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


#: the retry policy of the fault tests: short waits, a read timeout the stalls pass
TEST_POLICY = {"LAVIDA_S3_BACKOFF": "0.02", "LAVIDA_S3_BACKOFF_MAX": "0.2", "LAVIDA_S3_READ_TIMEOUT": "1",
               "LAVIDA_S3_CONNECT_TIMEOUT": "2", "LAVIDA_S3_REQUEST_ATTEMPTS": "2", "LAVIDA_S3_ATTEMPTS": "6"}


@contextmanager
def faulty_s3(upstream: str, *, seed: int = 0, rate: float = 0.2, stall_s: float = 1.3, **env: str):
    """A :class:`FaultProxy` in front of ``upstream`` that this process (and the processes it
    starts) talk to, with :data:`TEST_POLICY`; faults are off until ``proxy.plan.enabled``."""
    proxy = FaultProxy(upstream, FaultPlan(seed=seed, rate=rate), stall_s=stall_s)
    settings = {**TEST_POLICY, "AWS_ENDPOINT_URL": proxy.url, **env}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield proxy
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proxy.stop()
