"""NodeSummary: cluster mode's strip of nodes (hostname, Swarm state, agent link, flows, CPU,
memory), under the banner; hidden on one host."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from flowmgr_tui.formatting import percent, size
from flowmgr_tui.state.nodes import NodeLink, NodeUsage, usage_by_node
from flowmgr_tui.state.panel_state import PanelState

__all__ = ["NodeSummary", "summary_text", "safe_name", "duration"]

LINES = 6
"""Nodes listed at most (those whose agent link is down first); the rest are counted."""
NAME_WIDTH = 18
AGENT_WIDTH = 34
_HEAD = (
    f"{'Node':<{NAME_WIDTH}} {'Swarm':<8} {'Agent link':<{AGENT_WIDTH}} "
    f"{'Flows':>5} {'CPU':>7} {'Memory':>7}"
)


def safe_name(text: str, width: int) -> str:
    """`text` for one cell of `width`: control characters as `?`, cut with `~` when longer
    (a hub's strings are shown, never trusted: a hostname may be 10 kB)."""
    head = text[: width + 1]
    clean = "".join(c if c.isprintable() else "?" for c in head)
    return clean if len(clean) <= width else clean[: width - 1] + "~"


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h05m`, `3d04h`: how long a link has been down."""
    secs = max(0, int(seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def _agent(node: NodeLink, now: datetime) -> str:
    if node.connected:
        return "connected"
    text = "DISCONNECTED"
    if node.down_since is not None:
        text += f" {duration((now - node.down_since).total_seconds())}"
    if node.reason:
        text += f" {node.reason}"
    return safe_name(text, AGENT_WIDTH)


def _line(node: NodeLink, usage: NodeUsage | None, now: datetime) -> Text:
    flows = usage.flows if usage else 0
    sampled = usage is not None and usage.sampled
    cpu = percent(usage.cpu_percent if usage and sampled else None)
    mem = size(usage.memory_usage if usage and sampled else None)
    text = (
        f"{safe_name(node.node, NAME_WIDTH):<{NAME_WIDTH}} {safe_name(node.state, 8):<8} "
        f"{_agent(node, now):<{AGENT_WIDTH}} {flows:>5} {cpu:>7} {mem:>7}"
    )
    return Text(text, style="" if node.connected else "bold red")


def summary_text(nodes: Iterable[NodeLink], usage: Mapping[str, NodeUsage], now: datetime) -> Text:
    """The strip: a heading, then up to LINES nodes (agent link down first, then by hostname),
    then how many more."""
    ordered = sorted(nodes, key=lambda n: (n.connected, n.node, n.node_id))
    down = sum(1 for n in ordered if not n.connected)
    title = f"{len(ordered)} node{'s' if len(ordered) != 1 else ''}"
    if down:
        title += f", {down} down"
    lines = [Text(f"{_HEAD}  ({title})", style="bold")]
    for node in ordered[:LINES]:
        lines.append(_line(node, usage.get(node.node_id) or usage.get(node.node), now))
    more = len(ordered) - LINES
    if more > 0:
        hidden_down = sum(1 for n in ordered[LINES:] if not n.connected)
        extra = f" ({hidden_down} of them down)" if hidden_down else ""
        lines.append(Text(f"... and {more} more node{'s' if more != 1 else ''}{extra}"))
    if not ordered:
        lines.append(Text("(the hub has listed no nodes yet)"))
    out = Text("\n").join(lines)
    out.no_wrap = True
    out.overflow = "crop"
    return out


class NodeSummary(Static):
    """Shown (class `-visible`) while the core is a cluster hub and the user has not hidden it
    (N); redrawn only when its text changes, every second while a link is down."""

    DEFAULT_CSS = "NodeSummary { height: auto; }"

    def __init__(
        self, state: PanelState, *, clock: Callable[[], datetime], id: str | None = None
    ) -> None:
        super().__init__("", id=id, markup=False)
        self._state = state
        self._clock = clock
        self._shown: Text | None = None
        self.hidden_by_user = False
        self._ticking = False
        """The down-for times tick once a second, from the first time it shows (a hub)."""

    def redraw(self) -> None:
        """Show or hide, and rewrite the text when it changed."""
        state = self._state
        visible = state.cluster and not self.hidden_by_user
        self.set_class(visible, "-visible")
        if not visible:
            return
        if not self._ticking:
            self._ticking = True
            self.set_interval(1.0, self._tick)
        text = summary_text(
            state.nodes.values(), usage_by_node(state.containers.values()), self._clock()
        )
        if self._shown is None or text != self._shown:
            self._shown = text
            self.update(text)

    def _tick(self) -> None:
        if self.has_class("-visible") and any(not n.connected for n in self._state.nodes.values()):
            self.redraw()
