"""``edgeprune verify DIR``: re-check a built artifact folder, e.g. in CI after it was cached or downloaded.

Every check says what it compared; any mismatch fails the whole folder. The checks: the manifest's
sha256 and size of every artifact; ``model.onnx`` passes ``onnx.checker``; ``model.pt`` reloads safely and
its outputs match ``model.onnx`` in ONNX Runtime on real inputs (the calibration images of the run's data
when they can be read here, else seeded random inputs, and the check says so); ``model.tvm.so`` runs and
matches ONNX Runtime when it was built for this machine (a cross-compiled library is named, not run).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgePruneError
from edgeprune.latency.backends.onnxruntime import ort_outputs
from edgeprune.report import sha256_file
from edgeprune.verify import compare

SAMPLES = 32  # inputs compared per numerical check


@dataclass(frozen=True)
class Check:
    """One check of an artifact folder: ``ok`` is None when it could not run here (and ``detail`` says why)."""

    name: str
    ok: bool | None
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _inputs(report: dict, shape: tuple[int, ...], n: int) -> tuple[np.ndarray, str]:
    """Real calibration images of the run's data (N×C×H×W), else seeded random ones; and which it was."""
    from edgeprune.data import Normalisation, load_data

    source = (report.get("config") or {}).get("data") or (report.get("data") or {}).get("name")
    try:
        # The run's data as the run saw them: at the model's input shape, with its normalisation.
        norm = (report.get("data") or {}).get("normalisation")
        data = load_data(source, Normalisation.from_dict(norm) if norm else None, tuple(shape))
        x = data.calib[0][:n].numpy().astype(np.float32)
        if tuple(x.shape[1:]) == tuple(shape):
            return x, f"{len(x)} calibration images of {source!r}"
    except Exception:  # noqa: BLE001 - any reason the data is not here: fall back, and say so
        pass
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32), \
        f"{n} seeded random inputs (the run's data {source!r} is not readable here)"


def verify_artifacts(folder: str | Path, *, samples: int = SAMPLES) -> list[Check]:
    """Every check of ``folder`` (``OUT/<name>/``). Raises ``EdgePruneError`` when it is not an artifact folder."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        report = json.loads((folder / "report.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgePruneError(f"{folder} is not an edgeprune artifact folder (manifest.json and report.json "
                             f"written by a good run): {e}") from None
    checks = []
    for name, art in manifest.get("artifacts", {}).items():
        path = folder / name
        if not path.is_file():
            checks.append(Check(f"{name} present", False, "missing"))
            continue
        same = sha256_file(path) == art["sha256"] and path.stat().st_size == art["bytes"]
        checks.append(Check(f"{name} sha256", same, "matches the manifest" if same else
                            f"differs from the manifest ({art['sha256'][:12]}…): changed after it was written"))
    onnx_path, pt_path = folder / "model.onnx", folder / "model.pt"
    if not (onnx_path.is_file() and pt_path.is_file()):
        return checks
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
        checks.append(Check("model.onnx onnx.checker", True, "full check passed"))
    except Exception as e:  # noqa: BLE001 - any checker failure is the verdict
        checks.append(Check("model.onnx onnx.checker", False, str(e).splitlines()[0][:200]))
        return checks
    shape = tuple(report["model"]["input_shape"])
    x, what = _inputs(report, shape, samples)
    try:
        ref = ort_outputs(onnx_path, x)
    except Exception as e:  # noqa: BLE001 - a model ONNX Runtime cannot load or run is the verdict
        checks.append(Check("model.onnx runs in ONNX Runtime", False, str(e).splitlines()[0][:200]))
        return checks
    if manifest.get("model_pt_format") == "pickled-module":
        # The input was a pickled module, so model.pt is one: reloading it runs code from the file, which a
        # check of a downloaded or cached folder must not do by itself.
        checks.append(Check("model.pt vs model.onnx", None, "model.pt is a pickled module (the input model was one): "
                            "not unpickled here; load_model(path, trust_code=True) reloads it"))
    else:
        checks.append(_check_pt(pt_path, x, ref, what))
    lib = folder / "model.tvm.so"
    if lib.is_file():
        checks.append(_check_tvm(lib, manifest, x, ref, what))
    return checks


def _check_pt(pt_path: Path, x: np.ndarray, ref: np.ndarray, what: str) -> Check:
    import torch

    from edgeprune.model.load import load_model

    try:
        model = load_model(pt_path).model.eval()  # safe loading: weights_only
    except EdgePruneError as e:
        return Check("model.pt vs model.onnx", False, f"model.pt does not reload: {e}")
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    v = compare(ref, got)
    return Check("model.pt vs model.onnx", v.ok, f"max |diff| {v.max_abs_diff:.2e} (atol {v.atol} + rtol {v.rtol}·|ref|) "
                                                 f"on {what}")


def _check_tvm(lib: Path, manifest: dict, x: np.ndarray, ref: np.ndarray, what: str) -> Check:
    from edgeprune.compile.tvm import inspect_library
    from edgeprune.latency import get_backend

    arch = inspect_library(lib).arch
    gpu = manifest.get("artifacts", {}).get("model.tvm.so", {}).get("library", {}).get("embedded_device_modules")
    if arch != platform.machine() or gpu:
        return Check("model.tvm.so vs model.onnx", None, f"built for {arch}{' with ' + ', '.join(gpu) if gpu else ''}: "
                                                       f"it runs on the device, not here")
    v = compare(ref, get_backend("tvm").outputs(lib, x))
    return Check("model.tvm.so vs model.onnx", v.ok, f"max |diff| {v.max_abs_diff:.2e} on {what}, on this machine")
