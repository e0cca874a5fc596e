"""An HTTP proxy on loopback that injects faults in front of a real server (moto, for AWS tests).

The AWS SDK talks to the proxy as if it were the service (``?endpoint=`` points at it); every
request is forwarded to the real server unless a planned fault matches it first. Faults happen
on the wire, as in production: a throttling answer with the service's own error body, a
connection reset before the request is forwarded, a request forwarded and applied whose answer
is then lost (reset), an answer cut off in the middle of its body, or a stall (the connection
stays open and silent until the client gives up).

``plan`` is a list of ``(predicate(request) -> bool, action)``; the first entry whose predicate
matches is consumed and applied. ``request`` has ``method``, ``path``, ``headers``, ``body`` and
``target`` (DynamoDB's ``X-Amz-Target`` operation, e.g. ``PutItem``, or "" for S3). Actions:

* ``("status", code, aws_error_code)``: answer with that status and an AWS error body (JSON for
  DynamoDB, XML for S3) without forwarding;
* ``"reset"``: close the connection with a TCP reset, nothing forwarded;
* ``"lost-answer"``: forward (the server applies it), then reset instead of answering;
* ``"cut-body"``: forward, send the headers and half the body, then reset;
* ``"stall"``: read the request and never answer (until the client closes or the proxy stops).

``faults`` counts injected faults; ``requests`` records (method, path, target, injected).
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import socketserver
import struct
import threading
import uuid
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes
    target: str = ""


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    plan: list = field(default_factory=list)
    faults: int = 0
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                req = Request(self.command, self.path, dict(self.headers), body, target)
                action = proxy._take(req)
                proxy.requests.append((self.command, self.path, target, action is not None))
                if action is None:
                    self._forward(req)
                elif action == "reset":
                    self._reset()
                elif action == "stall":
                    self.close_connection = True
                    proxy._stop.wait(600)
                    self._reset()
                elif action == "lost-answer":
                    self._upstream(req)
                    self._reset()
                elif action == "cut-body":
                    status, headers, data = self._upstream(req)
                    self._send(status, headers, data[:max(1, len(data) // 2)], length=len(data))
                    self.wfile.flush()
                    self._reset()
                elif isinstance(action, tuple) and action[0] == "status":
                    self._fake(req, action[1], action[2])
                else:  # pragma: no cover - a test's typo
                    raise AssertionError(action)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def _upstream(self, req: Request):
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in req.headers.items() if k.lower() not in ("connection",)}
                    conn.request(req.method, req.path, body=req.body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    return resp.status, resp.getheaders(), data
                finally:
                    conn.close()

            def _forward(self, req: Request):
                status, headers, data = self._upstream(req)
                self._send(status, headers, data)

            def _send(self, status, headers, data, length=None):
                self.send_response_only(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.end_headers()
                if req_is_head(self.command):
                    return
                self.wfile.write(data)

            def _fake(self, req: Request, status: int, code: str):
                rid = uuid.uuid4().hex
                if req.target:
                    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}",
                                       "message": f"injected {code}"}).encode()
                    headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", rid)]
                else:
                    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                            f"<Message>injected {code}</Message><RequestId>{rid}</RequestId></Error>").encode()
                    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
                self._send(status, headers, body)

            def _reset(self):
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _take(self, req: Request):
        with self._lock:
            for i, (pred, action) in enumerate(self.plan):
                if pred(req):
                    del self.plan[i]
                    self.faults += 1
                    return action
        return None

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def req_is_head(method: str) -> bool:
    return method == "HEAD"


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung service)."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-server")
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)  # held open, never read from, never answered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self._sock.close()


def dynamodb_op(*ops: str):
    """Predicate: a DynamoDB request for one of ``ops`` (PutItem, GetItem, Query, ...)."""
    return lambda r: r.target in ops


def s3_op(method: str, contains: str = "", query: str | None = None):
    """Predicate: an S3 request with this method, path containing ``contains``, and (optionally) a
    query parameter name present (``uploadId``, ``partNumber``, ``versioning``...)."""
    def pred(r: Request) -> bool:
        if r.target or r.method != method or contains not in r.path:
            return False
        return query is None or (query + "=" in r.path or r.path.endswith("?" + query) or ("?" + query + "&") in r.path
                                 or ("&" + query) in r.path)
    return pred
