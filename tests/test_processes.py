"""rtmon.processes: the main process's malloc arenas; where the measured processes run."""

import os
import subprocess
import sys

import pytest

from rtmon.processes import (
    cap_malloc_arenas,
    children_on,
    parse_cpu_list,
    physical_cores,
    pin_threads,
    split_cpus,
    unpin_threads,
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_main_process_caps_its_malloc_arenas_and_still_allocates_from_threads():
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from rtmon.processes import cap_malloc_arenas\n"
        "assert cap_malloc_arenas(2)\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    sizes = list(pool.map(lambda i: len(bytearray(3_000_000 + i)), range(64)))\n"
        "assert sizes == [3_000_000 + i for i in range(64)]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_capping_arenas_answers_a_bool():
    assert isinstance(cap_malloc_arenas(), bool)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sched_setaffinity")


@linux_only
def test_a_split_gives_rtmon_the_first_quarter_and_the_measured_processes_the_rest(monkeypatch, tmp_path):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert split_cpus(sysfs=tmp_path) == ((0, 1, 2, 3), tuple(range(4, 16)))  # no topology: a CPU a core
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert split_cpus(sysfs=tmp_path) is None  # too few to share: no split
    assert split_cpus(at_least=2, sysfs=tmp_path) is None  # nothing would be left for the measured side
    assert split_cpus(at_least=2, sysfs=tmp_path, least_side=1) == ((0,), (1,))  # bench.cpu_split = "on"
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert split_cpus(at_least=2, sysfs=tmp_path, least_side=1) is None


def _siblings(sysfs, cores, text=lambda core: ",".join(map(str, core))):
    """A fake /sys/devices/system/cpu: each CPU of each core lists the core's CPUs (`text`)."""
    for core in cores:
        for cpu in core:
            topology = sysfs / f"cpu{cpu}" / "topology"
            topology.mkdir(parents=True)
            (topology / "thread_siblings_list").write_text(text(core) + "\n")


@linux_only
def test_a_split_never_puts_two_hyperthreads_of_one_core_on_both_sides(monkeypatch, tmp_path):
    _siblings(tmp_path, [(n, n + 8) for n in range(8)])  # a common layout: CPU n and n + 8 share a core
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    main, measured = split_cpus(sysfs=tmp_path)
    assert main == (0, 1, 8, 9)
    assert measured == (2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15)


def test_cores_are_read_from_either_list_format_and_a_cpu_without_topology_is_its_own(tmp_path):
    _siblings(tmp_path, [(0, 1)])
    _siblings(tmp_path, [(2, 3)], text=lambda core: f"{core[0]}-{core[-1]}")
    assert physical_cores([0, 1, 2, 3, 4], tmp_path) == [(0, 1), (2, 3), (4,)]
    assert physical_cores([1, 2], tmp_path) == [(1,), (2,)]  # a sibling outside the set is not added


def test_a_cpu_list_reads_numbers_and_ranges_and_refuses_anything_else():
    assert parse_cpu_list("0,8") == [0, 8]
    assert parse_cpu_list("4-7,12\n") == [4, 5, 6, 7, 12]
    for bad in ("", "4-x", "a"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


@linux_only
def test_a_child_started_inside_children_on_runs_there_and_the_starter_gets_its_cpus_back():
    import os

    before = os.sched_getaffinity(0)
    one = (min(before),)
    with children_on(one):
        out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == str(list(one))
    assert os.sched_getaffinity(0) == before


@linux_only
def test_pinning_moves_every_thread_and_unpinning_restores_them():
    import os
    import threading

    before = os.sched_getaffinity(0)
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    one = (min(before),)
    try:
        saved = pin_threads(one)
        assert os.sched_getaffinity(worker.native_id) == set(one)
        assert os.sched_getaffinity(0) == set(one)
        unpin_threads(saved)
        assert os.sched_getaffinity(worker.native_id) == before
    finally:
        stop.set()
        worker.join()


def test_minor_faults_count_the_pages_a_process_touches_first():
    import mmap

    from rtmon.processes import minor_faults

    size = 16 * 1024 * 1024
    with mmap.mmap(-1, size) as fresh:  # pages never touched (a heap block may be reused, already mapped)
        before = minor_faults(os.getpid())
        for offset in range(0, size, mmap.PAGESIZE):
            fresh[offset] = 1
        after = minor_faults(os.getpid())
    assert before is not None and after - before >= size // (2 * 1024 * 1024)  # even as huge pages
    assert minor_faults(2**22 + 12345) is None  # no such process


def test_a_second_sigterm_does_not_break_into_the_cleanup_of_the_first():
    """Two SIGTERMs, as `timeout` sends them (to the command, then to its group): one
    KeyboardInterrupt, and the cleanup after it runs to its end."""
    code = """
import os, queue, signal, time
from rtmon.processes import sigterm_as_interrupt
sigterm_as_interrupt()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    queue.Queue().get(timeout=5)
except KeyboardInterrupt:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    print("cleaned up")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cleaned up"
