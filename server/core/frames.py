"""The flow channel's frame codec: a 4-byte big-endian length, then a UTF-8 JSON object."""

from __future__ import annotations

import asyncio
import codecs
import json
import struct
from typing import Any

from server.core.errors import FrameError, InvalidRequest
from server.core.frame_values import max_values, too_many_values

__all__ = ["HEADER", "encode_frame", "frame_length", "decode_body", "read_frame"]

HEADER = struct.Struct(">I")
"""The length prefix: unsigned 32-bit, big-endian."""


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are Python extensions, not JSON: a strict peer could not parse them.
    raise ValueError(f"{name} is not valid JSON")


def encode_frame(message: dict[str, Any], max_bytes: int) -> bytes:
    """One frame for `message`; InvalidRequest when it is not a JSON object or is too large."""
    if not isinstance(message, dict):
        raise InvalidRequest(
            f"a message must be a JSON object, not {type(message).__name__}", field="message"
        )
    try:
        body = json.dumps(
            message, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as err:
        raise InvalidRequest(f"message cannot be encoded as JSON: {err}", field="message") from None
    if len(body) > max_bytes:
        raise InvalidRequest(
            f"message of {len(body)} bytes exceeds the {max_bytes}-byte frame maximum",
            field="message",
            details={"size": len(body), "max_frame_bytes": max_bytes},
        )
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes, max_bytes: int) -> int:
    """The body length a header announces; FrameError (before any body is read) when too big."""
    size: int = HEADER.unpack(header)[0]
    if size > max_bytes:
        raise FrameError(
            f"frame of {size} bytes exceeds the {max_bytes}-byte maximum",
            details={"size": size, "max_frame_bytes": max_bytes},
        )
    return size


def decode_body(body: bytes | bytearray, max_bytes: int) -> dict[str, Any]:
    """The JSON object in a frame body; FrameError for bad UTF-8, bad JSON, a non-object, or
    more JSON values than `max_values(max_bytes)` (checked before anything is parsed)."""
    limit = max_values(max_bytes)
    if too_many_values(body, limit):
        raise FrameError(
            f"frame holds more than {limit} JSON values (the most a "
            f"{max_bytes}-byte frame maximum allows)",
            details={"max_values": limit, "max_frame_bytes": max_bytes},
        )
    text = _utf8(body)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        raise FrameError(f"frame is not JSON: {err}") from None
    except RecursionError:
        raise FrameError("frame JSON is nested too deeply") from None
    if not isinstance(value, dict):
        raise FrameError(f"frame holds a JSON {type(value).__name__}, not an object")
    return value


def _utf8(body: bytes | bytearray) -> str:
    """Decode strictly; large non-ASCII bodies chunk by chunk, because a UnicodeDecodeError
    keeps a copy of all the input it was given (a second megabyte for a junk frame)."""
    if len(body) <= _CHUNK or body.isascii():
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise FrameError(f"frame is not valid UTF-8 (byte {err.start})") from None
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    parts: list[str] = []
    with memoryview(body) as view:
        for start in range(0, len(body), _CHUNK):
            try:
                parts.append(
                    decoder.decode(view[start : start + _CHUNK], final=start + _CHUNK >= len(body))
                )
            except UnicodeDecodeError as err:
                raise FrameError(
                    f"frame is not valid UTF-8 (near byte {start + err.start})"
                ) from None
    return "".join(parts)


async def read_frame(
    reader: asyncio.StreamReader, max_bytes: int, body_timeout: float | None = None
) -> dict[str, Any] | None:
    """Read one frame; None on a clean end of stream between frames.

    Waiting for a frame to begin is unbounded (flows may be idle); once its first byte has
    arrived, the rest must follow within `body_timeout` seconds. Raises FrameError for a frame
    that is too large (without reading its body), malformed, truncated or held too long.
    """
    try:
        first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    # The deadline fails the reader instead of cancelling the task: asyncio.timeout on 3.11
    # can leave a stray cancellation behind when it fires just as the read completes.
    timer = None
    if body_timeout is not None:
        timer = asyncio.get_running_loop().call_later(body_timeout, _expire, reader, body_timeout)
    try:
        try:
            header = first + await reader.readexactly(HEADER.size - 1)
        except asyncio.IncompleteReadError as err:
            raise _truncated(1 + len(err.partial), HEADER.size) from None
        size = frame_length(header, max_bytes)
        if size <= _CHUNK:
            try:
                body: bytes | bytearray = await reader.readexactly(size)
            except asyncio.IncompleteReadError as err:
                raise _truncated(HEADER.size + len(err.partial), HEADER.size + size) from None
        else:
            body = await _read_large_body(reader, size)
    finally:
        if timer is not None:
            timer.cancel()
    return decode_body(body, max_bytes)


_CHUNK = 64 * 1024
"""Bodies above this are copied chunk by chunk into one buffer of the announced size, so a
large frame costs about its own size in memory instead of twice that (stream buffer + copy)."""


async def _read_large_body(reader: asyncio.StreamReader, size: int) -> bytearray:
    body = bytearray(size)
    view = memoryview(body)
    got = 0
    while got < size:
        chunk = await reader.read(min(size - got, _CHUNK))
        if not chunk:
            raise _truncated(HEADER.size + got, HEADER.size + size)
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    view.release()
    return body


def _truncated(have: int, want: int) -> FrameError:
    return FrameError(f"connection closed in the middle of a frame ({have} bytes of {want} read)")


def _expire(reader: asyncio.StreamReader, timeout: float) -> None:
    """Fail the reader: its pending (and any later) read raises FrameError."""
    reader.set_exception(FrameError(f"frame not completed within {timeout} s"))
