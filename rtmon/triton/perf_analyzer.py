"""Triton's perf_analyzer as a second opinion on a served model: found, run, its CSV read.

perf_analyzer (the `perf-analyzer` wheel, a C++ binary) sends requests of zeros at a fixed
concurrency from its own threads and reports client-side throughput and latency percentiles;
it never runs rtmon's letterbox or NMS, so its figures are the server's side of the story.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import shutil
import subprocess
from pathlib import Path

# perf_analyzer's CSV (`-f`): latencies and times in microseconds.
_LATENCY_COLUMNS = {"p50 latency": "p50_ms", "p90 latency": "p90_ms", "p95 latency": "p95_ms", "p99 latency": "p99_ms",
                    "Server Queue": "server_queue_ms", "Server Compute Infer": "server_compute_ms"}


def find() -> tuple[Path | None, str]:
    """(the perf_analyzer binary, "") or (None, why it cannot run here)."""
    spec = importlib.util.find_spec("perf_analyzer")
    candidates = [Path(spec.origin).parent / "bin" / "perf_analyzer"] if spec and spec.origin else []
    on_path = shutil.which("perf_analyzer")
    candidates += [Path(on_path)] if on_path else []
    for binary in candidates:
        if not binary.is_file():
            continue
        try:
            probe = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
        except OSError as exc:
            return None, f"{binary} does not start ({exc.strerror or exc})"
        output = (probe.stdout + probe.stderr).strip()
        if "GLIBC" in output or "error while loading" in output:
            return None, f"{binary} does not start here: {output.splitlines()[0][:200]}"
        return binary, ""
    return None, "perf_analyzer is not installed (pip install perf-analyzer; its wheel needs glibc ≥ 2.38)"


def run(binary: Path, address: str, model: str, concurrency: int, csv_path: Path, shared_memory: bool,
        window_ms: int = 1500, timeout_s: float = 45) -> dict:
    """One perf_analyzer measurement at `concurrency`; its CSV row, or {"error": ...}."""
    command = [
        str(binary), "-m", model, "-u", address, "-i", "grpc", "--concurrency-range", f"{concurrency}:{concurrency}",
        "--input-data", "zero", "--shared-memory", "system" if shared_memory else "none",
        "--measurement-interval", str(window_ms), "--max-trials", "5", "-f", str(csv_path),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"concurrency": concurrency, "error": f"no stable measurement within {timeout_s:.0f} s"}
    rows = parse_csv(csv_path.read_text()) if done.returncode == 0 and csv_path.is_file() else []
    if not rows:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return {"concurrency": concurrency, "error": last[0][:300]}
    return rows[0]


def parse_csv(text: str) -> list[dict]:
    """perf_analyzer's `-f` CSV → one dict per concurrency, in milliseconds, sorted."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        if not raw.get("Concurrency"):
            continue
        row = {"concurrency": int(raw["Concurrency"]), "fps": float(raw["Inferences/Second"])}
        for column, key in _LATENCY_COLUMNS.items():
            if raw.get(column) not in (None, ""):
                row[key] = float(raw[column]) / 1000
        rows.append(row)
    return sorted(rows, key=lambda r: r["concurrency"])
