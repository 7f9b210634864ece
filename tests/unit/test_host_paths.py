"""The walk behind host binds (no symlink followed, ownership, hard links), the nesting rule,
pins re-checked before a start, and bind roots validated at start-up (issue 11 items 1-2)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings, load_settings
from server.core.container_info import BindMount
from server.core.errors import ConfigError
from server.core.host_paths import (
    BindPins,
    HostPathError,
    Pin,
    closed_to_others,
    nesting_problem,
    plain_path_problem,
    root_for,
    split_mode,
    walk,
)
from server.core.validation.host import adopted_pins, validate_bind_roots

NOBODY = 65534


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """<tmp>/root/a/b/c (directories) and <tmp>/root/a/b/f (a file)."""
    (tmp_path / "root" / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "root" / "a" / "b" / "f").write_text("x")
    return tmp_path / "root"


def test_a_plain_tree_walks(tree: Path) -> None:
    for p in (tree, tree / "a", tree / "a" / "b" / "c", tree / "a" / "b" / "f"):
        st = p.stat()
        assert walk(str(p)) == (st.st_dev, st.st_ino)


@pytest.mark.parametrize("component", ["a", "a/b", "a/b/c"])
@pytest.mark.parametrize("to", ["/", "/etc", "relative", "dangling"])
def test_a_symlink_in_any_component_is_refused(tree: Path, component: str, to: str) -> None:
    """Each component in turn is replaced by a link (to /, to /etc, relative, dangling)."""
    victim = tree / component
    shutil.rmtree(victim)
    target = {"relative": "..", "dangling": str(tree / "nowhere")}.get(to, to)
    victim.symlink_to(target)
    with pytest.raises(HostPathError, match=f"{victim} is a symbolic link"):
        walk(str(tree / "a" / "b" / "c"))


def test_a_symlinked_ancestor_above_the_root_is_refused(tmp_path: Path, tree: Path) -> None:
    (tmp_path / "alias").symlink_to(tree)
    with pytest.raises(HostPathError, match="symbolic link"):
        walk(str(tmp_path / "alias" / "a"))


def test_a_file_on_the_way_is_refused(tree: Path) -> None:
    with pytest.raises(HostPathError, match="f is not a directory"):
        walk(str(tree / "a" / "b" / "f" / "x"))


def test_hard_linked_files_are_refused(tree: Path) -> None:
    os.link(tree / "a" / "b" / "f", tree / "a" / "g")
    for p in (tree / "a" / "g", tree / "a" / "b" / "f"):
        with pytest.raises(HostPathError, match="2 hard links"):
            walk(str(p))


def test_only_directories_and_regular_files(tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    with pytest.raises(HostPathError, match="not a directory or a regular file"):
        walk(str(tree / "fifo"))
    with pytest.raises(HostPathError, match="not a directory"):
        walk(str(tree / "a" / "b" / "f"), want_dir=True)
    with pytest.raises(HostPathError, match="does not exist"):
        walk(str(tree / "missing"))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_directory_another_user_owns_is_refused_beneath_it(tree: Path) -> None:
    os.chown(tree / "a", NOBODY, NOBODY)
    walk(str(tree / "a"))  # the source itself may belong to anyone: it cannot be renamed by them
    with pytest.raises(HostPathError, match=f"{tree / 'a'} is owned by uid {NOBODY}"):
        walk(str(tree / "a" / "b"))


def test_group_or_other_writable_directories_are_refused_unless_sticky(tree: Path) -> None:
    for mode in (0o775, 0o757, 0o777):
        os.chmod(tree / "a", mode)
        with pytest.raises(HostPathError, match="writable by its group or others"):
            walk(str(tree / "a" / "b"))
    os.chmod(tree / "a", 0o1777)  # like /tmp: others cannot rename what they do not own
    walk(str(tree / "a" / "b"))


def test_the_manager_uid_may_own_the_way(tree: Path) -> None:
    if os.geteuid() == 0:
        os.chown(tree / "a", NOBODY, NOBODY)
        walk(str(tree / "a" / "b"), uid=NOBODY)
    else:
        walk(str(tree / "a" / "b"))


@pytest.mark.parametrize(
    "path, problem",
    [
        ("rel", "absolute"),
        ("/a/", "ends with"),
        ("/a//b", "plain"),
        ("/a/./b", "plain"),
        ("/a/../b", "plain"),
        ("/a/..", "plain"),
        ("/a:b", "':'"),
        ("/a,b", "','"),
        ("/a\nb", "line break"),
        ("/a\0", "NUL"),
        ("/a\ud800", "surrogate"),
        ("", "absolute"),
    ],
)
def test_plain_path_problems(path: str, problem: str) -> None:
    assert problem in (plain_path_problem(path) or "")


def test_plain_paths_pass() -> None:
    assert plain_path_problem("/srv/data") is None and plain_path_problem("/") is None


def test_split_mode_and_root_for() -> None:
    assert split_mode("/d:rw") == ("/d", "rw") and split_mode("/d:ro") == ("/d", "ro")
    assert split_mode("/d") == ("/d", None) and split_mode("/d:z") == ("/d:z", None)
    roots = [("/srv", False), ("/srv/rw", True)]
    assert root_for("/srv/rw/x", roots) == ("/srv/rw", True)
    assert root_for("/srv/x", roots) == ("/srv", False)
    assert root_for("/srvx", roots) is None and root_for("/", roots) is None


def _pin(source: str, mode: str = "ro") -> Pin:
    return Pin(source, "/t", mode, "/r", 1, 1)  # type: ignore[arg-type]


def test_nesting_rule() -> None:
    a_rw = _pin("/r/a", "rw")
    assert "lies beneath /r/a" in (nesting_problem([_pin("/r/a/b")], [a_rw]) or "")
    assert "lies beneath /r/a" in (nesting_problem([_pin("/r/a/b", "rw")], [a_rw]) or "")
    assert "holds /r/a/b" in (nesting_problem([_pin("/r/a", "rw")], [_pin("/r/a/b")]) or "")
    assert nesting_problem([_pin("/r/a")], [a_rw]) is None  # the same directory may be shared
    assert nesting_problem([_pin("/r/a", "rw")], [a_rw]) is None
    assert nesting_problem([_pin("/r")], [a_rw]) is None  # a flow cannot rename its mount
    assert nesting_problem([_pin("/r/ab")], [a_rw]) is None
    assert nesting_problem([_pin("/r/a/b")], [_pin("/r/a")]) is None  # read-only: no writer
    # within one request too
    assert nesting_problem([_pin("/r/a", "rw"), _pin("/r/a/b")], []) is not None


def test_pins_recheck_sees_a_swap(tree: Path) -> None:
    src = tree / "a" / "b" / "c"
    pins = BindPins()
    dev, ino = walk(str(src))
    pins.record("cid", [Pin(str(src), "/t", "ro", str(tree), dev, ino)])
    pins.recheck("cid")
    src.rename(tree / "a" / "b" / "old")
    src.mkdir()  # another directory of the same name
    with pytest.raises(HostPathError, match="another file or directory"):
        pins.recheck("cid")
    shutil.rmtree(src)
    src.symlink_to("/")
    with pytest.raises(HostPathError, match="symbolic link"):
        pins.recheck("cid")
    src.unlink()
    with pytest.raises(HostPathError, match="does not exist"):
        pins.recheck("cid")
    pins.mark_broken("cid", "gone astray")
    with pytest.raises(HostPathError, match="gone astray"):
        pins.recheck("cid")
    pins.forget("cid")
    assert not pins.knows("cid")
    pins.recheck("cid")  # no binds: nothing to check


def _cfg(tmp_path: Path, *roots: str | dict[str, object], **kw: Any) -> Settings:
    return load_settings(
        env={},
        socket_dir=str(tmp_path / "sockets"),
        docker__bind_roots=[r if isinstance(r, dict) else {"path": r} for r in roots],
        **kw,
    )


def test_adopted_pins_rebuilt_and_refused(tree: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, str(tree))
    src = str(tree / "a")
    binds = (BindMount(src, "/t", True), BindMount("/tmp/x", cfg.docker.socket_mount, False))
    (pin,) = adopted_pins(binds, cfg)
    assert (pin.source, pin.mode, pin.ino) == (src, "ro", (tree / "a").stat().st_ino)
    with pytest.raises(HostPathError, match="not writable"):
        adopted_pins((BindMount(src, "/t", False),), cfg)
    with pytest.raises(HostPathError, match="not beneath any"):
        adopted_pins((BindMount("/etc", "/t", True),), cfg)
    with pytest.raises(HostPathError, match="not beneath any"):
        adopted_pins((BindMount(src, "/t", True),), _cfg(tmp_path))


# bind roots at start-up


def test_good_roots_pass(tmp_path: Path, tree: Path) -> None:
    validate_bind_roots(
        _cfg(tmp_path, str(tree), {"path": str(tree / "a"), "writable": True}), env={}
    )


@pytest.mark.parametrize(
    "root",
    [
        "/",
        "/etc",
        "/etc/ssl",
        "/var",
        "/var/lib/docker/volumes",
        "/run",
        "/proc/self",
        "/dev",
        "/sys/fs",
        "/var/run",
    ],
)
def test_system_roots_are_a_config_error(tmp_path: Path, root: str) -> None:
    with pytest.raises(ConfigError, match="protected path"):
        validate_bind_roots(_cfg(tmp_path, root), env={})


def test_roots_near_the_managers_own_paths_are_a_config_error(tmp_path: Path) -> None:
    from server.core.config import DEFAULT_CONFIG_FILE

    cfg = _cfg(tmp_path)
    sockets = Path(cfg.socket_dir)
    (sockets / "flow").mkdir(parents=True)
    Path(cfg.state_dir).mkdir()
    for root in (
        tmp_path,
        sockets,
        sockets / "flow",
        Path(cfg.state_dir),
        DEFAULT_CONFIG_FILE.parent,
        DEFAULT_CONFIG_FILE.parent / "server",
    ):
        with pytest.raises(ConfigError, match="protected path"):
            validate_bind_roots(_cfg(tmp_path, str(root)), env={})
    engine = tmp_path / "engine"
    engine.mkdir()
    with pytest.raises(ConfigError, match="protected path"):
        validate_bind_roots(
            _cfg(tmp_path, str(engine)), env={"DOCKER_HOST": f"unix://{engine}/docker.sock"}
        )
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.json").write_text("{}")
    with_file = load_settings(
        conf / "config.json",
        env={},
        socket_dir=str(tmp_path / "s"),
        docker__bind_roots=[{"path": str(conf)}],
    )
    with pytest.raises(ConfigError, match="protected path"):
        validate_bind_roots(with_file, env={})


def test_bad_roots_are_a_config_error(tmp_path: Path, tree: Path) -> None:
    (tmp_path / "link").symlink_to(tree)
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tree / "a" / "b" / "f"): "not a directory",
        str(tmp_path / "link"): f"symbolic link .*its real path is {tree}",
        f"{tree}/": "ends with",
        f"{tree}/./a": "plain",
    }
    for root, match in cases.items():
        with pytest.raises(ConfigError, match=match) as info:
            validate_bind_roots(_cfg(tmp_path, root), env={})
        assert info.value.details["field"] == "docker.bind_roots"
    with pytest.raises(ConfigError):
        _cfg(tmp_path, "relative")  # the schema already wants it absolute
    os.chmod(tree, 0o777)
    with pytest.raises(ConfigError, match="writable by its group or others"):
        validate_bind_roots(_cfg(tmp_path, str(tree / "a")), env={})


def test_nesting_check_stays_fast_with_many_pins() -> None:
    import time

    others = [_pin(f"/r/f{i}/d{j}", "rw" if j % 2 else "ro") for i in range(500) for j in range(8)]
    new = [_pin(f"/r/new/{k}", "rw") for k in range(64)]
    start = time.perf_counter()
    assert nesting_problem(new, others) is None
    assert nesting_problem([_pin("/r/f7/d1/x")], others) is not None
    assert nesting_problem([_pin("/r/f7", "rw")], others) is not None
    assert time.perf_counter() - start < 0.5


def test_the_service_does_not_start_with_a_bad_root(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    conf = tmp_path / "config.json"
    conf.write_text(
        json.dumps(
            {"socket_dir": str(tmp_path / "s"), "docker": {"bind_roots": [{"path": "/etc"}]}}
        )
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(conf)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert out.returncode == 2, out
    assert (
        "docker.bind_roots: '/etc' is, holds or lies beneath the protected path /etc"
        in out.stdout + out.stderr
    )


def test_pins_nesting_between_adopted_containers() -> None:
    pins = BindPins()
    pins.record("a", [_pin("/r/a", "rw")])
    pins.record("b", [_pin("/r/a/b")])
    assert "lies beneath /r/a" in (pins.nesting("b") or "")
    assert "holds /r/a/b" in (pins.nesting("a") or "")
    pins.forget("b")
    assert pins.nesting("a") is None


def test_a_writable_root_must_be_closed_to_other_users(tmp_path: Path, tree: Path) -> None:
    """Flows write there as root: a setuid-root file one plants must not be reachable by a
    local user. Some directory on the way must deny group and others the search bit."""
    assert not closed_to_others("/tmp")  # searchable by everyone
    os.chmod(tree, 0o755)
    os.chmod(tree / "a", 0o755)
    assert closed_to_others(str(tree / "a"))  # pytest's /tmp/pytest-of-<user> is 0700
    validate_bind_roots(_cfg(tmp_path, {"path": str(tree / "a"), "writable": True}), env={})
    outside = Path("/tmp") / f"flowmgr-open-root-{os.getpid()}"
    outside.mkdir(mode=0o755)
    try:
        os.chmod(outside, 0o755)
        (outside / "w").mkdir()
        os.chmod(outside / "w", 0o755)
        open_root = _cfg(tmp_path, {"path": str(outside / "w"), "writable": True})
        with pytest.raises(ConfigError, match="other users can reach it: chmod 700"):
            validate_bind_roots(open_root, env={})
        validate_bind_roots(_cfg(tmp_path, {"path": str(outside / "w")}), env={})  # ro: fine
        os.chmod(outside / "w", 0o700)
        validate_bind_roots(open_root, env={})
    finally:
        shutil.rmtree(outside)
