"""Fixed scales for the detail graphs, and the bars drawn against them.

A graph scaled to its own minimum and maximum turns 0.3 MiB of jitter into a spike; these
scales come from what the value is measured against (a limit, whole cores, the host's totals),
so a bar's height reads the same at every glance. Everything here is pure and cheap: it runs
once per sample on the open detail view, never per table row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flowmgr_tui.formatting import size

__all__ = [
    "Scale",
    "BARS",
    "memory_scale",
    "cpu_scale",
    "host_cpu_scale",
    "host_memory_scale",
    "rate_scale",
    "RATE_STEPS",
    "counter_rates",
    "bar_rows",
]

BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class Scale:
    """What a full-height bar stands for."""

    top: float
    """The value drawn at full height (the bottom is always 0)."""
    top_label: str
    """The axis value at the top: `512.0M`, `100%`."""
    legend: str
    """What the top is: `limit`, `1 core`, `host total`."""


def memory_scale(limit: int) -> Scale:
    """Against the container's memory limit as the core reports it.

    A container without a limit reports the host's memory as its limit (as `docker stats`
    does); the state carries no flag telling the two apart, so the legend says `limit` for both.
    """
    return Scale(float(max(limit, 1)), size(limit), "limit")


def cpu_scale(peak: float) -> Scale:
    """Against 100 % x whole cores: one core (the policy's default CPU limit), more only when
    the container was seen using more. `cpu_percent` is percent of one core, as `docker stats`.

    The state carries neither the container's CPU limit nor the host's core count (local and
    remote panels alike), so the number of cores is the smallest whole count holding `peak`.
    """
    cores = max(1, math.ceil(peak / 100.0 - 1e-9)) if math.isfinite(peak) else 1
    return Scale(100.0 * cores, f"{100 * cores}%", f"{cores} core" + ("s" if cores > 1 else ""))


def host_cpu_scale(cores: int) -> Scale:
    """Host CPU is a share of all its cores: 0-100 %."""
    return Scale(100.0, "100%", f"{cores} core" + ("s" if cores != 1 else ""))


def host_memory_scale(total: int) -> Scale:
    """Against the host's total memory."""
    return Scale(float(max(total, 1)), size(total), "host total")


RATE_STEPS: tuple[float, ...] = tuple(1024.0 * 4**k for k in range(13))
"""Tops for byte rates: 1K/s, 4K/s, 16K/s ... 16G/s. A flow's I/O has no limit to read it
against, so the top is the smallest step holding the window's peak: a step, not the peak itself,
so a little jitter never rescales the graph."""


def rate_scale(peak: float) -> Scale:
    """Against the smallest of RATE_STEPS holding `peak` (bytes per second)."""
    top = next((t for t in RATE_STEPS if math.isfinite(peak) and peak <= t), RATE_STEPS[-1])
    if not math.isfinite(peak):
        top = RATE_STEPS[0]
    return Scale(top, size(int(top)), "bytes/s")


def counter_rates(times: Sequence[float], counts: Sequence[int]) -> list[float]:
    """Per-second rates between consecutive readings of a growing counter (bytes received,
    read...); one value per reading after the first. A counter that went down (the container
    restarted and counts from 0 again) or readings out of order give 0 for that step."""
    out: list[float] = []
    for i in range(1, min(len(times), len(counts))):
        dt, dv = times[i] - times[i - 1], counts[i] - counts[i - 1]
        out.append(dv / dt if dt > 0 and dv >= 0 else 0.0)
    return out


def bar_rows(values: Sequence[float], top: float, width: int, height: int) -> list[str]:
    """`height` strings of `width` cells, top row first: the newest `width` values, one column
    each, right-aligned, each as tall as its share of `top` (clamped). A sampled column shows at
    least the lowest bar, so "measured, near zero" differs from "no sample yet" (blank)."""
    if width <= 0 or height <= 0:
        return [""] * max(height, 0)
    shown = list(values)[-width:]
    steps = len(BARS) * height
    # A non-finite value (a broken sample) draws as the lowest bar rather than raising.
    levels = [
        max(1, min(steps, round(v / top * steps))) if top > 0 and math.isfinite(v) else 1
        for v in shown
    ]
    pad = " " * (width - len(levels))
    rows = []
    for row in range(height - 1, -1, -1):
        base = row * len(BARS)
        cells = []
        for level in levels:
            part = level - base
            cells.append(" " if part <= 0 else BARS[min(part, len(BARS)) - 1])
        rows.append(pad + "".join(cells))
    return rows
