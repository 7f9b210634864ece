"""Crasher flow: exits with a non-zero code when told to crash (for crash reporting)."""

import logging
import os
import sys

import flowrt

log = logging.getLogger("crasher")


@flowrt.command("crash")
def crash(message):
    code = int(message.get("exit_code", 3))
    log.error("crashing on request with exit code %d", code)
    sys.stdout.flush()
    os._exit(code)


@flowrt.command("ping")
def ping(message):
    return {"pong": True, "crasher": True}
