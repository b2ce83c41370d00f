"""The HTTP layer: requests in, :class:`~sinch_simulator.wire.Reply` objects out as bytes.

Standard library only: ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (clients use
pooled httpx connections), one daemon thread per connection, no per-request logging, and a
header parser of its own because the base class's is the largest cost of a small request.
:func:`dispatch` routes a request to the control API (``/_sim``, loopback only) or to the
batches endpoints (``/xms/v1/{plan}/...``).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast
from urllib.parse import urlsplit

from sinch_simulator import batches, control
from sinch_simulator.state import State
from sinch_simulator.wire import FastHeaders, Headers, Reply, error, http_date_now, is_loopback

# A request body larger than this is answered 413 and the connection closed: 1000 recipients
# with a few parameters each stay far below it, and it bounds what a broken client can make
# the simulator buffer.
MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
# Idle keep-alive connections are dropped after this long so that clients that vanish without
# closing don't pin a thread forever; httpx's own pool expiry (5 s) is well below it.
IDLE_TIMEOUT_S: Final = 300.0
_MAX_HEADERS: Final = 100


def dispatch(
    state: State, method: str, target: str, headers: Headers, body: bytes, client_ip: str
) -> Reply:
    """The answer to one request, from its method, target, headers, body and client address."""
    split = urlsplit(target)
    segs = split.path.split("/")
    if len(segs) >= 2 and segs[0] == "" and segs[1] == "_sim":
        if not is_loopback(client_ip):
            return Reply(403)
        return control.serve(state, method, segs[2:], split.query, headers, body)
    if len(segs) < 5 or segs[0] != "" or segs[1] != "xms" or segs[2] != "v1":
        return Reply(404)
    return batches.serve(state, method, segs[3:], split.query, headers, body)


class Server(ThreadingHTTPServer):
    """Serves one :class:`State`; tracks open connections so that a stop can cut them."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall for
        # seconds on a machine without working DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is normal under load and in drop tests.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """One connection: every method goes through :func:`dispatch`, answers in one write."""

    protocol_version = "HTTP/1.1"
    server_version = "sinch-sms-simulator"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a line per request on stderr would cost more than answering it."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    _fast_headers: FastHeaders = FastHeaders({})

    def parse_request(self) -> bool:
        """Request line and headers, without the email package the base class uses.

        Header parsing with ``http.client.parse_headers`` is the largest single cost of a small
        request; a plain loop is several times faster and is all this API needs.  Anything but
        an ordinary HTTP/1.0 or 1.1 request line goes to the base class, which answers it.
        """
        self.command = None  # type: ignore[assignment]  # the base class does the same
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        raw: bytes = getattr(self, "raw_requestline", b"")  # set by handle_one_request
        requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            if not super().parse_request():
                return False
            self._fast_headers = FastHeaders({k.lower(): v for k, v in self.headers.items()})
            return True
        command, path, version = words
        self.command, self.request_version = command, version
        # As the base class does (gh-87389): '//x' must not read as a network path.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(65537)
            if len(line) > 65536:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("iso-8859-1").partition(":")
            if not sep:
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self._fast_headers = FastHeaders(headers)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self.close_connection = version == "HTTP/1.0"
        if "close" in tokens:
            self.close_connection = True
        elif "keep-alive" in tokens:
            self.close_connection = False
        expect = headers.get("expect", "").lower()
        return not (
            expect == "100-continue" and version == "HTTP/1.1" and not self.handle_expect_100()
        )

    def _serve(self, method: str) -> None:
        body, problem = self._read_body()
        if problem is not None:
            # The stream position is unknown after a bad length, so the connection must go.
            self.close_connection = True
            self._write(problem, head_only=False)
            return
        state = cast(Server, self.server).state
        try:
            reply = dispatch(
                state, method, self.path, self._fast_headers, body, str(self.client_address[0])
            )
        except Exception:
            traceback.print_exc()
            reply = Reply(500)
        if reply.delay > 0:
            time.sleep(reply.delay)
        if reply.drop:
            # Close without a byte of answer: the client cannot tell whether the batch exists.
            self.close_connection = True
            return
        if reply.close:
            self.close_connection = True
        self._write(reply, head_only=method == "HEAD")

    def _read_body(self) -> tuple[bytes, Reply | None]:
        encoding = (self._fast_headers.get("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            data = self._read_chunked()
            if data is None:
                return b"", error(400, "syntax_invalid_json", "malformed chunked body")
            return data, None
        length_s = self._fast_headers.get("content-length")
        if length_s is None:
            return b"", None
        try:
            length = int(length_s)
        except ValueError:
            length = -1
        if length < 0:
            return b"", Reply(400)
        if length > MAX_REQUEST_BYTES:
            return b"", Reply(413)
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            return b"", Reply(400)
        return data, None

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                break
            total += size
            if total > MAX_REQUEST_BYTES:
                return None
            data = self.rfile.read(size)
            if len(data) < size:
                return None
            chunks.append(data)
            self.rfile.readline(1024)
        while True:  # trailers
            line = self.rfile.readline(1024)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(chunks)

    def _write(self, reply: Reply, *, head_only: bool) -> None:
        """Status line, headers and body in one write: one packet for a small answer."""
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = ""
        head = [
            f"HTTP/1.1 {reply.status} {phrase}\r\n"
            f"Date: {http_date_now()}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
        ]
        if reply.body:
            head.append("Content-Type: application/json\r\n")
        for name, value in reply.headers:
            head.append(f"{name}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if not head_only:
            data += reply.body
        self.wfile.write(data)
