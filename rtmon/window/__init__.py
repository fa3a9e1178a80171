"""The desktop window: the split screen at the display's rate, and the terminal UI's keys.

The window lives in a process of its own, started with "spawn", whose main thread draws (the one
thread every window library accepts, on every platform). It draws with SDL through pygame-ce in
software, so it needs no OpenGL context and also works over SSH's X forwarding. The monitor
process composes the picture and hands it over through shared memory; the window sends typed
events back over a pipe, and a thread of the monitor process passes each key to the
`WindowHost` (the terminal UI when it runs, else `rtmon.keys.MonitorActions`).

- `messages`: what crosses the pipe, each way;
- `buffer`: `FrameBuffer`, the picture in shared memory;
- `view`: the window process (`WindowView`, `window_process`) and its geometry;
- `host`: the monitor's side, `Window`, which composes only when the monitor's snapshot version
  says something changed.

The window process ends with the monitor: on Linux the kernel sends it SIGTERM when its parent
dies, even by `kill -9` (PR_SET_PDEATHSIG); everywhere it also checks its parent every frame.
"""

from rtmon.window.host import Window, WindowHost, check_can_open

__all__ = ["Window", "WindowHost", "check_can_open"]
