"""Process lifetimes: child processes rtmon starts (engine processes, the window) end with the
process that started them, however it ends, even by `kill -9`; and the commands stop cleanly on
Ctrl-C and SIGTERM alike."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # glibc's mallopt parameter
# glibc malloc arenas for the main process. By default glibc gives each thread that allocates
# under contention an arena of its own (up to 8 per core); the main process's decoder threads
# (one per source) then keep freed frame-sized blocks in as many arenas, and its resident memory
# crept up over minutes with 16 streams (the soak of 2026-12-03: +4.6%). Two arenas kept it flat
# in a 16-source CPU run (+0.2% over 4 minutes, against +2.0% by default).
MAIN_ARENAS = 2


def cap_malloc_arenas(arenas: int = MAIN_ARENAS) -> bool:
    """Limit glibc's malloc to `arenas` arenas in this process (before its threads start: an
    arena, once made, stays); False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):
        return False


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


def sigterm_as_interrupt() -> None:
    """SIGTERM (a service manager's stop) raises KeyboardInterrupt in the main thread, so the
    cleanup written for Ctrl-C runs for it too. Once: a second SIGTERM is ignored, so it cannot
    break into that cleanup (`timeout` sends two, one to the command and one to its process
    group; a second exception raised inside a lock's wait left it released twice: "release
    unlocked lock" and a traceback instead of `interrupted`)."""

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM set `stop` (a normal stop, as a quit key would);
    the previous handlers come back after it."""
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_CPU_SYSFS = Path("/sys/devices/system/cpu")


def physical_cores(cpus: list[int], sysfs: Path = _CPU_SYSFS) -> list[tuple[int, ...]]:
    """`cpus` grouped by the physical core they share (hyperthreads, from Linux's
    `topology/thread_siblings_list`), in order of each core's first CPU; a CPU whose topology
    cannot be read is a core of its own."""
    cores: dict[tuple[int, ...], list[int]] = {}
    wanted = set(cpus)
    for cpu in cpus:
        try:
            siblings = parse_cpu_list((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text())
        except (OSError, ValueError):
            siblings = [cpu]
        key = tuple(sorted(set(siblings) & wanted)) or (cpu,)
        cores.setdefault(key, []).append(cpu)
    return sorted((tuple(sorted(group)) for group in cores.values()), key=lambda core: core[0])


def parse_cpu_list(text: str) -> list[int]:
    """Linux's CPU list format ("0,8" or "0-1"); a ValueError for anything else."""
    out: list[int] = []
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def split_cpus(main_share: float = 0.25, at_least: int = 8, sysfs: Path = _CPU_SYSFS,
               least_side: int = 2) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """This process's CPUs in two: (the main process's, the measured processes'), whole physical
    cores each — a hyperthread spinning in rtmon's main process slows its sibling, which would be
    inside a measured process's timing — the first cores, `main_share` of the CPUs (at least
    `least_side`) for rtmon's own threads; None with fewer than `at_least` CPUs (or off Linux), or
    where a split would leave one side fewer than `least_side`."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < at_least:
        return None
    want = max(least_side, int(len(allowed) * main_share))
    main: list[int] = []
    measured: list[int] = []
    for core in physical_cores(allowed, sysfs):
        (main if len(main) < want else measured).extend(core)
    if len(measured) < least_side:
        return None
    return tuple(sorted(main)), tuple(sorted(measured))


def pin_threads(cpus: tuple[int, ...]) -> dict[int, set[int]]:
    """Every thread this process has now onto `cpus` (threads started later inherit their
    starter's); returns each thread's CPUs before, for `unpin_threads`."""
    before: dict[int, set[int]] = {}
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
    return before


def unpin_threads(before: dict[int, set[int]]) -> None:
    for tid, cpus in before.items():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def children_on(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Processes started inside run on `cpus` from their first instruction: the calling thread
    (whose CPUs a forked child inherits) is moved there for the start, and back after."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def minor_faults(pid: int) -> int | None:
    """The minor page faults process `pid` (all its threads) has taken so far: pages it touched
    for the first time, each mapped and zeroed by the kernel (Linux's /proc/PID/stat); None where
    there is no such file, or once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[7])
