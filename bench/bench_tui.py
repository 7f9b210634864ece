"""Bench: the flowmgr panel against lazydocker with 200 running containers, same tmux harness.

Measures, in one run: time from launch until the first screen of containers shows (polling
`tmux capture-pane`), idle CPU of the tool plus what it adds to dockerd/containerd/shims over an
idle baseline, and the tool's resident memory. Creates its own labelled busybox containers and
removes them at the end (even on failure).

    .venv/bin/python bench/bench_tui.py [--containers 200] [--idle 30] [--launches 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import psutil


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    parser.add_argument("--launches", type=int, default=3, help="launches for the start time")
    args = parser.parse_args()
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
