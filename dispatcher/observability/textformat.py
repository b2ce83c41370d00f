"""The Prometheus text format (0.0.4), written directly, and the HTTP handler that serves it.

``dispatcher metrics`` at 10,000 plans serves ~360,000 samples per scrape; prometheus-client's
``generate_latest`` builds an object per sample and validates every label name, which made a
scrape take 3.4-4.6 s against a 2 s budget (docs/benchmarks.md, "Cost per plan").  The exporter
therefore describes each family once (``Family``) and this module writes its lines.
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol, cast

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

PREFIX = "dispatcher_"


class Renderer(Protocol):
    def render(self) -> bytes: ...


@dataclass
class Family:
    """One metric family of a scrape: what both ``collect`` and ``render`` write."""

    name: str  # without the prefix, and without ``_total`` for a counter
    kind: Literal["counter", "gauge"]
    doc: str
    labels: tuple[str, ...]
    samples: list[tuple[Sequence[str], float]] = dataclass_field(default_factory=list)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.samples.append((values, value))


_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})


def _label(value: str) -> str:
    """A label value as the text format writes it (plan ids from the config need nothing)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.translate(_ESCAPES)
    return value


def _escape_help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


_go_float = cast(Callable[[float], str], floatToGoString)
_ZERO = _go_float(0.0)


def _number(value: float) -> str:
    """The value as prometheus-client writes it (``0.0``, ``1.5``, ``1.0e+06``)."""
    return _ZERO if value == 0 else _go_float(value)


def header(fam: Family) -> str:
    name = PREFIX + fam.name + ("_total" if fam.kind == "counter" else "")
    return f"# HELP {name} {_escape_help(fam.doc)}\n# TYPE {name} {fam.kind}\n"


def lines(fam: Family) -> str:
    """The family's samples as text-format lines (no HELP/TYPE)."""
    name = PREFIX + fam.name + ("_total" if fam.kind == "counter" else "")
    if not fam.labels:
        return "".join(f"{name} {_number(value)}\n" for _, value in fam.samples)
    head = f'{name}{{{fam.labels[0]}="'
    rest = [f'",{label}="' for label in fam.labels[1:]]
    out: list[str] = []
    for values, value in fam.samples:
        parts = [head, _label(values[0])]
        for sep, v in zip(rest, values[1:], strict=True):
            parts += (sep, _label(v))
        parts.append(f'"}} {_number(value)}\n')
        out.append("".join(parts))
    return "".join(out)


def text(fams: Iterable[Family]) -> bytes:
    return "".join(header(f) + lines(f) for f in fams).encode()


class Handler(BaseHTTPRequestHandler):
    """``GET`` any path: one scrape from ``render`` (gzip when asked, at the fastest level: a
    10,000-plan scrape is ~20 MB of text, and level 9 would cost more than the scrape)."""

    collector: Renderer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.collector.render()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would be noise


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def listen(host: str, port: int, renderer: Renderer) -> ThreadingHTTPServer:
    """A threading HTTP server answering every GET with ``renderer.render()`` (IPv6 when the
    host is an IPv6 address, e.g. ``--host ::``, as prometheus-client's server did)."""
    handler = type("BoundHandler", (Handler,), {"collector": renderer})
    server = _V6Server if ":" in host else ThreadingHTTPServer
    httpd = server((host, port), handler)
    httpd.daemon_threads = True
    return httpd
