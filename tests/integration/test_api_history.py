"""Issue 14 through the API: `seq` on pushes, resume by `auth.last_seq`, `get_history`.

A real service process (`python -m server`, so it can be SIGKILLed and started again on the
same database), one real flow (flow:latest, the echo flow) and real python-socketio clients,
all shared by the module; the retention case runs an in-process service it can age."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
import websockets
from api_harness import TEST_TOKEN, running_service

from server.core.config import Settings
from server.core.events import ActivityLogged
from tests.conftest import RUN_ID

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "history-token-0123456789abcdef"
MAX_SEQ = 2**63 - 1
MESSAGES = 1000
LIVE = 300
"""Sent while the resuming client catches up."""
WAIT = 60.0


# ------------------------------------------------------------------ the service process


class ServiceProcess:
    """`python -m server` on 127.0.0.1 with its own config; killable and restartable."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        sock_dir = Path("/tmp/fm") / uuid.uuid4().hex[:8]
        sock_dir.mkdir(parents=True)
        self.sock_dir = sock_dir
        self.config = workdir / "config.json"
        self.config.write_text(
            json.dumps(
                {
                    "socket_dir": str(sock_dir),
                    "log_level": "INFO",
                    "docker": {
                        "instance": RUN_ID,
                        "network": f"flowmgr-{RUN_ID}",
                        "stop_timeout": 2,
                    },
                    "monitoring": {"health_check_interval": 1.0},
                }
            )
        )

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_FILE", "SOCKET_DIR")}
        env.update(PYTHONPATH=str(ROOT), FLOWMGR_TOKEN=TOKEN)
        self.starts += 1
        log = open(self.workdir / f"service-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--config", str(self.config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # 503 while the engine is being reached: it serves
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the service did not start: {self.log_tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        logs = sorted(self.workdir.glob("service-*.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    svc = ServiceProcess(tmp_path_factory.mktemp("history-service"))
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(svc.sock_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def flow(service: ServiceProcess) -> Iterator[str]:
    """A running echo flow (flow:latest) whose channel is connected; its id."""
    name = f"{RUN_ID}-hist-{uuid.uuid4().hex[:4]}"

    async def create() -> str:
        async with connected(service.url) as (sio, _):
            cid: str = (await sio.call("create_container", {"name": name}, timeout=90))[
                "container_id"
            ]
            await sio.call("start_container", {"container_id": cid}, timeout=90)
            await channel_up(sio, cid)
            return cid

    cid = asyncio.run(create())
    yield cid
    with contextlib.suppress(Exception):
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)


async def channel_up(sio: socketio.AsyncClient, cid: str) -> None:
    """Wait until the flow's channel to the manager is connected."""
    async with asyncio.timeout(WAIT):
        while not (await sio.call("get_container_status", {"container_id": cid}))[
            "socket_connected"
        ]:
            await asyncio.sleep(0.2)


# ------------------------------------------------------------------ clients


class Stream:
    """Every event one client received, in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.refusal: Any = None
        self.changed = asyncio.Event()

    async def record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self.changed.set()

    def of(self, name: str) -> list[Any]:
        return [d for e, d in self.events if e == name]

    def seqs(self) -> list[int]:
        return [d["seq"] for _, d in self.events if isinstance(d, dict) and "seq" in d]

    async def until(self, check: Any, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def connected(url: str, **auth: Any) -> AsyncIterator[tuple[socketio.AsyncClient, Stream]]:
    """A client presenting TOKEN and `auth`, recording everything; disconnected at the end."""
    async with aiohttp.ClientSession() as session:
        sio = socketio.AsyncClient(reconnection=False, http_session=session)
        stream = Stream()
        sio.on("*", stream.record)

        async def refused(data: Any = None) -> None:
            stream.refusal = data

        sio.on("connect_error", refused)
        try:
            await sio.connect(
                url, auth={"token": TOKEN, **auth}, transports=["websocket"], wait_timeout=10
            )
        except socketio.exceptions.ConnectionError as err:
            err.args = (*err.args, stream.refusal)
            raise
        try:
            yield sio, stream
        finally:
            if sio.connected:
                await sio.disconnect()


async def newest_seq(sio: socketio.AsyncClient) -> int:
    page = await sio.call("get_history", {"since_seq": MAX_SEQ, "limit": 1})
    return int(page["last_seq"])


async def history(sio: socketio.AsyncClient, since: int, **query: Any) -> list[dict[str, Any]]:
    """Every journalled event after `since`, paging 1,000 at a time."""
    out: list[dict[str, Any]] = []
    while True:
        page = await sio.call(
            "get_history", {"since_seq": since, "limit": 1000, **query}, timeout=30
        )
        assert "error_type" not in page, page
        out += page["events"]
        if len(page["events"]) < 1000:
            return out
        since = page["events"][-1]["seq"]


async def send_echoes(
    sio: socketio.AsyncClient, cid: str, count: int, pace: float, first: int = 0
) -> None:
    """`count` echo requests numbered from `first`, `pace` seconds apart (each answered by the
    flow: a message_received)."""
    for n in range(first, first + count):
        await sio.emit(
            "send_message", {"container_id": cid, "message": {"command": "echo", "n": n}}
        )
        if pace:
            await asyncio.sleep(pace)


def echoed(data: Any, cid: str) -> int | None:
    """The `n` of an echo reply from flow `cid`, else None."""
    if data["container_id"] != cid:
        return None
    n = data["message"].get("echo", {}).get("n")
    return n if isinstance(n, int) else None


def echoes(stream: Stream, cid: str) -> int:
    """How many numbered echo replies (n >= 0) from flow `cid` the client got."""
    ns = (echoed(d, cid) for d in stream.of("message_received"))
    return sum(1 for n in ns if n is not None and n >= 0)


# ------------------------------------------------------------------ hostile input

BAD_LAST_SEQS = {
    "negative": -1,
    "huge": MAX_SEQ + 1,
    "much-larger": 10**30,
    "string": "5",
    "empty-string": "",
    "float": 5.0,
    "fraction": 1.5,
    "true": True,
    "false": False,
    "list": [5],
    "object": {"seq": 5},
}


async def test_a_last_seq_that_is_not_a_seq_refuses_the_connect(service: ServiceProcess) -> None:
    # null is no resume: the live stream, as without last_seq
    async with connected(service.url, last_seq=None) as (sio, stream):
        await stream.until(lambda: stream.of("engine_status"))
        assert not stream.of("error")
        assert "count" in await sio.call("list_containers", {})
    # Raw engine.io: python-engineio's client, refused, may wait 30 s in its write loop
    # before `connect` raises (the server hangs up at once); the packets are the same.
    for label, value in BAD_LAST_SEQS.items():
        refusal = await connect_packet(service.port, {"token": TOKEN, "last_seq": value})
        assert refusal["message"] == "invalid last_seq", (label, refusal)
        assert refusal["data"]["error_type"] == "validation_error", label
        assert refusal["data"]["field"] == "last_seq", label
        assert "last_seq must be" in refusal["data"]["message"], label
    # the bad token is still "authentication failed" first, whatever last_seq holds
    refusal = await connect_packet(service.port, {"token": "nope", "last_seq": -1})
    assert refusal == {"message": "authentication failed"}
    # and the largest seq there can be is a seq (past the end: said after the connect)
    assert await connect_packet(service.port, {"token": TOKEN, "last_seq": MAX_SEQ}) is None


async def connect_packet(port: int, auth: Any) -> Any:
    """The CONNECT_ERROR payload answering a raw Socket.IO connect with `auth`; None when the
    connect is accepted."""
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws, asyncio.timeout(20):
        await ws.recv()  # engine.io's open packet
        await ws.send("40" + json.dumps(auth))
        while True:
            msg = await ws.recv()
            if isinstance(msg, str) and msg.startswith("44"):
                return json.loads(msg[2:])
            if isinstance(msg, str) and msg.startswith("40"):
                return None


async def test_a_last_seq_past_the_end_says_the_newest_then_streams_live(
    service: ServiceProcess, flow: str
) -> None:
    async with connected(service.url, last_seq=MAX_SEQ) as (sio, stream):
        await stream.until(lambda: stream.of("error"))
        (err,) = stream.of("error")
        newest = err["details"]["newest_seq"]
        assert err["error_type"] == "validation_error" and str(newest) in err["message"]
        assert err["details"]["field"] == "last_seq" and err["details"]["operation"] == "connect"
        await sio.emit("send_message", {"container_id": flow, "message": {"command": "echo"}})
        await stream.until(lambda: stream.of("message_received"))
        assert stream.of("message_received")[0]["seq"] > newest
        # a resume at exactly the newest seq is no error, just what follows
        at = stream.seqs()[-1]
    async with connected(service.url, last_seq=at) as (sio, stream):
        await sio.emit("send_message", {"container_id": flow, "message": {"command": "echo"}})
        await stream.until(lambda: stream.of("message_received"))
        assert not stream.of("error") and min(stream.seqs()) == at + 1


BAD_HISTORY: dict[str, tuple[Any, str]] = {
    "not-an-object": ([1, 2], "payload"),
    "string-payload": ("since_seq", "payload"),
    "since-negative": ({"since_seq": -1}, "since_seq"),
    "since-huge": ({"since_seq": MAX_SEQ + 1}, "since_seq"),
    "since-string": ({"since_seq": "1"}, "since_seq"),
    "since-float": ({"since_seq": 1.0}, "since_seq"),
    "since-bool": ({"since_seq": True}, "since_seq"),
    "since-list": ({"since_seq": [1]}, "since_seq"),
    "cid-number": ({"container_id": 5}, "container_id"),
    "cid-list": ({"container_id": ["x"]}, "container_id"),
    "cid-object": ({"container_id": {"$ne": None}}, "container_id"),
    "cid-bool": ({"container_id": True}, "container_id"),
    "cid-empty": ({"container_id": ""}, "container_id"),
    "cid-long": ({"container_id": "z" * 257}, "container_id"),
    "types-string": ({"types": "message_received"}, "types"),
    "types-empty": ({"types": []}, "types"),
    "types-unknown": ({"types": ["message_received", "nope"]}, "types"),
    "types-log-lines": ({"types": ["container_log"]}, "types"),
    "types-error": ({"types": ["error"]}, "types"),
    "types-number": ({"types": [1]}, "types.0"),
    "types-null-item": ({"types": [None]}, "types.0"),
    "types-too-many": ({"types": ["activity_log"] * 50}, "types"),
    "types-object": ({"types": {"a": 1}}, "types"),
    "limit-0": ({"limit": 0}, "limit"),
    "limit-negative": ({"limit": -1}, "limit"),
    "limit-1001": ({"limit": 1001}, "limit"),
    "limit-huge": ({"limit": 10**9}, "limit"),
    "limit-string": ({"limit": "10"}, "limit"),
    "limit-float": ({"limit": 10.0}, "limit"),
    "limit-bool": ({"limit": True}, "limit"),
    "limit-null": ({"limit": None}, "limit"),
}


async def test_get_history_refuses_every_wrong_type_with_a_validation_error(
    service: ServiceProcess,
) -> None:
    async with connected(service.url) as (sio, stream):
        for label, (payload, field) in BAD_HISTORY.items():
            got = await sio.call("get_history", payload, timeout=20)
            assert got["error_type"] == "validation_error", (label, got)
            assert got["details"]["operation"] == "get_history", label
            assert got["details"].get("field", "payload") == field, (label, got)
        assert len(stream.of("error")) == len(BAD_HISTORY)  # each answered once, as `error`
        # the limits themselves, an unknown flow and the end are answers, not errors
        ok = await sio.call("get_history", {"limit": 1000, "request_id": "h1"})
        assert ok["request_id"] == "h1" and len(ok["events"]) <= 1000
        assert set(ok) == {"events", "last_seq", "oldest_seq", "request_id"}
        for query in (
            {"since_seq": MAX_SEQ},
            {"container_id": "zz-no-such-flow"},
            {"types": ["container_crashed"], "container_id": "zz-gone"},
        ):
            page = await sio.call("get_history", query)
            assert page["events"] == [] and page["last_seq"] >= 0, (query, page)
        assert "count" in await sio.call("list_containers", {})  # still serving


# ------------------------------------------------------------------ acceptance


async def test_a_client_away_5s_gets_all_1000_messages_in_order_on_resume(
    service: ServiceProcess, flow: str
) -> None:
    async with connected(service.url) as (sender, sent):
        async with connected(service.url) as (_, away):
            await sender.emit("send_message", {"container_id": flow, "message": {"n": -1}})
            await away.until(lambda: away.of("message_received"))
            left_at = time.monotonic()
        last_seq = away.seqs()[-1]  # the last push it handled before it went away
        await send_echoes(sender, flow, MESSAGES, pace=4.0 / MESSAGES)
        await sent.until(lambda: echoes(sent, flow) >= MESSAGES)
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - left_at)))  # away 5 s
        # it comes back while the flow is still talking: the catch-up and the live stream meet
        more = asyncio.create_task(send_echoes(sender, flow, LIVE, pace=0.002, first=MESSAGES))
        async with connected(service.url, last_seq=last_seq) as (back, resumed):
            await more
            await sent.until(lambda: echoes(sent, flow) >= MESSAGES + LIVE)
            newest = await newest_seq(back)
            await resumed.until(lambda: bool(resumed.seqs()) and resumed.seqs()[-1] >= newest)
            ns = [echoed(d, flow) for d in resumed.of("message_received")]
            assert [n for n in ns if n is not None] == list(range(MESSAGES + LIVE))
            seqs = resumed.seqs()
            assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs)))  # no gap, no dup
            assert not resumed.of("error")
            # then the live stream, still contiguous
            await sender.emit("send_message", {"container_id": flow, "message": {"n": "live"}})
            await resumed.until(lambda: resumed.seqs()[-1] > newest)
            seqs = resumed.seqs()
            assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs)))
            # what it got is what get_history holds: same names, same payloads
            held = await history(back, last_seq)
            got = {
                d["seq"]: (e, {k: v for k, v in d.items() if k != "seq"})
                for e, d in resumed.events
                if isinstance(d, dict) and "seq" in d
            }
            assert {h["seq"]: (h["event"], h["data"]) for h in held if h["seq"] in got} == got
            # filtered and indexed by container and type
            mine = await history(back, last_seq, container_id=flow[:12], types=["message_received"])
            assert [echoed(h["data"], flow) for h in mine] == [*range(MESSAGES + LIVE), None]
            assert {h["event"] for h in mine} == {"message_received"}
            assert all(h["data"]["container_id"] == flow for h in mine)


async def test_sigkill_mid_stream_keeps_every_event_a_client_received(
    service: ServiceProcess, flow: str
) -> None:
    async with connected(service.url) as (sender, _):
        start = await newest_seq(sender)
        async with connected(service.url, last_seq=start) as (wsio, watcher):
            blast = asyncio.create_task(send_echoes(sender, flow, 3000, pace=0.0005))
            try:
                await watcher.until(lambda: len(watcher.of("message_received")) >= 300)
                service.kill()  # mid-stream: the flow is still answering
            finally:
                blast.cancel()
                await asyncio.gather(blast, return_exceptions=True)
            async with asyncio.timeout(20):
                while wsio.connected:
                    await asyncio.sleep(0.05)
    received = {
        d["seq"]: (e, {k: v for k, v in d.items() if k != "seq"})
        for e, d in watcher.events
        if isinstance(d, dict) and "seq" in d
    }
    assert len(received) >= 300
    assert len(watcher.of("message_received")) < 3000  # killed mid-stream
    service.start()  # the same database
    async with connected(service.url) as (sio, _):
        held = await history(sio, 0)
        seqs = [h["seq"] for h in held]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous, from the oldest
        by_seq = {h["seq"]: (h["event"], h["data"]) for h in held}
        missing = [s for s in received if s not in by_seq]
        assert not missing, missing[:10]
        assert all(by_seq[s] == received[s] for s in received)
        # the stream goes on after the restart with the next seqs, none reused
        await channel_up(sio, flow)  # the flow reconnects to the new process on its own
        async with connected(service.url, last_seq=seqs[-1]) as (_, after):
            await sio.emit("send_message", {"container_id": flow, "message": {"n": "after"}})
            await after.until(lambda: after.of("message_received"))
            assert min(after.seqs()) == seqs[-1] + 1


# ------------------------------------------------------------------ retention (in process)


async def test_a_last_seq_older_than_retention_says_the_oldest_then_resumes_there(
    settings: Settings,
) -> None:
    async with running_service(settings) as svc:
        bus, journal = svc.manager.bus, svc.manager.journal

        async def publish(stem: str) -> None:
            for i in range(3):
                bus.publish(
                    ActivityLogged(
                        activity_type="container_error", container_id=None, message=f"{stem} {i}"
                    )
                )
            async with asyncio.timeout(WAIT):
                while journal.last_seq < seq + 3:
                    await asyncio.sleep(0.02)

        seq = journal.last_seq
        await publish("old")
        # retention as if max_age_days had passed: every event so far goes
        later = time.time() + settings.journal.max_age_days * 86400 + 60
        assert await journal.trim(now=later) >= 3
        seq = journal.last_seq
        await publish("new")
        oldest = journal.oldest_seq
        assert oldest == seq + 1 > 1
        async with _in_process_client(svc.url, last_seq=0) as stream:
            await stream.until(lambda: len(stream.of("activity_log")) >= 3)
            (err,) = stream.of("error")
            assert err["error_type"] == "validation_error"
            assert err["details"]["oldest_seq"] == oldest and str(oldest) in err["message"]
            assert [d["message"] for d in stream.of("activity_log")][:3] == [
                "new 0",
                "new 1",
                "new 2",
            ]
            assert stream.seqs()[0] == oldest
            # errors come before the events, as said
            names = [e for e, _ in stream.events]
            assert names.index("error") < names.index("activity_log")


@contextlib.asynccontextmanager
async def _in_process_client(url: str, **auth: Any) -> AsyncIterator[Stream]:
    async with aiohttp.ClientSession() as session:
        sio = socketio.AsyncClient(reconnection=False, http_session=session)
        stream = Stream()
        sio.on("*", stream.record)
        await sio.connect(
            url, auth={"token": TEST_TOKEN, **auth}, transports=["websocket"], wait_timeout=10
        )
        try:
            yield stream
        finally:
            await sio.disconnect()


async def test_with_the_journal_off_resume_and_history_say_so(settings: Settings) -> None:
    off = settings.model_copy(
        update={"journal": settings.journal.model_copy(update={"enabled": False})}
    )
    async with running_service(off) as svc:
        assert svc.manager.journal.health() == "disabled"
        async with _in_process_client(svc.url, last_seq=0) as stream:
            await stream.until(lambda: stream.of("error"))
            (err,) = stream.of("error")
            assert err["error_type"] == "validation_error" and "disabled" in err["message"]
            # the live stream follows, seqs counted in memory
            svc.manager.bus.publish(
                ActivityLogged(activity_type="container_error", container_id=None, message="x")
            )
            await stream.until(lambda: stream.of("activity_log"))
            assert isinstance(stream.of("activity_log")[0]["seq"], int)
        async with connected_in_process(svc.url) as sio:
            page = await sio.call("get_history", {})
            assert page["error_type"] == "validation_error" and "off" in page["message"]


@contextlib.asynccontextmanager
async def connected_in_process(url: str) -> AsyncIterator[socketio.AsyncClient]:
    async with aiohttp.ClientSession() as session:
        sio = socketio.AsyncClient(reconnection=False, http_session=session)
        await sio.connect(url, auth={"token": TEST_TOKEN}, transports=["websocket"])
        try:
            yield sio
        finally:
            await sio.disconnect()
