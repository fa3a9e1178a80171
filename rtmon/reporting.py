"""What every report rtmon writes starts with (bench, concurrent, eval, a recording's figures):
the tool, the time, the machine, the code that measured, the model and the sources, in JSON and
in markdown."""

from __future__ import annotations

import platform
from datetime import datetime, timezone

import psutil

from rtmon import __version__, gpu
from rtmon.models import ModelRef
from rtmon.provenance import software, software_line
from rtmon.sources import SourceSpec


def header(model: ModelRef, specs: list[SourceSpec], source: str | None = None) -> dict:
    """What every report starts with: tool, time, machine, model, sources (`specs`, or, for
    frames that come from no source, `source` saying what they are)."""
    info = gpu.info()
    return {
        "rtmon": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {
            "gpu": info.name if info else None,
            "driver": info.driver if info else None,
            "gpu_memory_mib": info.memory_total_mib if info else None,
            "compute_capability": info.compute_capability if info else None,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": psutil.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(psutil.getloadavg()[0], 2),  # other work on the machine, for context
        },
        "software": software(),
        "model": {"label": model.label, "kind": model.kind, "sha256": model.sha256, "trained": model.trained},
        "source": ({"uri": specs[0].uri, "kind": specs[0].kind, "sources": [s.uri for s in specs]} if specs else
                   {"uri": source or "", "kind": "generated", "sources": [source or ""]}),
    }


def header_markdown(report: dict, title: str) -> list[str]:
    dev = report["device"]
    gpu_line = f"{dev['gpu']}, driver {dev['driver']}" if dev.get("gpu") else "none (CPU only)"
    code = software_line(report.get("software"))  # None in reports made before it was kept
    return [
        f"# {title} — {report['created']}",
        "",
        f"- GPU: {gpu_line}",
        f"- CPU: {dev['cpu']} × {dev['cpu_count']}, Python {dev['python']}"
        + (f", load average {dev['load_average_1m']} when the run began" if dev.get("load_average_1m") is not None else ""),
        *([code] if code else []),
        f"- model: {report['model']['label']} (sha256 {report['model']['sha256'][:12]})"
        + ("" if report["model"]["trained"] else " — **untrained: speed only, detections meaningless**"),
        f"- source: {', '.join(report['source']['sources'])}",
    ]


