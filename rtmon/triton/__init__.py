"""rtmon on Triton Inference Server: `rtmon serve` (serve.py), `rtmon export --triton`
(repository.py) and the load test of a served engine (loadtest.py, perf_analyzer.py).

The client side, the `triton` engine, lives with the other engines in `rtmon/engines/triton.py`.
"""

from __future__ import annotations


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes Triton's dynamic batcher prefers, on both servers: the sizes the GPU
    engines build runners for when served (`batch_sizes`: powers of two, and
    `max_batch`), above one."""
    from rtmon.runner import batch_sizes

    return [size for size in batch_sizes(max_batch) if size > 1]
