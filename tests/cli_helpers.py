"""Running the real `rtmon` command in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def rtmon_command(args: list[str], rtmon_env: dict) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `python -m rtmon <args>` with the session's cache and
    engines folders (for tests that start it themselves)."""
    command, *rest = args
    cmd = [sys.executable, "-m", "rtmon", command, *rest]
    if command not in {"doctor"}:
        for item in rtmon_env["sets"]:
            cmd += ["--set", item]
    env = {**rtmon_env["env"], "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return cmd, env


def run_rtmon(args: list[str], rtmon_env: dict, cwd: Path | None = None, timeout: float = 600):
    """`python -m rtmon <args>` with the session's cache and engines folders; returns the result."""
    cmd, env = rtmon_command(args, rtmon_env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit code 2, exactly one line on stderr starting with 'error:', no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
