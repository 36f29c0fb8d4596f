"""``edgeprune device ...``: the TVM RPC tracker, device servers, the emulated board, and what is registered."""

from __future__ import annotations

import json
import sys

import click

from edgeprune.errors import EdgePruneError


@click.group("device")
def device_group() -> None:
    """Remote devices over TVM RPC: a tracker, device servers, and what is registered.

    TVM RPC has no authentication and runs code uploaded to it: everything binds 127.0.0.1 unless
    --allow-remote is given (use an isolated network or an SSH tunnel; see the README).
    """


@device_group.command("tracker")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9190, show_default=True, type=int)
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback address (prints a warning).")
def device_tracker(host, port, allow_remote) -> None:
    """Start a TVM RPC tracker and keep it running (Ctrl-C stops it)."""
    import time

    from edgeprune.remote.device import check_bind

    try:
        check_bind(host, allow_remote)
    except PermissionError as e:
        raise EdgePruneError(str(e)) from None
    import signal

    from tvm.rpc.tracker import Tracker

    from edgeprune.children import popen_workers_die_with_parent

    def _stop(signum, frame):  # SIGTERM/SIGHUP end the tracker's worker too, through the finally below
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    with popen_workers_die_with_parent():  # and a SIGKILLed tracker takes its worker with it
        tracker = Tracker(host=host, port=port, port_end=port + 1, silent=True)
    click.echo(f"TVM RPC tracker on {host}:{tracker.port}", err=True)
    try:
        while tracker.proc.is_alive():
            time.sleep(1)
    finally:
        tracker.terminate()


@device_group.command("serve", context_settings={"ignore_unknown_options": True})
@click.option("--tracker", default=None, metavar="HOST:PORT", help="Tracker to register with.")
@click.option("--key", required=True, help="Device key, e.g. rpi4.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9090, show_default=True, type=int)
@click.option("--name", default=None, help="Name in reports (default KEY@HOSTNAME:PORT).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback address (prints a warning).")
def device_serve(tracker, key, host, port, name, allow_remote) -> None:
    """Run on the device: a TVM RPC server with edgeprune's measurement functions."""
    from edgeprune.remote.serve import main as serve_main

    args = ["--key", key, "--host", host, "--port", str(port)] + (["--tracker", tracker] if tracker else [])
    serve_main(args + (["--name", name] if name else []) + (["--allow-remote"] if allow_remote else []))


@device_group.command("emulate")
@click.option("--arch", default="aarch64", show_default=True, help="Architecture to emulate.")
@click.option("--tracker", default=None, metavar="HOST:PORT", help="Tracker to register with.")
@click.option("--key", default=None, help="Device key (default: ARCH-emulated).")
@click.option("--port", default=9095, show_default=True, type=int)
@click.option("--prepare-only", is_flag=True, help="Prepare the emulator (qemu-user, sysroot, wheels) and exit.")
@click.option("--install-deps", is_flag=True,
              help="Install a missing qemu-user with apt-get (sudo unless root); without it, a missing qemu-user "
                   "is an error naming the command.")
def device_emulate(arch, tracker, key, port, prepare_only, install_deps) -> None:
    """Start an emulated ARM device (qemu-user) for numerical checks of cross-compiled artifacts.

    Prepared from the package registries only (Debian's qemu-user and arm64 packages, PyPI's aarch64 wheels),
    cached in ~/.cache/edgeprune/emulator. Its timings are marked emulated and never used as latency.
    The emulated server (and its sessions) ends with this command, however this command ends.
    """
    import os
    import signal
    import subprocess

    from edgeprune.children import die_with_parent
    from edgeprune.remote.emulate import prepare

    emu = prepare(arch, log=lambda m: click.echo(m, err=True), install_deps=install_deps)
    click.echo(f"emulator ready: {' '.join(emu.command())}", err=True)
    if prepare_only:
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    parent = os.getpid()
    # Its own process group (the server and its session forks); killed by the kernel if this process dies.
    proc = subprocess.Popen(emu.serve_command(tracker=tracker, key=key or f"{arch}-emulated", port=port),
                            env=emu.env(), start_new_session=True,
                            preexec_fn=lambda: die_with_parent(signal.SIGKILL, parent))
    try:
        sys.exit(proc.wait())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@device_group.command("list")
@click.option("--tracker", default="127.0.0.1:9190", show_default=True, metavar="HOST:PORT")
@click.option("--json", "as_json", is_flag=True)
def device_list(tracker, as_json) -> None:
    """Devices registered with the tracker, and free/pending counts per key."""
    from edgeprune.latency.rpc import tracker_summary

    info = tracker_summary(tracker)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    queue = info.get("queue_info", {})
    click.echo(f"tracker {tracker}: {len(info.get('server_info', []))} device server(s)")
    for key in sorted(queue):
        q = queue[key]
        click.echo(f"  {key:20s} free {q.get('free', 0)}  pending requests {q.get('pending', 0)}")
    for s in info.get("server_info", []):
        click.echo(f"  server {s.get('addr')} key {s.get('key')}")
