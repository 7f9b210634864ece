"""Recorded core events as JSON lines: encode, decode, and a backend that replays them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import types
import typing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from server.core import events as ev_mod
from server.core.bus import EventBus
from server.core.container_info import parse_time
from server.core.errors import ContainerNotFound, InternalError
from server.core.events import (
    ActivityLogged,
    ContainerAdded,
    ContainerCrashed,
    Event,
    StatsSampled,
)
from server.core.flow_config import FlowConfig, config_from_inspect
from server.core.journal.records import HistoryPage, JournalRecord
from server.core.models import ContainerSnapshot
from server.wire.journal_encoding import encode_event

LOGGED_AT = "2026-01-01T13:34:50.123456789Z"
"""The engine's time of every recorded log line (the recording holds the text alone)."""

__all__ = ["encode", "decode", "load", "dump", "journal_of", "page_of", "ReplayBackend"]


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _from_json(args[0], value) if len(args) == 1 else value
    if tp is datetime:
        return datetime.fromisoformat(value)
    if tp is timedelta:
        return timedelta(seconds=value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _from_json(hints[k], v) for k, v in value.items()})
    return value


def encode(event: Event) -> str:
    """One JSON line."""
    return json.dumps({"type": type(event).__name__, **_to_json(event)}, sort_keys=True)


def decode(line: str) -> Event:
    """Back to the event dataclass."""
    data = json.loads(line)
    cls = getattr(ev_mod, data.pop("type"))
    event = _from_json(cls, data)
    assert isinstance(event, Event)
    return event


def dump(events: list[Event], path: Path) -> None:
    """Write a recording."""
    path.write_text("".join(encode(e) + "\n" for e in events), encoding="utf-8")


def load(path: Path) -> list[Event]:
    """Read a recording."""
    return [decode(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def journal_of(events: list[Event]) -> list[JournalRecord]:
    """The records a journal would hold for these events (every status sample kept)."""
    out: list[JournalRecord] = []
    for event in events:
        encoded = encode_event(event)
        if encoded is not None:
            name, data, cid = encoded
            out.append(JournalRecord(len(out) + 1, name, data, cid))
    return out


def page_of(
    journal: list[JournalRecord],
    since_seq: int | None,
    container_id: str | None,
    types: list[str] | None,
    limit: int,
) -> HistoryPage:
    """`Journal.history` over a list: seq > since_seq, by flow and type, oldest first."""
    hits = [
        r
        for r in journal
        if (r.seq or 0) > (since_seq or 0)
        and container_id in (None, r.container_id)
        and (not types or r.event in types)
    ]
    last = journal[-1].seq or 0 if journal else 0
    first = journal[0].seq or 0 if journal else 0
    return HistoryPage(events=hits[:limit], last_seq=last, oldest_seq=first)


class ReplayBackend:
    """A real EventBus whose events come from a recording; actions are refused."""

    def __init__(self, events: list[Event], logs: dict[str, list[str]] | None = None) -> None:
        self.bus = EventBus()
        self.events = events
        self.logs = logs or {}
        self.docker_available = True
        self.replayed = asyncio.Event()
        """Set once the whole recording was published and drained."""
        self._journal: list[JournalRecord] | None = None
        self.watched: list[tuple[str, list[str]]] = []
        """Every `watch_stats` call, in order."""
        self.log_asks: list[tuple[int, float | None, bool]] = []
        """Every `get_logs` call's (tail, since, timestamps), in order."""

    async def replay(self) -> None:
        """Publish the recording in order, letting subscribers drain between sample rounds.

        The bus keeps only the newest StatsSampled per container in a queue, as it should;
        a recording of 90 rounds must be paced to arrive as 90 samples.
        """
        last_stamp = None
        for event in self.events:
            if isinstance(event, StatsSampled):
                if event.sample.timestamp != last_stamp:
                    await self._drained()
                last_stamp = event.sample.timestamp
            self.bus.publish(event)
        await self._drained()
        self.replayed.set()

    async def _drained(self) -> None:
        async with asyncio.timeout(10):
            while any(len(sub) for sub in self.bus._subscribers):
                await asyncio.sleep(0.001)

    async def start(self) -> None:
        await self.replay()

    async def stop(self) -> None:
        self.bus.close()

    def snapshot(self) -> list[ContainerSnapshot]:
        return []

    def get(self, ref: str) -> ContainerSnapshot:
        raise InternalError("replay backend: no lookups")

    def recent_activity(
        self, container_id: str | None = None, limit: int = 200
    ) -> list[ActivityLogged]:
        return []

    def recent_crashes(
        self, container_id: str | None = None, limit: int = 50
    ) -> list[ContainerCrashed]:
        return []

    def watch_stats(self, owner: str, container_ids: list[str]) -> None:
        """Recorded: the panel tells what is on screen (tests read `watched`)."""
        self.watched.append((owner, list(container_ids)))

    async def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise InternalError("replay backend: read-only")

    create_container = start_container = stop_container = restart_container = _refuse
    update_container = delete_container = send_message = open_shell = _refuse
    pause_container = unpause_container = kill_container = _refuse

    async def get_history(
        self,
        since_seq: int | None = None,
        container_id: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        """The recording as a journal would hold it."""
        if self._journal is None:
            self._journal = journal_of(self.events)
        return page_of(self._journal, since_seq, container_id, types, limit)

    async def get_logs(
        self, ref: str, tail: int = 100, *, since: float | None = None, timestamps: bool = False
    ) -> list[str]:
        """The recorded lines; with `timestamps`, each after an engine-style time, as a core
        answers: the line's own leading time when it has one, else LOGGED_AT. `since`
        changes nothing."""
        self.log_asks.append((tail, since, timestamps))
        lines = self.logs.get(ref, [])[-tail:]
        if not timestamps:
            return lines
        own = (line.partition(" ")[0] for line in lines)
        return [
            f"{stamp if parse_time(stamp) else LOGGED_AT} {line}"
            for stamp, line in zip(own, lines, strict=True)
        ]

    async def follow_logs(self, ref: str) -> str:
        return ref

    async def inspect_container(self, ref: str) -> FlowConfig:
        """A recorded flow's configuration: a made-up inspect holding secrets, masked by the
        core's own code (as the real core masks a real one)."""
        snap = next(
            (
                e.snapshot
                for e in self.events
                if isinstance(e, ContainerAdded) and e.snapshot.id == ref
            ),
            None,
        )
        if snap is None:
            raise ContainerNotFound(f"no managed container {ref!r}")
        return config_from_inspect(fake_inspect(snap))

    async def unfollow_logs(self, container_id: str) -> None:
        return None


def fake_inspect(snap: ContainerSnapshot) -> dict[str, Any]:
    """What `docker inspect` says of a flow created by the manager, with two secrets in its
    environment, one repeated in its command (tests check none shows)."""
    return {
        "Id": snap.id,
        "Name": f"/{snap.name}",
        "Image": "sha256:" + "0" * 64,
        "State": {"Status": "running"},
        "Config": {
            "Image": snap.image,
            "Cmd": ["python", "-m", "flow", "--api-token", "tok-3f9a7c", "--mode=demo"],
            "Entrypoint": ["/usr/bin/tini", "--"],
            "WorkingDir": "/app",
            "User": "1000:1000",
            "Env": [
                "MODE=demo",
                "DB_PASSWORD=hunter2-secret",
                "DATABASE_URL=postgres://flow:hunter2-secret@db:5432/flows",
                "FLOW_SOCKET=/run/flowmgr/flow.sock",
            ],
            "Labels": {"flowmgr.managed": "true", "flowmgr.instance": "default"},
        },
        "HostConfig": {
            "Memory": 512 * 1024 * 1024,
            "NanoCpus": 1_000_000_000,
            "PidsLimit": 256,
            "ReadonlyRootfs": True,
            "NetworkMode": "kawaflow",
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "PortBindings": {
                c if "/" in c else f"{c}/tcp": [{"HostPort": str(h)}] for c, h in snap.ports.items()
            },
        },
        "Mounts": [
            {
                "Type": "volume",
                "Name": "flowmgr-sock-" + snap.name,
                "Source": "/var/lib/x",
                "Destination": "/run/flowmgr",
                "RW": True,
            },
            {
                "Type": "bind",
                "Source": "/srv/flows/" + snap.name,
                "Destination": "/app/code",
                "RW": False,
            },
        ],
    }
