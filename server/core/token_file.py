"""The API token on disk: generated on first start (0600, the manager's), read back only when safe.

With no `server.token` / FLOWMGR_TOKEN the service must still require a token, or any web page
(DNS rebinding) or flow (on its bridge gateway) reaching the port could drive it. The token is
made once and kept where `flowmgr --connect` on the same host, and inside the service's image,
finds it by itself: `Settings.token_path`, in the manager's private state dir by default.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from dataclasses import dataclass

from server.core.config import Settings
from server.core.errors import ConfigError

__all__ = [
    "ApiToken",
    "api_token",
    "with_api_token",
    "load_or_create",
    "read_client_token",
    "MAX_TOKEN_CHARS",
]

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 4096
"""Longest token accepted anywhere: a longer one is refused before it is compared."""
_MIN_FILE_TOKEN = 16
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not hang


@dataclass(frozen=True)
class ApiToken:
    """The token clients must present, and where it comes from (for the start-up log)."""

    value: str
    source: str
    """"configured" (server.token / FLOWMGR_TOKEN) or the token file's path."""
    created: bool = False


def api_token(settings: Settings) -> ApiToken:
    """The configured token, else the token file's (made on first use); raise ConfigError."""
    if settings.server.token:
        if len(settings.server.token) > MAX_TOKEN_CHARS:
            raise ConfigError(
                f"the configured token (FLOWMGR_TOKEN or server.token) is longer "
                f"than {MAX_TOKEN_CHARS} characters: no client could present it",
                details={"field": "server.token"},
            )
        return ApiToken(settings.server.token, "configured")
    path = settings.token_path
    value, created = load_or_create(path)
    return ApiToken(value, path, created)


def with_api_token(settings: Settings) -> Settings:
    """`settings` with `server.token` always set (see `api_token`); logs where it comes from."""
    token = api_token(settings)
    if token.source == "configured":
        logger.info(
            "Socket.IO clients must present the configured token (FLOWMGR_TOKEN or server.token)"
        )
        if len(token.value) < _MIN_FILE_TOKEN:
            logger.warning(
                "the configured token has fewer than %d characters: easy to guess; "
                "unset it to have one generated, or set a longer one",
                _MIN_FILE_TOKEN,
            )
    else:
        logger.info(
            "Socket.IO clients must present the API token %s %s (readable by this "
            "user only; `flowmgr --connect` finds it there, or pass it in FLOWMGR_TOKEN)",
            "generated in" if token.created else "kept in",
            token.source,
        )
    return settings.model_copy(
        update={"server": settings.server.model_copy(update={"token": token.value})}
    )


def load_or_create(path: str) -> tuple[str, bool]:
    """The token kept at `path`, or a new one written there 0600; (token, created).

    Every step works on file descriptors opened without following links, so what is checked
    is what is read or written, even if the directory is renamed or replaced meanwhile.
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    _make_dirs(directory)
    try:
        dir_fd = os.open(directory, _OPEN_DIR)
    except OSError as err:
        raise _error(
            path,
            f"cannot open its directory {directory}: {_why(err)}",
            "make it a real directory (not a symbolic link) owned by this user, mode 0700",
        ) from None
    try:
        _check_dir(os.fstat(dir_fd), directory, path)
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except FileExistsError:
            return _read_own(dir_fd, name, path), False
        except OSError as err:
            raise _error(
                path,
                f"cannot create it: {_why(err)}",
                "make its directory writable by this user, or set FLOWMGR_TOKEN",
            ) from None
        token = secrets.token_urlsafe(32)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{token}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return token, True
    finally:
        os.close(dir_fd)


def read_client_token(path: str) -> str | None:
    """For `flowmgr --connect`: the token kept at `path`, None when there is no file.

    A client only needs the file to be a readable regular file; the checks of ownership are
    the service's, which refuses to start on a file it did not make safe.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _error(
            path,
            f"cannot read it: {_why(err)}",
            "run as the service's user (or root), pass --token-file PATH, or set FLOWMGR_TOKEN",
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _error(path, "it is not a regular file", "point --token-file at the token file")
        return _token_of(os.read(fd, MAX_TOKEN_CHARS + 2), path)
    finally:
        os.close(fd)


def _make_dirs(directory: str) -> None:
    """Create the missing components of `directory`, each 0700 (whatever the umask allows)."""
    missing: list[str] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for component in reversed(missing):
        try:
            os.mkdir(component, 0o700)
        except FileExistsError:
            continue  # made meanwhile: the checks on the open directory decide
        except OSError as err:
            raise ConfigError(
                f"cannot create {component} for the API token: {_why(err)}; create it owned by "
                "this user with mode 0700, set server.token_file, or set FLOWMGR_TOKEN",
                details={"field": "server.token_file", "file": component},
            ) from None


def _check_dir(st: os.stat_result, directory: str, path: str) -> None:
    uid = os.geteuid()
    if st.st_uid != uid:
        raise _error(
            path,
            f"its directory {directory} is owned by uid {st.st_uid}, not by this "
            f"manager (uid {uid})",
            f"`chown {uid} {directory} && chmod 700 {directory}`, or remove it so it is made anew",
        )
    if st.st_mode & 0o022:
        raise _error(
            path,
            f"its directory {directory} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o})",
            f"`chmod 700 {directory}`",
        )


def _read_own(dir_fd: int, name: str, path: str) -> str:
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _error(
                path,
                "it is a symbolic link",
                f"remove {path}: a new token is made at the next start",
            ) from None
        raise _error(path, f"cannot read it: {_why(err)}", f"remove {path}") from None
    try:
        st = os.fstat(fd)
        uid = os.geteuid()
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, "it is not a regular file", f"remove {path}")
        if st.st_uid != uid:
            raise _error(
                path,
                f"it is owned by uid {st.st_uid}, not by this manager (uid {uid})",
                f"remove {path} (a new token is made at the next start)",
            )
        if stat.S_IMODE(st.st_mode) != 0o600:
            raise _error(
                path,
                f"its mode is {stat.S_IMODE(st.st_mode):o}, not 600",
                f"`chmod 600 {path}` if nobody else read it; else remove it",
            )
        return _token_of(os.read(fd, MAX_TOKEN_CHARS + 2), path)
    finally:
        os.close(fd)


def _token_of(raw: bytes, path: str) -> str:
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if (
        not (_MIN_FILE_TOKEN <= len(token) <= MAX_TOKEN_CHARS)
        or not token.isprintable()
        or any(c.isspace() for c in token)
    ):
        raise _error(
            path,
            f"it does not hold a token (one line of {_MIN_FILE_TOKEN} to "
            f"{MAX_TOKEN_CHARS} printable ASCII characters)",
            f"remove {path} (a new token is made at the next start)",
        )
    return token


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _error(path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(
        f"unsafe or unusable API token file {path}: {problem}; fix: {fix}",
        details={"field": "server.token_file", "file": path},
    )
