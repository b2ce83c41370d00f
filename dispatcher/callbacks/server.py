"""The HTTP server behind ``dispatcher callbacks --port N``: stdlib only, HTTP/1.1 keep-alive,
a thread per connection, running any WSGI application.

``wsgiref``'s server answers one request per connection (HTTP/1.0), so every callback paid for a
TCP handshake and a new thread; Sinch and the simulator keep connections open, and at several
thousand callbacks per second that setup was most of the cost.  This gateway keeps the
connection until the client closes it (or sends ``Connection: close``), reads the headers and
a ``Content-Length`` or chunked body itself with size caps, and hands the application a finished
``wsgi.input``.  It never logs a request line: the path holds the plan's token.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("dispatcher.callbacks")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# A larger body is not kept: the application sees its declared length and an empty input (the
# receiver refuses it with a counted 4xx), and the connection closes after the answer.  Up to
# DRAIN bytes of it are read and dropped first, so the client gets that answer instead of a
# reset; the receiver's own cap is lower than MAX_BODY.
MAX_BODY = 2 * 1024 * 1024
DRAIN = 16 * 1024 * 1024
# An idle keep-alive connection is closed after this long, so idle clients do not pin threads.
IDLE_TIMEOUT_S = 75.0
MAX_LINE = 65536  # bytes in one header line (the stdlib's limit too)
MAX_HEADERS = 100


class _TooLarge(Exception):
    def __init__(self, declared: int) -> None:
        self.declared = declared


class _BadChunk(Exception):
    pass


def _read_chunked(rfile: Any, limit: int) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline(1026)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadChunk from None
        if size == 0:
            while rfile.readline(1026) not in (b"\r\n", b"\n", b""):
                pass  # trailers: ignored
            return bytes(out)
        if len(out) + size > limit:
            raise _TooLarge(len(out) + size)
        out += rfile.read(size)
        rfile.readline(3)  # the CRLF after each chunk


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dispatcher-callbacks"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True
    server: Server
    _unread = 0  # bytes of a refused body still unread

    fields: dict[str, str]  # the request's headers, names lower-cased
    raw_requestline: bytes  # set by handle_one_request before parse_request

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request line holds the plan's token: never log it

    def parse_request(self) -> bool:
        """The request line and headers, read by hand: the stdlib's email parser cost ~45 us
        per request, half of what answering one took (bare server: ~10,000/s -> ~18,000/s).
        Folded, malformed or duplicated-length headers are refused, never guessed at."""
        self.request_version = "HTTP/1.0"  # what an error before the version is answered in
        self.close_connection = True
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        parts = line.split()
        if len(parts) != 3:
            self.send_error(400, "Bad request line")
            return False
        self.command, self.path, self.request_version = parts
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(505)
            return False
        fields: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                self.send_error(431)
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.partition(b":")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            if not sep or not key or key != key.strip() or raw[:1] in (b" ", b"\t"):
                self.send_error(400, "Bad header line")
                return False
            if key == "content-length" and key in fields:
                if fields[key] != text:
                    self.send_error(400, "Conflicting Content-Length")
                    return False
                continue  # the same length twice: one length
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        else:
            self.send_error(431)
            return False
        self.fields = fields
        conn = fields.get("connection", "").lower()
        self.close_connection = "close" in conn or (
            self.request_version == "HTTP/1.0" and "keep-alive" not in conn
        )
        if fields.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _reply(self, status: str, headers: list[tuple[str, str]], chunks: Iterable[bytes]) -> None:
        # One write per response, with Nagle off: a header write and a body write apart meet
        # the client's delayed ACK and stall each keep-alive request by ~40 ms.
        body = b"".join(chunks)
        if any(k.lower() == "connection" and "close" in v.lower() for k, v in headers):
            self.close_connection = True  # the application's wish (hop-by-hop, so ours to send)
        lines = [f"HTTP/1.1 {status}"]
        lines += [
            f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")
        ]
        lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def _serve(self) -> None:
        try:
            body = self._body()
            length = len(body)
        except _TooLarge as exc:
            self.close_connection = True
            self._drain(DRAIN)
            body, length = b"", exc.declared
        except (_BadChunk, ValueError):
            self.close_connection = True
            self._reply("400 Bad Request", [], [b'{"error": "unreadable body"}'])
            return
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.fields.get("content-type", ""),
            "CONTENT_LENGTH": str(length),
            "SERVER_NAME": self.server.server_name,
            "SERVER_PORT": str(self.server.server_port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return lambda data: None  # the legacy write(): unused by our applications

        try:
            chunks = list(self.server.app(environ, start_response))
        except Exception:
            # A bug, not the client's fault: 500 (Sinch retries), and no traceback text that
            # could carry the request to the client.
            self.close_connection = True
            self._reply("500 Internal Server Error", [], [b'{"error": "internal error"}'])
            raise
        self._reply(started[0], started[1], chunks)

    def _body(self) -> bytes:
        if "chunked" in self.fields.get("transfer-encoding", "").lower():
            return _read_chunked(self.rfile, self.server.max_body)
        n = int(self.fields.get("content-length") or 0)
        if n < 0:
            raise ValueError("negative Content-Length")
        if n > self.server.max_body:
            self._unread = n
            raise _TooLarge(n)
        return self.rfile.read(n) if n else b""

    def _drain(self, limit: int) -> None:
        left = min(self._unread, limit)
        self._unread = 0
        while left > 0 and (got := self.rfile.read(min(left, 65536))):
            left -= len(got)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of Sinch's connections must not be refused by a short listen queue.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: WSGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback with the request; say only what went wrong.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            log.error("request failed: %s: %s", type(exc).__name__, exc)


def make_server(host: str, port: int, app: WSGIApp) -> Server:
    return Server((host, port), app)


def serve_in_thread(server: Server) -> threading.Thread:
    """For tests and benches: serve until ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="callbacks-http", daemon=True)
    thread.start()
    return thread
