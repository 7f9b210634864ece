"""Who may use the API: the token check (fail closed), the authenticated room, allowed Origins."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from server.core.token_file import MAX_TOKEN_CHARS

__all__ = ["AUTHENTICATED", "token_matches", "bearer_matches", "engineio_origins", "RefusalLog"]

logger = logging.getLogger(__name__)

AUTHENTICATED = "authenticated"
"""The room a Socket.IO client joins once its token passed; every broadcast goes to it alone.

python-socketio puts a connecting client in the namespace's everyone-room before its connect
handler has decided, so a broadcast to "everyone" also reaches clients still being checked."""


def token_matches(auth: Any, expected: bytes) -> bool:
    """Whether a connect's auth payload is exactly `{"token": <the configured string>, ...}`.

    Never raises: any JSON type, a lone surrogate, a huge string is False, not an exception
    (an exception in the connect handler would leave the client neither refused nor accepted).
    """
    try:
        if type(auth) is not dict:
            return False
        given = auth.get("token")
        if type(given) is not str or not given or len(given) > MAX_TOKEN_CHARS:
            return False
        return hmac.compare_digest(given.encode("utf-8"), expected)
    except Exception:  # UnicodeEncodeError for lone surrogates; nothing else is expected
        return False


def bearer_matches(header: str | None, expected: bytes) -> bool:
    """Whether an HTTP `Authorization` header is `Bearer <the configured token>`; never raises."""
    try:
        if header is None or len(header) > MAX_TOKEN_CHARS + 16:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent.
        return hmac.compare_digest(value.strip().encode("latin-1"), expected)
    except Exception:
        return False


def engineio_origins(origins: list[str]) -> str | Callable[[str, Mapping[str, Any]], bool]:
    """python-engineio's `cors_allowed_origins` for `server.cors_origins`.

    Careful: engine.io reads [] as "check no Origin at all". Here [] means the service's own
    origin only, and a list adds those origins to it; ["*"] allows any page (warned about).
    """
    if "*" in origins:
        return "*"
    listed = frozenset(origins)

    def allowed(origin: str, environ: Mapping[str, Any]) -> bool:
        if origin in listed:
            return True
        host = environ.get("HTTP_HOST")
        scheme = environ.get("wsgi.url_scheme", "http")
        return bool(host) and origin == f"{scheme}://{host}"

    return allowed


class RefusalLog:
    """Logs refused connects without letting a flood of them flood the log: the first one,
    then at most one summary line every `every` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.refused = 0
        self._untold = 0
        self._last = float("-inf")

    def refused_one(self, remote: str) -> None:
        """Count one refusal; log it, or fold it into the next summary."""
        self.refused += 1
        now = time.monotonic()
        if now - self._last < self.every:
            self._untold += 1
            return
        more = f" (and {self._untold} more since the last such line)" if self._untold else ""
        logger.warning("refused a Socket.IO client without the valid token (%s)%s", remote, more)
        self._last, self._untold = now, 0
