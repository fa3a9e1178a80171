#!/usr/bin/env python3
"""How far apart can two identical runs of plain ultralytics be on this machine? An A/A test.

    python scripts/drift_probe.py [--rounds 24] [--segment-s 0.4] [--modes free,shared,one] [--b-env NAME=VALUE]
                                  [--b-script PATH] [--pairs N] [--set section.key=value]
                                  [--out drift.json]

The yardstick check compares rtmon's baseline with the plain ultralytics script segment by
segment (`rtmon bench --scenario single-stream`). Here *both* sides are the plain script
(`rtmon/bench/plain_predict.py`, two processes, A and B) alternating the same way (A, B, A, …,
A), so any difference between them is the machine's, or the two processes' own (where their
memory landed: compare their page faults). Per mode, where the two processes may run:

- `free`: anywhere (as the bench runs today);
- `shared`: both on the same few CPUs (`--cpus`, default four of them);
- `one`: both on the same single CPU.

With `--b-env`, B's process alone gets that environment: an A/B of the setting, both sides still
the plain script (e.g. glibc's malloc tunables, to see what its heap trimming costs). With
`--b-script`, B runs another script of the same protocol: `scripts/engine_like_predict.py` is the
plain script inside an rtmon engine process's surroundings (an A/B of the process, not the class).

For each mode: B's round-by-round FPS and P50 ratio against A (median and its 95% interval,
as the yardstick check computes them), each process's ultralytics stage means, segment-to-segment
spread and minor page faults per frame, and the CPU each was last seen on after each segment (/proc/PID/stat).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")


def last_cpu(pid: int) -> int:
    """The CPU the process last ran on (field 39 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[36])


def run_mode(mode: str, cpus: tuple[int, ...] | None, ref, frames: Path, settings, rounds: int, segment_s: float,
             warmup: int, b_env: dict[str, str] | None = None, b_script: Path | None = None) -> dict:
    from rtmon.bench import reference as plain
    from rtmon.bench import yardstick

    a = plain.PlainSession(ref, frames, settings, 16, cpus)
    b = plain.PlainSession(ref, frames, settings, 16, cpus, b_env, b_script or plain.SCRIPT)
    cpu_seen = {"a": [], "b": []}
    try:
        for k in range(rounds + 1):
            a.segment(1, segment_s, 30.0, warmup)
            cpu_seen["a"].append(last_cpu(a._proc.pid))
            if k < rounds:
                b.segment(1, segment_s, 30.0, warmup)
                cpu_seen["b"].append(last_cpu(b._proc.pid))
    finally:
        a.close()
        b.close()
    row_a, row_b = plain.row(ref, a.runs), plain.row(ref, b.runs)
    row_b["segments"] = row_b["runs"]
    pairs = yardstick.paired(yardstick.rounds(row_b, row_a))
    return {"mode": mode, "cpus": sorted(cpus) if cpus else None, "b_env": b_env or None,
            "b_script": str(b_script) if b_script else None, "a_fps": row_a["fps"], "b_fps": row_b["fps"],
            "a_faults_per_frame": row_a["faults_per_frame"], "b_faults_per_frame": row_b["faults_per_frame"],
            "a_stages_ms": row_a["stages_ms"], "b_stages_ms": row_b["stages_ms"],
            "a_drift_pct": row_a["drift_pct"], "b_drift_pct": row_b["drift_pct"], "b_vs_a": pairs,
            "a_segments_fps": [round(r["fps"], 1) for r in row_a["runs"]],
            "b_segments_fps": [round(r["fps"], 1) for r in row_b["runs"]], "cpu_seen": cpu_seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--segment-s", type=float, default=0.4)
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames at each segment's start")
    parser.add_argument("--modes", default="free,shared,one")
    parser.add_argument("--cpus", default="", help="the shared mode's CPUs (default: the last four this process may use)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the sample clip is (default: rtmon's cache)")
    parser.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for B's process only (an A/B of that setting instead of A/A)")
    parser.add_argument("--b-script", type=Path, default=None,
                        help="B runs this script instead of the plain one (same protocol; e.g. scripts/engine_like_predict.py)")
    parser.add_argument("--pairs", type=int, default=1, help="fresh pairs of processes per mode (default 1)")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="section.key=value",
                        help="a setting for both sides, as rtmon's --set (e.g. model.imgsz=64 on a CPU: a network whose "
                             "forward costs little, so the host's dispatch of its layers is most of predict, as on a GPU)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.b_script is not None and not args.b_script.is_file():
        parser.error(f"--b-script: no such file: {args.b_script}")
    if args.pairs < 1:
        parser.error("--pairs: give at least 1")
    bad = next((e for e in args.b_env if "=" not in e or not e.split("=", 1)[0]), None)
    if bad is not None:
        parser.error(f"--b-env: give NAME=VALUE, not {bad!r}")
    b_env = dict(e.split("=", 1) for e in args.b_env)
    unknown = [m for m in args.modes.split(",") if m not in ("free", "shared", "one")]
    if unknown:
        parser.error(f"--modes: unknown mode {unknown[0]!r} (known: free, shared, one)")
    from rtmon.processes import parse_cpu_list

    try:
        listed = parse_cpu_list(args.cpus) if args.cpus else None
    except ValueError:
        parser.error(f"--cpus: give CPU numbers and ranges separated by commas (e.g. 4-15), not {args.cpus!r}")
    from rtmon.bench import reference as plain
    from rtmon.bench.harness import decode_pool
    from rtmon.config import load_settings, parse_set_options
    from rtmon.errors import UserError
    from rtmon.models import resolve_model
    from rtmon.preparation import cache_dir
    from rtmon.sources import resolve_source

    try:
        settings = load_settings(None, parse_set_options(args.sets))
    except UserError as exc:
        parser.error(str(exc))
    model = resolve_model("demo", Path(settings.paths.engines_dir))
    ref = plain.references(model, settings)[0]
    allowed = sorted(os.sched_getaffinity(0))
    shared = tuple(listed) if listed else tuple(allowed[-4:])
    choice = {"free": None, "shared": shared, "one": (max(shared),)}
    pool = decode_pool([resolve_source("sample", args.cache_dir or cache_dir(settings))], 64)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtmon-drift-") as tmp:
        frames = plain.save_frames(pool, Path(tmp))
        for mode in args.modes.split(","):
            for pair in range(args.pairs):
                row = run_mode(mode, choice[mode], ref, frames, settings, args.rounds, args.segment_s, args.warmup, b_env,
                               args.b_script)
                row["pair"] = pair
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
