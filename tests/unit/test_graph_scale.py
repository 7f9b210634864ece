"""The detail graphs' fixed scales and bars, and the table's content-shared widths (pure)."""

from __future__ import annotations

import math

import pytest

from flowmgr_tui.graph_scale import (
    bar_rows,
    cpu_scale,
    host_cpu_scale,
    host_memory_scale,
    memory_scale,
)
from flowmgr_tui.widgets.container_table import _share

MIB = 1024 * 1024


def test_hostile_values_draw_the_lowest_bar_and_never_raise() -> None:
    values = [math.nan, math.inf, -math.inf, -5.0, 1e308]
    rows = bar_rows(values, 100.0, 5, 2)
    assert rows == ["    █", "▁▁▁▁█"]
    assert bar_rows([1.0], 0.0, 3, 1) == ["  ▁"]  # a zero top: lowest bar, no division
    assert bar_rows([1.0], 100.0, 0, 2) == ["", ""]
    assert bar_rows([1.0], 100.0, 4, 0) == []
    assert cpu_scale(math.nan).top == 100.0
    assert cpu_scale(math.inf).top == 100.0
    assert memory_scale(0).top > 0 and host_memory_scale(-1).top > 0


def test_a_small_change_against_the_limit_stays_a_small_bar() -> None:
    limit = 512 * MIB
    scale = memory_scale(limit)
    assert (scale.top_label, scale.legend) == ("512.0M", "limit")
    rows = bar_rows([8.4 * MIB] * 3 + [8.7 * MIB], scale.top, 6, 4)
    assert rows[:3] == [" " * 6] * 3  # nothing above the bottom row
    assert rows[3] == "  ▁▁▁▁"  # newest on the right; unsampled columns blank


def test_bars_fill_by_their_share_of_the_top() -> None:
    assert bar_rows([50.0, 100.0, 25.0], 100.0, 3, 2) == [" █ ", "██▄"]
    assert bar_rows([200.0], 100.0, 1, 1) == ["█"]  # clamped
    # Only the newest `width` samples are shown, one column each.
    assert bar_rows([100.0, 0.0, 0.0], 100.0, 2, 1) == ["▁▁"]


@pytest.mark.parametrize(
    ("peak", "top", "legend"),
    [
        (0.0, 100.0, "1 core"),
        (4.8, 100.0, "1 core"),
        (100.0, 100.0, "1 core"),
        (100.5, 200.0, "2 cores"),
        (390.0, 400.0, "4 cores"),
    ],
)
def test_cpu_scale_is_whole_cores(peak: float, top: float, legend: str) -> None:
    scale = cpu_scale(peak)
    assert (scale.top, scale.legend, scale.top_label) == (top, legend, f"{top:.0f}%")


def test_host_scales_are_the_host_totals() -> None:
    assert (host_cpu_scale(2).top, host_cpu_scale(2).legend) == (100.0, "2 cores")
    mem = host_memory_scale(24 * 1024**3)
    assert (mem.top, mem.top_label, mem.legend) == (24 * 1024**3, "24.0G", "host total")


def test_share_gives_content_widths_when_they_fit() -> None:
    assert _share({"name": 9, "image": 11}, 40) == {"name": 20, "image": 11}
    assert _share({"name": 30, "image": 11}, 41) == {"name": 30, "image": 11}


def test_share_keeps_the_short_content_whole_when_tight() -> None:
    # 120 columns: 28 cells for both, but never less than the former 20 + 10 together.
    assert _share({"name": 9, "image": 27}, 28) == {"name": 9, "image": 21}
    assert _share({"name": 17, "image": 11}, 28) == {"name": 19, "image": 11}
    # Both long: the name keeps its former 20 cells, the image its former 10.
    assert _share({"name": 40, "image": 11}, 28) == {"name": 20, "image": 10}
    assert _share({"name": 19, "image": 40}, 28) == {"name": 19, "image": 11}
    # No room at all (80 columns scroll sideways): 30 cells shared by content, name first.
    assert _share({"name": 40, "image": 27}, 0) == {"name": 20, "image": 10}
    assert _share({"name": 6, "image": 11}, -5) == {"name": 19, "image": 11}
