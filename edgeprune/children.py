"""Child processes end with the process that started them.

TVM starts helper processes we do not spawn ourselves: MetaSchedule's builders and runners are
``python -m tvm.exec.popen_worker`` processes (``tvm.support.popen_pool``), and every TVM RPC session of a
device server is a fork of the server. They were found orphaned (parent 1) an hour after a terminated run.
Three guards, used by ``compile/tune.py`` and ``remote/serve.py``:

- ``die_with_parent``: in a child, ``prctl(PR_SET_PDEATHSIG)`` (Linux) has the kernel signal it when the
  thread that started it exits, whatever ended the parent (SIGTERM, SIGKILL, a crash).
- ``popen_workers_die_with_parent``: while active, TVM's popen workers are started with that guard.
- ``kill_descendants``: terminate (then kill) the process tree below a process, for ``finally`` blocks
  and signal handlers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return fn


# Resolved once, here: the guard also runs between fork and exec, where loading a library is not safe.
_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Call in a child: the kernel sends ``sig`` to it when the thread that forked it exits. If ``parent``
    (the pid that forked it) is already gone, signal itself now. False where unsupported (not Linux)."""
    if _PRCTL is None or _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:  # the parent died before the guard was set
        os.kill(os.getpid(), sig)
    return True


def _with_death_signal(preexec_fn, sig: int):
    parent = os.getpid()

    def guard():
        die_with_parent(sig, parent)
        if preexec_fn is not None:
            preexec_fn()

    return guard


class _SubprocessWithDeathSignal:
    """Stands in for the ``subprocess`` module inside ``tvm.support.popen_pool``: same names, but every
    ``Popen`` child gets ``die_with_parent``."""

    def __init__(self, module, sig: int):
        self._module, self._sig = module, sig

    def __getattr__(self, name):
        return getattr(self._module, name)

    def Popen(self, *args, preexec_fn=None, **kwargs):  # noqa: N802 - mirrors subprocess.Popen
        return self._module.Popen(*args, preexec_fn=_with_death_signal(preexec_fn, self._sig), **kwargs)


_patch_lock = threading.Lock()
_patch_depth = 0


@contextlib.contextmanager
def popen_workers_die_with_parent(sig: int = signal.SIGKILL):
    """While active, every TVM popen worker started in this process dies with the thread that started it
    (the worker pools' threads live as long as the pools). Nests; a no-op where PDEATHSIG is unavailable."""
    global _patch_depth
    if _PRCTL is None:
        yield
        return
    from tvm.support import popen_pool

    with _patch_lock:
        if _patch_depth == 0:
            popen_pool.subprocess = _SubprocessWithDeathSignal(popen_pool.subprocess, sig)
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0 and isinstance(popen_pool.subprocess, _SubprocessWithDeathSignal):
                popen_pool.subprocess = popen_pool.subprocess._module


def is_popen_worker(proc) -> bool:
    """True for a ``python -m tvm.exec.popen_worker`` process (a ``psutil.Process``)."""
    import psutil

    try:
        return "tvm.exec.popen_worker" in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def descendants(pid: int | None = None) -> list:
    """Every live process below ``pid`` (default: this process), as ``psutil.Process`` objects."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_descendants(pid: int | None = None, *, only=None, exclude=(), timeout: float = 3.0) -> list[int]:
    """Terminate the processes below ``pid`` (default: this process) that ``only(proc)`` accepts, except
    the pids in ``exclude``; kill those still alive after ``timeout`` s. Returns the pids it signalled.
    Without psutil (a device with only numpy and TVM) the tree is read from /proc and ``only`` is ignored."""
    try:
        import psutil
    except ImportError:
        return _kill_descendants_proc(pid or os.getpid(), set(exclude), timeout)
    procs = [p for p in descendants(pid) if p.pid not in set(exclude) and (only is None or only(p))]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    alive = _wait(procs, timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    _wait(alive, timeout)
    return [p.pid for p in procs]


def _wait(procs: list, timeout: float) -> list:
    """Wait up to ``timeout`` s for ``procs`` to end (reaping our own children); the ones still running.
    A zombie whose parent is not this process counts as ended: its parent reaps it, or dies next."""
    import time

    import psutil

    end = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                p.wait(timeout=0)  # reaps it when it is our child
            except psutil.TimeoutExpired:
                try:
                    if p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(p)
                except psutil.NoSuchProcess:
                    pass
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= end:
            return alive
        procs = alive
        time.sleep(0.05)


def _proc_tree(root: int) -> list[int]:
    """Pids below ``root``, from /proc/PID/stat (Linux)."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid
    found, frontier = [], [root]
    while frontier:
        kids = [p for p, pp in parent_of.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _kill_descendants_proc(root: int, exclude: set[int], timeout: float) -> list[int]:
    import time

    pids = [p for p in _proc_tree(root) if p not in exclude]

    def signal_all(sig, which):
        for p in which:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)

    def alive():
        for p in pids:  # reap our own children so that they do not linger as zombies
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p, os.WNOHANG)
        return [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]

    signal_all(signal.SIGTERM, pids)
    end = time.monotonic() + timeout
    while alive() and time.monotonic() < end:
        time.sleep(0.05)
    signal_all(signal.SIGKILL, alive())
    return pids


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
