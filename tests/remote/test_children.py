"""No child process outlives the run or the device server that started it (issue 11: TVM popen workers
and RPC sessions were found with parent 1 an hour after a terminated run)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from edgeprune.children import _kill_descendants_proc, kill_descendants
from tests.conftest import ROOT
from tests.remote.farm import free_port


def _gone(procs: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """The processes of ``procs`` still alive (not zombies) after up to ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.1)


def _readline(proc: subprocess.Popen, timeout: float = 90.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the process printed nothing"
    return proc.stdout.readline()


def _cleanup(proc: subprocess.Popen, procs: list[psutil.Process]) -> None:
    for p in procs:
        if p.is_running():
            p.kill()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# Each test here takes 3-4 s on the 2-core machine (TVM import in the server or worker): not marked slow.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_device_server_leaves_no_process_behind(sig):
    """A session (a fork of the server, busy with a connected client) must not outlive the server."""
    import tvm.rpc

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "edgeprune.remote.serve", "--key", "kids", "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    children: list[psutil.Process] = []
    try:
        assert "TVM RPC server on" in _readline(server)
        session = tvm.rpc.connect("127.0.0.1", port, key="kids", session_timeout=120)
        assert '"name"' in session.get_function("edgeprune.device_info")()
        children = psutil.Process(server.pid).children(recursive=True)
        assert children, "the session should be a child of the server"
        server.send_signal(sig)
        assert server.wait(timeout=20) == (128 + sig if sig == signal.SIGTERM else -sig)
        left = _gone(children)
        assert not left, f"outlived the server: {[(p.pid, p.ppid(), p.cmdline()) for p in left]}"
    finally:
        _cleanup(server, children)


def test_busy_popen_workers_die_with_the_process_that_started_them():
    """A TVM popen worker busy with a job (a MetaSchedule builder) dies when the run is killed outright."""
    script = textwrap.dedent("""
        import time
        from tvm.support.popen_pool import PopenWorker
        from edgeprune.children import popen_workers_die_with_parent

        with popen_workers_die_with_parent():
            w = PopenWorker()
            w.send(time.sleep, [600])
        print(w._proc.pid, flush=True)
        time.sleep(600)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    workers: list[psutil.Process] = []
    try:
        workers = [psutil.Process(int(_readline(run)))]
        time.sleep(0.5)
        assert _gone(workers, timeout=0), "the worker should be alive while the run is"
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=20)
        assert not _gone(workers), "the busy worker outlived the run"
    finally:
        _cleanup(run, workers)


@pytest.mark.parametrize("use_psutil", [True, False])
def test_kill_descendants_ends_the_whole_tree(use_psutil):
    script = ("import subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', 'import subprocess, time; "
              "subprocess.Popen([\"sleep\", \"600\"]); time.sleep(600)'])\n"
              "print('ok', flush=True)\n"
              "time.sleep(600)\n")
    top = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        assert _readline(top, 30).strip() == "ok"
        end = time.monotonic() + 20
        while len(tree) < 2 and time.monotonic() < end:  # the grandchild may not be started yet
            tree = psutil.Process(top.pid).children(recursive=True)
            time.sleep(0.05)
        assert len(tree) == 2
        pids = kill_descendants(top.pid) if use_psutil else _kill_descendants_proc(top.pid, set(), 3.0)
        assert sorted(pids) == sorted(p.pid for p in tree)
        assert not _gone(tree, timeout=5) and top.poll() is None  # the tree below it, not the process itself
    finally:
        _cleanup(top, tree)


def test_tuning_ends_its_workers_when_it_fails(monkeypatch):
    """tune.py: the runner's pool is shut down and popen workers started while tuning are ended, even when
    tuning raises."""
    from edgeprune.compile import tune

    started: list[subprocess.Popen] = []
    shut = []

    class Pool:
        def shutdown(self, wait=True):
            shut.append(wait)

    class Runner:
        def __init__(self, **kw):
            self.pool = Pool()

    class Relax:
        @staticmethod
        def tune_relax(*a, **kw):  # a worker busy with a job, then a failure
            started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                             "tvm.exec.popen_worker"]))
            raise RuntimeError("tuning failed")

    class MS:
        runner = type("runner", (), {"LocalRunner": Runner})
        builder = type("builder", (), {"LocalBuilder": lambda **kw: None})
        relax_integration = Relax

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "tvm.exec.popen_worker"])
    try:
        with pytest.raises(RuntimeError, match="tuning failed"):
            tune._tune_with_workers(MS, None, None, ROOT, None, 1, 1, "random", 0)
        assert shut and started[0].wait(timeout=10) is not None
        assert bystander.poll() is None  # a worker that was there before tuning is not tuning's to end
    finally:
        for p in [bystander, *started]:
            if p.poll() is None:
                p.kill()
                p.wait()
