"""The soak's verdict, on synthetic readings: memory and drops compared first minute to last."""

from __future__ import annotations

from rtmon.bench.soak import checks, markdown


def _samples(rss_end: float, gpu_end: float, drops_per_s: tuple[float, float], minutes: float = 4.0) -> list[dict]:
    out, dropped = [], 0.0
    steps = int(minutes * 60 / 5)
    for i in range(steps + 1):
        t = i * 5.0
        share = i / steps
        if i:
            dropped += 5 * (drops_per_s[0] if t <= minutes * 30 else drops_per_s[1])
        out.append({"t_s": t, "main_rss_mib": 700.0, "engines": {"fast": {
            "rss_mib": 800 + (rss_end - 800) * share, "gpu_mib": 900 + (gpu_end - 900) * share,
            "processed": i * 150, "dropped": dropped, "state": "running"}}})
    return out


def test_flat_memory_and_no_drops_pass():
    result = checks(_samples(800.0, 900.0, (0.0, 0.0)))
    assert [c["what"] for c in result] == ["main process resident memory (MiB)", "fast resident memory (MiB)",
                                           "fast GPU memory (MiB, NVML)", "fast frames dropped per minute"]
    assert all(c["flat"] for c in result)


def test_memory_that_grows_more_than_two_percent_fails():
    result = {c["what"]: c for c in checks(_samples(880.0, 900.0, (0.0, 0.0)))}
    rss = result["fast resident memory (MiB)"]
    assert not rss["flat"] and rss["first"] < rss["last"]
    assert result["fast GPU memory (MiB, NVML)"]["flat"]


def test_drops_that_grow_fail_and_a_report_says_so():
    result = {c["what"]: c for c in checks(_samples(800.0, 900.0, (1.0, 2.0)))}
    drops = result["fast frames dropped per minute"]
    assert not drops["flat"] and drops["first"] == 60.0 and drops["last"] == 120.0
    report = {"created": "2026-12-01T00:00:00+00:00", "device": {"gpu": None, "cpu": "x86_64", "cpu_count": 2,
              "python": "3.11"}, "model": {"label": "m", "sha256": "0" * 64, "trained": True},
              "source": {"sources": ["sample"]}, "minutes_per_phase": 4, "sample_s": 5, "rule": "r", "pass": False,
              "phases": [{"phase": "record", "engines": ["fast"], "sources": 1, "checks": list(result.values())}]}
    text = markdown(report)
    assert "**FAIL**" in text and "| fast frames dropped per minute | 60.0 | 120.0 | **no** |" in text
