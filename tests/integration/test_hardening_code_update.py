"""`update_container` as an attacker uses it (issue 11, items 3 and 4): code only from the
configured roots, walked without following links, capped, streamed, never into a host mount.

Every refusal is checked against the real engine: the flow's /app is unchanged afterwards."""

from __future__ import annotations

import os
import stat
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from server.core.config import DEFAULT_CONFIG_FILE, BindRoot, Settings
from server.core.errors import ConfigError, InvalidRequest
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.api_harness import client, running_service
from tests.integration.manager_helpers import BUSYBOX, docker, started_manager

pytestmark = pytest.mark.docker

NOBODY = 65534
CHECKOUT = Path(__file__).resolve().parents[2]


def _tuned(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"docker": settings.docker.model_copy(update=changes)})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The one code root of these tests."""
    r = tmp_path / "roots"
    r.mkdir()
    return r


@pytest.fixture
def rooted(settings: Settings, root: Path) -> Settings:
    return _tuned(settings, code_roots=[str(root)])


def _code(parent: Path, name: str = "code", text: str = "print('new')\n") -> Path:
    code = parent / name
    code.mkdir(parents=True)
    (code / "main.py").write_text(text)
    return code


async def _app(cid: str) -> str:
    """What the flow's /app holds: names, types, modes, owners and contents."""
    out = await docker(
        "exec",
        cid,
        "sh",
        "-c",
        "ls -laRn /app 2>&1 | grep -v '^total'; find /app -type f -exec cat {} + 2>&1; true",
    )
    return out.stdout


@asynccontextmanager
async def _flow(
    m: ContainerManager, unique_name: Callable[[str], str], **spec: Any
) -> AsyncIterator[str]:
    """A running busybox flow whose /app holds one marker file."""
    snap = await m.create_container(CreateSpec(name=unique_name("code"), image=BUSYBOX, **spec))
    await m.start_container(snap.id)
    await docker(
        "exec",
        snap.id,
        "sh",
        "-c",  # (a bind of nobody's 0700 dir refuses it)
        "mkdir -p /app && [ -e /app/marker ] || echo original > /app/marker",
        check=False,
    )
    yield snap.id


async def _refused(
    m: ContainerManager, cid: str, code_path: str, field: str = "code_path"
) -> InvalidRequest:
    before = await _app(cid)
    with pytest.raises(InvalidRequest) as info:
        await m.update_container(cid, code_path)
    assert info.value.field == field, info.value
    assert await _app(cid) == before, "something was copied into the flow"
    assert m.get(cid).state == "running"
    return info.value


def _secret_dir(parent: Path) -> Path:
    """A root-only (0700) directory holding a key and a config with the service token."""
    secret = parent / "secret"
    secret.mkdir(mode=0o700)
    (secret / "id_ed25519").write_text("KEY-4f1d-very-private\n")
    (secret / "config.json").write_text('{"server": {"token": "TOKEN-9c2e-service"}}\n')
    os.chmod(secret, 0o700)
    return secret


# item 3: code_path by allow-list


async def test_no_code_roots_refuses_every_update(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    code = _code(tmp_path)
    async with started_manager(settings) as m, _flow(m, unique_name) as cid:
        err = await _refused(m, cid, str(code))
        assert "disabled" in err.message and "docker.code_roots" in err.message


async def test_update_outside_the_roots_is_refused_over_socketio(
    rooted: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The attack of issue 11 item 3, through the real service: nothing reaches the flow, and
    the answer is the same whether the path outside the roots exists or not."""
    secret = _secret_dir(tmp_path)
    outside = [
        "/etc",
        "/root",
        "/",
        str(CHECKOUT),
        str(DEFAULT_CONFIG_FILE.parent),
        str(secret),
        str(secret) + "/",
        "/proc/self/root/etc",
        "/var/lib/docker",
    ]
    async with running_service(rooted) as svc, client(svc.url) as (sio, _):
        async with _flow(svc.manager, unique_name) as cid:
            before = await _app(cid)
            messages = {}
            for path in [*outside, "/no/such/dir-4d2a"]:
                ack = await sio.call(
                    "update_container", {"container_id": cid, "code_path": path}, timeout=60
                )
                assert ack.get("error") is True and ack["error_type"] == "validation_error", ack
                assert ack["details"]["field"] == "code_path"
                messages[path] = ack["message"].replace(path, "<path>")
            assert len(set(messages.values())) == 1, messages  # existence is not told
            after = await _app(cid)
    assert after == before
    assert "KEY-4f1d" not in after and "TOKEN-9c2e" not in after


async def test_a_directory_only_root_may_read_is_not_copied(
    rooted: Settings, root: Path, unique_name: Callable[[str], str]
) -> None:
    """Inside a root, a 0700 directory (or 0600 file) of another user is refused: the manager
    copies only what its own user could read without privilege."""
    code = _code(root)
    secret = _secret_dir(code)
    os.chown(secret, NOBODY, NOBODY)
    lone = _code(root, "lone")
    (lone / "key").write_text("KEY-4f1d-very-private\n")
    os.chmod(lone / "key", 0o600)
    os.chown(lone / "key", NOBODY, NOBODY)
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        err = await _refused(m, cid, str(code))
        assert "'secret'" in err.message and str(root) not in err.message
        err = await _refused(m, cid, str(secret))
        err = await _refused(m, cid, str(lone))
        assert "'key'" in err.message


@pytest.mark.parametrize("link_at", [0, 1, 2])
async def test_a_symlink_in_any_component_is_refused(
    rooted: Settings, root: Path, unique_name: Callable[[str], str], tmp_path: Path, link_at: int
) -> None:
    """root/a/b/c with a, b or c replaced by a link (to a real tree beside it, or to /etc)."""
    real = _code(root / "real", "a/b/c")
    elsewhere = _code(tmp_path / "outside", "a/b/c")
    parts = ["a", "b", "c"]
    target = root / "via"
    (target / "/".join(parts[:link_at])).mkdir(parents=True, exist_ok=True)
    link = target / "/".join(parts[: link_at + 1])
    link.symlink_to(elsewhere.parents[2 - link_at - 1] if link_at < 2 else "/etc")
    path = target / "a/b/c"
    assert real.is_dir()
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        for spelling in (str(path), str(path) + "/", str(path) + "/."):
            err = await _refused(m, cid, spelling)
            assert "symbolic link" in err.message


async def test_symlinks_inside_the_tree_are_copied_as_links_never_followed(
    rooted: Settings, root: Path, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    code = _code(root)
    host_secret = tmp_path / "host-secret"
    host_secret.write_text("HOST-ONLY-77ab\n")
    (code / "shadow").symlink_to("/etc/shadow")
    (code / "mine").symlink_to(host_secret)
    (code / "up").symlink_to("..")
    (code / "sub").mkdir()
    (code / "sub" / "rel").symlink_to("../main.py")
    shadow = Path("/etc/shadow").read_text().splitlines()[0]
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        await m.update_container(cid, str(code))
        out = await docker(
            "exec",
            cid,
            "sh",
            "-c",
            "for l in shadow mine up sub/rel; do readlink /app/$l; done; "
            "cat /app/mine /app/sub/rel 2>&1; test -L /app/shadow && echo L",
        )
        app = await _app(cid)
    assert out.stdout.split("\n")[:4] == ["/etc/shadow", str(host_secret), "..", "../main.py"]
    assert "print('new')" in out.stdout and out.stdout.rstrip().endswith("L")
    assert "HOST-ONLY-77ab" not in out.stdout + app and shadow not in app


@pytest.mark.parametrize(
    "spelling",
    [
        "{root}/code/../../etc",
        "{root}/code/..",
        "{root}/../roots/code",
        "{root}/code/\0x",
        "{root}/code/\ud800",
        "relative/code",
        "",
        "{root}/code/../code",
    ],
)
async def test_dot_dot_nul_surrogates_and_relative_paths_refused(
    rooted: Settings, root: Path, unique_name: Callable[[str], str], spelling: str
) -> None:
    _code(root)
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        await _refused(m, cid, spelling.format(root=root))


async def test_trailing_slashes_and_dots_name_the_same_tree(
    rooted: Settings, root: Path, unique_name: Callable[[str], str]
) -> None:
    code = _code(root, text="print('slashes')\n")
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        for spelling in (f"{code}/", f"/{root}//code/./", f"{code}//"):
            await m.update_container(cid, spelling)
            assert "print('slashes')" in await _app(cid)
        await _refused(m, cid, "/etc/")


async def test_hard_links_fifos_sockets_and_devices_are_refused(
    rooted: Settings, root: Path, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    outside = tmp_path / "outside-file"
    outside.write_text("HARD-LINKED-31c\n")
    hard = _code(root, "hard")
    os.link(outside, hard / "pkg.py")
    fifo = _code(root, "fifo")
    os.mkfifo(fifo / "pipe")
    dev = _code(root, "dev")
    os.mknod(dev / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    sock = _code(root, "sock")
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock / "s.sock"))
    try:
        async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
            err = await _refused(m, cid, str(hard))
            assert "'pkg.py'" in err.message and "hard link" in err.message
            assert str(root) not in err.message
            err = await _refused(m, cid, str(fifo))
            assert "'pipe'" in err.message
            err = await _refused(m, cid, str(dev))
            assert "'null'" in err.message
            err = await _refused(m, cid, str(sock))
            assert "'s.sock'" in err.message
    finally:
        s.close()


async def test_trees_over_the_caps_are_refused_and_nothing_copied(
    settings: Settings, root: Path, unique_name: Callable[[str], str]
) -> None:
    tuned = _tuned(settings, code_roots=[str(root)], max_code_bytes=4096, max_code_files=5)
    big = _code(root, "big")
    (big / "blob").write_bytes(b"x" * 5000)
    many = _code(root, "many")
    for i in range(5):
        (many / f"f{i}").write_text("x")
    ok = _code(root, "ok")
    async with started_manager(tuned) as m, _flow(m, unique_name) as cid:
        err = await _refused(m, cid, str(big))
        assert err.details["limit"] == "docker.max_code_bytes"
        assert "docker.max_code_bytes" in err.message
        err = await _refused(m, cid, str(many))
        assert err.details["limit"] == "docker.max_code_files"
        assert "docker.max_code_files" in err.message
        await m.update_container(cid, str(ok))  # at the caps: fine
        assert "print('new')" in await _app(cid)


# item 4: never into a host mount


@pytest.mark.parametrize("target", ["/app", "/app/data"])
async def test_a_bind_at_or_beneath_the_code_dir_is_never_touched(
    settings: Settings, root: Path, unique_name: Callable[[str], str], tmp_path: Path, target: str
) -> None:
    """Issue 11 item 4 through the real service: a host directory (0700 nobody) bound at /app
    (or beneath it) keeps its contents, mode and owner; the flow's rm never ran."""
    binds = tmp_path / "binds"
    host = binds / "hostdir"
    host.mkdir(parents=True)
    (host / "precious.db").write_text("precious data\n")
    os.chown(host / "precious.db", NOBODY, NOBODY)
    os.chmod(host, 0o700)
    os.chown(host, NOBODY, NOBODY)
    tuned = _tuned(
        settings, code_roots=[str(root)], bind_roots=[BindRoot(path=str(binds), writable=True)]
    )
    code = _code(root)

    def facts() -> tuple[Any, ...]:
        st = host.stat()
        return (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            sorted(os.listdir(host)),
            (host / "precious.db").read_text(),
        )

    before = facts()
    async with running_service(tuned) as svc, client(svc.url) as (sio, _):
        async with _flow(svc.manager, unique_name, volumes={str(host): target}) as cid:
            ack = await sio.call(
                "update_container", {"container_id": cid, "code_path": str(code)}, timeout=60
            )
            assert ack.get("error") is True and ack["error_type"] == "validation_error", ack
            assert ack["details"]["field"] == "container_id"
            assert "mount" in ack["message"]
            assert svc.manager.get(cid).state == "running"
    assert facts() == before


async def test_a_bind_holding_the_code_dir_is_refused(
    settings: Settings, root: Path, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    host = tmp_path / "binds" / "srv"
    host.mkdir(parents=True)
    tuned = _tuned(
        settings,
        code_roots=[str(root)],
        code_dir="/srv/app",
        bind_roots=[BindRoot(path=str(tmp_path / "binds"), writable=True)],
    )
    code = _code(root)
    async with (
        started_manager(tuned) as m,
        _flow(m, unique_name, volumes={str(host): "/srv"}) as cid,
    ):
        await _refused(m, cid, str(code), field="container_id")
    assert os.listdir(host) == []


async def test_update_replaces_the_code_and_owns_only_the_containers_own_files(
    rooted: Settings, root: Path, unique_name: Callable[[str], str]
) -> None:
    """A running flow is updated: old files gone, new ones root-owned, set-id bits dropped."""
    code = _code(root)
    (code / "tool").write_text("#!/bin/sh\n")
    os.chmod(code / "tool", 0o4755)
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        snap = await m.update_container(cid, str(code))
        assert snap.state == "running"
        out = await docker("exec", cid, "sh", "-c", "ls /app; stat -c '%a %u' /app/tool /app")
    names = out.stdout.split()
    assert "marker" not in names and "main.py" in names
    assert "755 0" in out.stdout


# streamed: peak memory far below the tree's size


async def test_a_50mb_tree_is_streamed(
    settings: Settings, root: Path, unique_name: Callable[[str], str]
) -> None:
    code = root / "big"
    code.mkdir()
    block = os.urandom(1 << 20)
    for i in range(50):
        (code / f"blob{i:02}").write_bytes(block)
    tuned = _tuned(settings, code_roots=[str(root)], max_code_bytes=64 << 20)
    async with started_manager(tuned) as m, _flow(m, unique_name) as cid:
        tracemalloc.start()
        try:
            await m.update_container(cid, str(code))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        out = await docker("exec", cid, "sh", "-c", "du -sk /app; ls /app | wc -l")
    kib, _, count = out.stdout.split()
    assert int(kib) >= 50 * 1024 and int(count) == 50
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB for a 50 MiB tree"


# code roots are checked at start


@pytest.mark.parametrize(
    "bad",
    [
        "relative",
        "/no/such/root",
        "{file}",
        "/",
        "/etc",
        "{socket_dir}",
        "/var/lib/docker/x",
        "{link}",
        "/tmp/",
    ],
)
async def test_bad_code_roots_stop_the_start(settings: Settings, tmp_path: Path, bad: str) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    value = bad.format(
        file=tmp_path / "file", socket_dir=settings.socket_dir, link=tmp_path / "link"
    )
    if bad == "/tmp/":  # holds the socket dir (/tmp/fm/...) of these tests
        assert settings.socket_dir.startswith("/tmp/")
    tuned = _tuned(settings, code_roots=[value])
    with pytest.raises(ConfigError, match="docker.code_roots"):
        await ContainerManager(tuned).start()


@pytest.mark.parametrize("code_dir", ["/", "app", "/run/flowmgr", "/run", "/a/../b"])
async def test_bad_code_dir_stops_the_start(settings: Settings, code_dir: str) -> None:
    with pytest.raises(ConfigError, match="docker.code_dir"):
        await ContainerManager(_tuned(settings, code_dir=code_dir)).start()


async def test_a_file_changed_during_the_upload_aborts_it_with_a_typed_error(
    rooted: Settings, root: Path, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream itself raises mid-request (inside the HTTP client): the caller gets
    `validation_error` naming the entry, not an engine failure, and the engine is usable."""
    import server.core.actions as actions
    from server.core.code_update import archive_chunks as real

    code = _code(root)
    (code / "z_big").write_bytes(b"z" * (4 << 20))

    def racing(*args: Any) -> Any:
        for i, chunk in enumerate(real(*args)):
            if i == 1:
                (code / "z_big").write_bytes(b"short")  # changed behind the walk's back
            yield chunk

    monkeypatch.setattr(actions, "archive_chunks", racing)
    async with started_manager(rooted) as m, _flow(m, unique_name) as cid:
        with pytest.raises(InvalidRequest, match="'z_big' changed") as info:
            await m.update_container(cid, str(code))
        assert info.value.field == "code_path"
        assert m.get(cid).state == "stopped"  # stopped for the copy, not crashed
        monkeypatch.setattr(actions, "archive_chunks", real)
        (code / "z_big").write_bytes(b"z" * 10)
        await m.update_container(cid, str(code))  # the engine connection is fine
        await m.start_container(cid)
        assert "print('new')" in await _app(cid)
