"""Fuzz the flow-channel frame decoder: 100,000 generated inputs by default; prints a summary.

Usage: .venv/bin/python bench/fuzz_frames.py [--inputs N] [--seed S] [--max-bytes B]
       .venv/bin/python bench/fuzz_frames.py --amplification   (decoded size of 1 MiB bodies)
Exit status 1 when any input raised anything but FrameError.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core.errors import FrameError  # noqa: E402
from server.core.frames import decode_body  # noqa: E402
from tests.fuzz.frame_fuzz import run_fuzz  # noqa: E402

_MIB = 1 << 20


def _bodies() -> dict[str, bytes]:
    """1 MiB JSON objects built to decode into as many Python objects as possible."""
    def fill(item: bytes) -> bytes:
        n = (_MIB - 10) // (len(item) + 1)
        return b'{"a":[' + b",".join([item] * n) + b"]}"

    keys = b",".join(b'"%d":0' % i for i in range(90_000))
    return {"one long string": b'{"a":"' + b"x" * (_MIB - 10) + b'"}',
            "list of empty strings": fill(b'""'), "list of ints": fill(b"0"),
            "list of floats": fill(b"1.5"), "object with 90,000 short keys": b"{" + keys + b"}",
            "list of empty lists": fill(b"[]"), "list of empty objects": fill(b"{}")}


def amplification() -> dict[str, float]:
    """Peak allocation of decode_body over body size, per body shape."""
    out: dict[str, float] = {}
    tracemalloc.start()
    for name, body in _bodies().items():
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            decode_body(body)
        except FrameError:
            pass
        out[name] = round((tracemalloc.get_traced_memory()[1] - base) / len(body), 1)
    tracemalloc.stop()
    return out


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
        "inputs": report.inputs, "frames_decoded": report.frames,
        "rejected_total": sum(report.rejected.values()),
        "rejected_by_reason": dict(report.rejected.most_common(8)),
        "unexpected": report.unexpected[:10], "peak_bytes_by_kind": report.peaks,
        "max_bytes": args.max_bytes, "seconds": round(report.seconds, 1),
    }
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 1 if report.unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
