"""`flowmgr`: the panel on the in-process core; `--serve` adds the API, `--connect` goes remote."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import logging
import logging.handlers
import os
import queue
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server import __version__

if TYPE_CHECKING:
    from server.core.config import Settings
    from server.core.manager import ContainerManager

__all__ = ["main", "build_parser", "EmbeddedServer"]

logger = logging.getLogger("flowmgr_tui")

GC_PAUSE_MAX = 10.0
"""Seconds the cyclic garbage collector stays paused at most while the panel starts."""
ADOPTED_SETTLE = 5.0
"""Seconds after the first adoption before what it built is frozen (`_freeze_after_adoption`)."""


def _resume_gc() -> None:
    """End the start-up pause of the cyclic GC (idempotent).

    Start-up builds ~100,000 long-lived objects (modules, pydantic schemas, Textual's CSS) and
    the collector, left on, walks them again and again: pausing it takes ~15 % off the imports
    alone. Freezing them afterwards keeps later collections from scanning them at all.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


async def _freeze_after_adoption(manager: ContainerManager) -> None:
    """Freeze, once, what the first adoption built (`_resume_gc` ran before it). At 1,000
    flows their records, rows and cells are objects every full collection walked again:
    ~50-70 ms, with the uptime tick the panel's busiest idle second (bench/RESULTS.md)."""
    await manager.monitor.synced.wait()
    await asyncio.sleep(ADOPTED_SETTLE)  # the table takes the adopted rows in batches
    gc.collect()  # what is frozen is never collected: the garbage goes first
    gc.freeze()


def build_parser() -> argparse.ArgumentParser:
    """The command line of `flowmgr`."""
    parser = argparse.ArgumentParser(prog="flowmgr", description="Flow Manager control panel")
    parser.add_argument("--version", action="version", version=f"flowmgr {__version__}")
    parser.add_argument("--server-only", action="store_true", help="run the headless service")
    parser.add_argument(
        "--hub",
        action="store_true",
        help="cluster mode: run the hub (the API over Docker Swarm; docs/CLUSTER.md)",
    )
    parser.add_argument(
        "--agent",
        action="store_true",
        help="cluster mode: run this node's agent (it connects to cluster.hub_url)",
    )
    parser.add_argument("--config", help="config.json (default: CONFIG_FILE or ./config.json)")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also serve the Socket.IO API from this process (config: server.serve_in_panel)",
    )
    parser.add_argument("--host", help="listen address for --serve (overrides HOST)")
    parser.add_argument("--port", type=int, help="listen port for --serve (overrides PORT)")
    parser.add_argument(
        "--connect", metavar="URL", help="drive a remote flow manager, e.g. http://host:8000"
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the token for --connect (default: FLOWMGR_TOKEN, "
        "then server.token, then the service's token file "
        "<socket_dir>/.flowmgr-<instance>/.api-token)",
    )
    # Refused with a message (see main): a command line is visible to every local user.
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument(
        "--panel-config",
        metavar="PATH",
        help="the panel's keys, theme, refresh, log defaults and columns "
        "(default: $XDG_CONFIG_HOME/flowmgr/panel.toml, else ~/.config/flowmgr/panel.toml)",
    )
    parser.add_argument(
        "--log-file", help="where the panel logs (default: $XDG_STATE_HOME/flowmgr/panel.log)"
    )
    return parser


class EmbeddedServer:
    """The API under uvicorn on the panel's loop, sharing its manager; the panel owns signals."""

    def __init__(
        self, manager: Any, settings: Settings, host: str | None, port: int | None
    ) -> None:
        from server.api.app import create_app
        from server.api.serving import GracefulServer, uvicorn_config

        class _PanelServer(GracefulServer):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # The panel reads Ctrl+C as a key and quits; uvicorn must not take the signals.
                yield

        self.asgi = create_app(manager, settings)
        self.failure = ""
        self.server = _PanelServer(uvicorn_config(self.asgi, settings, host=host, port=port))

    async def run(self) -> None:
        """Serve until `request_stop`; a failed bind is shown in the header, not fatal."""
        try:
            await self.server.serve()
        except SystemExit:  # uvicorn exits the process when it cannot bind; the panel stays
            cfg = self.server.config
            self.failure = f"API not serving: cannot listen on {cfg.host}:{cfg.port} (see log)"
            logger.error("embedded API could not start on %s:%s", cfg.host, cfg.port)

    def request_stop(self) -> None:
        """Ask uvicorn to shut down gracefully."""
        self.server.should_exit = True

    @property
    def address(self) -> str:
        """`http://host:port` as bound (port 0 resolved), or the configured one before that."""
        for srv in getattr(self.server, "servers", []):
            for sock in srv.sockets:
                host, port = sock.getsockname()[:2]
                return f"http://{host}:{port}"
        cfg = self.server.config
        return f"http://{cfg.host}:{cfg.port}"

    @property
    def clients(self) -> int:
        """Connected Socket.IO clients (a memory read)."""
        return len(getattr(self.asgi.sio.eio, "sockets", {}))

    def status(self) -> str:
        """`serving http://0.0.0.0:8000 | 2 clients`."""
        if self.failure:
            return self.failure
        if not self.server.started:
            return "API starting..."
        n = self.clients
        return f"serving {self.address} | {n} client{'' if n == 1 else 's'}"


def _log_to_file(settings: Settings, path: str | None) -> Path:
    """The panel owns the terminal: every logger writes to a file instead."""
    if path is None:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path = str(Path(state) / "flowmgr" / "panel.log")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The file is written by a thread: a burst of warnings (adopting hundreds of containers)
    # must not hold the event loop on one write and flush per line while the panel draws.
    global _log_listener
    _stop_log_listener(reopening=True)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _log_listener = logging.handlers.QueueListener(records, handler)
    _log_listener.start()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(settings.log_level)
    return target


_log_listener: logging.handlers.QueueListener | None = None


@atexit.register
def _stop_log_listener(reopening: bool = False) -> None:
    """Write out what is queued and end the writer thread; later records go to the file
    directly (the panel has exited: nothing draws any more), unless a new log is opening."""
    global _log_listener
    if _log_listener is None:
        return
    listener, _log_listener = _log_listener, None
    listener.stop()
    file_handler = listener.handlers[0]
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.QueueHandler) and handler.queue is listener.queue:
            root.removeHandler(handler)
            if not reopening:
                root.addHandler(file_handler)
    if reopening:
        file_handler.close()


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    services: list[Any] = []
    background: set[asyncio.Future[None]] = set()
    if args.connect:
        from flowmgr_tui.app import FlowMgrApp
        from flowmgr_tui.remote import RemoteBackend

        backend: Any = RemoteBackend(args.connect, token=args.resolved_token)
        app = FlowMgrApp(
            backend,
            start_backend=True,
            mode=f"remote {args.connect}",
            server_status=backend.status_text,
            default_image=settings.docker.default_image,
            panel=args.panel,
            bridge_interval=args.panel.refresh,
        )
    else:
        from server.core.manager import ContainerManager
        from server.wire.journal_encoding import encode_event

        backend = ContainerManager(settings, journal_encoder=encode_event)
        # The panel first, then the core: start-up is CPU-bound on one interpreter (the engine
        # answers in milliseconds), and the core parsing 200 inspects while the panel imports
        # only delays both; started after, its first containers reach a mounted table at once
        # (bench/RESULTS.md, time to the first screen of rows).
        from flowmgr_tui.app import FlowMgrApp

        starting = asyncio.ensure_future(backend.start())
        starting.add_done_callback(lambda _: _resume_gc())
        background.add(asyncio.ensure_future(_freeze_after_adoption(backend)))
        if args.serve or settings.server.serve_in_panel:
            services.append(EmbeddedServer(backend, settings, args.host, args.port))
        app = FlowMgrApp(
            backend,
            starting=starting,
            services=services,
            default_image=settings.docker.default_image,
            panel=args.panel,
            bridge_interval=args.panel.refresh,
        )
    loop = asyncio.get_running_loop()
    loop.call_later(GC_PAUSE_MAX, _resume_gc)
    loop.add_signal_handler(signal.SIGTERM, lambda: app.call_later(app.action_quit))
    try:
        await app.run_async()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        for task in background:
            task.cancel()
        for service in services:
            service.request_stop()
        await backend.stop()
    return app.return_code or 0


TOKEN_ON_COMMAND_LINE = (
    "flowmgr: --token is refused: a command line is visible to every local user (ps, "
    "/proc/<pid>/cmdline). Pass the token in the FLOWMGR_TOKEN environment variable or in a "
    "file with --token-file PATH; on the service's host or inside its container flowmgr "
    "finds the service's token file by itself.\n"
)

NO_TOKEN = (
    "flowmgr: no token for --connect: the service requires one. Set FLOWMGR_TOKEN, pass "
    "--token-file PATH, or run where the service's token file {path} is readable (its "
    "user, root, or inside its container).\n"
)


def connect_token(
    args: argparse.Namespace, settings: Settings, env: dict[str, str] | None = None
) -> str | None:
    """The token `--connect` presents: FLOWMGR_TOKEN, then --token-file, then server.token
    (config file), then the service's token file if this user can read it; raises ConfigError
    (a named file that cannot be read or holds no token)."""
    from server.core.errors import ConfigError
    from server.core.token_file import read_client_token

    env = dict(os.environ) if env is None else env
    if env.get("FLOWMGR_TOKEN"):
        return env["FLOWMGR_TOKEN"]
    if args.token_file:
        token = read_client_token(args.token_file)
        if token is None:
            raise ConfigError(
                f"--token-file {args.token_file}: no such file", details={"file": args.token_file}
            )
        return token
    if settings.server.token:
        return settings.server.token
    return read_client_token(settings.token_path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `flowmgr` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["journal"]:  # `flowmgr journal export ...`: no panel, no core started
        from server.core.journal.export import main as journal_main

        return journal_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.token is not None:
        sys.stderr.write(TOKEN_ON_COMMAND_LINE)
        return 2
    if args.server_only or args.hub:
        from server.__main__ import main as server_main

        rest = [a for a in argv if a not in ("--server-only", "--hub")]
        return server_main(rest, hub=args.hub)
    if args.agent:
        from server.cluster.agent import agent_main

        return agent_main([a for a in argv if a != "--agent"])
    gc.disable()  # until the core has started: see _resume_gc
    try:
        from server.core.config import load_cli_settings
        from server.core.errors import ConfigError
        from server.core.token_file import with_api_token

        try:
            settings = load_cli_settings(args.config, args.host, args.port)
            _log_to_file(settings, args.log_file)
            from flowmgr_tui.panel_config import load_panel_config

            # A bad panel.toml never stops the panel: the app names what it did not use.
            args.panel = load_panel_config(args.panel_config)
            # Before the loop runs: both read files (the serving panel may create one).
            if args.connect:
                args.resolved_token = connect_token(args, settings)
                if args.resolved_token is None:
                    sys.stderr.write(NO_TOKEN.format(path=settings.token_path))
                    return 2
            else:  # the in-process core mounts from the bind roots
                from server.core.config import require_single_host
                from server.core.fd_budget import raise_soft_limit
                from server.core.validation.host import validate_bind_roots

                require_single_host(settings)
                validate_bind_roots(settings)
                raise_soft_limit()  # its flows hold descriptors; logged (to the panel's log)
                if args.serve or settings.server.serve_in_panel:
                    settings = with_api_token(settings)
        except ConfigError as err:
            sys.stderr.write(f"flowmgr: {err}\n")
            return 2
        return asyncio.run(_run(args, settings))
    finally:
        _resume_gc()
        _stop_log_listener()


if __name__ == "__main__":
    sys.exit(main())
