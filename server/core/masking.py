"""The one masking helper: secrets never leave the core in clear text."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "is_secret_name", "mask_text", "mask_value", "mask_env"]

MASK = "***"
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:***@host
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)")
# NAME=value inside free text, where NAME looks secret
_ASSIGNMENT = re.compile(
    r"\b([A-Za-z_][A-Za-z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL)[A-Za-z0-9_]*)"
    r"=(\S+)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True for keys like DB_PASSWORD, api_key, GITHUB_TOKEN, client_secret."""
    return bool(_SECRET_NAME.search(name))


def mask_text(text: str) -> str:
    """Mask URL credentials and NAME=value pairs with secret-looking names in free text."""
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={MASK}", text)


def mask_value(value: Any, key: str | None = None) -> Any:
    """Mask recursively: values under secret-looking keys, credentials in any string."""
    if key is not None and is_secret_name(key) and not isinstance(value, dict | list):
        return MASK if value not in (None, "") else value
    if isinstance(value, dict):
        return {k: mask_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """An environment mapping with secret values masked."""
    return {k: (MASK if is_secret_name(k) else mask_text(v)) for k, v in env.items()}
