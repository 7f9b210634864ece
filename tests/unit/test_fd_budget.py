"""The descriptor budget: counts per owner, never hands out the reserve, hostile counts refused."""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
from typing import Any

import pytest

from server.core.fd_budget import FdBudget, raise_soft_limit


def test_take_until_the_reserve_then_refuse_without_taking() -> None:
    budget = FdBudget(limit=300, reserve=256)
    assert budget.available == 44
    for i in range(22):
        assert budget.try_take(f"c{i}", 2)
    assert budget.available == 0
    assert budget.total_held == 44
    assert not budget.try_take("late", 2)
    assert budget.held("late") == 0
    assert budget.total_held == 44


def test_a_partial_fit_is_refused_whole() -> None:
    budget = FdBudget(limit=10, reserve=7)
    assert not budget.try_take("a", 4)
    assert budget.held("a") == 0 and budget.available == 3
    assert budget.try_take("a", 3)


def test_release_some_all_and_more_than_held() -> None:
    budget = FdBudget(limit=100, reserve=0)
    assert budget.try_take("a", 5) and budget.try_take("a", 2) and budget.try_take("b", 1)
    assert budget.held("a") == 7
    budget.release("a", 3)
    assert budget.held("a") == 4 and budget.total_held == 5
    budget.release("a", 99)  # never below zero, never into another owner's count
    assert budget.held("a") == 0 and budget.total_held == 1
    budget.release("b")
    budget.release("never-took")
    budget.release("never-took", 3)
    assert budget.total_held == 0 and budget.available == 100


def test_spare_keeps_room_for_holders_without_a_fallback() -> None:
    budget = FdBudget(limit=20, reserve=10)
    assert not budget.try_take("files", 5, spare=6)
    assert budget.try_take("files", 5, spare=5)
    assert budget.available == 5
    assert budget.try_take("sockets", 2)


def test_limit_below_the_reserve_hands_out_nothing() -> None:
    budget = FdBudget(limit=100, reserve=256)
    assert budget.available == 0
    assert not budget.try_take("a", 1)
    assert budget.try_take("a", 0)  # nothing asked, nothing counted
    assert budget.held("a") == 0


def test_default_limit_is_the_current_soft_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert FdBudget().limit == soft
    assert FdBudget().available == soft - 256


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2", None])
def test_hostile_counts_are_value_errors_and_take_nothing(bad: Any) -> None:
    budget = FdBudget(limit=100, reserve=0)
    assert budget.try_take("a", 1)
    if bad is not None:  # None is a valid `release` count (all)
        with pytest.raises(ValueError):
            budget.release("a", bad)
    with pytest.raises(ValueError):
        budget.try_take("a", bad)
    with pytest.raises(ValueError):
        budget.try_take("a", 1, spare=bad)
    with pytest.raises(ValueError):
        FdBudget(limit=bad if bad is not None else -5)
    with pytest.raises(ValueError):
        FdBudget(limit=10, reserve=bad if bad is not None else -5)
    assert budget.held("a") == 1 and budget.total_held == 1


def test_concurrent_takes_never_overcommit() -> None:
    budget = FdBudget(limit=1000, reserve=0)
    won: list[bool] = []

    def grab(owner: str) -> None:
        won.extend(budget.try_take(owner, 3) for _ in range(200))

    threads = [threading.Thread(target=grab, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won.count(True) == 333
    assert budget.total_held == 999 and budget.available == 1


CHILD = """
import resource
from server.core.fd_budget import raise_soft_limit
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
print(*raise_soft_limit(), hard)
"""


def test_raise_soft_limit_reaches_the_hard_limit_in_a_child() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    soft, hard_after, hard = map(int, out.stdout.split())
    assert soft == hard_after == hard
    assert soft > 64


def test_raise_soft_limit_is_idempotent_here() -> None:
    soft, hard = raise_soft_limit()
    assert soft == hard
    assert raise_soft_limit() == (soft, hard)


def test_a_limit_that_cannot_be_raised_is_kept_and_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"now": (1024, 4096)}

    def refuse(_: int, __: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_soft_limit() == (1024, 4096)
    assert "could not raise the open-files limit from 1024 to 4096" in caplog.text


def test_an_unlimited_limit_counts_as_a_large_finite_one(monkeypatch: pytest.MonkeyPatch) -> None:
    inf = resource.RLIM_INFINITY
    monkeypatch.setattr(resource, "getrlimit", lambda _: (inf, inf))
    soft, hard = raise_soft_limit()
    assert soft == hard == 1 << 20
    assert FdBudget().available == (1 << 20) - 256
