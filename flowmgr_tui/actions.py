"""Container actions: confirm when needed, run in a `commands` worker, report the outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.worker import Worker

from flowmgr_tui.backend import Backend
from server.core.errors import FlowMgrError

if TYPE_CHECKING:
    from flowmgr_tui.app import FlowMgrApp

__all__ = ["ActionRunner", "Verb", "VERBS", "describe_error"]


@dataclass(frozen=True, slots=True)
class Verb:
    """One thing the panel can do to a container."""

    name: str
    label: str
    """For menus: "Stop"."""
    doing: str
    """For progress: "stopping"."""
    done: str
    """For the outcome: "stopped"."""
    key: str
    """The key that does it on the dashboard and the detail screen."""


VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("start", "Start", "starting", "started", "s"),
    Verb("stop", "Stop", "stopping", "stopped", "x"),
    Verb("restart", "Restart", "restarting", "restarted", "r"),
    Verb("update", "Update code of", "updating", "updated", "u"),
    Verb("delete", "Delete", "deleting", "deleted", "d"),
)}


def describe_error(err: BaseException) -> str:
    """`container_not_found: no managed container 'x'` for ours, the class name otherwise."""
    if isinstance(err, FlowMgrError):
        return f"{err.error_type}: {err.message}"
    return f"{type(err).__name__}: {err}"


class ActionRunner:
    """Runs one action per call in the app's `commands` worker group."""

    def __init__(self, app: FlowMgrApp, backend: Backend) -> None:
        self._app = app
        self._backend = backend

    def request(self, verb: str, container_id: str) -> None:
        """Ask first when the action needs it (delete: confirm; update: a path), then run."""
        from flowmgr_tui.screens.confirm import ConfirmScreen
        from flowmgr_tui.screens.path_prompt import PathPrompt

        name = self._name(container_id)
        if verb == "delete":
            self._app.push_screen(
                ConfirmScreen(f"Delete {name}?",
                              "The container is removed with its filesystem. This cannot be "
                              "undone."),
                lambda ok: self._run_if(bool(ok), "delete", container_id))
        elif verb == "update":
            self._app.push_screen(
                PathPrompt(f"Update code of {name}",
                           "Path of the new code on the manager's host:"),
                lambda path: self._run_if(bool(path), "update", container_id, code_path=path))
        else:
            self.run(verb, container_id)

    def _run_if(self, go: bool, verb: str, container_id: str, *,
                code_path: str | None = None) -> None:
        if go:
            self.run(verb, container_id, code_path=code_path)

    def run(self, verb: str, container_id: str, *, code_path: str | None = None) -> Worker[None]:
        """Start the worker; progress shows in the row, the outcome as a notification."""
        b = self._backend
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "start": lambda: b.start_container(container_id),
            "stop": lambda: b.stop_container(container_id),
            "restart": lambda: b.restart_container(container_id),
            "update": lambda: b.update_container(container_id, code_path or ""),
            "delete": lambda: b.delete_container(container_id),
        }
        v = VERBS[verb]
        name = self._name(container_id)
        return self._app.run_worker(self._do(v, container_id, name, calls[verb]),
                                    name=f"{verb} {name}", group="commands",
                                    exit_on_error=False)

    async def _do(self, v: Verb, cid: str, name: str,
                  call: Callable[[], Awaitable[object]]) -> None:
        self._app.set_busy(cid, v.doing)
        try:
            await call()
        except Exception as err:  # every failure is shown; FlowMgrError is the usual case
            self._app.notify(describe_error(err), title=f"{v.label} {name} failed",
                             severity="error", timeout=8)
            raise
        else:
            self._app.notify(f"{name} {v.done}", title=v.label, timeout=3)
        finally:
            self._app.set_busy(cid, None)

    def _name(self, container_id: str) -> str:
        snap = self._app.state.containers.get(container_id)
        return snap.name if snap else container_id[:12]
