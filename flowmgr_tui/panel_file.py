"""panel.toml on disk: read it safely, find a key's line, change one value keeping the rest.

The file is the user's own, but may be anything: huge, not UTF-8, a FIFO, a link to a file
they did not mean. It is read with a size cap and without blocking on a non-file; messages
show a value only from the offending line, never more of the file. Writes change only the
lines of the value set (comments and other keys stay) and replace the file atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_BYTES",
    "PanelFileError",
    "read_text",
    "key_lines",
    "line_of",
    "shown_value",
    "set_value",
    "save_values",
]

MAX_BYTES = 256 * 1024
"""A panel config is a few hundred bytes: anything past this is not one."""
_SHOWN = 40
"""Characters of a bad value a message quotes at most."""
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


class PanelFileError(Exception):
    """The file was not written; the message says why."""


def read_text(path: Path) -> tuple[str | None, str]:
    """(text, "") or (None, "") when absent, or (None, why) when unusable."""
    try:
        # O_NONBLOCK: a FIFO named as the config must not hang the panel's start.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None, ""
    except OSError as err:
        return None, f"{path}: cannot be read ({err.strerror}); defaults used"
    except ValueError:  # a NUL in the path given
        return None, f"{path!r}: not a usable path; defaults used"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, f"{path}: not a regular file; defaults used"
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        return (
            None,
            f"{path}: larger than {MAX_BYTES // 1024} KiB, not a panel config; defaults used",
        )
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return None, f"{path}:{line}: not UTF-8 (byte {err.start + 1}); defaults used"


def _paths(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line index, dotted path, key as written) of every `key = value` line."""
    section, out = "", []
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            section = _plain(header.group(1))
            continue
        key = _KEY.match(line)
        if key:
            name = _plain(key.group(1))
            out.append((i, f"{section}.{name}" if section else name, key.group(1)))
    return out


def _plain(key: str) -> str:
    """`"dashboard.stop"`, `dashboard . stop` -> dashboard.stop (the panel's keys have no
    quotes or spaces inside)."""
    return re.sub(r"[\s\"']", "", key)


def key_lines(text: str) -> dict[str, int]:
    """Dotted key -> the 1-based line that sets it (the first, if set twice)."""
    lines: dict[str, int] = {}
    for i, path, _ in _paths(text.splitlines()):
        lines.setdefault(path, i + 1)
    return lines


def line_of(lines: dict[str, int], dotted: str) -> int | None:
    """The line where `dotted` (or the nearest enclosing key written) is set, from
    `key_lines`."""
    probe = dotted
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe.rpartition(".")[0]
    return None


def shown_value(value: object) -> str:
    """A bad value for a message: repr, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _value_end(lines: list[str], start: int) -> int:
    """Index after the last line of the value that starts on `start` (arrays, inline tables
    and multi-line strings may span lines)."""
    rest = lines[start].split("=", 1)[1].strip()
    for quote in ('"""', "'''"):
        if rest.startswith(quote) and rest.count(quote) < 2:
            for j in range(start + 1, len(lines)):
                if quote in lines[j]:
                    return j + 1
    depth = 0
    for j in range(start, len(lines)):
        text = re.sub(r"\"(\\.|[^\"\\])*\"|'[^']*'", "", lines[j] if j > start else rest)
        text = text.split("#", 1)[0]
        depth += text.count("[") + text.count("{") - text.count("]") - text.count("}")
        if depth <= 0:
            return j + 1
    return len(lines)


def set_value(text: str, dotted: str, literal: str) -> str:
    """`text` with `dotted` set to the TOML `literal`: its lines replaced where it is set, else
    added to its table (made at the end if absent); every other line stays."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for i, path, written in _paths(lines):
        if path == dotted:
            lines[i : _value_end(lines, i)] = [f"{written.strip()} = {literal}\n"]
            return "".join(lines)
    section, _, key = dotted.rpartition(".")
    headers = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    if not section:  # a top-level key goes before the first table
        at = headers[0] if headers else len(lines)
        lines.insert(at, f"{key} = {literal}\n")
        return "".join(lines)
    for i in headers:
        match = _HEADER.match(lines[i])
        if match and _plain(match.group(1)) == section:
            lines.insert(i + 1, f"{key} = {literal}\n")
            return "".join(lines)
    lines.append(f"\n[{section}]\n{key} = {literal}\n")
    return "".join(lines)


def _lookup(data: dict[str, Any], dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def save_values(path: Path, updates: dict[str, str]) -> None:
    """Set each dotted key to its TOML literal in the file and replace it atomically.

    Refused (PanelFileError) when the file could not be read whole or does not parse (writing
    would lose what the user wrote), when it is not a regular file of this user, or when the
    edit would not read back as meant. A symlink is followed to its target, which is written
    in place of the link's target (a dotfiles link keeps working). Blocking: run in a thread.
    """
    text, problem = read_text(path)
    if problem:
        raise PanelFileError(f"not saved: {problem}")
    if text is not None:
        try:
            tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as err:
            raise PanelFileError(f"not saved: {path} is not a usable TOML file") from err
    new = text or ""
    for dotted, literal in updates.items():
        new = set_value(new, dotted, literal)
    try:
        data = tomllib.loads(new)
    except tomllib.TOMLDecodeError as err:
        raise PanelFileError(f"not saved: the edit of {path} would not parse ({err})") from err
    for dotted, literal in updates.items():
        if _lookup(data, dotted) != tomllib.loads(f"v = {literal}")["v"]:
            raise PanelFileError(f"not saved: {dotted} in {path} is set in a way not edited here")
    _replace(Path(os.path.realpath(path)), new)


def _replace(target: Path, text: str) -> None:
    mode = 0o600
    try:
        st = os.stat(target)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise PanelFileError(f"not saved: {target} is not a regular file of this user")
        mode = stat.S_IMODE(st.st_mode)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".panel.toml.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # best effort: the temporary file only
            os.unlink(tmp)
        raise
