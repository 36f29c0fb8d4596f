"""A device farm on 127.0.0.1 for tests: a TVM RPC tracker and device servers, as separate processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Farm:
    def __init__(self):
        self.port = free_port()
        self.tracker = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._start("tracker", [sys.executable, "-m", "edgeprune.cli", "device", "tracker", "--port", str(self.port)])
        self._wait(lambda: _listening(self.port), "tracker")

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        # Own process group: killing it takes the server's forked session processes too, like a device dying.
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = p
        return p

    def _wait(self, ok, what: str, timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if ok():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what} did not come up")

    def add_device(self, name: str, key: str, *extra: str) -> None:
        port = free_port()
        self._start(name, [sys.executable, "-m", "edgeprune.remote.serve", "--tracker", self.tracker, "--key", key,
                           "--port", str(port), "--name", name, *extra])
        self._wait(lambda: name_registered(self.tracker, key, port), f"device {name}")

    def add_emulated_device(self, name: str, key: str, emulator) -> None:
        """A device server under qemu-user (``emulator`` from ``edgeprune.remote.emulate.prepare``)."""
        port = free_port()
        p = subprocess.Popen(emulator.serve_command(tracker=self.tracker, key=key, port=port, name=name),
                             env=emulator.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        self.procs[name] = p
        self._wait(lambda: name_registered(self.tracker, key, port), f"emulated device {name}", timeout=240)

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def close(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def name_registered(tracker: str, key: str, port: int) -> bool:
    from edgeprune.latency.rpc import tracker_summary

    try:
        info = tracker_summary(tracker)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return any(s.get("addr", [None, None])[1] == port for s in info.get("server_info", []))
