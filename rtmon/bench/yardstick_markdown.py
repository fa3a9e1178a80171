"""The yardstick's section of bench.md: the plain script's rows, the check, pair by pair, stage by
stage, and the segments' edges (`rtmon.bench.yardstick` computes them, this only writes them)."""

from __future__ import annotations

import numpy as np

from rtmon.formatting import fmt


def reference_markdown(report: dict) -> list[str]:
    refs = report.get("reference") or []
    yard = report.get("yardstick") or {}
    if not refs:
        return ["## Yardstick", "", f"Not checked in this report: {yard.get('rule', 'no reference run')}.", ""]
    lines = ["## Yardstick: ultralytics as users run it", "",
             "`rtmon/bench/plain_predict.py`, a plain subprocess with no rtmon code on its timed path, timed "
             "`predict` one frame at a time on the same decoded frames. "
             f"Rule: {yard.get('rule', '')}.", "",
             "| reference | yardstick of | FPS | mean | P50 | P95 | P99 | frames | FPS of each segment "
             "(alternating with the engine's) | call |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in refs:
        lat = r.get("latency_ms") or {}
        each = _spread([run["fps"] for run in r.get("runs", [])], ".1f")
        drift = f" (drift {r['drift_pct']:.1f}%)" if r.get("drift_pct") is not None else ""
        lines.append(f"| {r['name']} | `{r['for']}` | {fmt(r['fps'])} | {fmt(lat.get('mean'), '.2f')} | "
                     f"{fmt(lat.get('p50'), '.2f')} | {fmt(lat.get('p95'), '.2f')} | {fmt(lat.get('p99'), '.2f')} | "
                     f"{r['frames']} | {each}{drift} | `{r['call']}` |")
    lines += ["", "| engine | reference | FPS ratio, whole run | P50 ratio, whole run | FPS ratio, round by round "
              "| P50 ratio, round by round | judged on | check |",
              "|---|---|---:|---:|---|---|---|---|"]
    for c in yard.get("checks", []):
        by_round = [_spread([r.get(k) for r in c.get("rounds") or []], ".3f") for k in ("fps_ratio", "p50_ratio")]
        pairs = c.get("paired") or {}
        for i, key in enumerate(("fps_ci95", "p50_ci95")):
            if pairs.get(key):
                lo, hi = pairs[key]
                by_round[i] += f" (95% interval of the median {lo:.3f} to {hi:.3f})"
        lines.append(f"| `{c['engine']}` | {c['reference']} | {c['fps_ratio']:.3f} | {fmt(c['p50_ratio'], '.3f')} | "
                     f"{by_round[0]} | {by_round[1]} | {c.get('judged_on', 'whole run')} | "
                     f"{'PASS' if c['pass'] else '**FAIL**'} |")
    lines += ["", "Round by round: each engine segment's FPS and P50 against the mean of the reference segments just "
              "before and after it, in the same pair of processes; the check takes the median of those ratios, which a machine whose speed drifts "
              "during the run leaves standing (the whole run's ratios pool frames from its fast and slow spells)."]
    if yard.get("rounds_rule"):
        lines += ["", yard["rounds_rule"]]
    beside = [c for c in yard.get("checks", []) if c.get("stages_ms")]
    if beside:
        lines += ["", "Stage by stage (mean ms per frame): ultralytics' own stage times (`results[0].speed`) in the "
                  "engine's process and in the plain script; *outside* is the rest of the frame there (the rest of "
                  "`predict`, and the boxes' copy to the host in the engine); the hand-over is rtmon's alone.", "",
                  "| engine | | preprocess | inference | postprocess | outside | hand-over | frame |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        keys = ("preprocess", "inference", "postprocess", "outside", "handover", "frame")
        for c in beside:
            st = c["stages_ms"]
            for side, label in (("engine", f"`{c['engine']}`"), ("reference", "plain script")):
                lines.append(f"| {label if side == 'engine' else ''} | {label if side == 'reference' else 'engine'} | "
                             + " | ".join(fmt(st[k][side], ".3f") for k in keys) + " |")
    lines += _pairs_markdown(yard.get("checks", []), report.get("engines") or [], refs)
    lines += _edges_markdown(yard.get("checks", []), report.get("engines") or [])
    lines += ["", f"Yardstick check: **{'PASS' if yard.get('pass') else 'FAIL'}**.", ""]
    return lines


def _pairs_markdown(checks: list[dict], engines: list[dict], refs: list[dict]) -> list[str]:
    """Pair by pair of processes: the medians of its rounds, and each side's minor page faults per
    frame — how differently two processes of the same code can run."""
    rows = [c for c in checks if ((c.get("paired") or {}).get("per_process"))]
    if not rows:
        return []
    lines = ["", "Pair by pair: each pair is a fresh engine process and a fresh plain-script process; the medians of "
             "its rounds, and each process's minor page faults per frame (pages the kernel had to map and zero for "
             "it; /proc/PID/stat, read between segments, untimed frames included):", "",
             "| engine | pair | rounds | FPS ratio | P50 ratio | engine's faults / frame | script's faults / frame |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in rows:
        engine = next((e for e in engines if e["name"] == c["engine"]), {})
        ref = next((r for r in refs if r.get("for") == c["engine"]), {})
        for k, each in enumerate(c["paired"]["per_process"]):
            faults = [_mean_faults(side, each["process"]) for side in (engine.get("segments"), ref.get("runs"))]
            name = f"`{c['engine']}`" if k == 0 else ""
            lines.append(f"| {name} | {each['process'] + 1} | {each['rounds']} | "
                         f"{each['fps_ratio']:.3f} | {each['p50_ratio']:.3f} | {fmt(faults[0], '.0f')} | "
                         f"{fmt(faults[1], '.0f')} |")
    return lines


def _mean_faults(segments: list[dict] | None, process: int) -> float | None:
    values = [s["faults_per_frame"] for s in segments or [] if s.get("process", 0) == process
              and s.get("faults_per_frame") is not None]
    return float(np.mean(values)) if values else None


def _edges_markdown(checks: list[dict], engines: list[dict]) -> list[str]:
    """Each side's first, second and last timed frames of a segment against the segment's median:
    whether either side pays for idling through the other's segments (both begin after the same
    untimed frames)."""
    rows = [c for c in checks if (c.get("edges") or {}).get("engine") and (c.get("edges") or {}).get("reference")]
    if not rows:
        return []
    untimed = {e["name"]: (e.get("warmup") or {}).get("per_segment", 0) for e in engines}
    lines = ["", "A segment's first, second and last timed frames, each less its segment's median (mean ms over "
             "the segments; each side's segments begin with the same untimed frames):", "",
             "| engine | | untimed first | first | second | last | segments |", "|---|---|---:|---:|---:|---:|---:|"]
    for c in rows:
        for side, label in (("engine", "engine"), ("reference", "plain script")):
            e = c["edges"][side]
            name = f"`{c['engine']}`" if side == "engine" else ""
            lines.append(f"| {name} | {label} | {untimed.get(c['engine'], 0)} | {e['first_ms']:+.2f} | "
                         f"{e['second_ms']:+.2f} | {e['last_ms']:+.2f} | {e['segments']} |")
    return lines


def _spread(values: list, spec: str, listed: int = 8) -> str:
    """Up to `listed` values in order; more as their count, median and range."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) <= listed:
        return ", ".join(fmt(v, spec) for v in values)
    return (f"{len(values)} segments: median {fmt(float(np.median(values)), spec)}, "
            f"{fmt(min(values), spec)} to {fmt(max(values), spec)}")
