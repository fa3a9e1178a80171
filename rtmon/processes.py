"""Child processes rtmon starts (engine processes, the window) end with the process that started
them, however it ends, even by `kill -9`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL, poll_s: float | None = 0.5) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux), and, with
    `poll_s`, also watch the parent from a daemon thread (every platform, and the case where the
    thread that started us, not the process, ended: the kernel's signal follows the thread)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent_pid:  # it died before the signal was armed
        os._exit(0)
    if poll_s is None:
        return

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="rtmon-parent-watch", daemon=True).start()


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid
