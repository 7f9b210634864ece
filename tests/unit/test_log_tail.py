"""TailBuffer: the newest lines within a byte budget, whatever the chunking, in bounded memory."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from server.core.log_tail import LogTail, TailBuffer


def _tail(chunks: list[bytes], max_bytes: int, each_line=None) -> LogTail:  # type: ignore[no-untyped-def]
    buf = TailBuffer(max_bytes)
    for chunk in chunks:
        buf.feed(chunk)
    return buf.result(each_line)


def _size(lines: list[str]) -> int:
    return sum(len(line.encode()) + 1 for line in lines)


def _expected(lines: list[str], max_bytes: int) -> list[str]:
    """The newest whole lines that fit (the reference, computed naively)."""
    out: list[str] = []
    for line in reversed(lines):
        if _size(out) + len(line.encode()) + 1 > max_bytes:
            break
        out.insert(0, line)
    return out


def _chunked(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 40))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(30))
def test_any_chunking_gives_the_newest_lines_that_fit(seed: int) -> None:
    rng = random.Random(seed)
    lines = [f"{i}:" + "é" * rng.randint(0, 30) for i in range(rng.randint(0, 80))]
    data = "".join(f"{line}\n" for line in lines).encode()
    max_bytes = rng.randint(16, 2000)
    got = _tail(_chunked(data, rng), max_bytes)
    assert list(got) == _expected(lines, max_bytes)
    assert got.truncated == (list(got) != lines)
    assert _size(got) <= max_bytes


def test_whole_output_under_the_budget_is_kept_as_splitlines_did() -> None:
    data = b"a\r\nb\n\nc\rd\ne"  # no final newline; \r ends a line too, as str.splitlines
    got = _tail([data], 1 << 20)
    assert list(got) == data.decode().splitlines() and got.truncated is False
    assert list(_tail([], 100)) == [] and list(_tail([b"\n"], 100)) == [""]


def test_a_line_longer_than_the_budget_keeps_its_start() -> None:
    got = _tail([b"old\n", b"x" * 5000, b"y" * 5000, b"\n"], 1024)
    assert list(got) == ["x" * 1023] and got.truncated
    got = _tail([b"z" * 5000], 1024)  # never ended by a newline
    assert list(got) == ["z" * 1023] and got.truncated


def test_a_cut_inside_a_utf8_character_stays_within_the_budget() -> None:
    got = _tail([("é" * 600 + "\n").encode()], 1000)
    assert _size(got) <= 1000 and got.truncated
    assert set(got[0]) <= {"é", "\ufffd"}


def test_masking_that_lengthens_lines_is_trimmed_again() -> None:
    data = b"".join(b"%03d\n" % i for i in range(100))  # 400 bytes
    got = _tail([data], 400, lambda line: line + "-masked-longer")
    assert got.truncated and _size(got) <= 400
    assert got[-1] == "099-masked-longer"


def test_thirty_mib_in_bounded_memory() -> None:
    line = b"x" * 3080 + b"\n"
    tracemalloc.start()
    try:
        buf = TailBuffer(1 << 20)
        for _ in range(10_000):  # 30.8 MiB, one engine frame per line
            buf.feed(line)
        got = buf.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.truncated and _size(got) <= 1 << 20 and len(got) == (1 << 20) // len(line)
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB"
