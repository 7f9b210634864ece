"""StoppedSet: ids of containers stopped on request, kept in a small file across restarts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

__all__ = ["StoppedSet"]

logger = logging.getLogger(__name__)


class StoppedSet:
    """Which exited containers count as `stopped` (on request) rather than `exited` (on their own).

    The file is `<state_dir>/.stopped.json`: in the manager's private directory (0700), outside
    every flow's directory (a flow name never starts with '.'), so no flow or other user can see
    or change it.
    """

    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / ".stopped.json"
        self._ids: set[str] = set()

    def load(self) -> None:
        """Read the file; a missing or damaged file means nothing was stopped on request."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable stop-state file %s: %s", self.path, err)
            return
        if isinstance(data, list):
            self._ids = {str(x) for x in data}

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._ids

    def add(self, container_id: str) -> None:
        """Remember that `container_id` was stopped on request."""
        if container_id not in self._ids:
            self._ids.add(container_id)
            self._save()

    def discard(self, container_id: str) -> None:
        """Forget it (it started again, or it is gone)."""
        if container_id in self._ids:
            self._ids.discard(container_id)
            self._save()

    def retain(self, live_ids: set[str]) -> None:
        """Drop ids of containers that no longer exist."""
        if not self._ids <= live_ids:
            self._ids &= live_ids
            self._save()

    def _save(self) -> None:
        # write-then-rename so a crash mid-write never leaves a torn file
        try:
            # no mkdir here: the state dir is made (0700) and checked by StateDir.prepare
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self._ids)), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as err:
            logger.warning(
                "cannot save stop-state file %s (%s): a manager restart will show "
                "these containers as exited",
                self.path,
                err,
            )
