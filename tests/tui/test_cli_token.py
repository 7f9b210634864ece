"""`flowmgr --connect` finds the service's token by itself; `--token VALUE` (visible in ps) is
refused."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowmgr_tui.__main__ import build_parser, connect_token, main
from server.core.config import Settings, load_settings
from server.core.token_file import load_or_create

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["--connect", "http://127.0.0.1:1", *argv])


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(env={}, socket_dir=str(tmp_path / "sockets"), **overrides)


@pytest.mark.parametrize("argv", [["--token", "s3cret-value"], ["--token=s3cret-value"]])
def test_a_token_on_the_command_line_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--connect", "http://127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert "--token is refused" in err and "FLOWMGR_TOKEN" in err and "--token-file" in err
    assert "s3cret-value" not in err


def test_the_refusal_from_a_real_process(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowmgr_tui",
            "--connect",
            "http://127.0.0.1:1",
            "--token",
            "x" * 20,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert out.returncode == 2 and "--token is refused" in out.stderr


def test_the_token_is_found_in_order(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert connect_token(_args(), settings, env={}) is None  # no service made one yet
    made, _ = load_or_create(settings.token_path)
    assert connect_token(_args(), settings, env={}) == made  # the service's token file
    configured = _settings(tmp_path, server__token="from-config-file")
    assert connect_token(_args(), configured, env={}) == "from-config-file"
    other = tmp_path / "my-token"
    other.write_text("from-token-file-0123456789\n")
    assert (
        connect_token(_args("--token-file", str(other)), configured, env={})
        == "from-token-file-0123456789"
    )
    assert (
        connect_token(
            _args("--token-file", str(other)), configured, env={"FLOWMGR_TOKEN": "from-env"}
        )
        == "from-env"
    )


def _main(argv: list[str]) -> int:
    """main(), then the root logger's handlers back as they were (main() points them at the
    panel's log file)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        return main(argv)
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
        for handler in before:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def test_a_missing_token_file_or_none_at_all_is_said_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.json"
    config.write_text(f'{{"socket_dir": "{tmp_path / "sockets"}"}}')
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert (
        _main(
            [
                "--config",
                str(config),
                "--connect",
                "http://127.0.0.1:1",
                "--token-file",
                str(tmp_path / "nope"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert _main(["--config", str(config), "--connect", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "no token for --connect" in err and ".api-token" in err
