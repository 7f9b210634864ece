"""A thousand flows' worth of descriptors under a lowered open-files limit (issue 15).

The headless service runs in a child process with RLIMIT_NOFILE 1,024 (soft = hard: start-up
cannot raise it) and adopts 1,000 fake flows through the real adoption path (fd_limit_child.py):
their channels need 2,000 descriptors. This test plays the flows that got a socket (it connects
to each) and the API's clients: `/health` and the API keep answering, the flows past the budget
and a new `create_container` are refused with `socket_error`, the flows that have sockets keep
them (a message reaches one), and nothing logs "Too many open files".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.core.config import Settings
from server.core.frames import read_frame
from tests.integration.api_harness import BUSYBOX, TEST_TOKEN, client

pytestmark = pytest.mark.docker

CHILD = Path(__file__).with_name("fd_limit_child.py")
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1024
FLOWS = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lowered() -> None:
    """In the child before exec: soft = hard = LIMIT."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


async def _wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    async with asyncio.timeout(120):
        while not path.exists():
            assert proc.poll() is None, log.read_text()
            await asyncio.sleep(0.1)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def _flows(paths: list[str]) -> AsyncIterator[list[asyncio.StreamReader]]:
    """Dial every socket as its flow would; the connections stay open until the block ends."""
    pairs: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for start in range(0, len(paths), 64):
            pairs += await asyncio.gather(
                *(asyncio.open_unix_connection(p) for p in paths[start : start + 64])
            )
        yield [reader for reader, _ in pairs]
    finally:
        for _, writer in pairs:
            writer.close()


@pytest.fixture
async def child(settings: Settings, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The service under the lowered limit, its report, its URL, pid and log."""
    data = settings.model_dump(exclude={"config_file"})
    data["server"]["token"] = TEST_TOKEN
    data["docker"]["max_flows"] = 2 * FLOWS  # the quota is not what this test is about
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    port, out, log = _free_port(), tmp_path / "report.json", tmp_path / "child.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(config), str(port), str(FLOWS), str(out)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_lowered,
        )
    try:
        report = await _wait_for(out, proc, log)
        yield {**report, "url": f"http://127.0.0.1:{port}", "pid": proc.pid, "log": log}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_a_thousand_flows_under_1024_descriptors(
    child: dict[str, Any], unique_name: Any
) -> None:
    opened, refused = child["opened"], child["refused"]
    # the budget is the limit less the reserve, two descriptors per channel; the rest refused
    assert child["limit"] == LIMIT
    assert len(opened) + len(refused) == FLOWS
    assert 300 <= len(opened) <= (LIMIT - 256) // 2 and len(refused) >= FLOWS - 384
    assert child["available"] < 2
    async with _flows([path for _, path in opened]) as readers:  # every flow with a socket
        async with httpx.AsyncClient(base_url=child["url"], timeout=10) as http:
            # /health from the reserve, 40 at once, while every channel holds its connection
            answers = await asyncio.gather(*(http.get("/health") for _ in range(40)))
            assert {a.status_code for a in answers} == {200}, answers[0].text
            assert answers[0].json()["status"] == "healthy"
        async with client(child["url"]) as (sio, _):
            listed = await sio.call("list_containers", {}, timeout=30)
            assert listed["count"] >= FLOWS
            first, late = opened[0][0], refused[0]
            await asyncio.sleep(0.5)  # the last accepts of the connections above
            assert (await sio.call("get_container_status", {"container_id": first}))[
                "socket_connected"
            ]
            sent = await sio.call(
                "send_message", {"container_id": first, "message": {"n": 1}}, timeout=30
            )
            assert sent["status"] == "sent", sent
            frame = await read_frame(readers[0], 1 << 20, 5.0)
            assert frame is not None and frame["n"] == 1  # the flow kept its socket
            no_socket = await sio.call("send_message", {"container_id": late, "message": {}})
            assert no_socket["error_type"] == "socket_connection_error", no_socket
            # a new flow: refused before the engine is asked, with the numbers and the setting
            name = unique_name("fdl")
            made = await sio.call("create_container", {"image": BUSYBOX, "name": name}, timeout=60)
            assert made["error"] is True and made["error_type"] == "socket_error", made
            assert made["details"]["setting"] == "LimitNOFILE"
            assert made["details"]["limit"] == LIMIT
            ps = await asyncio.to_thread(
                subprocess.run,
                ["docker", "ps", "-aq", "--filter", f"name={name}"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert ps.stdout.strip() == ""  # nothing left behind
        await asyncio.sleep(1.5)  # a stats sweep or two over 1,000 flows under the limit
        held = len(os.listdir(f"/proc/{child['pid']}/fd"))  # every channel connected
        assert 2 * len(opened) < held < LIMIT - 100, held  # the reserve is still there
    text = Path(child["log"]).read_text()
    assert "Too many open files" not in text
    assert "no open-file descriptors left" in text  # the refusals' log lines
    assert f"open-files limit {LIMIT} (hard {LIMIT})" in text  # said once at start
