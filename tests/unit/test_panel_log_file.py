"""The panel's log file is written by a thread, and nothing queued is lost when it ends."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowmgr_tui.__main__ import _log_to_file, _stop_log_listener
from server.core.config import Settings


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        _stop_log_listener()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_a_burst_of_warnings_is_queued_then_all_written_when_the_panel_ends(
    tmp_path: Path, root_logging: logging.Logger
) -> None:
    path = tmp_path / "panel.log"
    _log_to_file(Settings(), str(path))
    # The event loop only enqueues: no handler that writes a file sits on the root logger.
    assert [type(h) for h in root_logging.handlers] == [logging.handlers.QueueHandler]
    log = logging.getLogger("flowmgr.test.burst")
    for i in range(500):
        log.warning("adopted container %d has no channel", i)
    _stop_log_listener()
    assert path.read_text().count("has no channel") == 500
    # After the panel ends, records still land in the file (directly now).
    log.warning("after the end")
    for handler in root_logging.handlers:
        handler.flush()
    assert "after the end" in path.read_text()
    _stop_log_listener()  # a second stop (atexit after main's finally) is harmless


def test_opening_the_log_again_ends_the_first_writer(
    tmp_path: Path, root_logging: logging.Logger
) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    _log_to_file(Settings(), str(first))
    logging.getLogger("flowmgr.test").warning("to the first")
    _log_to_file(Settings(), str(second))
    logging.getLogger("flowmgr.test").warning("to the second")
    _stop_log_listener()
    assert "to the first" in first.read_text() and "to the second" not in first.read_text()
    assert "to the second" in second.read_text()
