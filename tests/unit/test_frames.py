"""The frame codec: round trips, malformed input, and a fuzz that only ever sees FrameError."""

from __future__ import annotations

import asyncio
import json
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.errors import FrameError, InvalidRequest
from server.core.frames import HEADER, decode_body, encode_frame, frame_length, read_frame

MAX = 4096

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=6)


def raw(body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">I", len(body) if length is None else length) + body


async def _read_all(chunks: list[bytes], max_bytes: int, eof: bool = True) -> list[dict[str, Any]]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    out: list[dict[str, Any]] = []
    while (message := await read_frame(reader, max_bytes, body_timeout=0.05)) is not None:
        out.append(message)
    return out


def read_all(chunks: list[bytes], max_bytes: int = MAX, eof: bool = True) -> list[dict[str, Any]]:
    return asyncio.run(_read_all(chunks, max_bytes, eof))


def test_encode_is_length_prefixed_compact_utf8_json() -> None:
    frame = encode_frame({"command": "echo", "text": "héllo"}, MAX)
    body = '{"command":"echo","text":"héllo"}'.encode()
    assert frame == struct.pack(">I", len(body)) + body


@given(json_objects)
def test_round_trip(message: dict[str, Any]) -> None:
    assert read_all([encode_frame(message, 1 << 20)], 1 << 20) == [message]


@pytest.mark.parametrize("bad", [[1, 2], "text", 3, None])
def test_encode_refuses_non_objects(bad: Any) -> None:
    with pytest.raises(InvalidRequest):
        encode_frame(bad, MAX)


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": object()}, {"x": "\udc80"}])
def test_encode_refuses_what_is_not_json(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        encode_frame(bad, MAX)


def test_encode_refuses_oversized_messages() -> None:
    with pytest.raises(InvalidRequest, match="exceeds"):
        encode_frame({"x": "a" * MAX}, MAX)


def test_length_above_maximum_is_refused_from_the_header_alone() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        frame_length(HEADER.pack(0xFFFFFFFF), MAX)
    assert frame_length(HEADER.pack(MAX), MAX) == MAX


def test_oversized_frame_is_refused_without_its_body() -> None:
    # Only the header is fed: the decoder must not wait for (or buffer) 4 GiB of body.
    with pytest.raises(FrameError, match="exceeds"):
        read_all([HEADER.pack(0xFFFFFFFF)], eof=False)


@pytest.mark.parametrize(
    "body, match",
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json}", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2, 3]", "list"),
        (b'"a string"', "str"),
        (b'{"x": NaN}', "not JSON"),
        (b"\xef\xbb\xbf{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "more than 16384 JSON values"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested too deeply"),
    ],
)
def test_malformed_bodies(body: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        read_all([raw(body)], max_bytes=1 << 20)


def test_decode_body_accepts_an_object() -> None:
    assert decode_body(b'{"a": [1, {"b": null}]}', MAX) == {"a": [1, {"b": None}]}


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x00\x00", raw(b'{"a":1}')[:-1]])
def test_end_of_stream_inside_a_frame(data: bytes) -> None:
    with pytest.raises(FrameError, match="middle of a frame"):
        read_all([data])


def test_a_frame_held_half_sent_times_out() -> None:
    with pytest.raises(FrameError, match="not completed"):
        read_all([raw(b'{"a":1}')[:6]], eof=False)


def test_large_frames_round_trip_and_truncation_is_caught() -> None:
    big = {"blob": "é" * 150_000, "n": [1, 2, 3]}
    frame = encode_frame(big, 1 << 20)
    chunks = [frame[i : i + 7_777] for i in range(0, len(frame), 7_777)]
    assert read_all(chunks, 1 << 20) == [big]
    with pytest.raises(FrameError, match="middle of a frame"):
        read_all([frame[:-1]], 1 << 20)
    with pytest.raises(FrameError, match="not completed"):
        read_all([frame[:200_000]], 1 << 20, eof=False)


def test_large_invalid_utf8_is_refused_without_copying_it_again() -> None:
    # 1 MiB whose bad byte comes early: a plain bytes.decode() would copy all of it into
    # the UnicodeDecodeError; chunked decoding stops holding little more than one chunk.
    body = b'{"a":"' + "é".encode() * 50_000 + b"\xff" + b"x" * (1 << 20) + b'"}'
    tracemalloc.start()
    try:
        with pytest.raises(FrameError, match="UTF-8"):
            decode_body(body, 2 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024


def test_clean_end_between_frames() -> None:
    assert read_all([]) == []
    assert read_all([raw(b"{}"), raw(b'{"b":2}')]) == [{}, {"b": 2}]


@given(st.lists(json_objects, min_size=1, max_size=4), st.data())
def test_frames_split_at_every_boundary_decode_the_same(
    messages: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(m, 1 << 20) for m in messages)
    cut = data.draw(st.integers(0, len(stream)))
    assert read_all([stream[:cut], stream[cut:]], 1 << 20) == messages


def test_every_single_byte_split() -> None:
    messages: list[dict[str, Any]] = [{"command": "echo", "n": 1}, {"k": ["é", None, 2.5]}]
    stream = b"".join(encode_frame(m, MAX) for m in messages)
    for cut in range(len(stream) + 1):
        assert read_all([stream[:cut], stream[cut:]]) == messages
    assert read_all([bytes([b]) for b in stream]) == messages


@given(json_objects, st.data())
def test_truncated_streams_raise_frame_error(message: dict[str, Any], data: st.DataObject) -> None:
    frame = encode_frame(message, 1 << 20)
    cut = data.draw(st.integers(1, len(frame) - 1))
    with pytest.raises(FrameError):
        read_all([frame[:cut]], 1 << 20)


@given(st.integers(MAX + 1, 0xFFFFFFFF), st.binary(max_size=64))
def test_oversized_headers_raise_frame_error(length: int, tail: bytes) -> None:
    with pytest.raises(FrameError, match="exceeds"):
        read_all([struct.pack(">I", length) + tail])


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_random_junk_only_ever_raises_frame_error(chunks: list[bytes]) -> None:
    try:
        messages = read_all(chunks, max_bytes=64)
    except FrameError:
        return
    for message in messages:
        assert isinstance(message, dict)
        json.dumps(message)


@given(st.binary(max_size=64))
def test_random_bodies_only_ever_raise_frame_error(body: bytes) -> None:
    try:
        assert isinstance(decode_body(body, MAX), dict)
    except FrameError:
        pass
