"""The real program in a real terminal: tmux runs `rtmon`, send-keys types, capture-pane reads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

ROOT = Path(__file__).resolve().parents[1]


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-t", session, "-p")


def _wait_for(session: str, predicate, timeout: float) -> str:
    deadline = time.time() + timeout
    screen = ""
    while time.time() < deadline:
        screen = _screen(session)
        if predicate(screen):
            return screen
        time.sleep(0.25)
    raise AssertionError(f"timed out; screen was:\n{screen}")


def _spawned_in(folder: Path) -> list[psutil.Process]:
    """Processes multiprocessing started (engine processes, its resource tracker) in `folder`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "multiprocessing" in cmdline and proc.info["cwd"] == str(folder):
            found.append(proc)
    return found


def _fps(screen: str) -> list[str]:
    return re.findall(r"FPS (\d+\.\d)", screen)


def _eventually(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.1)


# The headline in metrics.py's one wording, either way: which engine is faster is what it measures,
# not what a test may assume. (The engines it compares follow it, past 80 columns.)
HEADLINE = re.compile(r"OPTIMIZED \d+\.\dx (faster|slower) than BASELINE \(capacity\)")


def test_monitor_in_tmux_panels_toggle_record_quit(tmp_path, rtmon_env):
    session = f"rtmon-{uuid.uuid4().hex[:8]}"
    exit_file = tmp_path / "exit"
    sets = " ".join(f"--set {s}" for s in rtmon_env["sets"])
    cmd = (
        f"cd {tmp_path} && YOLO_OFFLINE=1 PYTHONPATH={ROOT} {sys.executable} -m rtmon --source sample "
        f"--engines baseline,ort-cpu {sets}; echo $? > {exit_file}; sleep 60"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "32", cmd)
    try:
        screen = _wait_for(session, lambda s: "torch-fp32" in s and "ort-cpu" in s and len(_fps(s)) >= 2, 180)
        assert "terminal too small" not in screen
        first = _fps(screen)
        screen = _wait_for(session, lambda s: len(_fps(s)) >= 2 and _fps(s) != first and "P99" in s
                           and HEADLINE.search(s) is not None, 60)
        # roles on the panels, and the headline computed from the figures on screen
        assert "BASELINE torch-fp32" in screen and "OPTIMIZED ort-cpu" in screen

        _tmux("send-keys", "-t", session, "1")
        _wait_for(session, lambda s: re.search(r"^│off\b", s, re.M) is not None, 15)
        _tmux("send-keys", "-t", session, "1")
        _wait_for(session, lambda s: re.search(r"^│off\b", s, re.M) is None, 15)

        _tmux("send-keys", "-t", session, "r")
        _wait_for(session, lambda s: "● REC" in s, 15)
        recordings = tmp_path / "recordings"
        # a few seconds of H.264 in the file being written (the encoder holds its first frames back)
        _eventually(lambda: sum(p.stat().st_size for p in recordings.glob(".*partial*")) > 64_000, 60, "video")
        _tmux("send-keys", "-t", session, "r")
        _wait_for(session, lambda s: "saved" in s, 30)

        t0 = time.time()
        _tmux("send-keys", "-t", session, "q")
        deadline = t0 + 10
        while time.time() < deadline and not (exit_file.exists() and exit_file.read_text().strip()):
            time.sleep(0.05)
        took = time.time() - t0
        assert exit_file.read_text().strip() == "0"
        assert took < 2.0, f"q took {took:.2f} s"
        # the terminal is back to the shell: no panel borders left on screen
        assert "╭" not in _screen(session)
        _eventually(lambda: not _spawned_in(tmp_path), 1.0, "the engine processes to end with the monitor")
    finally:
        _tmux("kill-session", "-t", session)
    videos = list((tmp_path / "recordings").glob("*.mp4"))
    assert len(videos) == 1
    import av

    with av.open(str(videos[0])) as c:
        assert sum(1 for _ in c.decode(video=0)) > 5  # at 30 fps on the clock; fewer when the CPU is saturated
    assert not list((tmp_path / "recordings").glob(".*")), "a partial file was left behind"
