"""Host CPU and memory for the detail view, read with psutil."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HostSample", "probe_host"]


@dataclass(frozen=True, slots=True)
class HostSample:
    """Host CPU and memory at one moment."""

    cpu_percent: float
    cores: int
    memory_used: int
    memory_total: int
    memory_percent: float


def probe_host() -> HostSample:
    """Read the host's CPU and memory (fast /proc reads; callers still run it off the loop)."""
    import psutil  # only the detail view needs it: keep it out of start-up

    mem = psutil.virtual_memory()
    return HostSample(
        psutil.cpu_percent(None), psutil.cpu_count() or 1, mem.used, mem.total, mem.percent
    )
