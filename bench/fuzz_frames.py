"""Fuzz the flow-channel frame decoder: 100,000 generated inputs by default; prints a summary.

Usage: .venv/bin/python bench/fuzz_frames.py [--inputs N] [--seed S] [--max-bytes B]
Exit status 1 when any input raised anything but FrameError.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.frame_fuzz import run_fuzz  # noqa: E402


def main() -> int:
    """Run the fuzz and print one JSON line of results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-bytes", type=int, default=4096)
    args = parser.parse_args()
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
