"""Container actions: confirm when needed, run in a `commands` worker, report the outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App
from textual.worker import Worker

from flowmgr_tui.backend import Backend
from flowmgr_tui.formatting import describe_error
from flowmgr_tui.keymap import VERBS, Verb
from flowmgr_tui.state.panel_state import PanelState
from server.core.models import ContainerSnapshot

__all__ = ["ActionRunner"]

BusyMark = Callable[[str, str | None], None]
"""Marks a container as having an action in flight ("stopping"), or done (None)."""
BULK_AT_ONCE = 4
"""Containers a bulk action works on at the same time (each is a daemon call of seconds)."""
NAMES_ASKED = 15
"""Names the bulk question lists; the rest are counted."""


class ActionRunner:
    """Runs one action per call in the app's `commands` worker group."""

    def __init__(
        self, app: App[Any], backend: Backend, state: PanelState, mark_busy: BusyMark
    ) -> None:
        self._app = app
        self._backend = backend
        self._state = state
        self._mark_busy = mark_busy

    def request(self, verb: str, container_id: str) -> None:
        """Ask first when the action needs it (delete: confirm; update: a path), then run."""
        from flowmgr_tui.screens.confirm import ConfirmScreen
        from flowmgr_tui.screens.path_prompt import PathPrompt
        from flowmgr_tui.screens.signal_prompt import SignalPrompt

        name = self._state.name_of(container_id)
        snap = self._state.containers.get(container_id)
        if verb == "pause" and snap is not None and snap.state == "paused":
            verb = "unpause"  # one key toggles
        if verb == "kill":
            self._app.push_screen(
                SignalPrompt(f"Kill {name}: which signal?"),
                lambda signal: self._confirm_kill(container_id, name, signal),
            )
        elif verb == "delete":
            self._app.push_screen(
                ConfirmScreen(
                    f"Delete {name}?",
                    "The container is removed with its filesystem. This cannot be undone.",
                ),
                lambda ok: self._run_if(bool(ok), "delete", container_id),
            )
        elif verb == "update":
            self._app.push_screen(
                PathPrompt(f"Update code of {name}", "Path of the new code on the manager's host:"),
                lambda path: self._run_if(bool(path), "update", container_id, code_path=path),
            )
        else:
            self.run(verb, container_id)

    def _confirm_kill(self, container_id: str, name: str, signal: str | None) -> None:
        """A signal was picked (None: cancelled): ask once more, naming it."""
        from flowmgr_tui.screens.confirm import ConfirmScreen

        if signal:
            self._app.push_screen(
                ConfirmScreen(
                    f"Send {signal} to {name}?",
                    "A flow that ends on it shows as stopped (asked for, not a crash).",
                ),
                lambda ok: self._run_if(bool(ok), "kill", container_id, signal=signal),
            )

    def _run_if(
        self,
        go: bool,
        verb: str,
        container_id: str,
        *,
        code_path: str | None = None,
        signal: str | None = None,
    ) -> None:
        if go:
            self.run(verb, container_id, code_path=code_path, signal=signal)

    def _call(
        self,
        verb: str,
        container_id: str,
        code_path: str | None = None,
        signal: str | None = None,
    ) -> Callable[[], Awaitable[object]]:
        b = self._backend
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "start": lambda: b.start_container(container_id),
            "stop": lambda: b.stop_container(container_id),
            "restart": lambda: b.restart_container(container_id),
            "update": lambda: b.update_container(container_id, code_path or ""),
            "delete": lambda: b.delete_container(container_id),
            "pause": lambda: b.pause_container(container_id),
            "unpause": lambda: b.unpause_container(container_id),
            "kill": lambda: b.kill_container(container_id, signal or ""),
        }
        return calls[verb]

    def request_many(self, verb: str, container_ids: list[str]) -> None:
        """One question listing every container, then the verb on each."""
        from flowmgr_tui.screens.confirm import ConfirmScreen

        v = VERBS[verb]
        names = [self._state.name_of(cid) for cid in container_ids]
        listed = "\n".join(f"  {name}" for name in names[:NAMES_ASKED])
        if len(names) > NAMES_ASKED:
            listed += f"\n  and {len(names) - NAMES_ASKED} more"
        if verb == "delete":
            listed += "\nEach is removed with its filesystem. This cannot be undone."
        self._app.push_screen(
            ConfirmScreen(f"{v.label} these {len(names)} containers?", listed),
            lambda ok: self._run_many_if(bool(ok), verb, container_ids),
        )

    def _run_many_if(self, go: bool, verb: str, container_ids: list[str]) -> None:
        if go:
            self.run_many(verb, container_ids)

    def run_many(self, verb: str, container_ids: list[str]) -> Worker[dict[str, str]]:
        """The verb on each container, a few at a time; one notification names each outcome.
        The worker's result: container id -> "" (done) or why it failed."""
        return self._app.run_worker(
            self._do_many(VERBS[verb], container_ids),
            name=f"{verb} {len(container_ids)} containers",
            group="commands",
            exit_on_error=False,
        )

    async def _do_many(self, v: Verb, container_ids: list[str]) -> dict[str, str]:
        gate = asyncio.Semaphore(BULK_AT_ONCE)

        async def one(cid: str) -> str:
            async with gate:
                self._mark_busy(cid, v.doing)
                try:
                    await self._call(v.name, cid)()
                except Exception as err:  # each failure is named in the summary
                    return describe_error(err)
                finally:
                    self._mark_busy(cid, None)
                return ""

        outcomes = await asyncio.gather(*(one(cid) for cid in container_ids))
        results = dict(zip(container_ids, outcomes, strict=True))
        done = [self._state.name_of(cid) for cid, why in results.items() if not why]
        failed = [f"{self._state.name_of(cid)}: {why}" for cid, why in results.items() if why]
        lines = [f"{v.done}: {', '.join(done)}"] if done else []
        lines += [f"failed: {line}" for line in failed]
        self._app.notify(
            "\n".join(lines),
            title=f"{v.label}: {len(done)} of {len(results)} done",
            severity="error" if failed else "information",
            timeout=12 if failed else 5,
            markup=False,
        )
        return results

    def run(
        self,
        verb: str,
        container_id: str,
        *,
        code_path: str | None = None,
        signal: str | None = None,
    ) -> Worker[None]:
        """Start the worker; progress shows in the row, the outcome as a notification."""
        v = VERBS[verb]
        name = self._state.name_of(container_id)
        return self._app.run_worker(
            self._do(v, container_id, name, self._call(verb, container_id, code_path, signal)),
            name=f"{verb} {name}",
            group="commands",
            exit_on_error=False,
        )

    async def _do(
        self, v: Verb, cid: str, name: str, call: Callable[[], Awaitable[object]]
    ) -> None:
        self._mark_busy(cid, v.doing)
        try:
            done = await call()
        except Exception as err:  # every failure is shown; FlowMgrError is the usual case
            self._app.notify(
                describe_error(err), title=f"{v.label} {name} failed", severity="error", timeout=8
            )
            raise
        else:
            said = f"{name} {v.done}"
            if isinstance(done, ContainerSnapshot) and v.name == "kill":  # it may live on
                said = f"signal sent to {name}: {done.state}"
            self._app.notify(said, title=v.label, timeout=3)
        finally:
            self._mark_busy(cid, None)
