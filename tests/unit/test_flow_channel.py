"""FlowChannelHub against raw socket peers on real Unix sockets."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import stat
import struct
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus, Subscription
from server.core.config import FlowSettings
from server.core.errors import (
    FlowSocketConnectionError,
    FlowSocketError,
    FlowSocketTimeout,
    InvalidRequest,
)
from server.core.events import (
    ActivityLogged,
    Event,
    FlowChannelConnected,
    FlowChannelLost,
    FlowFrameRejected,
    FlowMessageReceived,
    FlowMessageSent,
)
from server.core.flow_channel import FlowChannelHub
from server.core.frames import encode_frame

Peer = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory: pytest's tmp_path can exceed the 107-byte socket path limit."""
    path = Path(f"/tmp/fmx-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


_open_peers: list[asyncio.StreamWriter] = []


async def dial(path: Path) -> Peer:
    """A raw peer connection, closed at the end of the test."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    _open_peers.append(writer)
    return reader, writer


@pytest.fixture(autouse=True)
async def _close_peers() -> AsyncIterator[None]:
    yield
    while _open_peers:
        writer = _open_peers.pop()
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the hub already reset it


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def hub(bus: EventBus) -> AsyncIterator[FlowChannelHub]:
    hub = FlowChannelHub(
        bus, FlowSettings(max_frame_bytes=4096, send_timeout=0.5), frame_timeout=0.3
    )
    yield hub
    await hub.aclose()


@pytest.fixture
async def events(bus: EventBus) -> AsyncIterator[Subscription]:
    async with bus.subscribe() as sub:
        yield sub


async def wait_for(sub: Subscription, match: Callable[[Event], bool], timeout: float = 5) -> Event:
    async with asyncio.timeout(timeout):
        async for event in sub:
            if match(event):
                return event
    raise AssertionError("subscription ended")


async def connect(hub: FlowChannelHub, sub: Subscription, cid: str, path: Path) -> Peer:
    """Open the channel, connect a raw peer and wait until the hub reports it connected."""
    await hub.open(cid, str(path))
    peer = await dial(path)
    await wait_for(sub, lambda e: isinstance(e, FlowChannelConnected) and e.container_id == cid)
    return peer


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    async with asyncio.timeout(5):
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        value: dict[str, Any] = json.loads(await reader.readexactly(size))
        return value


async def assert_reset(reader: asyncio.StreamReader) -> None:
    """The hub closed the connection: the peer reads end of stream or a reset."""
    async with asyncio.timeout(5):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass


async def test_send_to_a_flow_that_is_not_connected_fails_at_once(
    hub: FlowChannelHub, sock_dir: Path
) -> None:
    with pytest.raises(FlowSocketConnectionError):
        await hub.send("nochannel", {"command": "x"})
    await hub.open("c1", str(sock_dir / "c1.sock"))
    info = hub.info("c1")
    assert info is not None and not info.connected and info.last_communication is None
    with pytest.raises(FlowSocketConnectionError):
        await hub.send("c1", {"command": "x"})
    assert hub.info("nochannel") is None


async def test_messages_both_ways_become_events(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    reader, writer = await connect(hub, events, "c1", sock_dir / "c1.sock")
    await hub.send("c1", {"command": "echo", "password": "hunter2"})
    assert await read_message(reader) == {"command": "echo", "password": "hunter2"}
    sent = await wait_for(events, lambda e: isinstance(e, FlowMessageSent))
    assert isinstance(sent, FlowMessageSent) and sent.message["command"] == "echo"
    activity = await wait_for(events, lambda e: isinstance(e, ActivityLogged))
    assert isinstance(activity, ActivityLogged) and activity.activity_type == "message_sent"
    assert activity.details["message"]["password"] == "***"

    writer.write(encode_frame({"reply": "hi", "api_key": "k"}, 4096))
    got = await wait_for(events, lambda e: isinstance(e, FlowMessageReceived))
    assert isinstance(got, FlowMessageReceived)
    assert (got.container_id, got.message) == ("c1", {"reply": "hi", "api_key": "k"})
    activity = await wait_for(events, lambda e: isinstance(e, ActivityLogged))
    assert isinstance(activity, ActivityLogged)
    assert activity.activity_type == "message_received"
    assert activity.details["message"] == {"reply": "hi", "api_key": "***"}
    info = hub.info("c1")
    assert info is not None and info.connected and info.last_communication == got.at
    writer.close()
    lost = await wait_for(events, lambda e: isinstance(e, FlowChannelLost))
    assert isinstance(lost, FlowChannelLost) and "closed by the flow" in lost.reason
    assert not hub.info("c1").connected  # type: ignore[union-attr]


BAD_FRAMES = {
    "frame above the maximum": struct.pack(">I", 4097) + b"{" * 100,
    "length prefix of 4 GiB": struct.pack(">I", 0xFFFFFFFF),
    "bytes that are not JSON": struct.pack(">I", 9) + b"not json!",
    "a JSON array": struct.pack(">I", 6) + b"[1, 2]",
    "invalid UTF-8": struct.pack(">I", 4) + b'"\xff"x',
    "a frame held half-sent": struct.pack(">I", 50) + b'{"a":',
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_bad_peer_is_refused_reported_and_reset(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path, case: str
) -> None:
    good_reader, _good_writer = await connect(hub, events, "good", sock_dir / "good.sock")
    reader, writer = await connect(hub, events, "bad", sock_dir / "bad.sock")
    writer.write(BAD_FRAMES[case])
    rejected = await wait_for(events, lambda e: isinstance(e, FlowFrameRejected))
    assert isinstance(rejected, FlowFrameRejected) and rejected.container_id == "bad"
    lost = await wait_for(events, lambda e: isinstance(e, FlowChannelLost))
    assert isinstance(lost, FlowChannelLost) and lost.container_id == "bad"
    assert "frame rejected" in lost.reason
    await assert_reset(reader)
    # The other flow is unaffected, and the bad one may connect again.
    await hub.send("good", {"still": "fine"})
    assert await read_message(good_reader) == {"still": "fine"}
    reader, writer = await dial(sock_dir / "bad.sock")
    await wait_for(events, lambda e: isinstance(e, FlowChannelConnected))
    await hub.send("bad", {"again": True})
    assert await read_message(reader) == {"again": True}


async def test_connection_closed_mid_frame_is_reported(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    _reader, writer = await connect(hub, events, "c1", sock_dir / "c1.sock")
    writer.write(struct.pack(">I", 20) + b'{"a"')
    await writer.drain()
    writer.close()
    rejected = await wait_for(events, lambda e: isinstance(e, FlowFrameRejected))
    assert isinstance(rejected, FlowFrameRejected) and "middle of a frame" in rejected.reason


async def test_bad_frame_is_logged(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _reader, writer = await connect(hub, events, "c1", sock_dir / "c1.sock")
    writer.write(struct.pack(">I", 0xFFFFFFFF))
    await wait_for(events, lambda e: isinstance(e, FlowFrameRejected))
    assert any("bad frame" in r.getMessage() for r in caplog.records)


async def test_a_looping_bad_peer_is_reported_each_time_but_logged_once_a_second(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await hub.open("c1", str(sock_dir / "c1.sock"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(20):
        _reader, writer = await dial(sock_dir / "c1.sock")
        writer.write(struct.pack(">I", 0xFFFFFFFF))
        await wait_for(events, lambda e: isinstance(e, FlowFrameRejected))
    elapsed = loop.time() - start
    warnings = [r for r in caplog.records if "bad frame" in r.getMessage()]
    assert 1 <= len(warnings) <= 1 + int(elapsed)


async def test_a_flow_that_never_reads_times_out_with_bounded_memory(
    bus: EventBus, events: Subscription, sock_dir: Path
) -> None:
    hub = FlowChannelHub(bus, FlowSettings(max_frame_bytes=1 << 20, send_timeout=0.5))
    _reader, _writer = await connect(hub, events, "slow", sock_dir / "slow.sock")
    message = {"blob": "x" * (256 * 1024)}
    tracemalloc.start()
    sent = 0
    try:
        with pytest.raises(FlowSocketTimeout):
            for _ in range(1000):
                await hub.send("slow", message)
                sent += 1
        _, peak = tracemalloc.get_traced_memory()
        # Only what the kernel's socket buffers hold was accepted, and at most one frame
        # waited in the manager's memory: without backpressure all 1,000 sends would succeed.
        assert sent * 256 * 1024 < 16 * 1024 * 1024
        assert peak < 4 * 1024 * 1024
        lost = await wait_for(events, lambda e: isinstance(e, FlowChannelLost))
        assert isinstance(lost, FlowChannelLost) and "timed out" in lost.reason
        with pytest.raises(FlowSocketConnectionError):
            await hub.send("slow", message)
    finally:
        tracemalloc.stop()
        await hub.aclose()


async def test_concurrent_sends_to_a_stuck_flow_all_fail_in_time(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    _reader, _writer = await connect(hub, events, "c1", sock_dir / "c1.sock")
    message = {"blob": "y" * 4000}
    results = await asyncio.gather(
        *(hub.send("c1", message) for _ in range(200)), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert failures and all(
        isinstance(f, FlowSocketTimeout | FlowSocketConnectionError) for f in failures
    )
    assert any(isinstance(f, FlowSocketTimeout) for f in failures)


async def test_a_new_connection_replaces_the_old_one(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    old_reader, _old_writer = await connect(hub, events, "c1", sock_dir / "c1.sock")
    new_reader, _new_writer = await dial(sock_dir / "c1.sock")
    lost = await wait_for(events, lambda e: isinstance(e, FlowChannelLost))
    assert isinstance(lost, FlowChannelLost) and "replaced" in lost.reason
    await wait_for(events, lambda e: isinstance(e, FlowChannelConnected))
    await assert_reset(old_reader)
    await hub.send("c1", {"to": "new"})
    assert await read_message(new_reader) == {"to": "new"}


async def test_open_is_idempotent_and_close_removes_the_socket(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    path = sock_dir / "c1" / "flow.sock"
    reader, _writer = await connect(hub, events, "c1", path)
    await hub.open("c1", str(path))
    await hub.send("c1", {"same": "connection"})
    assert await read_message(reader) == {"same": "connection"}
    await hub.close("c1")
    assert not path.exists() and hub.info("c1") is None
    lost = await wait_for(events, lambda e: isinstance(e, FlowChannelLost))
    assert isinstance(lost, FlowChannelLost) and "closed by the manager" in lost.reason
    await assert_reset(reader)


async def test_a_stale_socket_file_is_replaced(
    bus: EventBus, events: Subscription, sock_dir: Path
) -> None:
    # A manager that died without cleaning up leaves its socket file behind.
    path = sock_dir / "c1.sock"
    first = FlowChannelHub(bus, FlowSettings())
    await first.open("c1", str(path))
    second = FlowChannelHub(bus, FlowSettings())
    try:
        await second.open("c1", str(path))
        reader, _writer = await dial(path)
        await wait_for(events, lambda e: isinstance(e, FlowChannelConnected))
        await second.send("c1", {"from": "second"})
        assert await read_message(reader) == {"from": "second"}
        await first.aclose()
        assert path.exists(), "the old hub must not unlink the new hub's socket"
    finally:
        await second.aclose()
        await first.aclose()


async def test_refuses_to_replace_a_file_that_is_not_a_socket(
    hub: FlowChannelHub, sock_dir: Path
) -> None:
    path = sock_dir / "c1.sock"
    path.write_text("data")
    with pytest.raises(FlowSocketError, match="not a socket"):
        await hub.open("c1", str(path))
    assert path.read_text() == "data"


async def test_socket_path_longer_than_107_bytes_is_refused(hub: FlowChannelHub) -> None:
    with pytest.raises(InvalidRequest, match="107 bytes") as err:
        await hub.open("c1", "/tmp/" + "d" * 100 + "/flow.sock")
    assert err.value.field == "socket_path"


async def test_messages_that_cannot_be_framed_are_invalid_requests(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    reader, _writer = await connect(hub, events, "c1", sock_dir / "c1.sock")
    with pytest.raises(InvalidRequest):
        await hub.send("c1", {"big": "z" * 5000})
    with pytest.raises(InvalidRequest):
        await hub.send("c1", {"bad": {1, 2}})
    await hub.send("c1", {"ok": 1})
    assert await read_message(reader) == {"ok": 1}


async def test_a_flooding_flow_does_not_starve_another(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    await connect(hub, events, "flood", sock_dir / "flood.sock")
    _good_reader, good_writer = await connect(hub, events, "good", sock_dir / "good.sock")
    flood = encode_frame({"n": 1}, 100) * 200_000  # >= 9 s of work at the default rate limit
    blaster = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    blaster.connect(str(sock_dir / "flood.sock"))
    thread = threading.Thread(target=_send_quietly, args=(blaster, flood), daemon=True)
    thread.start()
    try:
        flooded = 0
        async with asyncio.timeout(10):
            while flooded < 1000:  # the flood is under way
                event = await events.get()
                flooded += isinstance(event, FlowMessageReceived)
            good_writer.write(encode_frame({"from": "good"}, 100))
            while True:
                event = await events.get()
                if isinstance(event, FlowMessageReceived):
                    if event.container_id == "good":
                        break
                    flooded += 1
        assert flooded < 150_000, "the good flow waited behind most of the flood"
    finally:
        blaster.close()
        await hub.close("flood")
        await asyncio.to_thread(thread.join, 10)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the hub closed the flood: expected


async def test_a_flooding_flow_is_rate_limited(bus: EventBus, sock_dir: Path) -> None:
    hub = FlowChannelHub(bus, FlowSettings(), inbound_rate=1000, inbound_burst=10)
    path = sock_dir / "flood.sock"
    await hub.open("flood", str(path))
    received = 0
    try:
        async with bus.subscribe(predicate=lambda e: isinstance(e, FlowMessageReceived)) as sub:
            _reader, writer = await dial(path)
            writer.write(encode_frame({"n": 1}, 100) * 310)
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with asyncio.timeout(10):
                async for _event in sub:
                    received += 1
                    if received == 310:
                        break
            elapsed = loop.time() - start
    finally:
        await hub.aclose()
    assert elapsed >= 0.25, f"300 frames over the burst took only {elapsed:.3f} s at 1000/s"


async def test_the_socket_is_reachable_by_a_flow_of_another_uid(
    hub: FlowChannelHub, sock_dir: Path
) -> None:
    # a root flow without CAP_DAC_OVERRIDE talking to a non-root manager needs o+rw
    path = sock_dir / "c1" / "flow.sock"
    await hub.open("c1", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666


async def test_a_flood_of_messages_gets_its_lines_up_to_the_rate_then_one_count(
    bus: EventBus, sock_dir: Path
) -> None:
    """A flow sending 500 messages at once: every one is a `message_received`, 20 of them get an
    activity line, the other 480 one line at the end of the second; the next second starts
    afresh. Sends the same; closing the channel says what is still counted."""
    hub = FlowChannelHub(bus, FlowSettings(max_frame_bytes=4096, message_activity_per_second=20))
    async with bus.subscribe(maxsize=100_000) as sub:
        try:
            reader, writer = await connect(hub, sub, "c1", sock_dir / "c1.sock")
            writer.write(b"".join(encode_frame({"n": n, "token": "t"}, 4096) for n in range(500)))
            received: list[FlowMessageReceived] = []
            lines: list[ActivityLogged] = []
            async with asyncio.timeout(5):
                while not lines or "not_logged" not in lines[-1].details:
                    event = await sub.get()
                    if isinstance(event, FlowMessageReceived):
                        received.append(event)
                    elif isinstance(event, ActivityLogged):
                        lines.append(event)
            assert [e.message["n"] for e in received] == list(range(500))
            assert len(lines) == 21
            assert [line.details["message"]["n"] for line in lines[:20]] == list(range(20))
            assert all(line.details["message"]["token"] == "***" for line in lines[:20])
            count = lines[20]
            assert count.activity_type == "message_received"
            assert count.details == {"not_logged": 480, "per_second": 20}
            assert count.message.startswith("480 more messages received from flow c1 ")

            # a new second: a line again
            writer.write(encode_frame({"n": 500}, 4096))
            line = await wait_for(sub, lambda e: isinstance(e, ActivityLogged))
            assert isinstance(line, ActivityLogged) and line.details["message"] == {"n": 500}

            # sends: 25 at once, 20 lines, and the count said when the channel closes
            for n in range(25):
                await hub.send("c1", {"n": n})
            await hub.close("c1")
            sent = []
            while (queued := sub.get_nowait()) is not None:
                if isinstance(queued, ActivityLogged) and queued.activity_type == "message_sent":
                    sent.append(queued)
            assert len(sent) == 21 and sent[-1].details["not_logged"] == 5
            assert reader is not None
        finally:
            await hub.aclose()


async def test_zero_gives_every_message_its_line(bus: EventBus, sock_dir: Path) -> None:
    hub = FlowChannelHub(bus, FlowSettings(max_frame_bytes=4096, message_activity_per_second=0))
    async with bus.subscribe(maxsize=100_000) as sub:
        try:
            _, writer = await connect(hub, sub, "c1", sock_dir / "c1.sock")
            writer.write(b"".join(encode_frame({"n": n}, 4096) for n in range(300)))
            lines: list[int] = []
            async with asyncio.timeout(5):
                while len(lines) < 300:
                    event = await sub.get()
                    if isinstance(event, ActivityLogged):
                        lines.append(event.details["message"]["n"])
            assert lines == list(range(300))
        finally:
            await hub.aclose()


# -- one socket path, one channel (the tasks of one flow on one node share a path) -------------


async def _holder(hub: FlowChannelHub, sub: Subscription, path: Path) -> str:
    """The container whose channel a flow dialling `path` reaches."""
    await dial(path)
    event = await wait_for(sub, lambda e: isinstance(e, FlowChannelConnected))
    assert isinstance(event, FlowChannelConnected)
    return event.container_id


async def test_a_channel_that_binds_a_held_path_takes_it_and_the_other_goes(
    hub: FlowChannelHub, events: Subscription, sock_dir: Path
) -> None:
    """Were the older listener kept, it would say `listening` while no flow can reach it (its
    file replaced), and a send to it would fail for ever: it is closed, said as lost."""
    path = sock_dir / "v" / "flow.sock"
    await hub.open("old", str(path))
    await hub.open("new", str(path))
    assert hub.info("old") is None
    assert await _holder(hub, events, path) == "new"
    await hub.close("old")  # nothing of it left to close: the new socket file stays
    assert path.exists() and await _holder(hub, events, path) == "new"


async def test_a_channel_refused_at_the_moment_of_bind_never_takes_the_path(
    bus: EventBus, events: Subscription, sock_dir: Path
) -> None:
    """An older task's container must not take the path from the newer one, whatever order
    their opens finish in: the check is made under the path's lock, right before the bind."""
    path = sock_dir / "v" / "flow.sock"
    for order in (("new", "old"), ("old", "new")):
        hub = FlowChannelHub(bus, FlowSettings(max_frame_bytes=4096, send_timeout=0.5))
        hub.may_listen = lambda cid: cid == "new"
        try:
            done = await asyncio.gather(
                *(hub.open(cid, str(path)) for cid in order), return_exceptions=True
            )
            refused = [r for r in done if isinstance(r, FlowSocketError)]
            assert len(refused) == 1 and refused[0].details["reason"] == "older_task", done
            assert hub.info("old") is None and hub.info("new") is not None
            assert await _holder(hub, events, path) == "new"
        finally:
            await hub.aclose()


async def test_concurrent_opens_on_one_path_leave_exactly_one_reachable_channel(
    bus: EventBus, events: Subscription, sock_dir: Path
) -> None:
    path = sock_dir / "v" / "flow.sock"
    hub = FlowChannelHub(bus, FlowSettings(max_frame_bytes=4096, send_timeout=0.5))
    try:
        await asyncio.gather(*(hub.open(f"c{i}", str(path)) for i in range(8)))
        held = [f"c{i}" for i in range(8) if hub.info(f"c{i}") is not None]
        assert len(held) == 1, held
        assert await _holder(hub, events, path) == held[0]
    finally:
        await hub.aclose()
