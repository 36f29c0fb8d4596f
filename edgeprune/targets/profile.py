"""Load and validate target profiles (TOML, one file per device).

The profiles ship inside the package (``edgeprune/targets/profiles/``, package data read with
``importlib.resources``, so an installed wheel has them; the top-level ``targets`` link points there).
``EDGEPRUNE_TARGETS`` names another folder to take them from; ``load_target`` also takes a path to a file.

A profile names the device (CPU/GPU), how edgeprune compiles for it (TVM target and host, cross compiler),
which runtime it deploys and measures with (ONNX Runtime with execution providers, TVM, or ``auto``),
how kept channels are aligned, the timing plan, and how the device is reached (local, or a TVM RPC tracker
key). A device today's wheels cannot serve says so in ``unsupported``.
"""

from __future__ import annotations

import os
import platform
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from edgeprune.errors import TargetError
from edgeprune.types import MeasureSettings

# The folder of profiles in the package; EDGEPRUNE_TARGETS (read on each call) replaces it.
PROFILES = ("edgeprune.targets", "profiles")
_KNOWN = {"name", "description", "arch", "device", "cpu", "gpu", "unsupported", "runtime", "tvm", "pruning",
          "measurement", "connection"}
_RUNTIME_KEYS = {"backend", "providers", "threads"}
_TVM_KEYS = {"target", "host", "cc", "cc_package"}
_CONNECTION_KEYS = {"kind", "tracker", "key", "session_timeout_s"}
# "auto" or the name of a registered latency backend (edgeprune.latency.base; checked when measuring starts).
AUTO = "auto"
# ELF e_machine of each architecture, as `uname -m` names it; the artifact check compares against it.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "armv7l": 40}


@dataclass(frozen=True)
class TvmSettings:
    """How to compile for the device: TVM target (and host for GPU targets) as dicts, and the C++ compiler
    that links the shared library (``None``: TVM's default for the host; ``cc_package`` is the Debian package
    that provides it)."""

    target: dict
    host: dict | None = None
    cc: str | None = None
    cc_package: str | None = None


@dataclass(frozen=True)
class Connection:
    """How the device is reached: ``local`` (this machine) or ``rpc`` (a TVM RPC tracker and device key)."""

    kind: str = "local"
    tracker: str | None = None  # HOST:PORT
    key: str | None = None
    session_timeout_s: float = 120.0

    def __post_init__(self):
        if self.kind not in ("local", "rpc"):
            raise TargetError(f"[connection] kind must be 'local' or 'rpc', got {self.kind!r}")
        if self.kind == "rpc" and not (self.tracker and self.key):
            raise TargetError("[connection] kind = 'rpc' needs tracker = 'HOST:PORT' and key")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    arch: str  # CPU architecture of the device, as `uname -m` prints it
    device: str  # "cpu" or "gpu": where the model runs
    backend: str  # "onnxruntime", "tvm" or "auto" (measure both on the final model, deploy the faster)
    providers: tuple[str, ...]  # ONNX Runtime execution providers on the device, in order of preference
    round_to: int  # kept channels are multiples of this
    measurement: MeasureSettings = field(default_factory=MeasureSettings)
    tvm: TvmSettings | None = None
    connection: Connection = field(default_factory=Connection)
    cpu: str = ""
    gpu: str = ""
    unsupported: str = ""  # why today's wheels cannot serve (part of) this device; empty when they can
    source: str = ""  # the TOML file it came from

    def __post_init__(self):
        if self.round_to < 1:
            raise TargetError(f"target {self.name}: round_to must be >= 1, got {self.round_to}")
        if self.device not in ("cpu", "gpu"):
            raise TargetError(f"target {self.name}: device must be 'cpu' or 'gpu', got {self.device!r}")
        if not isinstance(self.backend, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", self.backend):
            raise TargetError(f"target {self.name}: [runtime] backend must be 'auto' or a latency backend's name "
                              f"(onnxruntime, tvm, ...), got {self.backend!r}")
        if self.backend in ("tvm", "auto") and self.tvm is None:
            raise TargetError(f"target {self.name}: backend {self.backend!r} needs a [tvm] section")

    @property
    def is_local(self) -> bool:
        """True when this machine is the device: same architecture and no remote connection."""
        return self.connection.kind == "local" and self.arch == platform.machine()

    @property
    def elf_machine(self) -> int | None:
        return ELF_MACHINES.get(self.arch)

    def where(self) -> str:
        if self.connection.kind == "rpc":
            return f"{self.name} ({self.arch}, TVM RPC key {self.connection.key} at {self.connection.tracker})"
        return f"{self.name} ({self.arch}, local)"

    def no_tvm_reason(self) -> str | None:
        """Why no TVM library is built for this target, or None when one is."""
        if self.tvm is None:
            return f"target {self.name} has no [tvm] section"
        if self.unsupported and self.device == "gpu":
            return self.unsupported
        return None

    @property
    def tvm_device(self) -> str:
        """Where a TVM library for the target runs on the device: "cuda" for a CUDA target, else "cpu"."""
        return "cuda" if self.tvm is not None and self.tvm.target["kind"] == "cuda" else "cpu"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d


def _section(doc: dict, key: str, path: Path, allowed: set[str] | None = None) -> dict:
    val = doc.get(key, {})
    if not isinstance(val, dict):
        raise TargetError(f"{path}: [{key}] must be a table")
    if allowed is not None and set(val) - allowed:
        raise TargetError(f"{path}: [{key}] unknown keys {sorted(set(val) - allowed)}; allowed: {sorted(allowed)}")
    return val


def _tvm_settings(tv: dict, path: Path) -> TvmSettings | None:
    if not tv:
        return None
    target = tv.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("kind"), str):
        raise TargetError(f"{path}: [tvm] target must be a table with a 'kind' (e.g. {{ kind = \"llvm\" }})")
    host = tv.get("host")
    if host is not None and not (isinstance(host, dict) and isinstance(host.get("kind"), str)):
        raise TargetError(f"{path}: [tvm] host must be a table with a 'kind'")
    for k in ("cc", "cc_package"):
        if tv.get(k) is not None and not isinstance(tv[k], str):
            raise TargetError(f"{path}: [tvm] {k} must be a string")
    return TvmSettings(target=dict(target), host=dict(host) if host else None, cc=tv.get("cc"),
                       cc_package=tv.get("cc_package"))


def parse_target(doc: dict, path: Path) -> TargetProfile:
    unknown = set(doc) - _KNOWN
    if unknown:
        raise TargetError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_KNOWN)}")
    for key in ("name", "arch"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise TargetError(f"{path}: '{key}' must be a non-empty string")
    rt = _section(doc, "runtime", path, _RUNTIME_KEYS)
    tv = _section(doc, "tvm", path, _TVM_KEYS)
    cn = _section(doc, "connection", path, _CONNECTION_KEYS)
    pr, ms = _section(doc, "pruning", path), _section(doc, "measurement", path)
    try:
        measurement = MeasureSettings(threads=int(rt.get("threads", 1)), **{k: v for k, v in ms.items()})
    except (TypeError, ValueError) as e:
        raise TargetError(f"{path}: [measurement]: {e}") from None
    round_to = pr.get("round_to", 8)
    if not isinstance(round_to, int):
        raise TargetError(f"{path}: [pruning] round_to must be an integer")
    providers = rt.get("providers", ["CPUExecutionProvider"])
    if not (isinstance(providers, list) and providers and all(isinstance(p, str) for p in providers)):
        raise TargetError(f"{path}: [runtime] providers must be a non-empty list of strings")
    try:
        connection = Connection(**cn)
        return TargetProfile(name=doc["name"], description=doc.get("description", ""), arch=doc["arch"],
                             device=doc.get("device", "cpu"), backend=rt.get("backend", "onnxruntime"),
                             providers=tuple(providers), round_to=round_to, measurement=measurement,
                             tvm=_tvm_settings(tv, path), connection=connection, cpu=doc.get("cpu", ""),
                             gpu=doc.get("gpu", ""), unsupported=doc.get("unsupported", ""), source=str(path))
    except TargetError as e:
        raise TargetError(f"{path}: {e}") from None
    except TypeError as e:
        raise TargetError(f"{path}: {e}") from None


def targets_dir() -> Traversable:
    """Where named profiles come from: ``$EDGEPRUNE_TARGETS`` if set, else the package's ``profiles`` folder."""
    env = os.environ.get("EDGEPRUNE_TARGETS")
    if env:
        return Path(env)
    package, folder = PROFILES
    return resources.files(package).joinpath(folder)


def load_target(name_or_path: str) -> TargetProfile:
    """A profile by name (``NAME.toml`` in ``targets_dir()``) or by path to a TOML file."""
    path: Traversable = Path(name_or_path)
    if path.suffix != ".toml":
        path = targets_dir().joinpath(f"{name_or_path}.toml")
    if not path.is_file():
        known = ", ".join(list_targets()) or "none found"
        raise TargetError(f"no target profile {name_or_path!r} (known: {known})")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: invalid TOML: {e}") from None
    return parse_target(doc, path)


def list_targets() -> list[str]:
    """Names of the profiles in ``targets_dir()``."""
    folder = targets_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name[:-len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file())
