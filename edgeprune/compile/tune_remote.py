"""Tuning on the device itself, through TVM RPC: MetaSchedule's ``RPCRunner`` against the devices that an
``edgeprune device serve`` registered with a tracker under a key.

The host builds every trial (cross-compiled and linked with the profile's compiler into a shared library,
so the device needs no compiler; MetaSchedule's default export is a tar of object files that the device
would have to link), the device times it (``time_evaluator`` in a forked RPC session), and the records
land in the target's database on the host (``compile.tune.database_dir``), where cross-compiled libraries
for that target pick them up. An emulated device (``edgeprune device emulate``) runs trials correctly, but
its timings say nothing about the board: ``deploy.stage.check_tuning_device`` refuses it unless
``allow_emulated`` (tests, and checking that RPC tuning works), and then the records must go to a
database of their own. (Nothing here imports ``edgeprune.latency``, which imports ``compile``.)
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass

from edgeprune.errors import DeviceError


@dataclass(frozen=True)
class RemoteTuning:
    """Where trials run: devices of ``key`` at the tracker ``tracker`` (HOST:PORT).
    ``session_timeout_s``: one trial's session, upload to result (an emulated device needs minutes)."""

    tracker: str
    key: str
    session_timeout_s: float = 120.0
    allow_emulated: bool = False

    def to_dict(self) -> dict:
        return {"tracker": self.tracker, "key": self.key}


def export_shared(mod, cc: str | None = None) -> str:
    """A builder's export (runs in MetaSchedule's builder workers): ``mod`` linked into a shared library
    with ``cc`` (the profile's cross compiler; None: the host's), in a fresh temporary folder."""
    path = os.path.join(tempfile.mkdtemp(prefix="edgeprune-trial-"), "trial.so")
    mod.export_library(path, **({"cc": cc} if cc else {}))
    return path


def builder(ms, settings):
    """A ``LocalBuilder`` whose artifacts are shared libraries for the profile's machine."""
    from edgeprune.compile.tune import BUILDER_TIMEOUT_S, build_trial

    return ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S, f_build=build_trial,
                                   f_export=functools.partial(export_shared, cc=settings.cc or None))


def runner(ms, remote: RemoteTuning):
    """An ``RPCRunner`` on the key's devices: 3 timed repeats of at least 20 ms each, one session at a time
    (trials measured one after another, like the search's measurements)."""
    from edgeprune.compile.tune import SEED_MIN_REPEAT_MS

    host, _, port = remote.tracker.rpartition(":")  # HOST:PORT, checked when the device was (deploy.stage)
    rpc = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=remote.key,
                              session_timeout_sec=int(remote.session_timeout_s))
    ev = ms.runner.EvaluatorConfig(number=1, repeat=3, min_repeat_ms=SEED_MIN_REPEAT_MS, enable_cpu_cache_flush=False)
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=ev, max_workers=1)


def measure_with(ms, build, run, target, failures: list | None = None):
    """A ``measure([(mod, args_info), ...])`` for ``compile.tune.seed_default_schedules`` on a device: every
    module built with ``build`` in one batch (one pool of builder workers), then timed with ``run``. A
    kernel that fails to build or run gives None, and its MetaSchedule message goes to ``failures``."""

    def measure(items) -> list:
        built = build.build([ms.builder.BuilderInput(mod, target) for mod, _ in items])
        futures = [run.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args)])[0] if not b.error_msg else None
                   for b, (_, args) in zip(built, items)]
        out = []
        for b, fut in zip(built, futures):
            res = fut.result() if fut is not None else None
            if b.artifact_path:
                shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
            err = b.error_msg or (res.error_msg if res is not None else None)
            if err:
                if failures is not None:
                    failures.append(err.strip().splitlines()[-1][:300])
                out.append(None)
            else:
                out.append([float(x) for x in res.run_secs])
        return out

    return measure
