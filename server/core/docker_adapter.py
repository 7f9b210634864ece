"""DockerAdapter: the only module importing `docker`; async calls, plain values, typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.constants
import docker.errors
import docker.types
import requests.exceptions
import urllib3.exceptions
from docker.transport import UnixHTTPAdapter
from docker.transport.unixconn import UnixHTTPConnection, UnixHTTPConnectionPool

from server.core.container_info import (
    BindMount,
    ContainerInfo,
    StreamHandle,
    info_from_inspect,
    parse_time,
    to_loop,
)
from server.core.errors import (
    ContainerNotFound,
    DockerApiError,
    DockerUnavailable,
    FlowMgrError,
    ImageNotFound,
)
from server.core.flow_config import FlowConfig, config_from_inspect
from server.core.log_tail import LogTail, TailBuffer

__all__ = [
    "DockerAdapter",
    "ExecTty",
    "ContainerInfo",
    "BindMount",
    "StreamHandle",
    "parse_time",
    "to_loop",
    "open_api_client",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_POOL_SIZE = 24
"""Threads for short Docker calls."""
DEFAULT_LOG_BYTES = 1 << 20
"""Byte budget of a `logs` answer when the caller names none (docker.max_log_bytes's default)."""
MAX_STREAM_LINE = 64 << 10
"""Longest followed log line: a longer one arrives in pieces of this many bytes."""
_HTTP_POOL_SIZE = 64
"""Connections kept to the engine: one per call thread, plus the long streams (events, each
followed log) that hold theirs open; past it, urllib3 discards extras with a warning."""


def _explanation(err: docker.errors.APIError) -> str:
    text = err.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text or err)


@contextmanager
def _translated(
    not_found: type[FlowMgrError] = ContainerNotFound, what: str = ""
) -> Iterator[None]:
    """Turn docker-py and transport errors into the taxonomy: the one translation boundary."""
    try:
        yield
    except docker.errors.ImageNotFound as err:
        raise ImageNotFound(_explanation(err), details={"status": 404}) from err
    except docker.errors.NotFound as err:
        raise not_found(
            _explanation(err) if not what else f"{what}: {_explanation(err)}",
            details={"status": 404},
        ) from err
    except docker.errors.APIError as err:
        raise DockerApiError(
            _explanation(err), details={"status": err.status_code, "explanation": _explanation(err)}
        ) from err
    except requests.exceptions.Timeout as err:
        raise DockerApiError(f"the Docker Engine did not answer in time: {err}") from err
    except (
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
        docker.errors.DockerException,
    ) as err:
        # refused, reset or cut mid-answer: the engine went away
        raise DockerUnavailable(f"the Docker Engine cannot be reached: {err}") from err


class _SocketPool(UnixHTTPAdapter):  # type: ignore[misc]  # docker-py is untyped
    """One connection pool per engine socket.

    docker-py keys its Unix-socket pools by the request's full URL, so each container's
    inspect would make a pool and a connection of its own (25 kept, the rest closed):
    adopting 200 containers would open ~200 connections.
    """

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        key = "http+docker://localhost"
        with self.pools.lock:
            pool = self.pools.get(key)
            if pool is None:
                pool = _ClosingConnectionPool(
                    key, self.socket_path, self.timeout, maxsize=self.max_pool_size
                )
                self.pools[key] = pool
        return pool


class _ClosingConnection(UnixHTTPConnection):  # type: ignore[misc]
    """docker-py's connection leaves its socket open when the connect fails (refused while
    the engine is away, every retry): this one closes it."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _ClosingConnectionPool(UnixHTTPConnectionPool):  # type: ignore[misc]
    def _new_conn(self) -> _ClosingConnection:
        return _ClosingConnection(self.base_url, self.socket_path, self.timeout)


def _one_pool_per_socket(api: docker.APIClient) -> None:
    adapter = api.adapters.get("http+docker://")
    if type(adapter) is not UnixHTTPAdapter:  # tcp, ssh: pooled by host already
        return
    pool = _SocketPool(
        f"http+unix://{adapter.socket_path}", adapter.timeout, max_pool_size=adapter.max_pool_size
    )
    api.mount("http+docker://", pool)
    api._custom_adapter = pool  # noqa: SLF001 - docker-py's fallback adapter, kept in step
    adapter.close()


def open_api_client(
    base_url: str | None, *, timeout: float, version: str, max_pool_size: int | None = None
) -> tuple[docker.APIClient, str]:
    """An APIClient on `base_url` (else the environment's) with our pool mounted, and its
    server's API version, asked through that pool: through docker-py's own, a refused connect
    would leave its socket open. The client is closed when the ask fails."""
    where = {"base_url": base_url} if base_url else docker.utils.kwargs_from_env()
    pool = {} if max_pool_size is None else {"max_pool_size": max_pool_size}
    api = docker.APIClient(timeout=int(timeout), version=version, **pool, **where)
    _one_pool_per_socket(api)
    try:
        return api, api._retrieve_server_version()  # noqa: SLF001
    except BaseException:
        api.close()
        raise


class ExecTty:
    """One exec's pseudo-terminal stream on its hijacked connection; blocking calls, made from
    threads (a read unblocks, empty, when `close` runs in another thread)."""

    def __init__(self, exec_id: str, response: Any) -> None:
        self.exec_id = exec_id
        self._response = response
        self._reader = response.raw._fp.fp  # noqa: SLF001
        raw = self._reader.raw
        self._sock = getattr(raw, "_sock", raw)
        self._sock.settimeout(None)  # an idle shell is no stuck call

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of output; b"" at its end."""
        try:
            return bytes(self._reader.read1(size))
        except (OSError, ValueError):  # closed by `close`, or cut: the end either way
            return b""

    def write(self, data: bytes) -> None:
        """Send input (blocks while the terminal does not take it)."""
        with _translated():
            self._sock.sendall(data)

    def close(self) -> None:
        """Cut the stream (the process is not ended by this: the engine keeps it)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):  # best effort: the connection is gone anyway
            self._response.close()


class DockerAdapter:
    """Async facade over one Docker Engine; every SDK call runs in a thread with a timeout."""

    def __init__(self, call_timeout: float = 60.0, base_url: str | None = None) -> None:
        self.call_timeout = call_timeout
        self._base_url = base_url
        self._api: docker.APIClient | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def configured_url(self) -> str | None:
        """The engine URL this adapter was given (None: DOCKER_HOST, else the default socket)."""
        return self._base_url

    @property
    def base_url(self) -> str:
        """Where the engine is reached (unix socket path or tcp URL)."""
        return str(self._client().base_url)

    @property
    def is_local(self) -> bool:
        """True when the engine runs on this host (cgroup files are then readable)."""
        return self.base_url.startswith(
            ("http+docker://localhost", "http+docker://localunixsocket")
        )

    def _client(self) -> docker.APIClient:
        if self._api is None:
            with _translated():
                api, server = open_api_client(
                    self._base_url,
                    timeout=self.call_timeout,
                    version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                    max_pool_size=_HTTP_POOL_SIZE,
                )
                api._version = server  # noqa: SLF001  (speak the engine's own version)
                self._api = api
        return self._api

    async def _call(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        not_found: type[FlowMgrError] = ContainerNotFound,
        what: str = "",
        **kwargs: Any,
    ) -> T:
        def run() -> T:
            with _translated(not_found, what):
                return fn(*args, **kwargs)

        if self._pool is None:
            # our own threads: slow stops must not starve the loop's default executor, and
            # a sweep of inspects must not wait behind other code's to_thread work
            self._pool = ThreadPoolExecutor(
                max_workers=_POOL_SIZE, thread_name_prefix="docker-call"
            )
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, run), timeout or self.call_timeout
            )
        except TimeoutError as err:
            raise DockerApiError(
                f"the Docker Engine did not answer within {timeout or self.call_timeout:.0f} s"
            ) from err

    async def ping(self) -> None:
        """Raise DockerUnavailable unless the engine answers."""
        await self._call(lambda: self._client().ping(), timeout=min(self.call_timeout, 10))

    async def close(self) -> None:
        """Drop the connection pool."""
        if self._api is not None:
            api, self._api = self._api, None
            await asyncio.to_thread(api.close)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)

    # containers

    async def inspect(self, container_id: str) -> ContainerInfo:
        """One container's current facts."""
        asked = time.time_ns()
        raw = await self._call(lambda: self._client().inspect_container(container_id))
        return info_from_inspect(raw, asked)

    async def inspect_config(self, container_id: str) -> FlowConfig:
        """One container's configuration, secrets masked before it leaves this call."""
        raw = await self._call(lambda: self._client().inspect_container(container_id))
        return config_from_inspect(raw)

    async def list_ids(self, labels: list[str], *, running_only: bool = False) -> list[str]:
        """Ids of containers carrying all `labels` ("key=value")."""
        rows = await self._call(
            lambda: self._client().containers(
                all=not running_only, quiet=True, filters={"label": labels}
            )
        )
        return [r["Id"] for r in rows]

    async def published_host_ports(self) -> set[int]:
        """Host ports published by any running container on this engine."""
        rows = await self._call(lambda: self._client().containers())
        return {
            int(p["PublicPort"]) for r in rows for p in r.get("Ports") or [] if p.get("PublicPort")
        }

    async def create(
        self,
        *,
        image: str,
        name: str,
        command: list[str] | None,
        environment: dict[str, str],
        labels: dict[str, str],
        binds: list[BindMount],
        ports: dict[str, int],
        network: str,
        host_options: dict[str, Any],
        volumes: dict[str, str] | None = None,
    ) -> str:
        """Create a container (never pulls); return its full id.

        `binds` are host mounts, each with its own mode; `volumes` maps named volumes to
        container paths. Both go as Mounts, not Binds: the engine then refuses a missing host
        source instead of creating it as root. `host_options` are `create_host_config`
        keywords (limits, capabilities, restart policy).
        """
        mounts = [
            docker.types.Mount(b.target, b.source, type="bind", read_only=b.read_only)
            for b in binds
        ]
        mounts += [
            docker.types.Mount(target, vol, type="volume")
            for vol, target in (volumes or {}).items()
        ]

        def run() -> str:
            api = self._client()
            options = dict(host_options)
            if "mem_limit" in options:
                options.setdefault("memswap_limit", options["mem_limit"])  # no swap: OOM is OOM
            host_config = api.create_host_config(
                mounts=mounts,
                port_bindings=dict(ports),
                network_mode=network,
                **options,
            )
            created = api.create_container(
                image=image,
                name=name,
                command=command,
                environment=environment,
                labels=labels,
                host_config=host_config,
                detach=True,
                # (port, proto) tuples: docker-py mangles "80/tcp" strings here
                ports=[(int(p.split("/")[0]), p.split("/")[1]) for p in ports],
            )
            return str(created["Id"])

        # a 404 here is a missing network (a missing image is ImageNotFound already)
        return await self._call(run, not_found=DockerApiError)

    async def start(self, container_id: str) -> None:
        """Start a container."""
        await self._call(lambda: self._client().start(container_id))

    async def stop(self, container_id: str, timeout: int) -> None:
        """Stop (TERM, then KILL after `timeout` s)."""
        await self._call(
            lambda: self._client().stop(container_id, timeout=timeout),
            timeout=self.call_timeout + timeout,
        )

    async def restart(self, container_id: str, timeout: int) -> None:
        """Restart (stop with `timeout`, then start)."""
        await self._call(
            lambda: self._client().restart(container_id, timeout=timeout),
            timeout=self.call_timeout + timeout,
        )

    async def pause(self, container_id: str) -> None:
        """Freeze every process of a running container (the cgroup freezer)."""
        await self._call(lambda: self._client().pause(container_id))

    async def unpause(self, container_id: str) -> None:
        """Thaw a paused container."""
        await self._call(lambda: self._client().unpause(container_id))

    async def kill(self, container_id: str, signal: str) -> None:
        """Send `signal` (a name, "SIGTERM") to the container's main process."""
        await self._call(lambda: self._client().kill(container_id, signal=signal))

    async def remove(self, container_id: str) -> None:
        """Remove a container, running or not."""
        await self._call(lambda: self._client().remove_container(container_id, force=True))

    async def logs(
        self,
        container_id: str,
        tail: int,
        each_line: Callable[[str], str] | None = None,
        *,
        max_bytes: int = DEFAULT_LOG_BYTES,
        since: float | None = None,
        timestamps: bool = False,
    ) -> LogTail:
        """The last `tail` lines of its output (stdout and stderr), at most `max_bytes` of
        them (the newest; `.truncated` says when older ones were left out), each passed
        through `each_line` in the worker thread (10,000 lines cost tens of ms: not on the
        loop). The engine's answer is read frame by frame, never whole. `since`: epoch seconds;
        `timestamps`: each line starts with its RFC 3339 time and a space."""

        def read() -> LogTail:
            kept = TailBuffer(max_bytes)
            opts = {"since": since, "timestamps": timestamps, "stream": True, "follow": False}
            stream = self._client().logs(container_id, stdout=True, stderr=True, tail=tail, **opts)
            try:
                for chunk in stream:
                    kept.feed(chunk)
            finally:
                # docker-py took the socket's timeout off for the stream: never pool it again
                stream.close()
            return kept.result(each_line)

        return await self._call(read)

    async def exec_run(self, container_id: str, cmd: list[str]) -> int:
        """Run `cmd` in a running container; return its exit code."""

        def run() -> int:
            api = self._client()
            ex = api.exec_create(container_id, cmd, stdout=True, stderr=True)
            api.exec_start(ex["Id"])
            return int(api.exec_inspect(ex["Id"]).get("ExitCode") or 0)

        return await self._call(run)

    async def exec_tty(
        self, container_id: str, cmd: list[str], cols: int, rows: int, env: dict[str, str]
    ) -> ExecTty:
        """Start `cmd` in a running container on a pseudo-terminal of `cols` x `rows`, stdin
        attached: its stream (blocking reads and writes: call them from threads)."""

        def run() -> ExecTty:
            api = self._client()
            ex = api.exec_create(
                container_id, cmd, stdout=True, stderr=True, stdin=True, tty=True, environment=env
            )
            exec_id = str(ex["Id"])
            # exec_start(socket=True) hands back the socket under the buffered reader, which
            # may already hold the first output read with the answer's headers
            res = api._post_json(  # noqa: SLF001
                api._url("/exec/{0}/start", exec_id),  # noqa: SLF001
                headers={"Connection": "Upgrade", "Upgrade": "tcp"},
                data={"Tty": True, "Detach": False},
                stream=True,
            )
            api._raise_for_status(res)  # noqa: SLF001
            return ExecTty(exec_id, res)

        tty = await self._call(run)
        try:
            await self.exec_resize(tty.exec_id, cols, rows)
        except FlowMgrError:
            await asyncio.to_thread(tty.close)
            raise
        return tty

    async def exec_resize(self, exec_id: str, cols: int, rows: int) -> None:
        """Set an exec's terminal size."""
        await self._call(lambda: self._client().exec_resize(exec_id, height=rows, width=cols))

    async def exec_state(self, exec_id: str) -> tuple[bool, int | None]:
        """Whether an exec's process still runs, and its exit code once it ended."""
        raw = await self._call(lambda: self._client().exec_inspect(exec_id))
        code = raw.get("ExitCode")
        return bool(raw.get("Running")), None if code is None else int(code)

    async def put_archive(
        self, container_id: str, path: str, data: bytes | Iterable[bytes]
    ) -> None:
        """Extract a tar archive into `path` inside the container. An iterable of chunks is
        sent as a chunked request body as it is produced (read in the call's thread), so no
        whole archive is held; an exception it raises aborts the upload and propagates."""
        ok = await self._call(lambda: self._client().put_archive(container_id, path, data))
        if not ok:
            raise DockerApiError(f"the engine refused the archive for {path}")

    async def mount_destinations(self, container_id: str) -> list[str]:
        """Every path inside the container where something is mounted: binds, volumes and
        tmpfs (`HostConfig.Tmpfs` is not listed in `Mounts`)."""
        raw = await self._call(lambda: self._client().inspect_container(container_id))
        out = [str(m.get("Destination", "")) for m in raw.get("Mounts") or []]
        out += [str(t) for t in ((raw.get("HostConfig") or {}).get("Tmpfs") or {})]
        return out

    async def stats_once(self, container_id: str, timeout: float | None = None) -> dict[str, Any]:
        """One `docker stats`-style answer from the API: one-shot where the engine has it (API
        1.41+: no `precpu_stats`, answered at the engine's next collection tick, ~1 s here),
        else the classic answer, which waits for two ticks."""

        def run() -> dict[str, Any]:
            api = self._client()
            one_shot = docker.utils.version_gte(api.api_version, "1.41") or None
            raw: dict[str, Any] = api.stats(container_id, stream=False, one_shot=one_shot)
            return raw

        return await self._call(run, timeout=timeout)

    # volumes

    async def ensure_volume(self, name: str, driver: str, labels: dict[str, str]) -> bool:
        """Create the named volume `name` with `labels`, or take the existing one of that name:
        True when the volume is this manager's own. An existing one is taken only when it
        carries `labels`, uses `driver` and has no driver options (a volume of another owner,
        or one bind-mounting a host path, is refused)."""

        def run() -> bool:
            # One round trip: for a name in use the engine answers with that volume, unchanged.
            found = self._client().create_volume(name, driver=driver, labels=labels)
            ours = all((found.get("Labels") or {}).get(k) == v for k, v in labels.items())
            if not ours or found.get("Driver") != driver or found.get("Options"):
                raise DockerApiError(
                    f"volume {name} exists and is not this manager's own", details={"volume": name}
                )
            return True

        return await self._call(run, not_found=DockerApiError)

    async def remove_volume(self, name: str, labels: dict[str, str]) -> None:
        """Remove the named volume if it exists and carries `labels` (never another's)."""

        def run() -> None:
            api = self._client()
            try:
                found = api.inspect_volume(name)
            except docker.errors.NotFound:
                return
            if all((found.get("Labels") or {}).get(k) == v for k, v in labels.items()):
                try:
                    api.remove_volume(name)
                except docker.errors.NotFound:
                    pass

        await self._call(run, not_found=DockerApiError)

    # images and networks

    async def image_exists(self, image: str) -> bool:
        """True when the image is present locally (nothing is ever pulled)."""
        try:
            await self._call(lambda: self._client().inspect_image(image), not_found=ImageNotFound)
        except ImageNotFound:
            return False
        return True

    async def ensure_network(self, name: str, labels: dict[str, str]) -> None:
        """Create the bridge network `name` with `labels` unless it exists."""

        def run() -> None:
            api = self._client()
            if api.networks(names=[name]):
                return
            try:
                api.create_network(name, driver="bridge", labels=labels, check_duplicate=True)
            except docker.errors.APIError as err:
                if err.status_code != 409:  # 409: a concurrent manager created it first
                    raise

        await self._call(run)

    # streams

    def stream_events(
        self,
        filters: dict[str, Any],
        since: datetime | None,
        on_item: Callable[[dict[str, Any]], None],
        on_end: Callable[[BaseException | None], None],
    ) -> StreamHandle:
        """Follow the events stream in a named thread; `on_item`/`on_end` run in that thread."""
        handle = StreamHandle()

        def run() -> None:
            error: BaseException | None = None
            try:
                with _translated():
                    stream = self._client().events(since=since, filters=filters, decode=True)
                    if handle._attach(stream):
                        for item in stream:
                            on_item(item)
            except BaseException as err:  # noqa: BLE001 - handed to the loop, not swallowed
                error = err
            on_end(error)

        handle.thread = threading.Thread(target=run, name="docker-events", daemon=True)
        handle.thread.start()
        return handle

    def stream_logs(
        self,
        container_id: str,
        on_line: Callable[[str], None],
        on_end: Callable[[BaseException | None], None],
    ) -> StreamHandle:
        """Follow a container's new output lines in a named thread (a line longer than
        MAX_STREAM_LINE bytes arrives in pieces)."""
        handle = StreamHandle()

        def run() -> None:
            error: BaseException | None = None
            buf = bytearray()
            try:
                with _translated():
                    stream = self._client().logs(
                        container_id, stream=True, follow=True, tail=0, stdout=True, stderr=True
                    )
                    if handle._attach(stream):
                        for chunk in stream:
                            buf += chunk
                            *lines, rest = bytes(buf).split(b"\n")
                            for line in lines:
                                on_line(line.decode("utf-8", "replace").rstrip("\r"))
                            # a line without end is passed on in pieces: one printing
                            # megabytes with no newline is otherwise held whole and split
                            # again at every chunk
                            while len(rest) >= MAX_STREAM_LINE:
                                on_line(rest[:MAX_STREAM_LINE].decode("utf-8", "replace"))
                                rest = rest[MAX_STREAM_LINE:]
                            buf[:] = rest
                if buf:
                    on_line(buf.decode("utf-8", "replace"))
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                error = err
            on_end(error)

        handle.thread = threading.Thread(
            target=run, name=f"docker-logs-{container_id[:12]}", daemon=True
        )
        handle.thread.start()
        return handle
