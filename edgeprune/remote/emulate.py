"""An emulated aarch64 device: Debian's qemu-user running an aarch64 Python with the aarch64 TVM wheel.

Everything comes from the package registries (Debian and PyPI), nothing is installed into this machine's
Python: the arm64 .debs of python3.11 and its libraries are downloaded with a private apt configuration
(this machine's apt sources, architecture arm64, lists and cache under the emulator folder) and unpacked
with ``dpkg -x`` into a sysroot; the aarch64 wheels are unpacked into a site folder. Only ``qemu-user``
itself must be installed on this machine (apt-get, root or sudo): a missing one is an error that says the
command to run, and it is installed here only when asked (``install_deps``, ``--install-deps``). No
binfmt_misc: ``qemu-aarch64 -L SYSROOT`` is called explicitly. ``import tvm`` takes ~15–25 s under emulation.

ONNX Runtime's aarch64 wheel crashes (SIGSEGV in dlopen) under qemu-user 7.2, so the emulated device runs
TVM libraries only. Its timings mean nothing about a real board: the device marks itself emulated and the
host refuses it as a latency source; it verifies the numerics of cross-compiled artifacts end to end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import DeviceError

ARCHES = {"aarch64": {"deb": "arm64", "qemu": "qemu-aarch64",
                      "wheel_platforms": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]}}
DEBS = ["python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "zlib1g", "libffi8", "libexpat1"]
# The TVM FFI pin matches constraints.txt (0.1.15 segfaults on save_json; docs/design/STACK.md).
WHEELS = ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy", "ml_dtypes", "typing_extensions"]
ROOT = Path(os.environ.get("EDGEPRUNE_EMULATOR_DIR", Path.home() / ".cache" / "edgeprune" / "emulator"))


@dataclass(frozen=True)
class Emulator:
    arch: str
    qemu: str
    sysroot: Path
    site: Path

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    def command(self, *args: str) -> list[str]:
        """Run the emulated Python with ``args``."""
        return [self.qemu, "-L", str(self.sysroot), str(self.python), *args]

    def env(self) -> dict[str, str]:
        src = str(Path(__file__).resolve().parents[2])  # edgeprune's source tree: pure Python on the device side
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PYTHONPATH"] = f"{self.site}{os.pathsep}{src}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def serve_command(self, *, tracker: str | None, key: str, port: int, name: str | None = None) -> list[str]:
        args = ["-m", "edgeprune.remote.serve", "--key", key, "--port", str(port), "--emulated"]
        args += ["--tracker", tracker] if tracker else []
        return self.command(*args, *(["--name", name] if name else []))


def _run(cmd: list[str], what: str, env: dict | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise DeviceError(f"{what} failed ({' '.join(cmd[:4])} ...): {' | '.join(tail)}")


QEMU_PACKAGE = "qemu-user"


def qemu_install_command() -> list[list[str]]:
    """The apt-get commands that install qemu-user (with sudo unless this process is root)."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    return [sudo + ["apt-get", "update"], sudo + ["apt-get", "install", "-y", QEMU_PACKAGE]]


def _ensure_qemu(qemu: str, log, install_deps: bool = False) -> str:
    if shutil.which(qemu):
        return shutil.which(qemu)
    cmds = qemu_install_command()
    said = " && ".join(" ".join(c) for c in cmds)
    if not install_deps:
        raise DeviceError(f"{qemu} is missing: install Debian's {QEMU_PACKAGE} with `{said}`, "
                          f"or pass --install-deps to have edgeprune run it")
    if cmds[0][0] == "sudo" and not shutil.which("sudo"):
        raise DeviceError(f"{qemu} is missing and there is no sudo: as root, run `{said.replace('sudo ', '')}`")
    log(f"installing {QEMU_PACKAGE}: {said}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in cmds:
        _run(cmd, " ".join(cmd), env)
    if not shutil.which(qemu):
        raise DeviceError(f"{qemu} still missing after installing {QEMU_PACKAGE}")
    return shutil.which(qemu)


def _sysroot(root: Path, deb_arch: str, log) -> Path:
    sysroot = root / "sysroot"
    if (sysroot / "usr" / "bin" / "python3.11").exists():
        return sysroot
    apt = root / "apt"
    for d in ("lists/partial", "archives/partial"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    conf = root / "apt.conf"
    conf.write_text("\n".join([
        f'APT::Architecture "{deb_arch}";', f'APT::Architectures "{deb_arch}";',
        f'Dir::State::Lists "{apt}/lists";', f'Dir::State::status "{apt}/status";',
        f'Dir::Cache::Archives "{apt}/archives";', f'Dir::Cache::pkgcache "{apt}/pkgcache.bin";',
        f'Dir::Cache::srcpkgcache "{apt}/srcpkgcache.bin";']) + "\n")
    env = dict(os.environ, APT_CONFIG=str(conf), DEBIAN_FRONTEND="noninteractive")
    log(f"downloading Debian {deb_arch} packages for the sysroot")
    _run(["apt-get", "update", "-qq"], f"apt-get update ({deb_arch})", env)
    _run(["apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends", *DEBS],
         f"downloading {deb_arch} .debs", env)
    tmp = root / "sysroot.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in sorted((apt / "archives").glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(tmp)], f"unpacking {deb.name}")
    tmp.rename(sysroot)  # complete or absent: an interrupted preparation starts again
    return sysroot


def _site(root: Path, platforms: list[str], log) -> Path:
    site = root / "site"
    if (site / "tvm").is_dir():
        return site
    wheels = root / "wheels"
    log("downloading aarch64 wheels (apache-tvm, numpy, ...)")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "--python-version", "3.11",
           "-d", str(wheels), *[a for p in platforms for a in ("--platform", p)], *WHEELS]
    _run(cmd, "pip download of the aarch64 wheels")
    tmp = root / "site.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for whl in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(tmp)
    for so in tmp.rglob("*.so*"):
        so.chmod(0o755)
    tmp.rename(site)
    return site


def prepare(arch: str = "aarch64", *, root: Path | None = None, log=lambda m: None,
            install_deps: bool = False) -> Emulator:
    """Make (or reuse) the emulator for ``arch`` under ``root``. Idempotent; downloads only what is missing.
    A missing qemu-user is a ``DeviceError`` naming the apt command, or, with ``install_deps``, installed."""
    if arch not in ARCHES:
        raise DeviceError(f"no emulator for {arch!r}; available: {', '.join(ARCHES)}")
    spec = ARCHES[arch]
    qemu = _ensure_qemu(spec["qemu"], log, install_deps)
    root = Path(root or ROOT) / arch
    root.mkdir(parents=True, exist_ok=True)
    emu = Emulator(arch, qemu, _sysroot(root, spec["deb"], log), _site(root, spec["wheel_platforms"], log))
    r = subprocess.run(emu.command("-c", "import platform; print(platform.machine())"), capture_output=True, text=True,
                       env=emu.env(), timeout=120)
    if r.returncode != 0 or r.stdout.strip() != arch:
        raise DeviceError(f"the emulated Python does not run: {(r.stderr or r.stdout).strip()[-300:]}")
    return emu
