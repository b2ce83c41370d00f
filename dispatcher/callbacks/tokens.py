"""The per-plan token in each callback URL: an HMAC of the plan id under the callback secret.

The config file holds no secret and the token is not stored anywhere: the receiver recomputes
it, so a leaked config or Redis dump cannot forge callbacks, and rotating the secret rotates
every URL.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, unquote

_PATH = "/callbacks"


def plan_token(secret: str, plan: str) -> str:
    return hmac.new(secret.encode(), f"plan:{plan}".encode(), hashlib.sha256).hexdigest()[:32]


def callback_url(base_url: str, secret: str, plan: str) -> str:
    return f"{base_url.rstrip('/')}{_PATH}/{quote(plan, safe='')}/{plan_token(secret, plan)}"


def verify(secret: str, plan: str, token: str) -> bool:
    return hmac.compare_digest(plan_token(secret, plan), token)


def split_path(path: str) -> tuple[str, str] | None:
    """``/callbacks/<plan>/<token>`` -> (plan, token); ``/callbacks/<plan>`` -> (plan, ""), a
    missing token, which is a 401 like a wrong one (not a 404: it is a plan's URL, cut short);
    anything else None."""
    parts = path.rstrip("/").split("/")
    if len(parts) not in (3, 4) or parts[0] != "" or "/" + parts[1] != _PATH or not parts[2]:
        return None
    return unquote(parts[2]), parts[3] if len(parts) == 4 else ""
