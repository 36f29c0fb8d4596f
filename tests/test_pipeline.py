"""The pipeline's logic, fast: compile_model with a fake meter (latency from the model's size).

The real meters are tested in tests/latency and tests/remote, and the whole CLI against real ONNX Runtime
and TVM in tests/test_cli.py; here the search loop, resume, the final choice, exit 3 and exit 4, the
staging folder and the report are checked in seconds.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from edgeprune.config import CompileConfig
from edgeprune.errors import (EdgePruneError, InfeasibleTargetError, OutputError, RunStoreError, VerificationError)
from edgeprune.latency.meter import Pair
from edgeprune.latency.where import Meters
from edgeprune.pipeline import compile_model
from edgeprune.progress import EdgePruneWarning
from edgeprune.types import Measurement, MeasureSettings

SETTINGS = MeasureSettings(warmup=0, rounds=2, runs_per_round=2, final_rounds=6)
PROFILE = """name = "fakebox"
description = "ONNX Runtime only: nothing to compile with TVM"
arch = "x86_64"
{extra}
[runtime]
backend = "onnxruntime"
[pruning]
round_to = 8
[measurement]
warmup = 0
rounds = 2
runs_per_round = 2
final_rounds = 6
"""


class FakeMeter:
    """Latency proportional to the ONNX model's size (its weights), 1 ms for the baseline.

    ``drift`` multiplies latencies measured with ``final_rounds`` (confirmations and the final model):
    a machine that got slower, the winner's curse. ``final_drift`` only for the final model."""

    runtime = "fake"
    where = "fake (test)"
    parallel = 1
    settings = SETTINGS

    def __init__(self, base_size: int, drift: float = 1.0, final_drift: float = 1.0, after_first: float = 1.0,
                 runtime: str = "fake", int8_speedup: float = 1.0):
        self.base_size, self.drift, self.final_drift, self.after_first = base_size, drift, final_drift, after_first
        self.runtime, self.int8_speedup = runtime, int8_speedup
        self.measured: list[str] = []
        self.closed = False

    def _m(self, ms: float, rounds: int, ratio: float) -> Measurement:
        return Measurement(median_ms=ms, p10_ms=ms, p90_ms=ms, min_ms=ms, spread=0.0, repeats=rounds * 2, warmup=0,
                           rounds=rounds, threads=1, backend="fake", backend_version="0", where=self.where,
                           ratio_to_baseline=ratio, baseline_median_ratio=ratio, noise=0.0)

    def baseline(self, *, rounds=None) -> Measurement:
        return self._m(1.0, rounds or SETTINGS.final_rounds, 1.0)

    def measure(self, artifact, *, rounds=None) -> Pair:
        rounds = rounds or SETTINGS.rounds
        self.measured.append(artifact.label)
        ratio = len(artifact.onnx) / self.base_size * (self.after_first if self.measured[:-1] else 1.0)
        if artifact.label == "int8":  # QDQ graphs are not smaller for tiny models: time INT8 as the float model
            ratio = self.final_ratio / self.int8_speedup
        if artifact.label == "final":
            self.final_ratio = ratio
        if rounds >= SETTINGS.final_rounds:
            ratio *= self.drift * (self.final_drift if artifact.label == "final" else 1.0)
        return Pair(self._m(ratio, rounds, ratio), self._m(1.0, rounds, 1.0))

    def measure_many(self, artifacts, *, rounds=None):
        return [self.measure(a, rounds=rounds) for a in artifacts]

    def close(self) -> None:
        self.closed = True


class Opener:
    """Stands in for ``latency.where.open_meters``; keeps the meter for the test to look at."""

    def __init__(self, **kw):
        self.kw, self.meter, self.calls = kw, None, 0

    def __call__(self, plan, runtimes, baseline, example, stored_choice=None, rep=None, *, parallel=1, target=None):
        self.calls += 1
        self.meter = FakeMeter(len(baseline.onnx), **self.kw)
        return Meters({self.meter.runtime: self.meter}, self.meter.runtime)


@pytest.fixture()
def profile(tmp_path):
    path = tmp_path / "fakebox.toml"
    path.write_text(PROFILE.format(extra=""))
    return str(path)


def cfg(tiny_ckpt, profile, out, **kw) -> CompileConfig:
    base = dict(model=str(tiny_ckpt), target=profile, out=str(out), data="digits", agent="random", budget=4,
                latency_target="0.8x", finetune_epochs=0, search_val_samples=60, calib_samples=60)
    return CompileConfig(**dict(base, **kw))


def test_a_run_writes_verified_artifacts_and_one_report(tiny_ckpt, profile, tmp_path):
    threads = torch.get_num_threads()
    opener = Opener()
    r = compile_model(cfg(tiny_ckpt, profile, tmp_path / "out", torch_threads=1), opener=opener)
    out = tmp_path / "out" / "tiny"
    assert r.out_dir == out and sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.pt",
                                                                          "report.html", "report.json"]
    page = (out / "report.html").read_text()
    assert "Pareto" in page and "Per-layer latency before and after" in page  # the page people look at
    layers = r.report["final"]["layer_latency"]
    assert layers["nodes"] and "Conv" in layers["by_op"]
    conv = layers["by_op"]["Conv"]
    assert conv["final_ms"] < conv["baseline_ms"]  # pruned convolutions take less time, even profiled
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no staging left
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(r.report))  # one object, serialised once
    assert report["status"] == "ok" and report["search"]["evaluations"] == 4 and len(report["candidates"]) == 4
    assert report["final"]["meets_latency_target"] and report["final"]["latency"]["ratio_to_baseline"] <= 0.8
    assert report["search"]["confirmed"] and report["search"]["confirmations"]
    ev = report["search"]["evaluation"]
    assert ev["bn_samples"] == 100 and ev["early_stop"] is True and 0 <= ev["stopped_early"] <= 3
    assert report["candidates"][0]["accuracy_images"] == 60  # no incumbent yet: every search image
    assert all(c["accuracy_images"] in (60,) or c["accuracy_images"] % 200 == 0 for c in report["candidates"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"]["model.pt"]["verification"]["ok"] is True
    assert manifest["measurement_threads"] == 1
    # The normalisation (a checkpoint without a record: the legacy one), where it came from and what model.onnx
    # expects are in the report, the manifest and model.pt's meta; model.onnx takes any batch size.
    norm = report["data"]["normalisation"]
    assert norm["name"] == "legacy" and norm["mean"] == [0.5] * 3 and "checkpoint" in norm["source"]
    assert manifest["model_input"]["shape"] == ["N", 3, 32, 32] and manifest["model_input"]["normalisation"] == norm
    assert manifest["model_input"]["expects"] == report["data"]["onnx_input"] and "(x − mean)/std" in page
    assert torch.load(out / "model.pt", weights_only=True)["meta"]["normalisation"] == norm
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": torch.zeros(4, 3, 32, 32).numpy()})[0].shape == (4, 10)
    # the smallest candidate was measured first (reachability), the final model last; the meter was closed
    assert set(opener.meter.measured[0].split(",")) == {"8"} and opener.meter.measured[-1] == "final"
    assert opener.meter.closed
    assert torch.get_num_threads() == threads  # global torch state restored


def test_depth_pruning_searches_blocks_drops_them_and_model_pt_rebuilds(tiny_ckpt, profile, tmp_path):
    """--depth: the tiny ResNet's one identity block is a search dimension; the smallest candidate (measured
    first) drops it; the report lists it; a resumed run keeps the same space; model.pt rebuilds."""
    from edgeprune.model.load import load_model

    out = tmp_path / "out"
    opener = Opener()
    r = compile_model(cfg(tiny_ckpt, profile, out, depth=True, budget=3, latency_target="0.9x"), opener=opener)
    groups = r.report["search"]["groups"]
    assert groups["blocks"] == ["layer1.0"]
    n = len(groups["groups"]) + 1
    assert all(len(c["widths"]) == n and c["widths"][-1] in (0, 1) for c in r.report["candidates"])
    assert opener.meter.measured[0].split(",")[-1] == "0"  # the smallest candidate drops the block
    final = r.report["final"]
    assert final["dropped_blocks"] == (["layer1.0"] if final["widths"][-1] == 0 else [])
    loaded = load_model(r.out_dir / "model.pt")
    assert isinstance(loaded.model.layer1[0], torch.nn.Identity) == (final["widths"][-1] == 0)
    assert "Residual blocks" in (r.out_dir / "report.html").read_text()
    more = compile_model(cfg(tiny_ckpt, profile, out, depth=True, budget=4, latency_target="0.9x",
                             resume=r.run_id, overwrite=True), opener=Opener())
    assert more.report["search"]["evaluated_this_session"] == 1
    with pytest.raises(RunStoreError, match="different settings.*depth"):
        compile_model(cfg(tiny_ckpt, profile, out, budget=4, latency_target="0.9x", resume=r.run_id,
                          overwrite=True), opener=Opener())


def test_resume_continues_and_never_silently_overwrites_a_finished_run(tiny_ckpt, profile, tmp_path):
    out = tmp_path / "out"
    first = compile_model(cfg(tiny_ckpt, profile, out, budget=3), opener=Opener())
    more = compile_model(cfg(tiny_ckpt, profile, out, budget=5, resume=first.run_id, overwrite=True), opener=Opener())
    s = more.report["search"]
    assert s["evaluations"] == 5 and s["evaluated_this_session"] == 2
    assert [c["from_store"] for c in more.report["candidates"]] == [True] * 3 + [False] * 2
    with pytest.raises(RunStoreError, match="finished.*--overwrite"):
        compile_model(cfg(tiny_ckpt, profile, out, budget=5, resume=first.run_id), opener=Opener())
    with pytest.raises(RunStoreError, match="different settings"):
        compile_model(cfg(tiny_ckpt, profile, out, seed=1, resume=first.run_id, overwrite=True), opener=Opener())


def test_no_candidate_confirmed_exits_3_and_keeps_the_previous_good_artifacts(tiny_ckpt, profile, tmp_path):
    out = tmp_path / "out"
    compile_model(cfg(tiny_ckpt, profile, out), opener=Opener())
    before = {p.name: p.read_bytes() for p in (out / "tiny").iterdir()}
    with pytest.raises(InfeasibleTargetError, match="re-measured under the target.*--accept-closest") as e:
        compile_model(cfg(tiny_ckpt, profile, out, seed=3), opener=Opener(drift=100.0))
    assert e.value.exit_code == 3
    after = {p.name: p.read_bytes() for p in (out / "tiny").iterdir() if not p.name.startswith("report.failed.")}
    assert after == before  # nothing good was touched
    failed = json.loads((out / "tiny" / "report.failed.json").read_text())
    assert failed["status"] == "infeasible" and "accept-closest" in failed["reason"] and failed["final"] is None
    assert "infeasible" in (out / "tiny" / "report.failed.html").read_text()  # beside the good report.html
    assert failed["search"]["confirmed"] is False and failed["candidates"]
    # Opting in deploys the closest one and says so.
    with pytest.warns(EdgePruneWarning) as seen:
        ok = compile_model(cfg(tiny_ckpt, profile, out, seed=3, accept_closest=True), opener=Opener(drift=100.0))
    said = [str(w.message) for w in seen]
    assert any("no candidate confirmed" in m for m in said) and any("final model re-measured" in m for m in said)
    assert set(ok.report["warnings"]) == set(said)
    assert ok.report["status"] == "ok" and not (out / "tiny" / "report.failed.json").exists()


def test_a_final_model_that_misses_the_target_exits_3(tiny_ckpt, profile, tmp_path):
    with pytest.raises(InfeasibleTargetError, match=r"final model re-measured at .*median of .*, .*, "):
        compile_model(cfg(tiny_ckpt, profile, tmp_path), opener=Opener(final_drift=100.0))
    assert not (tmp_path / "tiny" / "model.onnx").exists()
    final = json.loads((tmp_path / "tiny" / "report.failed.json").read_text())["final"]
    # A miss is measured twice more before it fails the run; all three missed, the median decided.
    assert final["meets_latency_target"] is False and len(final["measured_ratios"]) == 3
    assert all(r > 0.8 for r in final["measured_ratios"])
    assert final["latency"]["ratio_to_baseline"] == sorted(final["measured_ratios"])[1]


def test_an_unreachable_target_is_found_before_the_search(tiny_ckpt, profile, tmp_path):
    opener = Opener()
    with pytest.raises(InfeasibleTargetError, match="cannot be met: even the smallest model"):
        compile_model(cfg(tiny_ckpt, profile, tmp_path, latency_target="0.01x"), opener=opener)
    # one measurement, of every group at its narrowest (8 channels), not the whole budget
    assert len(opener.meter.measured) == 1 and set(opener.meter.measured[0].split(",")) == {"8"}
    report = json.loads((tmp_path / "tiny" / "report.failed.json").read_text())
    assert report["status"] == "infeasible" and report["candidates"] == []


def test_no_feasible_candidate_exits_3_naming_the_fastest(tiny_ckpt, profile, tmp_path):
    # The smallest candidate (measured first) meets the target; everything the search tries is far slower.
    with pytest.raises(InfeasibleTargetError, match="no candidate met the latency target.*fastest found") as e:
        compile_model(cfg(tiny_ckpt, profile, tmp_path), opener=Opener(after_first=100.0))
    assert e.value.fastest is not None and e.value.fastest.latency_ms > 0.8
    report = json.loads((tmp_path / "tiny" / "report.failed.json").read_text())
    assert report["search"]["evaluations"] == 4 and not any(c["feasible"] for c in report["candidates"])


def test_an_absolute_target_in_ms(tiny_ckpt, profile, tmp_path):
    r = compile_model(cfg(tiny_ckpt, profile, tmp_path, latency_target="0.9ms"), opener=Opener())
    assert r.report["target"]["latency_target_ratio"] == pytest.approx(0.9)  # the fake baseline is 1 ms
    assert r.report["target"]["latency_target_ms"] == pytest.approx(0.9)


def test_finetuning_with_distillation_is_reported(tiny_ckpt, profile, tmp_path):
    import copy

    from edgeprune.model.evaluate import recalibrate_bn
    from edgeprune.model.load import load_model
    from edgeprune.progress import Reporter
    from edgeprune.stages.load import load

    c = cfg(tiny_ckpt, profile, tmp_path, finetune_epochs=1, distill=True)
    r = compile_model(c, opener=Opener())
    f = r.report["final"]
    assert f["finetune"] == {"epochs": 1, "lr": 0.02, "distill": True, "device": "cpu",  # auto: no CUDA here
                             "bn_recalibrated_images": 60}
    assert 0 <= f["accuracy_before_finetune"] <= 1 and 0 <= f["accuracy"] <= 1
    # After fine-tuning, the BN statistics are the calibration images' for the final weights (a
    # recalibration of the written model changes nothing), not the training's running averages.
    final = load_model(r.out_dir / "model.pt").model
    calib = load(c, Reporter()).data.calib[0][: c.calib_samples]
    again = copy.deepcopy(final)
    recalibrate_bn(again, calib)
    bns = [(a, b) for a, b in zip(final.modules(), again.modules()) if isinstance(a, torch.nn.BatchNorm2d)]
    assert bns and all(torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
                       and torch.allclose(a.running_var, b.running_var, atol=1e-6) for a, b in bns)


def test_a_failed_verification_exits_4_and_leaves_no_artifact(tiny_ckpt, profile, tmp_path, monkeypatch):
    from edgeprune import report as report_mod
    from edgeprune.verify import Verdict

    monkeypatch.setattr(report_mod, "verify_checkpoint",
                        lambda path, model, inputs, **kw: Verdict(False, 1.0, len(inputs), method="tampered"))
    with pytest.raises(VerificationError, match="model.pt does not reproduce") as e:
        compile_model(cfg(tiny_ckpt, profile, tmp_path), opener=Opener())
    assert e.value.exit_code == 4
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["report.failed.html", "report.failed.json"]
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kw, match", [
    ({"agent": "nope"}, "unknown agent 'nope'"),
    ({"agent": "uniform", "batch": 2}, "takes no option 'batch'"),
    ({"data": "no/such/folder"}, "no/such/folder"),
    ({"agent": "bo-plain", "cluster_by": "sensitivity"}, "'bo-plain' does not cluster"),
    ({"agent": "uniform", "cluster_by": "sensitivity"}, "'uniform' does not cluster"),
])
def test_bad_options_are_refused_before_anything_is_measured(tiny_ckpt, profile, tmp_path, kw, match):
    opener = Opener()
    with pytest.raises(EdgePruneError, match=match):
        compile_model(cfg(tiny_ckpt, profile, tmp_path, **kw), opener=opener)
    assert opener.calls == 0 and not (tmp_path / "runs.sqlite").exists()


def test_cluster_by_sensitivity_cuts_each_group_alone_and_clusters_by_the_drops(tiny_ckpt, profile, tmp_path):
    """--cluster-by sensitivity: one drop per group in the report, the agent's clusters are Ward's on those
    drops' features, and a resumed run computes the same clusters."""
    from edgeprune.search.cluster import ward_clusters
    from edgeprune.search.sensitivity import sensitivity_features

    out = tmp_path / "out"
    r = compile_model(cfg(tiny_ckpt, profile, out, agent="bo", clusters=2, budget=6, cluster_by="sensitivity"),
                      opener=Opener())
    s = r.report["search"]
    groups = s["groups"]["groups"]
    drops = s["group_drops"]
    assert s["cluster_by"] == "sensitivity" and len(drops) == len(groups) >= 2
    # The tiny model is untrained (drops near 0): the drops' meaning is checked on a trained one in
    # tests/search/test_sensitivity.py.
    assert all(-1.0 <= d <= 1.0 for d in drops)
    clusters = s["agent_info"]["clusters"]
    assert clusters[0] == ward_clusters(sensitivity_features(np.array(drops), *_depth_width(tiny_ckpt, groups)),
                                        2).tolist()
    more = compile_model(cfg(tiny_ckpt, profile, out, agent="bo", clusters=2, budget=7, cluster_by="sensitivity",
                             resume=r.run_id, overwrite=True), opener=Opener())
    assert more.report["search"]["group_drops"] == drops and more.report["search"]["agent_info"]["clusters"] == clusters
    with pytest.raises(RunStoreError, match="different settings"):  # the clustering is part of the search
        compile_model(cfg(tiny_ckpt, profile, out, agent="bo", clusters=2, budget=8, resume=r.run_id, overwrite=True),
                      opener=Opener())
    with pytest.raises(EdgePruneError, match="--cluster-by 'drops'"):
        cfg(tiny_ckpt, profile, out, cluster_by="drops")


def _depth_width(ckpt, groups):
    from edgeprune.model.load import load_model

    model = load_model(str(ckpt)).model
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return np.array([order[g["name"]] for g in groups]), np.array([g["full"] for g in groups])


def test_an_output_path_that_is_a_file_is_refused(tiny_ckpt, profile, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="existing file"):
        compile_model(cfg(tiny_ckpt, profile, tmp_path / "afile"), opener=Opener())


def test_warnings_reach_python_callers_and_the_report(tiny_ckpt, tmp_path):
    path = tmp_path / "limited.toml"
    path.write_text(PROFILE.format(extra='unsupported = "a limitation the user must hear about"'))
    with pytest.warns(EdgePruneWarning, match="a limitation the user must hear about"):
        r = compile_model(cfg(tiny_ckpt, str(path), tmp_path / "out"), opener=Opener())
    assert any("limitation" in w for w in r.report["warnings"])


def test_config_is_validated_when_built(tiny_ckpt):
    for kw in ({"budget": 0}, {"batch": 0}, {"latency_target": "2x"}, {"latency_target": "fast"},
               {"finetune_epochs": -1}):
        with pytest.raises(EdgePruneError):
            CompileConfig(model=str(tiny_ckpt), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CompileConfig(model=str(tiny_ckpt))


def test_ctrl_c_while_finetuning_names_the_run_to_resume(tiny_ckpt, profile, tmp_path):
    from edgeprune.errors import Interrupted
    from edgeprune.progress import Reporter

    class StopInTraining(Reporter):
        def train_step(self, step, total, loss):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"while fine-tuning run (\S+);.*--resume \1") as e:
        compile_model(cfg(tiny_ckpt, profile, tmp_path, finetune_epochs=1), reporter=StopInTraining(), opener=Opener())
    assert e.value.exit_code == 130 and not (tmp_path / "tiny").exists()


def test_ci_gates_pass_or_exit_3_with_the_reason_and_no_artifact(tiny_ckpt, profile, tmp_path):
    from edgeprune.stages.gates import GateError

    ok = compile_model(cfg(tiny_ckpt, profile, tmp_path / "a", max_latency_ms=5.0, min_accuracy=0.0,
                           max_accuracy_drop=1.0), opener=Opener())
    assert [g["passed"] for g in ok.report["gates"]] == [True, True, True]
    # The fake final model measures well under 1 ms; the untrained tiny model is far below 99% accuracy.
    with pytest.raises(GateError, match=r"misses the CI gate\(s\): latency .* > --max-latency-ms 0.001; "
                                        r"accuracy .* < --min-accuracy 99.00%") as e:
        compile_model(cfg(tiny_ckpt, profile, tmp_path / "b", max_latency_ms=0.001, min_accuracy=0.99),
                      opener=Opener())
    assert e.value.exit_code == 3 and not (tmp_path / "b" / "tiny" / "model.onnx").exists()
    failed = json.loads((tmp_path / "b" / "tiny" / "report.failed.json").read_text())
    assert failed["status"] == "gate_failed" and [g["passed"] for g in failed["gates"]] == [False, False]
    assert failed["config"]["max_latency_ms"] == 0.001


def test_gate_values_are_validated(tiny_ckpt):
    for kw in ({"min_accuracy": 93.0}, {"max_accuracy_drop": -0.1}, {"max_latency_ms": 0}):
        with pytest.raises(EdgePruneError):
            CompileConfig(model=str(tiny_ckpt), **kw)


def test_int8_is_checked_by_accuracy_measured_and_deployed_only_when_it_pays(tiny_ckpt, profile, tmp_path):
    r = compile_model(cfg(tiny_ckpt, profile, tmp_path / "a", quantize="int8", int8_max_drop=1.0, min_accuracy=0.0,
                          max_latency_ms=100.0), opener=Opener(runtime="onnxruntime", int8_speedup=2.0))
    q = r.report["quantized"]
    assert q["deployed"] and "faster" in q["reason"]
    gates = {g["name"]: g["value"] for g in r.report["gates"]}  # the gates judge the deployed INT8 form
    assert gates["min_accuracy"] == q["check"]["int8_accuracy"]
    assert gates["max_latency_ms"] == q["latency"]["median_ms"] != r.report["final"]["latency"]["median_ms"]
    assert q["latency"]["ratio_to_baseline"] < r.report["final"]["latency"]["ratio_to_baseline"]
    assert 0 <= q["check"]["int8_accuracy"] <= 1 and q["check"]["samples"] > 0
    manifest = json.loads((tmp_path / "a" / "tiny" / "manifest.json").read_text())
    assert manifest["deployed_form"] == "int8" and manifest["artifacts"]["model.int8.onnx"]["deployed"]
    assert "INT8 (ONNX Runtime static quantization)" in (tmp_path / "a" / "tiny" / "report.html").read_text()
    import onnx

    int8 = onnx.load(str(tmp_path / "a" / "tiny" / "model.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    # Not faster: measured, not deployed, and the report says why.
    r = compile_model(cfg(tiny_ckpt, profile, tmp_path / "c", quantize="int8", int8_max_drop=1.0),
                      opener=Opener(runtime="onnxruntime", int8_speedup=0.8))
    assert not r.report["quantized"]["deployed"] and "not faster" in r.report["quantized"]["reason"]
    # A runtime that cannot run QDQ models: written and checked, not measured, not deployed.
    r = compile_model(cfg(tiny_ckpt, profile, tmp_path / "b", quantize="int8"), opener=Opener())
    assert not r.report["quantized"]["deployed"] and "not measured" in r.report["quantized"]["reason"]
    assert json.loads((tmp_path / "b" / "tiny" / "manifest.json").read_text())["deployed_form"] == "fp32"


def test_quantize_in_search_measures_int8_candidates_and_the_deployed_form_meets_the_target(tiny_ckpt, profile,
                                                                                            tmp_path):
    with pytest.raises(EdgePruneError, match="needs --quantize int8"):
        cfg(tiny_ckpt, profile, tmp_path / "x", quantize_in_search=True)
    opener = Opener(runtime="onnxruntime", int8_speedup=2.0)
    r = compile_model(cfg(tiny_ckpt, profile, tmp_path / "a", quantize="int8", quantize_in_search=True,
                          int8_max_drop=1.0), opener=opener)
    cands = r.report["candidates"]
    assert all("quantize" in c["seconds"] for c in cands)  # every candidate was quantized before measuring
    f = r.report["final"]
    assert f["deployed_form"] == "int8" and f["deployed_meets_latency_target"] is True
    assert r.report["config"]["quantize_in_search"] is True
    # a runtime that cannot run QDQ models is refused before the search
    with pytest.raises(EdgePruneError, match="quantize-in-search.*ONNX Runtime"):
        compile_model(cfg(tiny_ckpt, profile, tmp_path / "b", quantize="int8", quantize_in_search=True),
                      opener=Opener())


def test_an_agent_that_proposes_nothing_is_a_clear_exit_3(tiny_ckpt, profile, tmp_path, monkeypatch):
    from edgeprune import pipeline
    from edgeprune.search.agents import BaseAgent

    class Silent(BaseAgent):
        name = "silent"

        def ask(self):
            return None

        def tell(self, candidate, result):
            pass

    monkeypatch.setattr(pipeline, "make_agent", lambda *a, **k: Silent())
    with pytest.raises(InfeasibleTargetError, match="proposed no candidate"):
        compile_model(cfg(tiny_ckpt, profile, tmp_path), opener=Opener())


@pytest.mark.slow
def test_the_latency_screen_skips_proposals_and_a_resumed_run_replays_them(tiny_ckpt, profile, tmp_path):
    """--latency-screen: kernels are measured on first use (real ONNX Runtime, into --calibration-dir), proposals
    predicted over the target are stored as screened, not evaluated; a resumed run tells them again first."""
    from edgeprune.search.store import RunStore

    out, cal = tmp_path / "out", tmp_path / "cal"
    kw = dict(agent="random", latency_target="0.75x", latency_screen=0.0, calibration_dir=str(cal))
    first = compile_model(cfg(tiny_ckpt, profile, out, budget=4, **kw), opener=Opener(runtime="onnxruntime"))
    screen = first.report["search"]["screen"]
    assert list(cal.glob("fakebox/onnxruntime-*/kernels.jsonl"))
    store = RunStore(out / "runs.sqlite")
    stored = store.screened(first.run_id)
    assert screen["screened"] == len(stored) > 0
    assert all(p > screen["threshold_ratio"] for _, _, p in stored)
    # A screened proposal had not been evaluated before it (that would have reused the result); the same
    # widths may be evaluated later, once the refitted predictor lets them through.
    cands = first.report["candidates"]
    assert all(c.widths not in {tuple(e["widths"]) for e in cands[:seq]} for seq, c, _ in stored)
    more = compile_model(cfg(tiny_ckpt, profile, out, budget=6, resume=first.run_id, overwrite=True, **kw),
                         opener=Opener(runtime="onnxruntime"))
    assert more.report["search"]["evaluated_this_session"] == 2
    assert more.report["search"]["screen"]["screened"] >= len(stored)
    assert [c.key for _, c, _ in store.screened(more.run_id)][: len(stored)] == [c.key for _, c, _ in stored]
    store.close()


@pytest.mark.slow
def test_gdp_trains_gates_writes_verified_artifacts_and_resumes_its_training(tiny_ckpt, profile, tmp_path):
    """--method gdp: no search; gated training (kernel costs measured in real ONNX Runtime), fold, prune, the
    usual final checks and artifacts; the report says GDP; a resumed run continues from the checkpoint."""
    out = tmp_path / "out"
    kw = dict(method="gdp", gdp_epochs=1, latency_target="0.7x", calibration_dir=str(tmp_path / "cal"),
              accept_closest=True)
    r = compile_model(cfg(tiny_ckpt, profile, out, **kw), opener=Opener(runtime="onnxruntime"))
    s = r.report["search"]
    assert s["method"] == "gdp" and s["gdp"]["max_fold_error"] <= 1e-4 and s["gdp"]["predicted_ratio"] <= 0.7
    assert r.report["candidates"] == [] and r.report["final"]["widths"] == s["gdp"]["widths"]
    assert (r.out_dir / "model.onnx").is_file() and (out / f"{r.run_id}.gdp.pt").is_file()
    again = compile_model(cfg(tiny_ckpt, profile, out, resume=r.run_id, overwrite=True, **kw),
                          opener=Opener(runtime="onnxruntime"))
    assert again.report["search"]["gdp"]["widths"] == s["gdp"]["widths"]
    with pytest.raises(EdgePruneError, match="search options"):
        cfg(tiny_ckpt, profile, out, method="gdp", depth=True)
