"""``python -m edgeprune.remote.serve``: the device server with nothing but numpy and TVM imported
(what ``edgeprune device serve`` runs, and what the emulated device runs under qemu-user)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracker", default=None, help="HOST:PORT of the TVM RPC tracker to register with")
    ap.add_argument("--key", required=True, help="device key (what --device-key / a profile's key asks for)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9090)
    ap.add_argument("--name", default=None, help="name in reports (default KEY@HOSTNAME:PORT)")
    ap.add_argument("--emulated", action="store_true", help="mark timings as emulated (never used as latency)")
    ap.add_argument("--allow-remote", action="store_true", help="allow listening on a non-loopback address")
    a = ap.parse_args(argv)
    from edgeprune.remote.device import serve

    def ready(port: int) -> None:
        print(f"edgeprune device {a.key}: TVM RPC server on {a.host}:{port}"
              + (f", registered with tracker {a.tracker}" if a.tracker else "")
              + (" (EMULATED: timings are not latency)" if a.emulated else ""), flush=True)

    try:
        serve(host=a.host, port=a.port, tracker=a.tracker, key=a.key, name=a.name, emulated=a.emulated,
              allow_remote=a.allow_remote, on_ready=ready)
    except PermissionError as e:
        print(f"edgeprune: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
