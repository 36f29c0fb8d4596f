"""Load and validate target profiles (TOML)."""

from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.errors import TargetError
from edgeprune.latency.meter import MeasureSettings

TARGETS_DIR = Path(os.environ.get("EDGEPRUNE_TARGETS", Path(__file__).resolve().parents[2] / "targets"))
_KNOWN = {"name", "description", "arch", "device", "runtime", "pruning", "measurement"}


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    arch: str  # CPU architecture of the device, as `uname -m` prints it
    device: str  # "cpu" or "gpu"
    backend: str  # latency backend name (registry key)
    providers: tuple[str, ...]
    round_to: int  # kept channels are multiples of this
    measurement: MeasureSettings = field(default_factory=MeasureSettings)
    source: str = ""  # the TOML file it came from

    def __post_init__(self):
        if self.round_to < 1:
            raise TargetError(f"target {self.name}: round_to must be >= 1, got {self.round_to}")
        if self.device not in ("cpu", "gpu"):
            raise TargetError(f"target {self.name}: device must be 'cpu' or 'gpu', got {self.device!r}")

    @property
    def is_local(self) -> bool:
        """True when this machine can measure for the target itself."""
        return self.arch == platform.machine()

    def where(self) -> str:
        return f"{self.name} ({self.arch}, local)"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d


def _section(doc: dict, key: str, path: Path) -> dict:
    val = doc.get(key, {})
    if not isinstance(val, dict):
        raise TargetError(f"{path}: [{key}] must be a table")
    return val


def parse_target(doc: dict, path: Path) -> TargetProfile:
    unknown = set(doc) - _KNOWN
    if unknown:
        raise TargetError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_KNOWN)}")
    for key in ("name", "arch"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise TargetError(f"{path}: '{key}' must be a non-empty string")
    rt, pr, ms = (_section(doc, k, path) for k in ("runtime", "pruning", "measurement"))
    try:
        measurement = MeasureSettings(threads=int(rt.get("threads", 1)), **{k: v for k, v in ms.items()})
    except (TypeError, ValueError) as e:
        raise TargetError(f"{path}: [measurement]: {e}") from None
    round_to = pr.get("round_to", 8)
    if not isinstance(round_to, int):
        raise TargetError(f"{path}: [pruning] round_to must be an integer")
    return TargetProfile(name=doc["name"], description=doc.get("description", ""), arch=doc["arch"],
                         device=doc.get("device", "cpu"), backend=rt.get("backend", "onnxruntime"),
                         providers=tuple(rt.get("providers", ["CPUExecutionProvider"])), round_to=round_to,
                         measurement=measurement, source=str(path))


def load_target(name_or_path: str) -> TargetProfile:
    """A profile by name (``targets/NAME.toml``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = TARGETS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(list_targets()) or "none found"
        raise TargetError(f"no target profile {name_or_path!r} (known: {known})")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: invalid TOML: {e}") from None
    return parse_target(doc, path)


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))
