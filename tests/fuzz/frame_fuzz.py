"""A seeded generator of hostile flow-channel byte streams and a runner that drives the decoder."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from server.core.errors import FrameError
from server.core.frame_values import max_values
from server.core.frames import encode_frame, read_frame
from tests.fuzz.amplification import at_the_cap, uncapped

__all__ = ["FuzzReport", "generate", "run_fuzz", "HTTP_REQUEST"]

HTTP_REQUEST = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_BAD_BODIES = [
    b"",
    b"{",
    b"}",
    b"[]",
    b"null",
    b'"s"',
    b"1e999",
    b'{"a": NaN}',
    b"\xff\xfe",
    b"\xef\xbb\xbf{}",
    b'{"a":1,}',
    b"{'a': 1}",
    b'{"\xed\xa0\x80": 1}',
    b"\x00" * 8,
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
]
_SAMPLES: list[dict[str, Any]] = [
    {},
    {"command": "echo", "text": "héllo"},
    {"n": 1, "f": 2.5, "l": [1, None, True]},
    {"nested": {"a": {"b": ["x", {"c": "\u2603"}]}}},
    {"k": "🚀" * 10},
]


@dataclass
class FuzzReport:
    """What a fuzz run saw."""

    inputs: int = 0
    frames: int = 0
    """Frames decoded into JSON objects."""
    rejected: Counter[str] = field(default_factory=Counter)
    """FrameError counts by the first words of their message."""
    unexpected: list[str] = field(default_factory=list)
    """Anything other than a decoded object or a FrameError (must stay empty)."""
    peaks: dict[str, int] = field(default_factory=dict)
    """By kind of input: the largest allocation peak while reading one input (tracemalloc)."""
    seconds: float = 0.0


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 8)]
        else:
            buf[pos:pos] = struct.pack(">I", rng.choice([0, 1, 4096, 4097, 0x7FFFFFFF, 0xFFFFFFFF]))
    return bytes(buf)


def _split(rng: random.Random, data: bytes) -> list[bytes]:
    if len(data) < 2 or rng.random() < 0.3:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def generate(n: int, seed: int, max_bytes: int) -> Iterator[tuple[str, list[bytes], bool]]:
    """Yield `n` inputs as (kind, chunks, eof); every split of a valid stream comes first."""
    rng = random.Random(seed)
    valid = b"".join(encode_frame(m, max_bytes) for m in _SAMPLES)
    count = 0
    for cut in range(len(valid) + 1):  # split at every byte boundary
        if count == n:
            return
        count += 1
        yield "split", [valid[:cut], valid[cut:]], True
    kinds = [
        "truncated",
        "oversized",
        "junk",
        "bad_body",
        "mutated",
        "http",
        "big_header",
        "amplified",
    ]
    # Bodies of the frame maximum built to decode into many objects: far over the value cap,
    # or right at it.
    amplified = [
        *uncapped(max_bytes).values(),
        *at_the_cap(max_bytes, max_values(max_bytes)).values(),
    ]
    while count < n:
        kind = rng.choice(kinds)
        frame = encode_frame(rng.choice(_SAMPLES), max_bytes)
        if kind == "truncated":
            data = frame[: rng.randrange(1, len(frame))]
        elif kind == "oversized":
            size = rng.randint(max_bytes + 1, 0xFFFFFFFF)
            data = struct.pack(">I", size) + rng.randbytes(rng.randint(0, 64))
        elif kind == "junk":
            data = rng.randbytes(rng.randint(0, 256))
        elif kind == "bad_body":
            body = rng.choice(_BAD_BODIES)[:max_bytes]
            data = struct.pack(">I", len(body)) + body
        elif kind == "amplified":
            body = rng.choice(amplified)
            data = struct.pack(">I", len(body)) + body
        elif kind == "mutated":
            data = _mutate(rng, frame + encode_frame(rng.choice(_SAMPLES), max_bytes))
        elif kind == "http":
            data = HTTP_REQUEST[: rng.randint(1, len(HTTP_REQUEST))]
        else:  # a legal length whose body never fully arrives, then the stream ends
            data = struct.pack(">I", max_bytes) + rng.randbytes(rng.randint(0, 64))
        count += 1
        # Rarely leave the stream open, so the half-sent-frame timeout is exercised too.
        yield kind, _split(rng, data), rng.random() > 0.002


async def _feed(reader: asyncio.StreamReader, chunks: list[bytes], eof: bool) -> None:
    for chunk in chunks:
        reader.feed_data(chunk)
        await asyncio.sleep(0)  # let the decoder run between chunks: splits then matter
    if eof:
        reader.feed_eof()


async def _decode_all(
    reader: asyncio.StreamReader, max_bytes: int, out: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    while (message := await read_frame(reader, max_bytes, body_timeout=0.01)) is not None:
        out.append(message)
    return out


async def run_fuzz(n: int, seed: int = 7, max_bytes: int = 4096) -> FuzzReport:
    """Decode `n` generated inputs on this loop, measuring each one's allocation peak."""
    report = FuzzReport()
    started = time.perf_counter()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        for kind, chunks, eof in generate(n, seed, max_bytes):
            await _one(report, kind, chunks, eof, max_bytes)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    report.seconds = time.perf_counter() - started
    return report


async def _one(
    report: FuzzReport, kind: str, chunks: list[bytes], eof: bool, max_bytes: int
) -> None:
    report.inputs += 1
    reader = asyncio.StreamReader()
    outcome: list[dict[str, Any]] | Exception
    decoded: list[dict[str, Any]] = []
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    feeder = asyncio.create_task(_feed(reader, chunks, eof))
    try:
        # Left open after whole frames, the decoder rightly waits for the next one (flows may
        # idle): that wait is cut here, and what was decoded so far is judged.
        async with asyncio.timeout(None if eof else 0.5):
            outcome = await _decode_all(reader, max_bytes, decoded)
    except TimeoutError:
        outcome = decoded
    except Exception as err:  # noqa: BLE001 - judged below, outside the measurement
        outcome = err
    await feeder
    peak = tracemalloc.get_traced_memory()[1] - base
    report.peaks[kind] = max(peak, report.peaks.get(kind, 0))
    _judge(report, kind, outcome)


def _judge(report: FuzzReport, kind: str, outcome: list[dict[str, Any]] | Exception) -> None:
    if isinstance(outcome, FrameError):
        report.rejected[" ".join(str(outcome).split()[:3])] += 1
    elif isinstance(outcome, Exception):
        report.unexpected.append(f"{kind}: {type(outcome).__name__}: {outcome!s:.200}")
    else:
        report.frames += len(outcome)
        for message in outcome:
            if not isinstance(message, dict):
                report.unexpected.append(f"{kind}: decoded a {type(message).__name__}")
            json.dumps(message, allow_nan=False)
