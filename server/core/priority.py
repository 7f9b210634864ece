"""Ask the kernel to run the service ahead of the engine's bursts of work.

Starting and stopping containers keeps dockerd, containerd and runc busy on every core; a
service at the default priority then waits in the run queue for tens of milliseconds before
it may answer a client. Raising its priority keeps answers prompt while the engine works
(the engine still gets every cycle the service does not use: the service is mostly idle).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["apply_priority"]

logger = logging.getLogger("server.priority")

AUTOGROUP = Path("/proc/self/autogroup")


def apply_priority(nice: int, *, autogroup: Path = AUTOGROUP) -> list[str]:
    """Set this process's nice value (and its autogroup's, when it leads its own session).

    Call it before any thread starts: Linux keeps the value per thread and new threads
    inherit it from their creator. With the kernel's autogroup scheduling, nice only ranks
    threads of one session against each other; sessions compete by the autogroup's nice,
    which is changed only when this process leads its session (a service under systemd, in a
    container or started with setsid), never a user's shell session. Returns what was changed.
    """
    if nice == 0:
        return []
    changed: list[str] = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        changed.append(f"nice {nice}")
    except OSError as err:
        # Expected for an unprivileged user or in a container: priority then comes from the
        # unit's Nice=/CPUWeight= or the container's CPU shares, so this is not a warning.
        logger.info(
            "could not set CPU priority nice=%d (%s): answers may wait behind the "
            "engine on a busy host; run as root, grant CAP_SYS_NICE, give the unit "
            "Nice= or the container CPU shares, or set server.nice to 0",
            nice,
            err.strerror,
        )
        return changed
    if os.getsid(0) == os.getpid() and autogroup.exists():
        try:
            autogroup.write_text(f"{nice}\n")
            changed.append(f"autogroup nice {nice}")
        except OSError as err:
            logger.info("could not set the session's autogroup priority (%s)", err.strerror)
    logger.info("CPU priority raised: %s", ", ".join(changed))
    return changed
