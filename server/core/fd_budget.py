"""Descriptors as a budgeted resource: what each flow holds is counted against RLIMIT_NOFILE.

A flow's listening socket, its accepted connection and its kept-open sample files are taken
from the budget under the flow's container id. `reserve` descriptors are never handed out: the
API, `/health`, SQLite, the engine's connections and transient opens (a sweep's fallback reads)
live there, so running out of budget refuses a new flow but never fails those with EMFILE.
"""

from __future__ import annotations

import logging
import resource
import threading

from server.core.config import Settings
from server.core.errors import DescriptorBudgetExhausted

__all__ = ["CHANNEL_FDS", "FdBudget", "raise_soft_limit"]

log = logging.getLogger(__name__)

CHANNEL_FDS = 2
"""What a flow's channel holds: its listening socket and the flow's accepted connection."""

_UNLIMITED = 1 << 20
"""What an unlimited soft limit counts as (the kernel's nr_open default caps it anyway)."""


def _soft_hard() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _finite(soft), _finite(hard)


def _finite(value: int) -> int:
    return _UNLIMITED if value == resource.RLIM_INFINITY else value


def raise_soft_limit() -> tuple[int, int]:
    """RLIMIT_NOFILE soft raised to the hard limit (start-up); returns (soft, hard) after.

    Logs the limits once: each flow holds descriptors (socket, connection, sample files), so
    the number of flows this process can serve follows from it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # an unlimited hard limit above nr_open: keep soft
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    after = _soft_hard()
    log.info("open-files limit %d (hard %d): raise LimitNOFILE / ulimit -n for more flows", *after)
    return after


class FdBudget:
    """Counts descriptors per owner; refuses what would eat into the reserve. Thread-safe."""

    def __init__(self, limit: int | None = None, reserve: int = 256) -> None:
        if limit is None:
            limit = _soft_hard()[0]
        _check_count("limit", limit)
        _check_count("reserve", reserve)
        self.limit = limit
        self.reserve = reserve
        self._held: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()  # the sampler may take or release from a worker thread

    def try_take(self, owner: str, n: int, *, spare: int = 0) -> bool:
        """True and counted, or False (nothing taken).

        `spare`: succeed only if that many stay available afterwards (optional holders, such as
        kept-open sample files, leave room for what has no fallback: a new flow's sockets).
        """
        _check_count("n", n)
        _check_count("spare", spare)
        with self._lock:
            if self._available() - n < spare:
                return False
            if n:
                self._held[owner] = self._held.get(owner, 0) + n
                self._total += n
            return True

    def release(self, owner: str, n: int | None = None) -> None:
        """Give back `n` of what the owner holds (None: all; never more than it holds)."""
        if n is not None:
            _check_count("n", n)
        with self._lock:
            held = self._held.get(owner, 0)
            give = held if n is None else min(n, held)
            if give == held:
                self._held.pop(owner, None)
            else:
                self._held[owner] = held - give
            self._total -= give

    def held(self, owner: str) -> int:
        """What the owner holds now."""
        with self._lock:
            return self._held.get(owner, 0)

    @property
    def total_held(self) -> int:
        """What all owners hold."""
        with self._lock:
            return self._total

    @property
    def available(self) -> int:
        """What may still be taken (never negative)."""
        with self._lock:
            return self._available()

    def refusal(self, what: str, n: int) -> DescriptorBudgetExhausted:
        """The typed error of a refused take, with the numbers that explain it."""
        with self._lock:
            available, total = self._available(), self._total
        return DescriptorBudgetExhausted(
            f"no open-file descriptors left for {what}: {n} needed, {available} available "
            f"(open-files limit {self.limit}, {self.reserve} kept for the API and the engine, "
            f"{total} held by flows); raise LimitNOFILE (ulimit -n) or remove flows",
            details={
                "limit": self.limit,
                "setting": "LimitNOFILE",
                "needed": n,
                "available": available,
                "reserve": self.reserve,
            },
        )

    def _available(self) -> int:
        return max(0, self.limit - self.reserve - self._total)


def _check_count(name: str, value: int) -> None:
    # bool is an int: a True passed as a count is a caller's bug, not one descriptor
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


ENGINE_RESERVE = 56
"""Descriptors kept for the engine's connections, the journal, logs and imports."""


def reserve_for(settings: Settings) -> int:
    """The budget's reserve: the API's connections (`server.max_connections`) and the rest; at
    least the former fixed 256 (the default 200 connections + 56)."""
    return max(256, settings.server.max_connections + ENGINE_RESERVE)
