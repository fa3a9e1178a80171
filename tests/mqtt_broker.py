"""A real mosquitto broker for the MQTT tests: plain, TLS + password, TLS + client certificate, and
an ACL-restricted (no Home Assistant topics) listener on free loopback ports, configured from
files generated under a temporary folder; small clients that read what it holds; and a fake
pipeline that feeds a publisher. The `broker` and `certs` fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from rtmon.config import MqttSettings

USER, PASSWORD = "display", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_tools() -> str | None:
    """Why these tests cannot run here, or None."""
    for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install mosquitto openssl)"
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(folder: Path) -> Certs:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rtmon test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "san.ext"]), ("client", "display", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", *ext, cwd=folder)  # fmt: skip
    return Certs(*(folder / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")))


@dataclass
class Broker:
    folder: Path
    certs: Certs
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    cert_port: int = field(default_factory=free_port)
    acl_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def cert_url(self) -> str:
        return f"mqtts://localhost:{self.cert_port}"

    @property
    def acl_url(self) -> str:
        """Anonymous, allowed rtmon/# only: a broker that refuses Home Assistant's topics."""
        return f"mqtt://127.0.0.1:{self.acl_port}"

    def write_config(self) -> Path:
        passwd = self.folder / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), USER, PASSWORD], check=True)
        passwd.chmod(0o600)
        acl = self.folder / "acl"
        acl.write_text("topic readwrite rtmon/#\n")
        acl.chmod(0o600)
        c = self.certs
        tls = f"cafile {c.ca}\ncertfile {c.server_cert}\nkeyfile {c.server_key}\n"
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            f"user {getpass.getuser()}\npersistence false\nper_listener_settings true\n"
            f"log_dest file {self.folder / 'mosquitto.log'}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"listener {self.tls_port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {passwd}\n"
            f"listener {self.cert_port} 127.0.0.1\n{tls}require_certificate true\n"
            "use_identity_as_username true\nallow_anonymous false\n"
            f"listener {self.acl_port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
        )
        return conf

    def start(self) -> Broker:
        conf = self.folder / "mosquitto.conf"
        if not conf.exists():
            self.write_config()
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 5
        waiting = [self.port, self.acl_port]  # the first and last listener of the config: then all are open
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2).close()
                waiting.pop(0)
                if not waiting:
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening within 5 s")

    def kill(self) -> None:
        """Gone at once, as a crash or a pulled cable would leave it."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


needs_broker = pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "")


def settings(url: str, **kw) -> MqttSettings:
    """MqttSettings for the tests: instance `cam1`, 10 messages a second unless told otherwise."""
    return MqttSettings(url=url, instance=kw.pop("instance", "cam1"), rate_hz=kw.pop("rate_hz", 10), **kw)


def listen(port: int, topic: str, seconds: float,
           then: Callable[[aiomqtt.Client], Awaitable[None]] | None = None) -> list[tuple[bytes, bool]]:  # fmt: skip
    """Subscribe to `topic`, call `then(client)` once subscribed (e.g. to publish), and collect
    (payload, retain flag) for `seconds`."""

    async def main() -> list[tuple[bytes, bool]]:
        got: list[tuple[bytes, bool]] = []
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe(topic, qos=1)
            if then:
                await then(client)

            async def gather() -> None:
                async for message in client.messages:
                    got.append((bytes(message.payload), bool(message.retain)))

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gather(), seconds)
        return got

    return asyncio.run(main())


def retained(port: int, topic: str, seconds: float = 0.4) -> list[tuple[bytes, bool]]:
    """(payload, retain flag) of what arrives on `topic` within `seconds` of subscribing."""
    return listen(port, topic, seconds)


def config_on_broker(port: int, topic: str = "homeassistant/device/rtmon_cam1/config") -> dict | None:
    """The Home Assistant config the broker keeps for an instance, or None."""
    got = [payload for payload, _ in retained(port, topic) if payload]
    return json.loads(got[-1]) if got else None


def status_of(s: MqttSettings, instance: str = "cam1") -> str | None:
    """What `rtmon watch` sees on the instance's status topic: online, offline or None."""
    from rtmon.watch import collect

    inst = collect(s, 0.3).instances.get(instance)
    return inst.status if inst else None


class FakePipeline:
    """Stands in for the pipeline: a thread that 'processes' a frame every `frame_s` (sleeping,
    as an engine waiting on the GPU would) and records it in real `EngineMetrics`. With
    `streams=n` its frames come from n sources in turn and its snapshots carry each stream's
    figures, as the pipeline's do with several sources."""

    def __init__(self, frame_s: float = 0.002, engines: tuple[str, ...] = ("baseline", "optimized"),
                 streams: int = 0) -> None:  # fmt: skip
        from rtmon.core import EngineState, GpuMemory, Role
        from rtmon.metrics import EngineMetrics

        self.frame_s = frame_s
        self.streams = int(streams)  # per-stream figures cost percentiles per snapshot: only when asked
        self.metrics = {
            name: EngineMetrics(name, Role.BASELINE if name == "baseline" else Role.OPTIMIZED) for name in engines
        }
        for metrics in self.metrics.values():
            metrics.set_state(EngineState.RUNNING)
            metrics.set_memory(GpuMemory(process_mib=512.0, context_mib=300.0))
        self.frames = 0
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FakePipeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        import numpy as np

        from rtmon.core import Detections, Frame, Result, StageTimes

        image = np.zeros((2, 2, 3), np.uint8)
        boxes = Detections(np.zeros((3, 4)), np.ones(3), np.array([0, 0, 2]))
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(self.frame_s)
            frame = Frame(self.frames, image, t0, self.frames % max(self.streams, 1))
            t_start = time.perf_counter() - self.frame_s
            for name, metrics in self.metrics.items():
                metrics.record(Result(name, frame, boxes, StageTimes(0.1, self.frame_s * 1e3, 0.2), t_start=t_start))
            self.frames += 1

    def frames_in(self, seconds: float) -> int:
        first = self.frames
        time.sleep(seconds)
        return self.frames - first

    def snapshot(self):
        from rtmon.snapshot import MonitorSnapshot, SourceStatus, StreamSnapshot

        count = max(self.streams, 1)
        sources = tuple(
            SourceStatus(f"fake://{i}" if count > 1 else "fake://", "sample", 2, 2, None, None, "running", "",
                         (self.frames + count - 1 - i) // count, stream=i)
            for i in range(count)
        )  # fmt: skip
        streams = ()
        if self.streams:
            figures = {name: m.streams() for name, m in self.metrics.items()}
            streams = tuple(
                StreamSnapshot(source, {name: of[source.stream] for name, of in figures.items() if source.stream in of})
                for source in sources
            )
        return MonitorSnapshot(
            time=time.time(),
            uptime_s=time.time() - self.started,
            model="fake",
            sources=sources,
            engines=tuple(m.snapshot() for m in self.metrics.values()),
            engine_info={},
            gpu=None,
            recording="",
            streams=streams,
        )


def _publish_until_killed(url: str, instance: str) -> None:
    """The child process of the last-will test: publish a fake pipeline until SIGKILL."""
    from rtmon.mqtt.publisher import MetricsPublisher

    pipeline = FakePipeline().start()
    MetricsPublisher(MqttSettings(url=url, instance=instance, rate_hz=10), pipeline.snapshot).start()
    time.sleep(120)


if __name__ == "__main__":
    _publish_until_killed(sys.argv[1], sys.argv[2])
