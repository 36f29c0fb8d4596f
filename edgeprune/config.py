"""The compile configuration: one frozen, validated dataclass; the CLI and Python callers build it."""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass

from edgeprune.errors import EdgePruneError


@dataclass(frozen=True)
class LatencyTarget:
    """Either a fraction of the baseline latency (``0.5x``) or an absolute latency (``3.5ms``)."""

    value: float
    unit: str  # "x" or "ms"

    @classmethod
    def parse(cls, text: str) -> "LatencyTarget":
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(x|ms)\s*", str(text))
        if not m:
            raise EdgePruneError(f"latency target {text!r}: give a fraction of the baseline ('0.5x') or milliseconds ('3.5ms')")
        value, unit = float(m.group(1)), m.group(2)
        if value <= 0 or (unit == "x" and value > 1):
            raise EdgePruneError(f"latency target {text!r} must be > 0 (and at most 1x)")
        return cls(value, unit)

    def ratio(self, baseline_ms: float) -> float:
        """The target as a fraction of the baseline latency ``baseline_ms``."""
        return self.value if self.unit == "x" else self.value / baseline_ms

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"


@dataclass(frozen=True)
class CompileConfig:
    model: str
    target: str = "host"
    latency_target: str = "0.5x"
    out: str = "dist"
    data: str = "shapes"
    agent: str = "bo"
    budget: int = 40  # distinct candidate evaluations
    clusters: int | None = None  # bo: number of clusters in the first phase (default ≈ √groups)
    # bo: what groups are clustered by: "importance" (the paper's: channel-importance distributions) or
    # "sensitivity" (each group's accuracy drop when cut alone; edgeprune.search.sensitivity).
    cluster_by: str = "importance"
    batch: int = 1  # bo: candidates proposed at once (q), for parallel measurement
    seed: int = 0
    arch: str | None = None  # for a bare state dict
    # Keyword arguments of the architecture's factory (--arch-kwargs num_classes=10,width=16). Stored as its
    # canonical text, "name=repr(value)" sorted by name and joined by ", " (a str keeps the config frozen,
    # hashable and equal across a JSON round trip for --resume); a dict is accepted and turned into that text.
    # ``arch_kwargs_dict()`` parses it back. They win over arguments written inline in --arch.
    arch_kwargs: str | None = None
    input_shape: tuple[int, ...] | None = None  # C×H×W override
    # Input normalisation: imagenet, unit, "MEAN,STD" or "M1,M2,M3,S1,S2,S3"; None: the checkpoint's record,
    # else the model's own config, else ImageNet's with a warning (edgeprune.data.normalisation).
    normalize: str | None = None
    trust_model_code: bool = False
    train_device: str = "auto"  # fine-tuning, BN recalibration, accuracy: auto (cuda if available), cpu, cuda
    finetune_epochs: int = 4
    finetune_lr: float = 0.02
    distill: bool = False
    search_val_samples: int = 1000  # validation images per candidate during the search
    calib_samples: int = 500  # images for BN recalibration and artifact verification
    # Calibration images that re-estimate BN statistics per candidate during the search (the first ones of
    # the calib split; the ranking they give is measured in docs/benchmarks.md); None: all calib_samples.
    search_bn_samples: int | None = 100
    early_stop: bool = True  # stop a candidate's accuracy early when clearly below the incumbent's
    depth: bool = False  # also search keep/drop of residual blocks with an identity shortcut (model.depth)
    torch_threads: int = 2  # for training and accuracy; latency uses the target's threads
    resume: str | None = None
    measure_on: str | None = None  # a local profile that measures as a stand-in for an unreachable target
    tune_trials: int = 0  # MetaSchedule trials for the final TVM library (0: untuned)
    tracker: str | None = None  # HOST:PORT of a TVM RPC tracker (overrides the profile's [connection])
    device_key: str | None = None  # device key at the tracker (overrides the profile's)
    verify_device: str | None = None  # key of a device (may be emulated) that checks the TVM library's numerics
    accept_closest: bool = False  # deploy the closest candidate when none re-measures under the target (else exit 3)
    overwrite: bool = False  # resuming a finished run may replace its artifacts
    # CI gates on the final model (exit 3 and no artifact when one is missed; None: no gate).
    max_latency_ms: float | None = None  # median of the final measurement, ms
    min_accuracy: float | None = None  # top-1 on the validation split, fraction in [0, 1]
    max_accuracy_drop: float | None = None  # baseline minus final top-1, fraction (0.02 = 2 points)
    quantize: str | None = None  # "int8": ONNX Runtime static quantization of the final model
    int8_max_drop: float = 0.01  # INT8 is deployed only when it loses at most this accuracy (fraction)
    quantize_in_search: bool = False  # measure each candidate's INT8 form (needs quantize="int8")
    # Latency screen (search.screen): proposals predicted above target x (1 + this) are not evaluated.
    latency_screen: float | None = None
    # "search" (an agent over widths, the default) or "gdp" (gates trained with latency-weighted polarisation).
    method: str = "search"
    gdp_epochs: int = 4  # gated-training epochs (fine-tuning after pruning: finetune_epochs)
    gdp_cost: str = "latency"  # GDP's per-channel cost: "latency" (predicted on this target) or "macs"
    calibration_dir: str | None = None  # kernel tables (None: $EDGEPRUNE_CALIBRATION, else ./calibration)
    # Evaluations of earlier runs (edgeprune.history): "auto" ($EDGEPRUNE_HISTORY, else
    # ~/.cache/edgeprune/history.sqlite), "off", or a path. Agents that take ``prior`` (rl, bo) start from it.
    history: str = "auto"
    project_config: str | None = None  # the edgeprune.toml / pyproject.toml some of these came from

    def __post_init__(self):
        LatencyTarget.parse(self.latency_target)
        if self.normalize is not None:
            from edgeprune.data.normalisation import parse_normalisation

            parse_normalisation(self.normalize)  # a bad value is one clear line before anything is loaded
        if self.arch_kwargs is not None:
            kw = self.arch_kwargs if isinstance(self.arch_kwargs, dict) else parse_arch_kwargs(self.arch_kwargs)
            object.__setattr__(self, "arch_kwargs", format_arch_kwargs(kw) or None)
        if self.train_device not in ("auto", "cpu", "cuda"):
            raise EdgePruneError(f"--train-device {self.train_device!r}: give auto, cpu or cuda")
        if self.cluster_by not in ("importance", "sensitivity"):
            raise EdgePruneError(f"--cluster-by {self.cluster_by!r}: give importance or sensitivity")
        if self.clusters is not None and self.clusters < 1:
            raise EdgePruneError("--clusters must be at least 1")
        if self.batch < 1:
            raise EdgePruneError("--batch must be at least 1")
        if self.budget < 1:
            raise EdgePruneError("--budget must be at least 1")
        if self.finetune_epochs < 0:
            raise EdgePruneError("--finetune-epochs must be >= 0")
        if self.tune_trials < 0:
            raise EdgePruneError("--tune-trials must be >= 0")
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise EdgePruneError("--max-latency-ms must be > 0")
        for name in ("min_accuracy", "max_accuracy_drop"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise EdgePruneError(f"--{name.replace('_', '-')} is a fraction in [0, 1] (0.9, or 90%), got {v}")
        if self.quantize not in (None, "int8"):
            raise EdgePruneError(f"--quantize {self.quantize!r}: the only form is 'int8'")
        if self.quantize_in_search and self.quantize != "int8":
            raise EdgePruneError("--quantize-in-search needs --quantize int8 (the search measures the form that "
                                 "is deployed)")
        if not 0 <= self.int8_max_drop <= 1:
            raise EdgePruneError("--int8-max-drop is a fraction in [0, 1] (0.01, or 1%)")
        if self.search_val_samples < 10 or self.calib_samples < 10:
            raise EdgePruneError("search_val_samples and calib_samples must be at least 10")
        if self.method not in ("search", "gdp"):
            raise EdgePruneError(f"--method {self.method!r}: give search or gdp")
        if self.gdp_cost not in ("latency", "macs"):
            raise EdgePruneError(f"--gdp-cost {self.gdp_cost!r}: give latency or macs")
        if self.gdp_epochs < 1:
            raise EdgePruneError("--gdp-epochs must be at least 1")
        if self.method == "gdp" and (self.quantize_in_search or self.latency_screen is not None or self.depth):
            raise EdgePruneError("--method gdp trains gates instead of searching: --quantize-in-search, "
                                 "--latency-screen and --depth are search options")
        if not self.history:
            raise EdgePruneError("--history must be off, auto or a path")
        if self.latency_screen is not None and not 0 <= self.latency_screen <= 10:
            raise EdgePruneError("--latency-screen is a margin over the target, a fraction such as 0.15 (15%)")
        if self.search_bn_samples is not None and self.search_bn_samples < 10:
            raise EdgePruneError("search_bn_samples must be at least 10 (or None: all calib_samples)")

    def arch_kwargs_dict(self) -> dict:
        """``arch_kwargs`` as a dict ({} when none)."""
        return parse_arch_kwargs(self.arch_kwargs) if self.arch_kwargs else {}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d

    # Settings that define the search; a resumed run must match them (budget may grow). The pipeline also
    # compares the normalisation the run resolved (from --normalize, the checkpoint or the model's config).
    SEARCH_KEYS = ("target", "latency_target", "data", "agent", "seed", "arch", "arch_kwargs", "search_val_samples",
                   "calib_samples", "search_bn_samples", "early_stop", "depth", "quantize_in_search", "latency_screen", "method", "gdp_epochs", "gdp_cost",
                   "clusters", "cluster_by", "batch", "measure_on", "device_key")


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (p.strip() for p in parts) if p]


def parse_arch_kwargs(text: str) -> dict:
    """``"num_classes=10,width=16,act=relu"`` → ``{"num_classes": 10, "width": 16, "act": "relu"}``.

    Each value is read as a Python literal (``ast.literal_eval``: numbers, quoted strings, tuples, lists,
    dicts, True/False/None; nothing is evaluated), else kept as the string it is."""
    out = {}
    for item in _split_top_level(str(text)):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.isidentifier() or not value:
            raise EdgePruneError(f"--arch-kwargs {text!r}: {item!r} is not name=value (e.g. num_classes=10,width=16)")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[key] = value
    return out


def format_arch_kwargs(kwargs: dict) -> str:
    """The canonical text of ``kwargs`` ("name=repr(value)", sorted, ", "-joined); values must be literals."""
    items = []
    for key in sorted(kwargs):
        value = kwargs[key]
        if not str(key).isidentifier():
            raise EdgePruneError(f"arch_kwargs: {key!r} is not a valid argument name")
        try:
            same = ast.literal_eval(repr(value)) == value
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            same = False
        if not same:
            raise EdgePruneError(f"arch_kwargs: {key}={value!r} is not a Python literal (numbers, strings, tuples, "
                                 "lists, dicts, True/False/None)")
        items.append(f"{key}={value!r}")
    return ", ".join(items)
