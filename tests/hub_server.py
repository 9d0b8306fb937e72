"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving files in the Hub's URL layout.

``/<org>/<name>/resolve/<revision>/<file>`` answers HEAD and GET (with ``Range``) and the
headers huggingface_hub reads (commit, ETag, size); ``files`` maps ``(repo_id, file)``
to bytes, ``raw`` any other path to bytes. ``requests`` records every path asked for.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_COMMIT = "0123456789abcdef0123456789abcdef01234567"
_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")


class HubServer:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        self.raw: dict[str, bytes] = {}  # any other path -> bytes
        self.url = ""


@contextmanager
def hub_server() -> Iterator[HubServer]:
    hub = HubServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _find(self) -> bytes | None:
            hub.requests.append(f"{self.command} {self.path}")
            m = _PATH.match(self.path)
            body = hub.files.get((m["repo"], m["file"])) if m else hub.raw.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
            return body

        def _headers(self, body: bytes, status: int, length: int) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("X-Repo-Commit", _COMMIT)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def do_HEAD(self) -> None:
            body = self._find()
            if body is not None:
                self._headers(body, 200, len(body))

        def do_GET(self) -> None:
            body = self._find()
            if body is None:
                return
            start = 0
            m = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if m:
                start = int(m.group(1))
            self._headers(body, 206 if start else 200, len(body) - start)
            self.wfile.write(body[start:])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
