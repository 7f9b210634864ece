"""The one masking helper: secrets never leave the core in clear text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MASK",
    "is_secret_name",
    "mask_text",
    "mask_value",
    "mask_env",
    "secret_env_values",
    "mask_log_line",
]

MASK = "***"
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|COOKIE", re.IGNORECASE
)
# Every pattern starts only at a word start and uses possessive repeats, and only a secret name
# makes `_mask_named` read its value, so masking stays linear on hostile text (flows choose what
# they log). A match holds only the name: `--env=DB_PASSWORD=x` still finds DB_PASSWORD.
_WORD = r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]++)"
# scheme://user:password@host and scheme://token@host (the run is split in `_url_masked`)
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}+://)(\S++)")
# NAME=value, NAME="two words" (env lines, query strings, command lines)
_ASSIGNMENT = (re.compile(rf"{_WORD}="), re.compile(r"[^\s&;,]*+"))
# "NAME": "value", 'NAME': 'value' or "NAME": 123 (JSON and Python reprs inside messages)
_QUOTED = (re.compile(r"[\"']([A-Za-z0-9_.-]++)[\"'][ \t]*+:[ \t]*+"), re.compile(r"[^\s,}\]]*+"))
# NAME: value in prose ("password: hunter2", "X-Api-Key: abc"); the whole line for Authorization
_COLON = (re.compile(rf"{_WORD}:[ \t]*+"), re.compile(r"\S*+"))
_AUTHORIZATION = re.compile(r"\b((?:Proxy-)?Authorization)(:[ \t]*+)[^\r\n]++", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer)([ \t]++)[A-Za-z0-9._~+/=-]{8,}+")
_MIN_LITERAL = 4
"""Shorter secret values are not masked as literals in output: they would hide ordinary words."""
_MAX_DEPTH = 64
"""Deeper structures are summarised, so masking never hits the recursion limit."""


def is_secret_name(name: str) -> bool:
    """True for keys like DB_PASSWORD, api_key, GITHUB_TOKEN, client_secret."""
    return bool(_SECRET_NAME.search(name))


def mask_text(text: str) -> str:
    """Mask URL credentials and secret-named values (NAME=v, "NAME": "v", NAME: v) in text."""
    # Every pattern below needs "://", "Bearer" or a secret-looking name (Authorization holds
    # AUTH): text with none of them is returned as is, cheaply (every flow message passes here).
    if "://" not in text and "Bearer" not in text and _SECRET_NAME.search(text) is None:
        return text
    text = _URL.sub(_url_masked, text)
    for pattern in (_ASSIGNMENT, _QUOTED, _COLON):
        text = _mask_named(pattern, text)
    text = _AUTHORIZATION.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)


def mask_value(value: Any, key: str | None = None, *, _depth: int = 0) -> Any:
    """Mask recursively: everything under secret-looking keys, credentials in any string."""
    if _depth > _MAX_DEPTH:
        return "<nested too deeply to show>"
    if key is not None and is_secret_name(key):
        return _mask_all(value, _depth)
    if isinstance(value, dict):
        return {k: mask_value(v, str(k), _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, _depth=_depth + 1) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """An environment mapping with secret values masked, also where a secret's value is
    repeated under a plain name (`COPY=$DB_PASSWORD`)."""
    literals = secret_env_values(f"{k}={v}" for k, v in env.items() if isinstance(v, str))
    return {
        k: MASK
        if is_secret_name(str(k))
        else mask_log_line(v, literals)
        if isinstance(v, str)
        else mask_value(v)
        for k, v in env.items()
    }


def secret_env_values(env: Iterable[str]) -> tuple[str, ...]:
    """Values of the secret-named variables in Docker's `NAME=value` list, to mask as literals.

    Only values of at least 4 characters; longest first, so a value holding another is masked
    whole rather than leaving its ends.
    """
    values = {
        value
        for name, sep, value in (item.partition("=") for item in env)
        if sep and len(value) >= _MIN_LITERAL and is_secret_name(name)
    }
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


def mask_log_line(line: str, secret_values: tuple[str, ...] = ()) -> str:
    """One line of a container's output: `mask_text`, and its own secret values wherever they are.

    A flow printing `connecting with hunter2` names no secret; only the literal value of its
    DB_PASSWORD gives it away. A substring test per value keeps plain lines cheap.
    """
    for value in secret_values:
        if value in line:
            line = line.replace(value, MASK)
    return mask_text(line)


def _mask_all(value: Any, depth: int) -> Any:
    """Every leaf masked (empty ones kept, so "not set" stays visible); the shape kept."""
    if depth > _MAX_DEPTH:
        return "<nested too deeply to show>"
    if isinstance(value, dict):
        return {k: _mask_all(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_all(v, depth + 1) for v in value]
    return value if value in (None, "") else MASK


def _url_masked(m: re.Match[str]) -> str:
    """Mask the userinfo of one URL; a password runs to the last '@' (passwords hold '/')."""
    scheme, rest = m[1], m[2]
    first_at, colon = rest.find("@"), rest.find(":")
    path = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if 0 <= colon < first_at and colon < path:
        last_at = rest.rfind("@")
        return f"{scheme}{rest[:colon]}:{MASK}{rest[last_at:]}"
    if 0 <= first_at < path:
        return f"{scheme}{MASK}{rest[first_at:]}"
    return m[0]  # no userinfo: any '@' lies in the path or query


def _mask_named(patterns: tuple[re.Pattern[str], re.Pattern[str]], text: str) -> str:
    """Replace the value after each secret-looking name; quotes around it are kept."""
    name_re, bare_re = patterns
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()  # quote characters with no closing one left in the text
    while (m := name_re.search(text, pos)) is not None:
        start = m.end()
        out.append(text[pos:start])
        pos = start
        if not is_secret_name(m[1]):
            continue
        quote = text[start : start + 1]
        end = -1
        if quote in ("'", '"') and quote not in unclosed:
            end = _closing_quote(text, start, quote)
            if end < 0:
                unclosed.add(quote)
        if end < 0:
            quote = ""
            end = start + len(bare_re.match(text, start)[0])  # type: ignore[index]
        out.append(f"{quote}{MASK}{quote}")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _closing_quote(text: str, start: int, quote: str) -> int:
    """The index just past the quote closing the one at `start` (escaped ones skipped), or -1."""
    end = text.find(quote, start + 1)
    while end > 0 and text[end - 1] == "\\":
        end = text.find(quote, end + 1)
    return end + 1 if end > 0 else -1
