"""Which code made a figure: rtmon's commit and the versions of the packages that decide the
numbers. Every report carries them (`rtmon.reporting.header`), and `rtmon doctor` lists them: a
speed-up measured on torch 2.11 is not a claim about torch 2.15."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

# The packages whose versions change what a benchmark measures (the runtimes, the baseline's
# library, the compiler), in the order a reader looks for them.
MEASURING = ("torch", "torchvision", "triton", "ultralytics", "onnxruntime", "onnxruntime-gpu", "tensorrt-rtx-cu13",
             "numpy", "opencv-python-headless")

COMMIT_ENV = "RTMON_COMMIT"  # the commit, where the code runs from a copy without its git history
_ROOT = Path(__file__).resolve().parent.parent


def package_versions(names: tuple[str, ...] = MEASURING) -> dict[str, str | None]:
    """Each distribution's installed version (None: not installed), from its metadata: nothing
    is imported."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def checkout(root: Path = _ROOT) -> dict[str, str | bool | None]:
    """rtmon's commit and whether tracked files differ from it (`dirty`): the commit
    `RTMON_COMMIT` names when it is set (a copy of a checkout, run elsewhere, whose git folder
    may be stale: dirty unknown), else from git when `root` is a checkout, else nothing known."""
    if named := os.environ.get(COMMIT_ENV):
        return {"commit": named, "dirty": None}
    git = ["git", "-C", str(root)]
    try:
        if not (root / ".git").exists():  # an installed copy, or a copy of a checkout
            raise FileNotFoundError(root / ".git")
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def software(root: Path = _ROOT) -> dict:
    """The `software` block of a report: rtmon's checkout and the measuring packages' versions."""
    return {**checkout(root), "packages": package_versions()}


def software_line(block: dict | None) -> str | None:
    """One markdown line for a report's `software` block (None for a report made without one)."""
    if not block:
        return None
    commit = block.get("commit")
    code = f"commit {commit[:12]}" if commit else "commit unknown"
    if block.get("dirty"):
        code += " with uncommitted changes"
    packages = ", ".join(f"{name} {version}" for name, version in (block.get("packages") or {}).items() if version)
    return f"- software: rtmon {code}; {packages}" if packages else f"- software: rtmon {code}"
