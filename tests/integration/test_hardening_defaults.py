"""Safe defaults every flow gets, as `docker inspect` and the flow itself see them; the policy
refuses before any Docker call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from server.core.config import BindRoot, Settings
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from tests.integration.manager_helpers import BUSYBOX, docker, inspect, started_manager

pytestmark = pytest.mark.docker

_NO_CAPS = "0000000000000000"
_NET_BIND_SERVICE = 1 << 10


def _with_docker(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"docker": settings.docker.model_copy(update=changes)})


async def _proc_status(cid: str) -> dict[str, str]:
    out = await docker("exec", cid, "cat", "/proc/1/status")
    return dict(line.split(":\t", 1) for line in out.stdout.splitlines() if ":\t" in line)


async def test_default_host_config(settings: Settings, unique_name: Callable[[str], str]) -> None:
    async with started_manager(settings) as m:
        snap = await m.create_container(CreateSpec(name=unique_name("safe"), image=BUSYBOX))
        host = (await inspect(snap.id))["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert not host["CapAdd"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["PidsLimit"] == settings.docker.pids_limit == 512
        assert host["Memory"] == 512 * 1024 * 1024
        assert host["NanoCpus"] == 1_000_000_000
        assert host["RestartPolicy"]["Name"] == "no"
        assert host["ReadonlyRootfs"] is False
        assert host["Privileged"] is False
        await m.start_container(snap.id)
        status = await _proc_status(snap.id)
        assert status["CapEff"].strip() == _NO_CAPS
        assert status["CapBnd"].strip() == _NO_CAPS
        assert status["NoNewPrivs"].strip() == "1"


async def test_configured_host_config(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    tuned = _with_docker(
        settings,
        cap_add=["NET_BIND_SERVICE"],
        read_only=True,
        restart_policy="on-failure",
        restart_max_retries=2,
        pids_limit=64,
        memory_limit="64m",
        cpu_limit=0.5,
    )
    async with started_manager(tuned) as m:
        snap = await m.create_container(CreateSpec(name=unique_name("tuned"), image=BUSYBOX))
        host = (await inspect(snap.id))["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert host["CapAdd"] == ["NET_BIND_SERVICE"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["PidsLimit"] == 64
        assert host["Memory"] == 64 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        assert host["ReadonlyRootfs"] is True
        assert "/tmp" in host["Tmpfs"]
        await m.start_container(snap.id)
        status = await _proc_status(snap.id)
        assert int(status["CapEff"], 16) == _NET_BIND_SERVICE
        refused = await docker("exec", snap.id, "touch", "/flow-was-here", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        assert (await docker("exec", snap.id, "touch", "/tmp/scratch", check=False)).returncode == 0


async def test_pids_limit_holds(settings: Settings, unique_name: Callable[[str], str]) -> None:
    """A fork bomb stops at the limit instead of exhausting the host's pid space."""
    tuned = _with_docker(settings, pids_limit=32)
    async with started_manager(tuned) as m:
        snap = await m.create_container(CreateSpec(name=unique_name("pids"), image=BUSYBOX))
        await m.start_container(snap.id)
        bomb = await docker(
            "exec", snap.id, "sh", "-c", "for i in $(seq 1 100); do sleep 30 & done", check=False
        )
        assert "fork" in bomb.stderr.lower() or bomb.returncode != 0, bomb
        top = await docker("top", snap.id)
        assert len(top.stdout.strip().splitlines()) - 1 <= 32


@pytest.mark.parametrize(
    "volumes",
    [
        {"/var/run/docker.sock": "/var/run/docker.sock"},
        {"/var/run": "/host-run"},
        {"/": "/host"},
        {"/etc": "/host-etc"},
        {"/var/lib/docker": "/d"},
    ],
)
@pytest.mark.parametrize("with_root", [False, True])
async def test_policy_refuses_before_any_docker_call(
    settings: Settings,
    unique_name: Callable[[str], str],
    volumes: dict[str, str],
    with_root: bool,
    tmp_path: Path,
) -> None:
    name = unique_name("refused")
    if with_root:  # a bind root elsewhere changes nothing for these
        settings = _with_docker(settings, bind_roots=[BindRoot(path=str(tmp_path))])
    async with started_manager(settings) as m:
        with pytest.raises(InvalidRequest) as info:
            await m.create_container(CreateSpec(name=name, image=BUSYBOX, volumes=volumes))
        assert info.value.field == "volumes"
        assert all(s.name != name for s in m.snapshot())
    out = await docker("ps", "-a", "--filter", f"name=^/{name}$", "--format", "{{.ID}}")
    assert out.stdout.strip() == ""
    assert not Path(settings.state_dir, name).exists()


async def test_symlink_to_the_docker_socket_refused(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    (tmp_path / "innocent").symlink_to("/var/run/docker.sock")
    # under a bind root (issue 11: no host bind without one), the link itself is refused
    settings = _with_docker(settings, bind_roots=[BindRoot(path=str(tmp_path))])
    async with started_manager(settings) as m:
        with pytest.raises(InvalidRequest, match="symbolic link"):
            await m.create_container(
                CreateSpec(
                    name=unique_name("sneaky"),
                    image=BUSYBOX,
                    volumes={str(tmp_path / "innocent"): "/d.sock"},
                )
            )


async def test_update_cannot_copy_host_secrets_into_a_flow(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # with a code root configured too: the protected paths lie outside it
    async with started_manager(_with_docker(settings, code_roots=[str(tmp_path)])) as m:
        snap = await m.create_container(CreateSpec(name=unique_name("upd"), image=BUSYBOX))
        for code_path in ("/etc", "/", "/proc/self", "/var/lib/docker"):
            with pytest.raises(InvalidRequest) as info:
                await m.update_container(snap.id, code_path)
            assert info.value.field == "code_path"
