"""One create validator, one verdict (issue 12): the same inputs through every entry point.

Each row is a `create_container` request (as JSON) and the verdict every front end must give:
created, or refused with one error type and field. The request goes (1) over Socket.IO to a real
service, (2) through the local panel's form (its text, parsed and validated by the function the
form calls, then the local core), (3) through the remote panel (the same form, then the remote
backend to that service; and the remote backend alone, given the request's shape). All must
agree, messages included. Before issue 12 four rule sets disagreed: the rows marked "was:" say
how (docs/CORE.md "Create rules" says which verdict won and why).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.create_fields import build_spec
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.screens.create_form import CreateForm
from server.core.config import Settings, load_settings
from server.core.errors import FlowMgrError
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.conftest import RUN_ID, _sweep
from tests.integration.api_harness import BUSYBOX, TEST_TOKEN, Service, client, running_service
from tests.tui.helpers import until

pytestmark = [pytest.mark.docker, pytest.mark.tui]

Verdict = tuple[str, str | None]
"""("created", None), or (error_type, details.field)."""
CREATED: Verdict = ("created", None)
H = "a" * 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


P = _free_port()
"""A host port nothing listens on (each accepted row's container is deleted before the next)."""


@dataclass(frozen=True)
class Row:
    why: str
    request: dict[str, Any]
    verdict: Verdict
    name_length: int = 20
    """The row's name is made unique to the run, this long, unless the request names one."""


def _refused(field: str) -> Verdict:
    return ("validation_error", field)


def rows(root: Path, image_id: str) -> list[Row]:
    data = str(root / "data")
    return [
        Row("a plain request", {}, CREATED),
        Row("63 characters: the longest name", {}, CREATED, name_length=63),
        Row("was: API and form took it, the core refused it", {}, _refused("name"), name_length=70),
        Row("64 characters", {}, _refused("name"), name_length=64),
        Row("was: every layer took it, the engine refused it", {"name": "a"}, _refused("name")),
        Row("a name starting with '-'", {"name": "-flow"}, _refused("name")),
        Row("a name with a blank", {"name": "a b"}, _refused("name")),
        Row("no name", {"name": ""}, _refused("name")),
        Row("an upper-case image", {"image": "Flow:latest"}, _refused("image")),
        Row("was: the form refused an image id", {"image": image_id}, CREATED),
        Row(
            "a well-formed digest of an image not here",
            {"image": f"nosuch@sha256:{H}"},
            ("image_not_found", None),
        ),
        Row(
            "was: the core took it, the engine refused it",
            {"image": f"nosuch@sha256:{H.upper()}"},
            _refused("image"),
        ),
        Row(
            "was: the core took it, the engine refused it",
            {"image": f"nosuch@md5:{H[:32]}"},
            _refused("image"),
        ),
        Row("an ordinary variable", {"environment": {"MY_VAR": "1"}}, CREATED),
        Row(
            "a variable name starting with a digit",
            {"environment": {"1BAD": "x"}},
            _refused("environment"),
        ),
        Row(
            "was: the form took it, the core refused it",
            {"environment": {"PYTHONPATH": "/x"}},
            _refused("environment"),
        ),
        Row(
            "was: the form took it, the core refused it",
            {"environment": {"ld_preload": "x"}},
            _refused("environment"),
        ),
        Row("a port", {"ports": {"8080": P}}, CREATED),
        Row(
            "was: one host port for tcp and udp, the form refused it",
            {"ports": {"53/udp": P, "53/tcp": P}},
            CREATED,
        ),
        Row(
            "was: the form and inputs took sctp, the policy refused it",
            {"ports": {"8080/sctp": P}},
            _refused("ports"),
        ),
        Row("container port 0", {"ports": {"0": P}}, _refused("ports")),
        Row("container port 65536", {"ports": {"65536/tcp": P}}, _refused("ports")),
        Row("was: crashed the form (isdigit, then int)", {"ports": {"²": P}}, _refused("ports")),
        Row("host port 0", {"ports": {"8080": 0}}, _refused("ports")),
        Row("host port 65536", {"ports": {"8080": 65536}}, _refused("ports")),
        Row(
            "a privileged host port: the server's rule", {"ports": {"8080": 80}}, _refused("ports")
        ),
        Row("one host port twice", {"ports": {"80": P, "81": P}}, _refused("ports")),
        Row(
            "was: the form kept one of the two silently",
            {"ports": {"80": P, "80/tcp": P + 1}},
            _refused("ports"),
        ),
        Row("a read-only bind beneath the root", {"volumes": {data: "/srv"}}, CREATED),
        Row(
            "read-write beneath a read-only root: the server's rule",
            {"volumes": {data: "/srv:rw"}},
            _refused("volumes"),
        ),
        Row(
            "outside the bind roots: the server's rule",
            {"volumes": {"/etc": "/srv"}},
            _refused("volumes"),
        ),
        Row("a relative host path", {"volumes": {"data": "/srv"}}, _refused("volumes")),
        Row("a relative container path", {"volumes": {data: "srv"}}, _refused("volumes")),
        Row(
            "over the flow's socket mount: the server's rule",
            {"volumes": {data: "/run/flowmgr"}},
            _refused("volumes"),
        ),
    ]


def _request(row: Row) -> dict[str, Any]:
    req: dict[str, Any] = {"image": BUSYBOX, **row.request}
    if "name" not in req:
        stem = f"{RUN_ID}-v{uuid.uuid4().hex[:6]}-"
        req["name"] = (stem + "x" * row.name_length)[: row.name_length]
    return req


def _form_text(req: dict[str, Any]) -> dict[str, str]:
    """What a user types in the form for this request."""
    return {
        "name": req["name"],
        "image": req.get("image") or "",
        "environment": ", ".join(f"{k}={v}" for k, v in req.get("environment", {}).items()),
        "ports": ", ".join(f"{h}:{c}" for c, h in req.get("ports", {}).items()),
        "volumes": ", ".join(f"{h}:{c}" for h, c in req.get("volumes", {}).items()),
    }


def _spec(req: dict[str, Any]) -> CreateSpec:
    return CreateSpec(**req)


@dataclass
class Seen:
    verdict: Verdict
    message: str | None = None


def _of(err: FlowMgrError) -> Seen:
    field = err.details.get("field")
    return Seen((err.error_type, None if field is None else str(field)), err.message)


async def _over_socketio(svc: Service, req: dict[str, Any]) -> Seen:
    async with client(svc.url) as (sio, _):
        ack = await sio.call("create_container", req, timeout=90)
        if ack.get("error"):
            field = ack.get("details", {}).get("field")
            return Seen((ack["error_type"], field), ack["message"])
        await sio.call("delete_container", {"container_id": ack["container_id"]}, timeout=90)
    return Seen(CREATED)


async def _local_form(manager: ContainerManager, req: dict[str, Any]) -> Seen:
    spec, errors = build_spec(_form_text(req))
    if spec is None:
        assert len(errors) == 1, errors
        [(field, message)] = errors.items()
        return Seen(_refused(field), message)
    try:
        snap = await manager.create_container(spec)
    except FlowMgrError as err:
        return _of(err)
    await manager.delete_container(snap.id)
    return Seen(CREATED)


async def _remote(backend: RemoteBackend, spec: CreateSpec | None, errors: dict[str, str]) -> Seen:
    if spec is None:
        [(field, message)] = errors.items()
        return Seen(_refused(field), message)
    try:
        snap = await backend.create_container(spec)
    except FlowMgrError as err:
        return _of(err)
    await backend.delete_container(snap.id)
    return Seen(CREATED)


@pytest.fixture
def roots_settings(docker_engine: None) -> Iterator[tuple[Settings, Path]]:
    """A short socket dir (a 63-character name's socket path fits) and one read-only bind root
    holding `data`."""
    top = Path("/tmp") / f"v{uuid.uuid4().hex[:4]}"
    (top / "s").mkdir(parents=True)
    (top / "r" / "data").mkdir(parents=True)
    top.chmod(0o755)
    s = load_settings(
        env={},
        socket_dir=str(top / "s"),
        docker__instance=RUN_ID,
        docker__network=f"flowmgr-{RUN_ID}",
        docker__stop_timeout=2,
        docker__bind_roots=[{"path": str(top / "r")}],
    )
    yield s, top / "r"
    _sweep(f"flowmgr.instance={RUN_ID}")
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
async def service(roots_settings: tuple[Settings, Path]) -> AsyncIterator[Service]:
    async with running_service(roots_settings[0]) as svc:
        yield svc


def _image_id() -> str:
    out = subprocess.run(
        ["docker", "image", "inspect", BUSYBOX, "--format", "{{.Id}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def test_every_entry_point_gives_the_same_verdict(
    service: Service, roots_settings: tuple[Settings, Path]
) -> None:
    backend = RemoteBackend(service.url, token=TEST_TOKEN)
    await backend.start()
    wrong: list[str] = []
    try:
        for row in rows(roots_settings[1], await asyncio.to_thread(_image_id)):
            seen: dict[str, Seen] = {}
            req = _request(row)
            seen["socketio"] = await _over_socketio(service, req)
            seen["local form"] = await _local_form(service.manager, req)
            seen["remote form"] = await _remote(backend, *build_spec(_form_text(req)))
            seen["remote backend"] = await _remote(backend, _spec(req), {})
            verdicts = {where: s.verdict for where, s in seen.items()}
            messages = {s.message for s in seen.values()}
            if set(verdicts.values()) != {row.verdict} or len(messages) != 1:
                wrong.append(f"{row.why} {req}: want {row.verdict}, got {verdicts} {messages}")
    finally:
        await backend.stop()
    assert wrong == [], "\n".join(wrong)


PILOT_ROWS = [2, 15, 19, 0]
"""70 characters, PYTHONPATH, sctp (refused), and a plain request (created)."""


async def test_the_forms_fields_show_the_validators_messages(
    service: Service, roots_settings: tuple[Settings, Path]
) -> None:
    """The real form (Pilot): what the user types, the message beside the field is the one the
    service answers over Socket.IO for the same request."""
    table = rows(roots_settings[1], await asyncio.to_thread(_image_id))
    app = FlowMgrApp(service.manager, default_image=BUSYBOX)
    async with app.run_test(size=(120, 40)) as pilot:
        for index in PILOT_ROWS:
            await _through_the_form(pilot, app, service, table[index])


async def _through_the_form(
    pilot: Pilot[None], app: FlowMgrApp, service: Service, row: Row
) -> None:
    req = _request(row)
    want = await _over_socketio(service, req)
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, CreateForm), "the form")
    form = app.screen
    assert isinstance(form, CreateForm)
    for key, text in _form_text(req).items():
        form.query_one(f"#field-{key}", Input).value = text
    await pilot.press("ctrl+s")
    if row.verdict == CREATED:
        await until(
            pilot, lambda: any(s.name == req["name"] for s in service.manager.snapshot()), "created"
        )
        await until(pilot, lambda: not isinstance(app.screen, CreateForm), "closed")
        await service.manager.delete_container(req["name"])
        return
    field = row.verdict[1]
    assert field is not None
    await until(pilot, lambda: form.errors()[field] != "", f"the {field} error")
    assert form.errors()[field] == f"^ {want.message}"
    assert [k for k, v in form.errors().items() if v] == [field]
    await pilot.press("escape")
    await until(pilot, lambda: not isinstance(app.screen, CreateForm), "closed")
