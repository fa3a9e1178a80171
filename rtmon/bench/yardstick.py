"""The yardstick check: is rtmon's engine ultralytics as users run it? FPS and P50 within 3% of
the plain script's (`rtmon.bench.reference`), judged round by round.

In single-stream the engine and its plain script alternate (script, engine, script, …, script),
so a machine whose speed drifts within seconds slows both alike: each engine segment is set
against the script's segments just before and after it, and the check takes the median of those
ratios. They alternate in several *pairs of processes*, each pair a fresh engine process and a
fresh script process: a process's own speed depends on where its memory landed (address-space
randomization, the allocator's heap), which no number of rounds inside one process averages
out. Two identical plain-ultralytics processes alternating (`scripts/drift_probe.py`) differed
by 6.6% on a 2-core CPU (95% interval of the median 6.0–8.5%; their `predict` took 7,195 and
4,396 minor page faults a frame) and by 3.7% on the H200, both on 2026-12-04
(docs/benchmarks/cpu-2026-12-04). pyperf and JMH run several processes for the same reason. The interval the check reports is a bootstrap over
processes, then rounds: how precisely this run, processes included, could tell.
"""

from __future__ import annotations

import itertools

import numpy as np

from rtmon import engines as registry
from rtmon.bench.reference import STAGES, run_summary

WITHIN = 0.03  # the yardstick's tolerance on FPS and P50


def rounds(engine: dict, ref: dict) -> list[dict]:
    """Segment by segment, the engine's FPS and P50 against the mean of the reference segments
    just before and just after it, within each pair of processes (`process`: which pair; a
    pair has one reference segment more than engine segments). Empty where they did not
    alternate so."""
    segments, runs = engine.get("segments") or [], ref.get("runs") or []
    out = []
    for p in sorted({s.get("process", 0) for s in segments}):
        mine = [s for s in segments if s.get("process", 0) == p]
        theirs = [r for r in runs if r.get("process", 0) == p]
        if len(theirs) != len(mine) + 1:
            return []
        for k, seg in enumerate(mine):
            ref_fps, ref_p50 = (_mean_of(theirs[k : k + 2], key) for key in ("fps", "p50_ms"))
            out.append({"process": p, "engine_fps": seg["fps"], "reference_fps": ref_fps,
                        "fps_ratio": seg["fps"] / ref_fps if seg.get("fps") and ref_fps else None,
                        "engine_p50_ms": seg.get("p50_ms"), "reference_p50_ms": ref_p50,
                        "p50_ratio": seg["p50_ms"] / ref_p50 if seg.get("p50_ms") and ref_p50 else None})
    if {r.get("process", 0) for r in runs} - {r["process"] for r in out}:
        return []  # a pair of processes with reference segments and no engine segment
    return out


def undecided(parts: list, processes: list[int], runs: list[dict]) -> bool:
    """While the segments alternate: can the check not tell yet? True while either ratio's 95%
    interval straddles a 3% bound (`decided`). `parts`: the engine's segments so far
    (`Measured`), `processes`: the pair each ran in; `runs`: the script's
    (`PlainSession.runs`, each with its `process`), the segments that close each pair included."""
    segments = [{"fps": p.fps, "p50_ms": float(np.percentile(p.latency_ms, 50)), "process": k}
                for p, k in zip(parts, processes, strict=True) if p.frames]
    per_run = [run_summary(r) for r in runs if r["latencies_ms"]]
    pairs = paired(rounds({"segments": segments}, {"runs": per_run}))
    return pairs is None or any(decided(pairs[f"{k}_ci95"]) is None for k in ("fps", "p50"))


def segment_edges(segments: list[list[float]]) -> dict | None:
    """How a segment's first, second and last timed frames compare with the rest of it: the mean,
    over segments (of 4 frames or more), of each one's latency less its segment's median (ms). A
    side whose first frames pay for having idled through the other side's segment shows here."""
    rows = [np.asarray(seg, float) for seg in segments if len(seg) >= 4]
    if not rows:
        return None
    over = {name: float(np.mean([r[i] - np.median(r) for r in rows])) for name, i in
            (("first_ms", 0), ("second_ms", 1), ("last_ms", -1))}
    return {**over, "segments": len(rows)}


def engine_segments(engine: dict) -> list[list[float]]:
    """The engine's per-frame latencies, segment by segment (where every frame was stored)."""
    lat, segs = engine.get("latencies_ms") or [], engine.get("segments") or []
    if engine.get("latencies_every") != 1 or sum(seg["frames"] for seg in segs) != len(lat):
        return []
    cuts = np.cumsum([0, *(seg["frames"] for seg in segs)])
    return [lat[a:b] for a, b in itertools.pairwise(cuts.tolist())]


def stages_beside(engine: dict, ref: dict) -> dict | None:
    """Stage by stage, the engine against its plain script (mean ms per frame): ultralytics' own
    three stages, the rest of the frame inside the engine's process (`outside`: the rest of
    `predict` and getting the boxes out), and the hand-over, which the plain script does not have."""
    mine, theirs = engine.get("stages_ms") or {}, ref.get("stages_ms") or {}
    mean = (engine.get("latency_ms") or {}).get("mean")
    if not theirs or mean is None or any(mine.get(k) is None for k in (*STAGES, "handover")):
        return None
    outside = mean - mine["handover"] - sum(mine[k] for k in STAGES)
    out = {k: {"engine": mine[k], "reference": theirs[k]} for k in STAGES}
    out["outside"] = {"engine": outside, "reference": theirs.get("outside")}
    out["handover"] = {"engine": mine["handover"], "reference": 0.0}
    out["frame"] = {"engine": mean, "reference": (ref.get("latency_ms") or {}).get("mean")}
    return out


def rounds_rule(bench) -> str:
    """How a single-stream run alternated (`bench`: the bench settings), for the report."""
    decide = " or the check could not yet decide (an interval straddling a 3% bound)" if bench.until_decided else ""
    pairs = bench.reference_processes
    per = -(-bench.reference_rounds // pairs)
    return (f"Rounds: {pairs} pair{'s' if pairs > 1 else ''} of fresh processes (an engine process and a plain "
            f"script's), {per} rounds each; another pair while the engine was not yet stable{decide}, up to "
            f"{max(bench.max_duration_s, bench.min_duration_s):g} s of the engine's time.")


def _mean_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key)]
    return float(np.mean(values)) if values else None


def paired(by_round: list[dict]) -> dict | None:
    """The medians of the round-by-round FPS and P50 ratios: the comparison a drifting machine
    leaves standing (each pair of segments ran seconds apart, the run as a whole did not), each
    with its 95% bootstrap interval over the pairs of processes, then their rounds — how
    precisely this machine could tell — and each pair's own medians. None with fewer than two
    rounds."""
    kept = [r for r in by_round if r.get("fps_ratio") and r.get("p50_ratio")]
    if len(kept) < 2:
        return None
    fps, p50 = ([r[key] for r in kept] for key in ("fps_ratio", "p50_ratio"))
    groups = [r.get("process", 0) for r in kept]
    each = [{"process": p, "rounds": sum(g == p for g in groups),
             "fps_ratio": float(np.median([v for v, g in zip(fps, groups, strict=True) if g == p])),
             "p50_ratio": float(np.median([v for v, g in zip(p50, groups, strict=True) if g == p]))}
            for p in sorted(set(groups))]
    return {"fps_ratio": float(np.median(fps)), "p50_ratio": float(np.median(p50)), "rounds": len(kept),
            "processes": len(each), "fps_ci95": median_interval(fps, groups), "p50_ci95": median_interval(p50, groups),
            "per_process": each}


def decided(interval: list[float] | None) -> str | None:
    """What a ratio's 95% interval says about the tolerance: "within" (all of it inside ±3%),
    "outside" (all of it beyond), or None: it straddles a bound, and the run cannot tell."""
    if not interval:
        return None
    lo, hi = interval
    if lo >= 1 - WITHIN and hi <= 1 + WITHIN:
        return "within"
    if hi < 1 - WITHIN or lo > 1 + WITHIN:
        return "outside"
    return None


def median_interval(values: list[float], groups: list[int] | None = None, resamples: int = 2000) -> list[float]:
    """The 95% bootstrap interval of the median of `values` (a fixed seed: the same report gives
    the same interval). With `groups` (each value's pair of processes) of more than one kind, a
    two-stage bootstrap: the groups drawn with replacement, then each drawn group's values, so
    the interval carries the spread between processes as well as between rounds."""
    rng = np.random.default_rng(0)
    data = np.asarray(values, float)
    labels = sorted(set(groups or []))
    if len(labels) < 2:
        return [float(v) for v in np.percentile(np.median(rng.choice(data, (resamples, len(data))), axis=1), [2.5, 97.5])]
    members = [data[np.asarray(groups) == g] for g in labels]
    medians = np.empty(resamples)
    for i in range(resamples):
        drawn = [members[j] for j in rng.integers(0, len(members), len(members))]
        medians[i] = np.median(np.concatenate([rng.choice(m, len(m)) for m in drawn]))
    return [float(v) for v in np.percentile(medians, [2.5, 97.5])]


def yardstick(engines: list[dict], refs: list[dict], scenario: str) -> dict:
    """Each engine with a reference against it: FPS and P50 within 3%. `pass` needs the
    baseline's check (and every other one made) to pass."""
    checks = []
    for ref in refs:
        engine = next((e for e in engines if e["name"] == ref["for"]), None)
        if engine is None or not engine.get("fps") or not ref.get("fps"):
            continue
        fps_ratio = engine["fps"] / ref["fps"]
        e50, r50 = (engine.get("latency_ms") or {}).get("p50"), (ref.get("latency_ms") or {}).get("p50")
        p50_ratio = e50 / r50 if e50 and r50 else None
        by_round = rounds(engine, ref)
        pairs = paired(by_round)
        if pairs:  # what the rounds' 95% intervals say about the 3% bound (None: they cannot tell)
            pairs["decides"] = {k: decided(pairs[f"{k}_ci95"]) for k in ("fps", "p50")}
        judged = pairs or {"fps_ratio": fps_ratio, "p50_ratio": p50_ratio}
        ok = bool(abs(judged["fps_ratio"] - 1) <= WITHIN and judged["p50_ratio"] is not None
                  and abs(judged["p50_ratio"] - 1) <= WITHIN)
        checks.append({"engine": engine["name"], "reference": ref["name"], "fps_ratio": fps_ratio,
                       "p50_ratio": p50_ratio, "paired": pairs, "judged_on": "rounds" if pairs else "whole run",
                       "pass": ok, "rounds": by_round, "stages_ms": stages_beside(engine, ref),
                       "edges": {"engine": segment_edges(engine_segments(engine)),
                                 "reference": segment_edges(ref.get("segment_latencies_ms") or [])}})
    base = next((c for c in checks if registry.is_baseline(c["engine"])), None)
    return {"pass": bool(base and all(c["pass"] for c in checks)),
            "baseline_vs_reference": base,
            "checks": checks,
            "rule": f"an engine's FPS and P50 within {WITHIN:.0%} of the plain ultralytics script's ({scenario}), "
                    "judged on the medians of the round-by-round ratios where the two alternated (each engine "
                    "segment against the script's segments just before and after it, in pairs of fresh processes), "
                    "else on the whole run"}
