"""Bench: what the panel adds to the engine's CPU at N idle flows, windows interleaved.

bench_scale.py takes the engine's idle baseline in windows before and after each pass, minutes
apart; at 1,000 flows the engine's own idle drifts by several % of a core over minutes (10-12.5 %
mean, one-second peaks of 25-31 %), so its "engine added" moved from -0.6 to +3.8 between passes
of the same code. Here each cycle is an engine-only window, then the panel (in tmux, with its
in-process manager, after `--settle`) with the engine measured over the same length, then
another engine-only window: a cycle's share is its on-window less the mean of the two off-windows
around it, split by process (dockerd, containerd, this run's shims). Median over the cycles.

    .venv/bin/python bench/bench_engine_share.py --flows 1000 --cycles 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale as scale  # noqa: E402
from bench_tui import Tmux, cpu_seconds, delta, say, tool_tree  # noqa: E402

GROUPS = ("dockerd", "containerd", "shim")


def group_of(p: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        name = p.name()
        if "shim" in name:
            return "shim"
        if name.startswith("containerd"):
            return "containerd"
    return "dockerd"


def engine_window(tool: dict[int, psutil.Process], seconds: float) -> dict[str, float]:
    """CPU % of one core over `seconds`: the tool's, and the engine's by group."""
    eng = scale.our_engine()
    groups = {g: {pid: p for pid, p in eng.items() if group_of(p) == g} for g in GROUPS}
    before = {g: cpu_seconds(ps) for g, ps in groups.items()}
    t0, w0 = cpu_seconds(tool), time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - w0
    out = {g: delta(before[g], cpu_seconds(groups[g])) / wall * 100 for g in GROUPS}
    out["engine"] = sum(out[g] for g in GROUPS)
    out["tool"] = delta(t0, cpu_seconds(tool)) / wall * 100
    return out


def panel_window(
    code: Path, config: Path, work: Path, n: int, window: float, settle: float
) -> dict[str, float]:
    tmux = Tmux()
    try:
        pid, t0 = tmux.start(scale.panel_command(code, config, work)), time.perf_counter()
        while True:
            m = scale.SUMMARY.search(tmux.screen())
            if m and min(int(g.replace(",", "")) for g in m.groups()) >= n:
                break
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"panel: not all {n} rows after 300 s")
            time.sleep(0.05)
        time.sleep(settle)
        return engine_window(tool_tree(pid), window)
    finally:
        tmux.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--rest", type=float, default=10.0, help="seconds after the panel quits")
    parser.add_argument("--code", type=Path, default=scale.ROOT)
    args = parser.parse_args(argv)
    code = args.code.resolve()
    say(f"run {scale.RUN}: code {code} at {scale.revision(code)}")
    work = Path(tempfile.mkdtemp(prefix="fmshare"))
    sock = Path("/tmp/fms") / scale.RUN[3:]
    config = work / "config.json"
    scale.write_config(config, sock)
    flows = scale.Flows(sock / f".flowmgr-{scale.RUN}")
    cycles = []
    try:
        if flows.grow(args.flows) < args.flows:
            say("not all containers fit: stopping")
            return 1
        time.sleep(scale.SETTLE)
        off = engine_window({}, args.window)
        for i in range(args.cycles):
            on = panel_window(code, config, work, args.flows, args.window, args.settle)
            time.sleep(args.rest)
            after = engine_window({}, args.window)
            added = {g: on[g] - (off[g] + after[g]) / 2 for g in (*GROUPS, "engine")}
            cycles.append({"panel": on["tool"], "off": off["engine"], "on": on["engine"], **added})
            say(f"cycle {i + 1}: " + json.dumps({k: round(v, 2) for k, v in cycles[-1].items()}))
            off = after
        med = {k: statistics.median(c[k] for c in cycles) for k in cycles[0]}
        med["panel_total"] = med["panel"] + max(0.0, med["engine"])
        say("medians: " + json.dumps({k: round(v, 2) for k, v in med.items()}))
        say(
            "panel + engine it adds, per cycle: "
            + ", ".join(f"{c['panel'] + max(0.0, c['engine']):.2f}" for c in cycles)
        )
    except KeyboardInterrupt:
        say("interrupted: removing the containers")
    finally:
        flows.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
