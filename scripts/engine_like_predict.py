#!/usr/bin/env python3
"""The plain ultralytics script (`rtmon/bench/plain_predict.py`, unchanged) inside what an rtmon
engine process has around its `predict`: an A/B probe of the process, not of the engine class.

    python scripts/drift_probe.py --modes shared --cpus 4-15 --b-script scripts/engine_like_predict.py \
        [--b-env ENGINE_LIKE=imports,watch,cuda,memory,shm]

B's process first sets up what `rtmon.runner.engine_process.engine_main` sets up, then runs the
plain script's loop as it is (same protocol on stdin/stdout), so the difference between A (the
plain script) and B is the engine process's surroundings alone. `ENGINE_LIKE` picks them
(default: all):

- `imports`: rtmon's modules an engine process holds (the CLI, the runner, the engine registry);
- `watch`: `die_with_parent` (the kernel's signal and the watching thread, every 0.5 s);
- `cuda`: the CUDA context started before the model loads (`_start_cuda`);
- `memory`: the GPU memory reporter's thread (NVML and PyTorch's allocator, every second);
- `shm`: the frames in a shared-memory block (as the frame ring holds them), not private memory.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("imports", "watch", "cuda", "memory", "shm")


def main(job_path: str) -> None:
    wanted = {f for f in os.environ.get("ENGINE_LIKE", ",".join(FEATURES)).split(",") if f}
    unknown = wanted - set(FEATURES)
    if unknown:
        print(f"error: ENGINE_LIKE: unknown feature {sorted(unknown)[0]!r} (known: {', '.join(FEATURES)})",
              file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, str(ROOT))
    blocks = []  # the shared-memory frames' block: mapped as long as the process lives
    if "imports" in wanted:
        import rtmon.cli
        import rtmon.engines
        import rtmon.runner.engine_process  # noqa: F401
    if "watch" in wanted:
        from rtmon.processes import die_with_parent

        die_with_parent(os.getppid())
    context = None
    if "cuda" in wanted or "memory" in wanted:
        from rtmon.runner.engine_process import _start_cuda

        context = _start_cuda()
    if "memory" in wanted:
        from rtmon.runner.engine_process import MEMORY_REPORT_S, gpu_memory

        def report() -> None:
            while True:
                time.sleep(MEMORY_REPORT_S)
                gpu_memory(context)  # what the reporter asks; sending it on is a pipe write, left out

        threading.Thread(target=report, name="rtmon-engine-memory", daemon=True).start()
    if "shm" in wanted:
        from multiprocessing import shared_memory

        import numpy as np

        load = np.load

        def shm_load(path, *args, **kwargs):
            data = load(path, *args, **kwargs)
            block = shared_memory.SharedMemory(create=True, size=data.nbytes)
            blocks.append(block)
            view = np.ndarray(data.shape, data.dtype, block.buf)
            view[...] = data
            block.unlink()  # the mapping stays; nothing is left in /dev/shm if this process is killed
            return view

        np.load = shm_load
    script = runpy.run_path(str(ROOT / "rtmon" / "bench" / "plain_predict.py"), run_name="plain_predict")
    script["main"](job_path)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        print("error: give the plain script's job file (JSON), as rtmon.bench.reference.PlainSession writes it: "
              "python scripts/engine_like_predict.py JOB.json", file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1])
