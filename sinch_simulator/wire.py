"""What requests and answers look like on the wire, shared by every endpoint.

An endpoint returns a :class:`Reply`; the HTTP layer (``server.py``) turns it into bytes or a
dropped connection.  Keeping the two apart lets the endpoints be plain functions of a request.
"""

from __future__ import annotations

import email.utils
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol


class Headers(Protocol):
    def get(self, name: str, default: None = None) -> str | None: ...


class FastHeaders:
    """Request headers by lower-cased name (repeated headers joined with ', ')."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, str]) -> None:
        self._d = d

    def get(self, name: str, default: None = None) -> str | None:
        return self._d.get(name.lower(), default)


@dataclass(slots=True)
class Reply:
    """What to answer; the HTTP layer turns it into bytes (or a dropped connection)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    code: str | None = None
    batch_id: str | None = None
    drop: bool = False
    close: bool = False
    delay: float = 0.0


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error(status: int, code: str | None = None, text: str | None = None) -> Reply:
    """Error bodies exist only where the API documents a code (400, 403, and our 429)."""
    if code is None:
        return Reply(status)
    body = json_bytes({"code": code, "text": text or HTTPStatus(status).phrase})
    return Reply(status, body, code=code)


def ok(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json_bytes(obj))


def unauthorized() -> Reply:
    # No body: the seeds document none for 401; the header is what RFC 6750 asks for.
    return Reply(401, headers=(("WWW-Authenticate", 'Bearer realm="xms"'),))


def not_allowed(allow: str) -> Reply:
    return Reply(405, headers=(("Allow", allow),))


def bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def is_json(content_type: str | None) -> bool:
    """application/json, with no charset or a UTF-8 one: what the API documents accepting."""
    if not content_type:
        return False
    media, _, rest = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in rest.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


_date_cache: tuple[int, str] = (0, "")


def http_date_now() -> str:
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, email.utils.formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]
