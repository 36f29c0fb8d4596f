"""``python -m edgeprune.remote.serve``: the device server with nothing but numpy and TVM imported
(what ``edgeprune device serve`` runs, and what the emulated device runs under qemu-user).

No process outlives the server: every RPC session is a fork of it, and each fork asks the kernel to kill
it when the server's listening thread (its parent) ends (``edgeprune.children.die_with_parent``), so a
SIGKILL of the server takes its sessions too; SIGTERM, SIGHUP and Ctrl-C terminate every process below
the server before it exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback


def _stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _guard_sessions() -> None:
    """Every process forked from here on (TVM's RPC sessions) dies with the thread that forked it."""
    from edgeprune.children import die_with_parent  # imported here, not between fork and the session

    server = os.getpid()

    def in_child() -> None:
        # The server's handlers must not run in a session: a session ends on the signal, as by default.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        die_with_parent(signal.SIGKILL, server)

    os.register_at_fork(after_in_child=in_child)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracker", default=None, help="HOST:PORT of the TVM RPC tracker to register with")
    ap.add_argument("--key", required=True, help="device key (what --device-key / a profile's key asks for)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9090)
    ap.add_argument("--name", default=None, help="name in reports (default KEY@HOSTNAME:PORT)")
    ap.add_argument("--emulated", action="store_true", help="mark timings as emulated (never used as latency)")
    ap.add_argument("--allow-remote", action="store_true", help="allow listening on a non-loopback address")
    a = ap.parse_args(argv)
    from edgeprune.children import kill_descendants
    from edgeprune.remote.device import check_bind, serve

    try:
        check_bind(a.host, a.allow_remote)
    except PermissionError as e:
        print(f"edgeprune: error: {e}", file=sys.stderr)
        sys.exit(2)

    def ready(port: int) -> None:
        print(f"edgeprune device {a.key}: TVM RPC server on {a.host}:{port}"
              + (f", registered with tracker {a.tracker}" if a.tracker else "")
              + (" (EMULATED: timings are not latency)" if a.emulated else ""), flush=True)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    _guard_sessions()
    code = 1
    try:
        serve(host=a.host, port=a.port, tracker=a.tracker, key=a.key, name=a.name, emulated=a.emulated,
              allow_remote=a.allow_remote, on_ready=ready)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 - said, then the same exit as any other end
        traceback.print_exc()
    finally:
        kill_descendants()
        sys.stdout.flush()
        sys.stderr.flush()
    # TVM's listening thread is not a daemon and blocks in accept(): a normal exit would wait for it forever.
    os._exit(code)


if __name__ == "__main__":
    main()
