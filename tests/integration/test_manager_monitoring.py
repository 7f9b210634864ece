"""Crashes, OOM kills, stops on request, health warnings and periodic status, for real."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.core.config import Settings
from server.core.events import (
    ActivityLogged,
    ContainerCrashed,
    ContainerStateChanged,
    HealthChanged,
    StatusReported,
)
from server.core.models import CreateSpec
from tests.integration.manager_helpers import (
    BASE,
    BUSYBOX,
    UNHEALTHY,
    docker,
    no_event,
    started_manager,
    wait_event,
)

pytestmark = pytest.mark.docker


async def test_exit_code_3_is_one_crash_with_logs(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(
            CreateSpec(
                name=unique_name("crash"),
                image=BUSYBOX,
                command=["sh", "-c", "echo starting; echo about to fail >&2; exit 3"],
            )
        )
        await m.start_container(snap.id)
        crash = await wait_event(sub, ContainerCrashed, lambda e: e.container_id == snap.id)
        assert crash.exit_code == 3
        assert crash.error == "Exited with code 3"
        assert "starting" in crash.logs and "about to fail" in crash.logs
        await wait_event(
            sub,
            ActivityLogged,
            lambda e: e.container_id == snap.id and e.activity_type == "container_crash",
        )
        assert m.get(snap.id).state == "exited"
        # a later event for the same container must not repeat the crash
        await m.delete_container(snap.id)
        assert no_event(sub, ContainerCrashed, snap.id) == []
        assert len(m.recent_crashes(snap.id)) == 1


async def test_oom_kill_is_a_crash(settings: Settings, unique_name: Callable[[str], str]) -> None:
    hog = "b = []\nwhile True: b.append(bytearray(8 * 1024 * 1024))"
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(
            CreateSpec(
                name=unique_name("oom"),
                image=BASE,
                command=["python3", "-c", hog],
                memory_limit="48m",
            )
        )
        await m.start_container(snap.id)
        crash = await wait_event(sub, ContainerCrashed, lambda e: e.container_id == snap.id)
        assert crash.error == "Out of memory"
        assert crash.exit_code == 137


async def test_stop_on_request_is_no_crash(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    # this command ignores TERM, so the stop ends in SIGKILL (exit 137) after stop_timeout
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        stubborn = await m.create_container(
            CreateSpec(
                name=unique_name("stub"),
                image=BUSYBOX,
                command=["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
            )
        )
        plain = await m.create_container(CreateSpec(name=unique_name("cli"), image=BUSYBOX))
        await m.start_container(stubborn.id)
        await m.start_container(plain.id)
        assert (await m.stop_container(stubborn.id)).state == "stopped"
        assert m.get(stubborn.id).exit_code == 137
        await docker("stop", "-t", "2", plain.id)  # a stop seen only in the events stream
        await wait_event(
            sub,
            ContainerStateChanged,
            lambda e: e.container_id == plain.id and e.new_state == "stopped",
        )
        # a crash would follow its state change within a log round trip: none may come
        with pytest.raises(TimeoutError):
            await wait_event(sub, ContainerCrashed, timeout=3)
        assert m.recent_crashes() == []


async def test_unhealthy_image_gives_a_health_warning(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(CreateSpec(name=unique_name("sick"), image=UNHEALTHY))
        await m.start_container(snap.id)
        change = await wait_event(
            sub, HealthChanged, lambda e: e.container_id == snap.id and e.new_health == "unhealthy"
        )
        assert change.old_health in ("starting", "none")
        warning = await wait_event(
            sub,
            ActivityLogged,
            lambda e: e.container_id == snap.id and e.activity_type == "health_warning",
        )
        assert warning.details["health"] == "unhealthy"
        assert m.get(snap.id).health == "unhealthy"


async def test_status_is_reported_periodically(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(CreateSpec(name=unique_name("tick"), image=BUSYBOX))
        await m.start_container(snap.id)
        loop = asyncio.get_running_loop()

        def running(e: StatusReported) -> bool:
            return e.status.container_id == snap.id and e.status.state == "running"

        await wait_event(sub, StatusReported, running)
        t0 = loop.time()
        second = await wait_event(sub, StatusReported, running)
        assert loop.time() - t0 >= settings.monitoring.health_check_interval * 0.5
        assert second.status.uptime is not None
        assert m.health() == {
            "container_manager": "active",
            "socket_handler": "active",
            "event_handler": "active",
            "journal": "disabled",  # no front end gave an encoder
        }
