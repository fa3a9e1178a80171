"""rtmon.processes: the main process's malloc arenas."""

import subprocess
import sys

import pytest

from rtmon.processes import cap_malloc_arenas


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
