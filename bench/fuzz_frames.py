"""Fuzz the flow-channel frame decoder: 100,000 generated inputs by default; prints a summary.

Usage: .venv/bin/python bench/fuzz_frames.py [--inputs N] [--seed S] [--max-bytes B]
       .venv/bin/python bench/fuzz_frames.py --amplification   (1 MiB bodies: memory, time)
Exit status 1 when any input raised anything but FrameError.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core.errors import FrameError  # noqa: E402
from server.core.frame_values import max_values, too_many_values  # noqa: E402
from server.core.frames import decode_body  # noqa: E402
from tests.fuzz.amplification import at_the_cap, legit, uncapped  # noqa: E402
from tests.fuzz.frame_fuzz import run_fuzz  # noqa: E402

_MIB = 1 << 20


def _peak(decode: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        decode()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _best_ms(run: Callable[[], object], repeat: int = 7) -> float:
    """CPU time of the fastest of `repeat` runs (the machine is shared: CPU time, and the least
    disturbed run, are the least affected by other work)."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return round(min(times) * 1000, 2)


def amplification() -> dict[str, dict[str, object]]:
    """Per 1 MiB body: peak allocation over body size of json.loads alone (no cap) and of
    decode_body (capped), the cap check's time, and decode_body's and json.loads' times."""
    limit = max_values(_MIB)
    shapes = {
        **{f"{name}, 1 MiB": body for name, body in uncapped(_MIB).items()},
        **{f"{name}, at the cap": body for name, body in at_the_cap(_MIB, limit).items()},
        **legit(_MIB),
    }
    out: dict[str, dict[str, object]] = {}
    for name, body in shapes.items():
        decode, loads = partial(_decode, body), partial(_loads_or_none, body)
        out[name] = {
            "bytes": len(body),
            "outcome": "decoded" if isinstance(decode(), dict) else "refused",
            "json.loads peak/size": round(_peak(loads) / len(body), 2),
            "decode_body peak/size": round(_peak(decode) / len(body), 2),
            "check ms": _best_ms(partial(too_many_values, body, limit)),
            "decode_body ms": _best_ms(decode),
            "json.loads ms": _best_ms(loads),
        }
    return out


def _decode(body: bytes) -> object:
    try:
        return decode_body(body, _MIB)
    except FrameError as err:
        return err


def _loads_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def main() -> int:
    """Run the fuzz and print one JSON line of results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-bytes", type=int, default=4096)
    parser.add_argument("--amplification", action="store_true")
    args = parser.parse_args()
    if args.amplification:
        sys.stdout.write(json.dumps(amplification(), indent=1) + "\n")
        return 0
    report = asyncio.run(run_fuzz(args.inputs, seed=args.seed, max_bytes=args.max_bytes))
    summary = {
        "inputs": report.inputs,
        "frames_decoded": report.frames,
        "rejected_total": sum(report.rejected.values()),
        "rejected_by_reason": dict(report.rejected.most_common(8)),
        "unexpected": report.unexpected[:10],
        "peak_bytes_by_kind": report.peaks,
        "max_bytes": args.max_bytes,
        "seconds": round(report.seconds, 1),
    }
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 1 if report.unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
