"""The code tree `update_container` copies: allow-list, descriptor walk, caps, stream."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from server.core.code_update import (
    MAX_DEPTH,
    archive_chunks,
    check_code_mounts,
    check_code_path,
    open_code_tree,
    scan_code_tree,
)
from server.core.config import Settings, load_settings
from server.core.errors import InvalidRequest

MiB = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def cfg(tmp_path: Path, root: Path) -> Settings:
    return load_settings(
        env={}, socket_dir=str(tmp_path / "sockets"), docker__code_roots=[str(root)]
    )


def _tar(tree_path: str, cfg: Settings, code_dir: str = "/app") -> dict[str, tarfile.TarInfo]:
    with open_code_tree(tree_path, cfg) as tree:
        entries = scan_code_tree(tree, cfg.docker.max_code_bytes, cfg.docker.max_code_files)
        data = b"".join(archive_chunks(tree, entries, code_dir))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for m in members.values():
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                m.pax_headers = {"content": f.read().decode()}
    return members


def test_the_archive_lands_under_the_code_dir_owned_by_root(root: Path, cfg: Settings) -> None:
    code = root / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "main.py").write_text("print(1)")
    (code / "pkg" / "m.py").write_text("x = 1")
    (code / "pkg" / "link").symlink_to("/etc/shadow")
    os.chmod(code / "main.py", 0o6755)
    members = _tar(str(code), cfg, "/srv/app/")
    assert list(members) == [
        "srv",
        "srv/app",
        "srv/app/main.py",
        "srv/app/pkg",
        "srv/app/pkg/link",
        "srv/app/pkg/m.py",
    ]
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" for m in members.values())
    assert members["srv/app/main.py"].mode == 0o755  # set-id bits dropped
    assert members["srv/app/pkg/m.py"].pax_headers["content"] == "x = 1"
    link = members["srv/app/pkg/link"]
    assert link.issym() and link.linkname == "/etc/shadow"  # a link, never its target


@pytest.mark.parametrize(
    "path",
    [
        "/etc",
        "/",
        "/root",
        "{root}/../x",
        "{root}/a/..",
        "x",
        "{root}x",
        "{root}/\0",
        "{root}/\udc80",
        None,
        7,
        "",
    ],
)
def test_lexical_refusals(path: Any, root: Path, cfg: Settings) -> None:
    if isinstance(path, str):
        path = path.format(root=root)
    with pytest.raises(InvalidRequest) as info:
        check_code_path(path, cfg)
    assert info.value.field == "code_path"


def test_no_roots_means_disabled(tmp_path: Path) -> None:
    cfg = load_settings(env={})
    with pytest.raises(InvalidRequest, match=r"disabled.*docker\.code_roots"):
        check_code_path(str(tmp_path), cfg)


def test_outside_the_roots_the_answer_does_not_depend_on_the_disk(
    tmp_path: Path, cfg: Settings
) -> None:
    (tmp_path / "exists").mkdir()
    said = set()
    for p in (tmp_path / "exists", tmp_path / "absent"):
        with pytest.raises(InvalidRequest) as info:
            open_code_tree(str(p), cfg)
        said.add(info.value.message.replace(str(p), "<p>"))
    assert len(said) == 1


def test_a_directory_swapped_for_a_link_after_the_scan_aborts_the_stream(
    root: Path, cfg: Settings, tmp_path: Path
) -> None:
    code = root / "code"
    (code / "sub").mkdir(parents=True)
    (code / "sub" / "a.py").write_text("a")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "a.py").write_text("EVIL")
    with open_code_tree(str(code), cfg) as tree:
        entries = scan_code_tree(tree, MiB, 100)
        os.rename(code / "sub", tmp_path / "moved")
        (code / "sub").symlink_to(tmp_path / "evil")
        with pytest.raises(InvalidRequest, match="'sub' changed") as info:
            b"".join(archive_chunks(tree, entries, "/app"))
    assert str(tmp_path) not in info.value.message


def test_the_opened_tree_is_kept_when_its_path_is_swapped(
    root: Path, cfg: Settings, tmp_path: Path
) -> None:
    """Open, then the directory is renamed and a link to elsewhere put in its place: what was
    opened is what is copied."""
    code = root / "code"
    code.mkdir()
    (code / "main.py").write_text("mine")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "main.py").write_text("EVIL")
    with open_code_tree(str(code), cfg) as tree:
        os.rename(code, root / "moved")
        code.symlink_to(tmp_path / "evil")
        data = b"".join(archive_chunks(tree, scan_code_tree(tree, MiB, 100), "/app"))
    assert b"mine" in data and b"EVIL" not in data


@pytest.mark.parametrize("change", ["grow", "shrink", "rewrite", "replace"])
def test_a_file_changed_after_the_scan_aborts_the_stream(
    root: Path, cfg: Settings, change: str
) -> None:
    code = root / "code"
    code.mkdir()
    f = code / "main.py"
    f.write_bytes(b"a" * 200_000)
    with open_code_tree(str(code), cfg) as tree:
        entries = scan_code_tree(tree, MiB, 100)
        if change == "grow":
            f.write_bytes(b"a" * 200_001)
        elif change == "shrink":
            f.write_bytes(b"a" * 10)
        elif change == "rewrite":
            os.utime(f, ns=(1, 1))
        else:
            f.unlink()
            f.write_bytes(b"a" * 200_000)
        with pytest.raises(InvalidRequest, match="'main.py' changed"):
            for _ in archive_chunks(tree, entries, "/app"):
                pass


def test_caps_are_checked_while_walking(root: Path, cfg: Settings) -> None:
    code = root / "code"
    code.mkdir()
    for i in range(20):
        (code / f"f{i:02}").write_bytes(b"x" * 100)
    with open_code_tree(str(code), cfg) as tree:
        with pytest.raises(InvalidRequest, match=r"more than 19 entries") as info:
            scan_code_tree(tree, MiB, 19)
        assert info.value.details == {
            "field": "code_path",
            "limit": "docker.max_code_files",
            "max": 19,
        }
        with pytest.raises(InvalidRequest, match=r"more than 1999 bytes") as info:
            scan_code_tree(tree, 1999, 100)
        assert info.value.details["limit"] == "docker.max_code_bytes"
        assert len(scan_code_tree(tree, 2000, 20)) == 20


def test_too_deep_a_tree_is_refused(root: Path, cfg: Settings) -> None:
    code = root / "code"
    (code / "/".join(["d"] * (MAX_DEPTH + 1))).mkdir(parents=True)
    with open_code_tree(str(code), cfg) as tree, pytest.raises(InvalidRequest, match="deep"):
        scan_code_tree(tree, MiB, 10_000)


def test_streaming_50_mib_peaks_far_below_its_size(root: Path, cfg: Settings) -> None:
    code = root / "code"
    code.mkdir()
    block = os.urandom(MiB)
    for i in range(50):
        (code / f"b{i}").write_bytes(block)
    with open_code_tree(str(code), cfg) as tree:
        entries = scan_code_tree(tree, 64 * MiB, 100)
        tracemalloc.start()
        try:
            total = sum(len(c) for c in archive_chunks(tree, entries, "/app"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total > 50 * MiB
    assert peak < MiB, f"peak {peak} bytes"


@pytest.mark.parametrize(
    ("mount", "refused"),
    [
        ("/app", True),
        ("/app/", True),
        ("/app/data", True),
        ("/", True),
        ("//app/./x", True),
        ("/application", False),
        ("/ap", False),
        ("/data", False),
        ("/run/flowmgr", False),
    ],
)
def test_mounts_related_to_the_code_dir(mount: str, refused: bool) -> None:
    if refused:
        with pytest.raises(InvalidRequest) as info:
            check_code_mounts(["/run/flowmgr", mount], "/app")
        assert info.value.field == "container_id"
    else:
        check_code_mounts(["/run/flowmgr", mount], "/app")
