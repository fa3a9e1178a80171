#!/usr/bin/env python3
"""How long rtmon's main process is awake for each answer: the runner's receive window
(`rtmon.runner.supervisor.receive_window`) replayed over a single-stream report's own per-frame
latencies, each frame against the `RECENT` before it, with the window capped (today's rule) and
uncapped (the whole range of the recent answers, the rule before 2026-12-07).

    python scripts/spin_replay.py REPORT/bench.json [...] [--spin-us 300] [--out FILE]

Per engine: the share of its frame time the main process spins (from the window's opening, or
the hand-over if later, to the answer or the window's end), and the share of answers that
arrive inside the window. A replay of a rule over measured latencies, not a measurement of the
spin: the engines' latencies themselves came from runs with the rule of the report's commit.
Writes JSON (stdout, or --out); a missing or unreadable report is a one-line error, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmon.runner.supervisor import RECENT, SPIN_SHARE, receive_window


def replay(latencies_ms: list[float], spin_s: float, share: float) -> dict:
    awake, inside = [], []
    seconds = [v / 1e3 for v in latencies_ms]
    for i in range(RECENT, len(seconds)):
        low, high = receive_window(seconds[i - RECENT:i], spin_s, share)
        latency = seconds[i]
        awake.append(max(0.0, min(latency, high) - max(low, 0.0)) / latency)
        inside.append(low <= latency <= high)
    return {"frames": len(awake), "awake_share": statistics.fmean(awake),
            "answers_inside": sum(inside) / len(inside)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench.json of single-stream reports")
    parser.add_argument("--spin-us", type=float, default=300.0, help="engine.receive_spin_us of the runs (default 300)")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of standard output")
    args = parser.parse_args(argv)
    rows = []
    for path in args.reports:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        for engine in report.get("engines", []):
            latencies = engine.get("latencies_ms") or []
            if engine.get("latencies_every") != 1 or len(latencies) <= RECENT:
                continue  # thinned or too short: not every frame's latency is there
            rows.append({"report": str(path), "engine": engine["name"],
                         "capped": replay(latencies, args.spin_us / 1e6, SPIN_SHARE),
                         "uncapped": replay(latencies, args.spin_us / 1e6, math.inf)})
    text = json.dumps({"spin_us": args.spin_us, "recent": RECENT, "share": SPIN_SHARE, "engines": rows}, indent=1)
    if args.out:
        try:
            args.out.write_text(text + "\n")
        except OSError as exc:
            print(f"error: {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
