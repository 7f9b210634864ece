"""Bench: the flowmgr panel against lazydocker with 200 running containers, same tmux harness.

Measures, in one run: time from launch until the first screen of containers shows (polling
`tmux capture-pane`), idle CPU of the tool plus what it adds to dockerd/containerd/shims over an
idle baseline, and the tool's resident memory. Creates its own labelled busybox containers and
removes them at the end (even on failure).

    .venv/bin/python bench/bench_tui.py [--containers 200] [--idle 30] [--launches 3]

`--table N` instead measures the dashboard's table in-process over N fake rows (no Docker, no
tmux): the cost of one batch of samples plus the paint that follows (idle, visible rows moved,
off-screen rows moved, all moved), sorting, filtering and scrolling, in milliseconds.

    .venv/bin/python bench/bench_tui.py --table 1000 [--repeats 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import psutil
from textual.app import App

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowmgr_tui.screens.dashboard import DashboardScreen  # noqa: E402
from flowmgr_tui.state.panel_state import PanelState  # noqa: E402
from server.core.events import ContainerAdded, Event, StatsSampled  # noqa: E402
from server.core.models import ContainerSnapshot, ResourceSample  # noqa: E402


def say(*parts: object, err: bool = False) -> None:
    """Progress and results go to the terminal (this is a script, not library code)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(" ".join(str(p) for p in parts) + "\n")
    stream.flush()


ROOT = Path(__file__).resolve().parents[1]
BUSYBOX = "flowmgr-test-busybox:latest"
ENGINE_NAMES = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
COLS, ROWS = 160, 48
SCREEN_NAMES = 5
"""The first screen counts as shown once this many bench container names are visible."""
SETTLE = 10.0
"""Seconds of rest before each launch."""
IDLE_SECONDS = 5.0
"""Seconds of each idle measurement of the table bench."""


def engine_procs() -> dict[int, psutil.Process]:
    """dockerd, containerd and every shim."""
    out = {}
    for p in psutil.process_iter(["name"]):
        if (p.info["name"] or "").startswith(ENGINE_NAMES):
            out[p.pid] = p
    return out


def cpu_seconds(procs: dict[int, psutil.Process]) -> dict[int, float]:
    """user+system seconds of each process still alive."""
    out = {}
    for pid, p in procs.items():
        try:
            t = p.cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before[pid] for pid in before if pid in after)


class Tmux:
    """A private tmux server with one session of COLS x ROWS."""

    def __init__(self) -> None:
        self.base = ["tmux", "-L", f"bench-{uuid.uuid4().hex[:6]}"]

    def start(self, cmd: str) -> int:
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", "b", "-x", str(COLS), "-y", str(ROWS), cmd],
            check=True,
        )
        subprocess.run(
            [*self.base, "resize-window", "-t", "b", "-x", str(COLS), "-y", str(ROWS)],
            capture_output=True,
        )
        out = subprocess.run(
            [*self.base, "list-panes", "-t", "b", "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[0])

    def screen(self) -> str:
        return subprocess.run(
            [*self.base, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True
        ).stdout

    def stop(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def tool_tree(pid: int) -> dict[int, psutil.Process]:
    """The tool and its children (lazydocker may fork helpers)."""
    p = psutil.Process(pid)
    return {q.pid: q for q in [p, *p.children(recursive=True)]}


def engine_rate(seconds: float) -> float:
    """Engine CPU (% of a core) over `seconds`, nothing of ours running."""
    eng = engine_procs()
    before, w0 = cpu_seconds(eng), time.perf_counter()
    time.sleep(seconds)
    return delta(before, cpu_seconds(eng)) / (time.perf_counter() - w0) * 100


def run_tool(
    label: str, cmd: str, names: list[str], idle: float, measure_idle: bool
) -> dict[str, float]:
    """Launch once: time to first screen; optionally settle and measure idle CPU and RSS.

    The engine's idle baseline is taken right before the launch, so drift from other load on
    the machine (other test runs) affects both tools alike.
    """
    baseline_rate = engine_rate(idle) if measure_idle else 0.0
    load_before = os.getloadavg()[0]
    tmux = Tmux()
    try:
        t0 = time.perf_counter()
        pid = tmux.start(cmd)
        deadline = t0 + 120
        while True:
            screen = tmux.screen()
            if sum(1 for n in names if n in screen) >= SCREEN_NAMES:
                first = time.perf_counter() - t0
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{label}: no screen of containers after 120 s:\n{screen}")
            time.sleep(0.01)
        result = {"first_screen_s": first}
        if measure_idle:
            time.sleep(10)  # let start-up work (adoption, first stats) finish
            procs = tool_tree(pid)
            eng = engine_procs()
            b_tool, b_eng, w0 = cpu_seconds(procs), cpu_seconds(eng), time.perf_counter()
            time.sleep(idle)
            a_tool, a_eng = cpu_seconds(procs), cpu_seconds(eng)
            wall = time.perf_counter() - w0
            tool = delta(b_tool, a_tool) / wall * 100
            engine = delta(b_eng, a_eng) / wall * 100
            rss = sum(p.memory_info().rss for p in procs.values() if p.is_running()) / 2**20
            result.update(
                baseline_engine_cpu=baseline_rate,
                load_avg=load_before,
                tool_cpu=tool,
                engine_cpu=engine,
                engine_added=max(0.0, engine - baseline_rate),
                total=tool + max(0.0, engine - baseline_rate),
                rss_mb=rss,
            )
        return result
    finally:
        tmux.stop()


# --- in-process table bench (issue 15): no Docker, no tmux ------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1024 * 1024


def _usage(cpu: float, mem_mib: float, at: datetime) -> ResourceSample:
    return ResourceSample(
        cpu_percent=cpu,
        memory_usage=int(mem_mib * MIB),
        memory_limit=512 * MIB,
        memory_percent=round(mem_mib / 5.12, 2),
        network_rx_bytes=1000,
        network_tx_bytes=500,
        disk_read_bytes=0,
        disk_write_bytes=0,
        timestamp=at,
    )


def fake_rows(n: int) -> list[ContainerSnapshot]:
    """`n` running flows with usage, names in a shuffled order (sorting has work to do)."""
    order = list(range(n))
    random.Random(15).shuffle(order)
    return [
        ContainerSnapshot(
            id=f"{i:04x}" * 16,
            name=f"flow-{i:04d}",
            image="flow:latest" if i % 3 else "busybox:latest",
            state="running" if i % 10 else "exited",
            health="healthy" if i % 2 else "none",
            created=T0,
            started_at=T0,
            socket_path=f"/tmp/s/{i}/flow.sock",
            socket_connected=bool(i % 4),
            resources=_usage(float(i % 50), 8.0 + i % 100, T0),
        )
        for i in order
    ]


def samples(last: dict[str, ResourceSample], tick: int, moved: set[str]) -> list[Event]:
    """One sweep: rows in `moved` change visibly (CPU and memory), the others jitter below
    what is drawn; `last` holds each row's latest sample (updated)."""
    at = T0 + timedelta(seconds=tick)
    out: list[Event] = []
    for cid, res in last.items():
        step = 5.0 if cid in moved else 0.001
        new = _usage(res.cpu_percent + step, res.memory_usage / MIB + 10 * step, at)
        last[cid] = new
        out.append(StatsSampled(container_id=cid, sample=new, at=at))
    return out


class TableBenchApp(App[None]):
    """The dashboard alone over a PanelState of fake rows."""

    CSS_PATH = str(ROOT / "flowmgr_tui" / "app.tcss")

    def __init__(self, state: PanelState) -> None:
        super().__init__()
        self.state = state
        self.dashboard = DashboardScreen(state, clock=lambda: T0 + timedelta(hours=1))

    def on_mount(self) -> None:
        self.push_screen(self.dashboard)


def _ms(t0: float) -> float:
    """CPU milliseconds since `t0` (process time: other load on the host is not counted)."""
    return (time.process_time() - t0) * 1000


async def idle_cpu(app: TableBenchApp, last: dict[str, ResourceSample], watched: bool) -> float:
    """% of a core the app spends on idle samples of every row for IDLE_SECONDS, batched as
    the bridge batches them (every 0.25 s): every row once a second (today's core), or
    `watched`: the rows on screen once a second, the others once per 10 s (the background
    rate)."""
    screen, state = app.dashboard, app.state
    table = screen.table
    top = int(table.scroll_y)
    on_screen = set(table.shown_ids[top : top + table.size.height - 1])
    ids = list(last)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for tick in range(int(IDLE_SECONDS * 4)):
        if watched:
            due = [cid for cid in ids[tick % 40 :: 40] if cid not in on_screen]
            due += on_screen if tick % 4 == 0 else []
        else:
            due = ids[tick % 4 :: 4]
        batch = samples({cid: last[cid] for cid in due}, 2000 + tick, set())
        last.update({e.container_id: e.sample for e in batch if isinstance(e, StatsSampled)})
        screen.show_changes(state.apply(batch), batch)
        await asyncio.sleep(max(0.0, t0 + (tick + 1) * 0.25 - time.perf_counter()))
    return (time.process_time() - cpu0) / (time.perf_counter() - t0) * 100


async def adoption(n: int, per_batch: int = 10) -> tuple[float, float]:
    """CPU and wall seconds until `n` rows arriving `per_batch` at a time (as adoption brings
    them, each batch followed by the app's work until idle) are all shown."""
    state = PanelState([], True)
    app = TableBenchApp(state)
    async with app.run_test(size=(COLS, ROWS)) as pilot:
        snaps = fake_rows(n)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for first in range(0, n, per_batch):
            events: list[Event] = [
                ContainerAdded(snapshot=s, at=T0) for s in snaps[first : first + per_batch]
            ]
            app.dashboard.show_changes(state.apply(events), events)
            await pilot.pause()
        while app.dashboard.table.row_count < n:
            await pilot.pause(0.01)
        return time.process_time() - cpu0, time.perf_counter() - t0


async def table_bench(n: int, repeats: int) -> dict[str, Any]:
    """CPU milliseconds per operation at `n` rows (medians of `repeats`), each with the app's
    work until idle that shows it on the (headless) screen (`*_op_ms`: the operation alone),
    and the app's idle CPU under today's sampling and under the watched rate."""
    snaps = fake_rows(n)
    last = {s.id: s.resources for s in snaps if s.resources is not None}
    state = PanelState([], True)
    app = TableBenchApp(state)
    out: dict[str, list[float]] = {}

    async def record(key: str, t0: float) -> None:
        """The operation since `t0`, then the app's work until idle: the screen update that
        shows it (layout, compositor, the table's dirty lines)."""
        op = _ms(t0)
        await pilot.pause()
        out.setdefault(f"{key}_ms", []).append(_ms(t0))
        out.setdefault(f"{key}_op_ms", []).append(op)

    async with app.run_test(size=(COLS, ROWS)) as pilot:
        screen, table = app.dashboard, app.dashboard.table
        t0 = time.process_time()
        events: list[Event] = [ContainerAdded(snapshot=s, at=T0) for s in snaps]
        screen.show_changes(state.apply(events), events)
        await record("fill", t0)
        everyone = {s.id for s in snaps}
        for tick in range(1, repeats + 1):
            shown, top = table.shown_ids, int(table.scroll_y)  # scrolled below
            visible = set(shown[top : top + table.size.height - 1])
            offscreen = {cid for cid in shown if cid not in visible}
            offscreen = set(sorted(offscreen)[:40])
            cases = {"idle": set(), "visible": visible, "offscreen": offscreen, "all": everyone}
            for label, moved in cases.items():
                batch = samples(last, tick * 10 + len(label), moved)
                t0 = time.process_time()
                screen.show_changes(state.apply(batch), batch)
                await record(f"frame_{label}", t0)
            for column in ("name", "cpu", "state", "uptime"):
                t0 = time.process_time()
                screen.sort_by(column)
                await record("sort", t0)
            for text in ("flow-00", "", "busybox", ""):
                t0 = time.process_time()
                table.set_filter(text)
                await record("filter", t0)
            t0 = time.process_time()
            table.scroll_to(y=(tick * 97) % max(1, n - 40), animate=False, immediate=True)
            await record("scroll", t0)
        table.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        every_second = await idle_cpu(app, last, watched=False)
        watched = await idle_cpu(app, last, watched=True)
    result: dict[str, Any] = {"rows": n}
    result.update({k: round(statistics.median(v), 2) for k, v in out.items()})
    result.update(
        {
            f"{k[:-3]}_max_ms": round(max(v), 2)
            for k, v in out.items()
            if k in ("sort_ms", "filter_ms", "scroll_ms")
        }
    )
    result["idle_cpu_every_row_1s_percent"] = round(every_second, 1)
    result["idle_cpu_watched_percent"] = round(watched, 1)
    cpu, wall = await adoption(n)
    result["adoption_10_per_batch_cpu_s"] = round(cpu, 2)
    result["adoption_10_per_batch_wall_s"] = round(wall, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    parser.add_argument("--launches", type=int, default=3, help="launches for the start time")
    parser.add_argument("--table", type=int, default=0, help="in-process table bench: N rows")
    parser.add_argument("--repeats", type=int, default=9, help="rounds of the table bench")
    args = parser.parse_args()
    if args.table:
        say(json.dumps(asyncio.run(table_bench(args.table, args.repeats)), indent=2))
        return 0
    lazydocker = ROOT / ".venv" / "bin" / "lazydocker"
    flowmgr = ROOT / ".venv" / "bin" / "flowmgr"
    for tool in (lazydocker, flowmgr):
        if not tool.exists():
            sys.exit(f"{tool} is missing: run scripts/setup.sh")
    # An installed package ships its bytecode (pip compiles it); this checkout may have none
    # when PYTHONDONTWRITEBYTECODE is set, and recompiling ~60 modules per launch (~80 ms)
    # is not what a user waits for.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "server"), str(ROOT / "flowmgr_tui")],
        check=True,
    )
    run = uuid.uuid4().hex[:4]
    instance = f"bench{run}"
    # A leading digit sorts first in lazydocker too, whatever other containers the host runs.
    names = [f"0fmb{run}{i:03d}" for i in range(args.containers)]
    client = docker.from_env(timeout=120)
    work = Path(tempfile.mkdtemp(prefix="fmbench"))
    labels = {
        "flowmgr.managed": "true",
        "flowmgr.instance": instance,
        "flowmgr.test": f"bench-{run}",
    }
    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: client.containers.run(BUSYBOX, name=n, detach=True, labels=labels),
                    names,
                )
            )
        say(f"started {len(names)} containers in {time.perf_counter() - t:.1f}s")
        time.sleep(10)

        sock = Path("/tmp/fmb") / run
        config = work / "config.json"
        config.write_text(
            json.dumps(
                {
                    "socket_dir": str(sock),
                    "docker": {"instance": instance, "network": f"flowmgr-{instance}"},
                }
            )
        )
        env = f"env TERM=xterm-256color XDG_CONFIG_HOME={work}/xdg CONFIG_FILE={config}"
        cmds = {
            "lazydocker": f"exec {env} {lazydocker}",
            "flowmgr": f"exec {env} {flowmgr} --log-file {work}/panel.log",
        }
        results: dict[str, list[dict[str, float]]] = {k: [] for k in cmds}
        for i in range(args.launches):
            # Alternate who goes first, and let the engine settle after each tool (lazydocker
            # leaves 200 stats streams for dockerd to tear down): neither tool starts on the
            # other's leftovers more often than the other.
            for label, cmd in list(cmds.items()) if i % 2 == 0 else list(cmds.items())[::-1]:
                time.sleep(SETTLE)
                r = run_tool(label, cmd, names, args.idle, measure_idle=(i == 0))
                results[label].append(r)
                say(label, {k: round(v, 2) for k, v in r.items()})
        summary: dict[str, dict[str, Any]] = {}
        for label, rs in results.items():
            idle_r = rs[0]
            summary[label] = {
                "first_screen_s_median": statistics.median(r["first_screen_s"] for r in rs),
                "first_screens": [round(r["first_screen_s"], 3) for r in rs],
                **{k: round(v, 2) for k, v in idle_r.items() if k != "first_screen_s"},
            }
        say(json.dumps(summary, indent=2))
        lz, fm = summary["lazydocker"], summary["flowmgr"]
        ratio = fm["total"] / lz["total"] if lz["total"] else float("inf")
        say(
            f"idle total: flowmgr {fm['total']:.1f}% vs lazydocker {lz['total']:.1f}% "
            f"(ratio {ratio:.3f}, target <= {1 / 9:.3f})"
        )
        say(
            f"first screen: flowmgr {fm['first_screen_s_median']:.2f}s vs lazydocker "
            f"{lz['first_screen_s_median']:.2f}s; flowmgr RSS {fm['rss_mb']:.0f} MB"
        )
        return 0
    finally:
        ids = [
            c.id
            for c in client.containers.list(
                all=True, filters={"label": f"flowmgr.test=bench-{run}"}
            )
        ]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda c: client.api.remove_container(c, force=True), ids))
        for net in client.networks.list(filters={"label": f"flowmgr.instance={instance}"}):
            net.remove()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(Path("/tmp/fmb") / run, ignore_errors=True)
        client.close()
        say(f"removed {len(ids)} bench containers", err=True)


if __name__ == "__main__":
    sys.exit(main())
