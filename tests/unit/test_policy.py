"""The create policy: each refusal names its field; real symlinks to the Docker socket caught.

Host binds need `docker.bind_roots` (issue 11): `cfg` allows binds beneath tmp_path, `open_cfg`
names `/` as a root (which `validate_bind_roots` refuses at start) so the protected-path checks
behind the allow-list are still exercised on their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings, load_settings
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from server.core.policy import validate_code_path
from server.core.validation import MAX_NAME_LENGTH
from server.core.validation.host import validate_create

DOCKER_SOCK = "/var/run/docker.sock"


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    """Settings with a socket dir of its own, and tmp_path as the one (read-only) bind root."""
    return load_settings(
        env={}, socket_dir=str(tmp_path / "sockets"), docker__bind_roots=[{"path": str(tmp_path)}]
    )


@pytest.fixture
def open_cfg(tmp_path: Path) -> Settings:
    """`/` as a bind root: never accepted at start, here only to test the second line."""
    return load_settings(
        env={},
        socket_dir=str(tmp_path / "sockets"),
        docker__bind_roots=[{"path": "/", "writable": True}],
    )


@pytest.fixture
def links(tmp_path: Path) -> Path:
    """A directory of real symlinks reaching the Docker socket and other protected places."""
    d = tmp_path / "links"
    d.mkdir()
    (d / "sock").symlink_to(DOCKER_SOCK)
    (d / "sock2").symlink_to(d / "sock")  # a chain of links
    (d / "varrun").symlink_to("/var/run")
    (d / "run").symlink_to("/run")
    (d / "root").symlink_to("/")
    (d / "etc").symlink_to("/etc")
    (d / "data").symlink_to("/var/lib/docker")
    (d / "rel").symlink_to("../../../../../../../../var/run/docker.sock")
    (d / "dangling").symlink_to(tmp_path / "nowhere")
    return d


def _spec(**kw: Any) -> CreateSpec:
    base: dict[str, Any] = {"name": "flow-1", "image": "flow:latest"}
    base.update(kw)
    return CreateSpec(**base)


def _refused(
    spec: CreateSpec,
    cfg: Settings,
    field: str,
    env: dict[str, str] | None = None,
    match: str | None = None,
) -> None:
    with pytest.raises(InvalidRequest, match=match) as info:
        validate_create(spec, cfg, env=env or {})
    assert info.value.field == field, info.value.message
    assert info.value.details["field"] == field
    assert info.value.error_type == "validation_error"


# Host paths that are, hold or reach the Docker socket or a system tree, in many spellings.
BAD_HOST_PATHS = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "//var//run//docker.sock",
    "/var/run/docker.sock/",
    "/var/./run/docker.sock",
    "/var/run",
    "/var/run/",
    "/run",
    "/run/",
    "/var",
    "/var/",
    "//var",
    "/",
    "//",
    "/./",
    "/proc",
    "/proc/self",
    "/proc/1/root",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/sda",
    "/dev/",
    "/etc",
    "/etc/shadow",
    "/etc/",
    "/boot",
    "/var/lib/docker",
    "/var/lib/docker/overlay2",
    "/var/lib",
    "/var/lib/containerd",
    "/run/containerd",
    "/tmp/../var/run/docker.sock",
    "/tmp/..",
    "/var/run/../run/docker.sock",
]


@pytest.mark.parametrize("host", BAD_HOST_PATHS)
def test_protected_host_paths_refused(host: str, cfg: Settings, open_cfg: Settings) -> None:
    _refused(_spec(volumes={host: "/srv"}), cfg, "volumes")  # outside the root
    _refused(_spec(volumes={host: "/srv"}), open_cfg, "volumes")  # protected, even under "/"


@pytest.mark.parametrize(
    "link", ["sock", "sock2", "varrun", "run", "root", "etc", "data", "rel", "dangling"]
)
def test_symlinks_to_protected_paths_refused(link: str, links: Path, cfg: Settings) -> None:
    _refused(_spec(volumes={str(links / link): "/data"}), cfg, "volumes")


def test_path_through_symlinked_directory_refused(links: Path, cfg: Settings) -> None:
    _refused(_spec(volumes={f"{links}/varrun/docker.sock": "/d"}), cfg, "volumes")


@pytest.mark.parametrize("link", ["sock", "varrun", "root", "etc", "data", "rel", "dangling"])
def test_symlinks_refused_even_under_an_open_root(
    link: str, links: Path, open_cfg: Settings
) -> None:
    _refused(_spec(volumes={str(links / link): "/d"}), open_cfg, "volumes")


def test_docker_host_socket_refused(tmp_path: Path, cfg: Settings) -> None:
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "d.sock").touch()
    env = {"DOCKER_HOST": f"unix://{engine}/d.sock"}
    _refused(_spec(volumes={str(engine): "/e"}), cfg, "volumes", env, match="protected")
    _refused(_spec(volumes={f"{engine}/d.sock": "/e"}), cfg, "volumes", env)
    validate_create(_spec(volumes={str(engine): "/e"}), cfg, env={})  # only because of DOCKER_HOST


def test_hard_link_to_a_protected_file_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("x")
    (tmp_path / "alias").mkdir()
    os.link(secret / "key", tmp_path / "alias" / "key")
    cfg = load_settings(
        env={},
        socket_dir=str(tmp_path / "s"),
        docker__forbidden_host_paths=[str(secret / "key")],
        docker__bind_roots=[{"path": str(tmp_path)}],
    )
    _refused(
        _spec(volumes={str(tmp_path / "alias" / "key"): "/k"}), cfg, "volumes", match="hard links"
    )


def test_socket_dir_and_its_parents_refused(cfg: Settings) -> None:
    sockets = Path(cfg.socket_dir)
    (sockets / "other-flow").mkdir(parents=True)
    for host in (sockets, sockets / "other-flow", sockets.parent):
        _refused(_spec(volumes={str(host): "/s"}), cfg, "volumes", match="protected")


def test_configured_data_root_refused(tmp_path: Path) -> None:
    root = tmp_path / "dockerdata"
    root.mkdir()
    cfg = load_settings(
        env={},
        socket_dir=str(tmp_path / "s"),
        docker__data_root=str(root),
        docker__bind_roots=[{"path": str(tmp_path)}],
    )
    _refused(_spec(volumes={str(root): "/x"}), cfg, "volumes", match="protected")


@pytest.mark.parametrize("host", ["relative/path", "data", "./data", "~/data", "", "C:/x"])
def test_relative_host_paths_refused(host: str, cfg: Settings) -> None:
    _refused(_spec(volumes={host: "/data"}), cfg, "volumes")


def test_missing_host_path_refused(tmp_path: Path, cfg: Settings) -> None:
    _refused(
        _spec(volumes={str(tmp_path / "missing"): "/srv"}), cfg, "volumes", match="does not exist"
    )


def test_host_path_with_a_lone_surrogate_refused(tmp_path: Path, cfg: Settings) -> None:
    # "\udcff" names the byte 0xff on this host, but the engine would get U+FFFD: the path
    # checked would not be the path mounted. The directory exists, so only the text refuses it.
    odd = tmp_path / "d\udcff"
    odd.mkdir()
    _refused(_spec(volumes={str(odd): "/srv"}), cfg, "volumes", match="surrogate")


@pytest.mark.parametrize(
    "target",
    [
        "data",
        "",
        "/",
        "//",
        "/run/flowmgr",
        "/run/flowmgr/",
        "/run/flowmgr/x",
        "/run",
        "/a:/b",
        "/a/../run/flowmgr",
        "/x\0y",
        "/x\ud800",
        "/data",
        "/data/x",
        "/data:rw",
        "/",
        "/x:z",
        "/x:RW",
        "/x:rw:ro",
        "/x:ro,rw",
        ":rw",
        "x:ro",
    ],
)
def test_bad_container_paths_refused(target: str, tmp_path: Path, cfg: Settings) -> None:
    (tmp_path / "ok").mkdir()
    _refused(_spec(volumes={str(tmp_path / "ok"): target}), cfg, "volumes", match="container")


def test_two_mounts_on_one_container_path_refused(tmp_path: Path, cfg: Settings) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    vols = {str(tmp_path / "a"): "/srv", str(tmp_path / "b"): "/srv/:rw"}
    _refused(_spec(volumes=vols), cfg, "volumes")


@pytest.mark.parametrize(
    "ports",
    [
        {"80": 80},
        {"8080": 443},
        {"8080": 1023},
        {"8080": 0},
        {"8080": 65536},
        {"8080": -1},
        {"8080": "http"},
        {"8080": None},
        {"8080": True},
        {"8080": 8.5},
        {"0": 8080},
        {"70000": 8080},
        {"http": 8080},
        {"8080/sctp": 8080},
        {"8080/TCP": 8080},
        {"8080/": 8080},
        {"8080": "١٢٣٤٥"},
        {"8080": 18080, "9090": 18080},
    ],
)
def test_bad_ports_refused(ports: dict[str, Any], cfg: Settings) -> None:
    _refused(_spec(ports=ports), cfg, "ports")


def test_privileged_ports_allowed_by_config(tmp_path: Path) -> None:
    cfg = load_settings(env={}, socket_dir=str(tmp_path / "s"), docker__allow_privileged_ports=True)
    assert validate_create(_spec(ports={"80": 80}), cfg, env={}).ports == {"80": 80}


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-flow",
        ".flow",
        "_flow",
        "a b",
        "a/b",
        "flow:1",
        "flow\0",
        "flöw",
        "a" * 64,
        "../etc",
        "flow\n",
    ],
)
def test_bad_names_refused(name: str, cfg: Settings) -> None:
    _refused(_spec(name=name), cfg, "name")


def test_longest_name_accepted_with_a_short_socket_dir() -> None:
    cfg = load_settings(env={}, socket_dir="/tmp/s")
    name = "A" * MAX_NAME_LENGTH
    assert validate_create(_spec(name=name), cfg, env={}).name == name


def test_name_that_overflows_the_socket_path_refused(tmp_path: Path) -> None:
    cfg = load_settings(env={}, socket_dir="/tmp/" + "s" * 60)
    _refused(_spec(name="a" * 50), cfg, "name")


def test_socket_path_limit_counts_the_managers_private_directory() -> None:
    # <socket_dir>/.flowmgr-default/<name>/flow.sock: 45 + 17 + 1 + name + 10 <= 107
    cfg = load_settings(env={}, socket_dir="/tmp/" + "s" * 40)
    assert validate_create(_spec(name="a" * 34), cfg, env={}).name == "a" * 34
    with pytest.raises(InvalidRequest) as err:
        validate_create(_spec(name="a" * 35), cfg, env={})
    assert err.value.field == "name" and err.value.details["max_name"] == 34
    assert "/.flowmgr-default/" in err.value.message and cfg.socket_dir in err.value.message
    assert "at most 34 characters" in err.value.message


@pytest.mark.parametrize(
    "environment",
    [
        {"": "x"},
        {"A=B": "x"},
        {"A\0": "x"},
        {"A": 1},
        {"A": None},
        {"A": ["x"]},
        {"A": "x\0y"},
        {"FLOW_SOCKET": "/elsewhere"},
        {1: "x"},
        {"A\ud800": "x"},
        {"A": "x\udfff"},
    ],
)
def test_bad_environment_refused(environment: dict[Any, Any], cfg: Settings) -> None:
    _refused(_spec(environment=environment), cfg, "environment")


def test_refused_env_value_is_not_echoed(cfg: Settings) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_create(_spec(environment={"DB_PASSWORD": "hunter2\0"}), cfg, env={})
    assert "hunter2" not in info.value.message
    assert "hunter2" not in repr(info.value.details)


@pytest.mark.parametrize(
    "image",
    [
        "",
        " ",
        "Flow:latest",
        "flow latest",
        "flow:",
        ":latest",
        "flow::x",
        "flow@sha256:xyz",
        "/flow",
        "flow/",
        "flow//x",
        "a" * 256,
        "flow:" + "t" * 129,
        "-flow",
        "flow\n",
        "flöw",
    ],
)
def test_bad_images_refused(image: str, cfg: Settings) -> None:
    _refused(_spec(image=image), cfg, "image")


@pytest.mark.parametrize("memory", ["", "1", "5m", "lots", "64q", "-64m"])
def test_bad_memory_limits_refused(memory: str, cfg: Settings) -> None:
    _refused(_spec(memory_limit=memory), cfg, "memory_limit")


def test_bad_command_refused(cfg: Settings) -> None:
    _refused(_spec(command=["sh", 1]), cfg, "command")
    _refused(_spec(command="sh -c x"), cfg, "command")


@pytest.mark.parametrize(
    "image",
    [
        "flow:latest",
        "flowmgr-test-busybox:latest",
        "busybox",
        "library/busybox:1.36",
        "localhost:5000/team/flow:v1.2",
        "registry.example.com/a/b/c",
        "a__b",
        "a-b---c:T_1.x",
        "flow@sha256:" + "a" * 64,
        "sha256:" + "b" * 64,
    ],
)
def test_good_images_accepted(image: str, cfg: Settings) -> None:
    assert validate_create(_spec(image=image), cfg, env={}).image == image


def test_good_spec_accepted_and_normalised(tmp_path: Path) -> None:
    data, other = tmp_path / "ro" / "data", tmp_path / "rw" / "other"
    data.mkdir(parents=True)
    other.mkdir(parents=True)
    cfg = load_settings(
        env={},
        socket_dir=str(tmp_path / "sockets"),
        docker__bind_roots=[
            {"path": str(tmp_path / "ro")},
            {"path": str(tmp_path / "rw"), "writable": True},
        ],
    )
    spec = _spec(
        name="A.b_c-9",
        environment={"DB_PASSWORD": "s", "EMPTY": "", "LANG": "C.UTF-8"},  # PATH: refused
        volumes={str(data): "/srv/data/", str(other): "/srv/all:rw"},
        ports={"8080": 18080, "8080/udp": "18080", "9000/tcp": 65535},
        memory_limit="64m",
        command=["sh", "-c", "sleep 1"],
    )
    out = validate_create(spec, cfg, env={})
    assert out.volumes == {str(data): "/srv/data:ro", str(other): "/srv/all:rw"}
    assert [(p.source, p.target, p.mode) for p in out.binds] == [
        (str(data), "/srv/data", "ro"),
        (str(other), "/srv/all", "rw"),
    ]
    assert out.binds[0].ino == data.stat().st_ino
    assert out.ports == {"8080": 18080, "8080/udp": 18080, "9000/tcp": 65535}
    assert out.environment == spec.environment
    assert validate_create(_spec(image=None), cfg, env={}).image is None


def test_default_spec_accepted_with_real_environment(cfg: Settings) -> None:
    assert validate_create(_spec(), cfg) == _spec()


def _rooted(cfg: Settings, root: Path) -> Settings:
    return cfg.model_copy(
        update={"docker": cfg.docker.model_copy(update={"code_roots": [str(root)]})}
    )


@pytest.mark.parametrize(
    "code_path",
    [
        "/",
        "/etc",
        "/etc/",
        "/proc/self",
        "/var/lib/docker",
        "/var/run",
        "relative",
        "",
        None,
        3,
        "/nonexistent-x",
    ],
)
def test_protected_code_paths_refused(code_path: Any, cfg: Settings, tmp_path: Path) -> None:
    for settings in (cfg, _rooted(cfg, tmp_path)):  # no roots: every update refused
        with pytest.raises(InvalidRequest) as info:
            validate_code_path(code_path, settings, env={})
        assert info.value.field == "code_path"


def test_code_path_symlink_to_etc_refused(links: Path, cfg: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="symbolic link"):
        validate_code_path(str(links / "etc"), _rooted(cfg, tmp_path), env={})


def test_code_path_through_a_symlink_refused_and_spellings_normalised(
    tmp_path: Path, cfg: Settings
) -> None:
    """Links are never followed, not even to a directory inside the root (issue 11 item 3)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "code")
    rooted = _rooted(cfg, tmp_path)
    with pytest.raises(InvalidRequest, match="symbolic link"):
        validate_code_path(f"{tmp_path}/link/", rooted, env={})
    assert validate_code_path(f"/{tmp_path}//code/./", rooted, env={}) == str(tmp_path / "code")


# Host binds by allow-list (issue 11 item 1).


def test_no_bind_roots_refuses_every_host_bind(tmp_path: Path) -> None:
    cfg = load_settings(env={}, socket_dir=str(tmp_path / "sockets"))
    (tmp_path / "d").mkdir()
    for host in (str(tmp_path / "d"), "/etc", "/root", "/nonexistent"):
        _refused(
            _spec(volumes={host: "/srv"}),
            cfg,
            "volumes",
            match="host binds are disabled: set docker.bind_roots",
        )
    assert validate_create(_spec(), cfg, env={}).binds == ()


@pytest.mark.parametrize(
    "host",
    [
        "/root",
        "/usr/local/bin",
        "/home",
        "/etc",
        "/opt",
        "/var/log",
        "/lib/systemd/system",
        "/nonexistent/x",
        "/tmp",
    ],
)
def test_paths_outside_the_roots_are_refused_alike(host: str, cfg: Settings) -> None:
    """The answer is the same whether the path exists: nothing outside the roots is probed."""
    with pytest.raises(InvalidRequest) as info:
        validate_create(_spec(volumes={host: "/srv"}), cfg, env={})
    assert info.value.message == f"host path {host} is not at or beneath any of docker.bind_roots"


def test_the_checkout_and_its_config_are_outside_the_roots(cfg: Settings) -> None:
    from server.core.config import DEFAULT_CONFIG_FILE

    for host in (DEFAULT_CONFIG_FILE.parent, DEFAULT_CONFIG_FILE):
        _refused(_spec(volumes={str(host): "/srv"}), cfg, "volumes", match="bind_roots")


@pytest.mark.parametrize(
    "spelling",
    [
        "{r}/d/",
        "{r}//d",
        "{r}/./d",
        "{r}/d/.",
        "{r}/x/../d",
        "{r}/d/..",
        "{r}/d\n",
        "{r}/d,ro",
        "{r}/d:ro",
    ],
)
def test_non_plain_host_paths_refused(spelling: str, tmp_path: Path, cfg: Settings) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "x").mkdir()
    _refused(_spec(volumes={spelling.format(r=tmp_path): "/srv"}), cfg, "volumes")


def test_read_only_unless_asked_and_allowed(tmp_path: Path, cfg: Settings) -> None:
    (tmp_path / "d").mkdir()
    out = validate_create(_spec(volumes={str(tmp_path / "d"): "/srv"}), cfg, env={})
    assert out.binds[0].mode == "ro" and out.volumes == {str(tmp_path / "d"): "/srv:ro"}
    out = validate_create(_spec(volumes={str(tmp_path / "d"): "/srv:ro"}), cfg, env={})
    assert out.binds[0].mode == "ro"
    with pytest.raises(InvalidRequest, match=f"bind root {tmp_path} is not writable") as info:
        validate_create(_spec(volumes={str(tmp_path / "d"): "/srv:rw"}), cfg, env={})
    assert info.value.field == "volumes" and info.value.details["bind_root"] == str(tmp_path)


def test_the_deepest_root_decides_the_mode(tmp_path: Path) -> None:
    (tmp_path / "rw" / "d").mkdir(parents=True)
    (tmp_path / "d").mkdir()
    cfg = load_settings(
        env={},
        socket_dir=str(tmp_path / "s"),
        docker__bind_roots=[
            {"path": str(tmp_path)},
            {"path": str(tmp_path / "rw"), "writable": True},
        ],
    )
    out = validate_create(_spec(volumes={str(tmp_path / "rw" / "d"): "/srv:rw"}), cfg, env={})
    assert out.binds[0].root == str(tmp_path / "rw")
    _refused(_spec(volumes={str(tmp_path / "d"): "/srv:rw"}), cfg, "volumes", match="not writable")


def test_a_root_itself_may_be_mounted(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    cfg = load_settings(
        env={}, socket_dir=str(tmp_path / "s"), docker__bind_roots=[{"path": str(tmp_path / "r")}]
    )
    assert validate_create(_spec(volumes={str(tmp_path / "r"): "/srv"}), cfg, env={}).binds


def test_socket_mount_and_data_mount_targets_refused(tmp_path: Path, cfg: Settings) -> None:
    (tmp_path / "d").mkdir()
    for target in ("/run/flowmgr", "/data", "/data/sub:rw", "/run"):
        _refused(_spec(volumes={str(tmp_path / "d"): target}), cfg, "volumes", match="cover")
    no_data = cfg.model_copy(update={"docker": cfg.docker.model_copy(update={"data_mount": None})})
    assert validate_create(_spec(volumes={str(tmp_path / "d"): "/data"}), no_data, env={}).binds


def test_too_many_binds_refused(tmp_path: Path, cfg: Settings) -> None:
    from server.core.validation.shapes import MAX_BINDS

    vols = {f"{tmp_path}/d{i}": f"/m{i}" for i in range(MAX_BINDS + 1)}
    _refused(_spec(volumes=vols), cfg, "volumes", match=f"at most {MAX_BINDS}")
