"""Send malformed requests over real Socket.IO clients and judge every answer (test and bench)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import socketio

from tests.fuzz.malformed_requests import ERROR_TYPES, Malformed

__all__ = ["ERROR_FIELDS", "Outcome", "check_answer", "send_all"]

ERROR_FIELDS = {"error", "error_type", "message", "details", "timestamp"}


def check_answer(request: Malformed, answer: Any) -> str | None:
    """What is wrong with the server's ack to `request`, or None when it is the typed error
    the request must get (fields, type, operation and request_id echo)."""
    if not isinstance(answer, dict) or answer.get("error") is not True:
        return f"not an error: {str(answer)[:200]}"
    if set(answer) - {"request_id"} != ERROR_FIELDS:
        return f"fields {sorted(answer)}"
    kind = answer["error_type"]
    if kind not in ERROR_TYPES:
        return f"untyped error_type {kind!r}"
    if kind != request.expect:
        return f"{kind} instead of {request.expect}: {answer['message'][:200]}"
    operation = answer["details"].get("operation") if isinstance(answer["details"], dict) else None
    if operation != (request.operation or request.event[:80]):
        return f"details.operation {str(operation)[:90]!r}"
    payload = request.payload
    rid = payload.get("request_id") if isinstance(payload, dict) else None
    if isinstance(rid, str) and len(rid) <= 256 and answer.get("request_id") != rid:
        return f"request_id {rid!r} not echoed"
    return None


@dataclass
class Outcome:
    """Every answer judged: latencies (emit -> ack) and what went wrong."""

    latencies_ms: list[float] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[Malformed, str]] = field(default_factory=list)
    error_events: int = 0
    """`error` events received (the answer besides the ack)."""

    @property
    def answered(self) -> int:
        return sum(self.by_type.values())


async def send_all(
    clients: list[socketio.AsyncClient], requests: list[Malformed], *, timeout: float = 10.0
) -> Outcome:
    """Each client sends its share of `requests` one after another (ack = answer), all clients
    at once. A request unanswered within `timeout`, or a client dropped, is a problem."""
    out = Outcome()
    todo = iter(requests)

    def count_error(_data: Any = None) -> None:
        out.error_events += 1

    for sio in clients:
        sio.on("error", count_error)

    async def one_client(sio: socketio.AsyncClient) -> None:
        for request in todo:  # one shared iterator: a client takes the next request when free
            if not sio.connected:
                out.problems.append((request, "client disconnected"))
                continue
            began = time.perf_counter()
            try:
                answer = await sio.call(request.event, request.payload, timeout=timeout)
            except socketio.exceptions.TimeoutError:
                out.problems.append((request, f"no answer in {timeout} s"))
                continue
            except socketio.exceptions.SocketIOError as exc:
                out.problems.append((request, f"{type(exc).__name__}: {exc}"))
                continue
            out.latencies_ms.append((time.perf_counter() - began) * 1000)
            if isinstance(answer, dict) and isinstance(answer.get("error_type"), str):
                out.by_type[answer["error_type"]] += 1
            problem = check_answer(request, answer)
            if problem is not None:
                out.problems.append((request, problem))

    await asyncio.gather(*(one_client(sio) for sio in clients))
    return out
