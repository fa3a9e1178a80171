"""One engine in its own process: the one way rtmon drives and measures an engine (the live
monitor, `rtmon record`, every `rtmon bench` scenario, `rtmon eval`, the Triton server and its
load test).

- `ring`: frames in shared memory;
- `mailbox`: the hot path, request and result records in shared memory, no pickling;
- `messages`: the engine process's job and its lifecycle messages;
- `engine_process`: the engine's side;
- `supervisor`: the main process's side, `EngineRunner`;
- `feed`: where a runner's frames come from;
- `network`: an engine's network alone in its process (`rtmon serve`, the load test).
"""

from rtmon.runner.feed import Feed, PoolFeed
from rtmon.runner.network import NetworkRunner
from rtmon.runner.ring import FrameRing, slot_bytes_for
from rtmon.runner.supervisor import EngineRunner, RunnerOptions, batch_sizes, load_or_raise

__all__ = ["EngineRunner", "Feed", "FrameRing", "NetworkRunner", "PoolFeed", "RunnerOptions", "batch_sizes", "load_or_raise", "slot_bytes_for"]
