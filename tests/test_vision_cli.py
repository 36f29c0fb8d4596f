"""Users' torchvision models through edgeprune: a trained ResNet-18 given as a bare state dict through the
``edgeprune`` command (compile, then verify), and the analysis and pruning of torchvision structures that
plain Torch-Pruning fails on (RegNet's grouped convolutions, ShuffleNetV2's channel shuffle).

Needs the vision extra (torchvision, timm): ``.ci/run`` runs ``-m vision`` in its second environment."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_cli, train_tool

pytestmark = pytest.mark.vision

SHAPE = (3, 64, 64)


@pytest.mark.slow
def test_a_trained_torchvision_resnet18_state_dict_compiles_to_07x_and_verifies(tmp_path):
    pytest.importorskip("torchvision")
    import onnxruntime as ort

    from edgeprune.data import builtin
    from edgeprune.model.load import load_model
    from edgeprune.verify import compare

    # The built-in shapes task, 1200 of its images (generated at 32×32, brought to 64×64 by edgeprune): 240 val,
    # 120 calib, 840 train. The whole 13000-image built-in set at 64×64 would make the one fine-tuning epoch
    # alone several minutes on 2 cores; a user's own data comes as such an .npz.
    x, y = builtin.make_shapes(1200, seed=7)
    data = tmp_path / "shapes1200.npz"
    np.savez(data, x=np.asarray(x), y=np.asarray(y))

    # A user's model: torchvision's ResNet-18 trained briefly (tools/train.py's function: ImageNet normalisation,
    # 64×64 inputs), saved as a plain state dict.
    threads = torch.get_num_threads()
    train = train_tool()
    model, splits, arch, kwargs, meta = train.train_model(
        "torchvision.models:resnet18", data=str(data), input_shape=SHAPE, normalize="imagenet", epochs=1,
        lr=0.05, batch_size=64, limit_train=768, threads=2)
    torch.set_num_threads(threads)
    assert arch == "torchvision.models:resnet18" and kwargs == {"num_classes": 10}
    assert meta["normalisation"]["name"] == "imagenet" and meta["input_shape"] == list(SHAPE)
    assert meta["train_images"] == 768 and splits.input_shape == SHAPE
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)

    # As a user runs it. The target is 0.7× the baseline, measured interleaved with it on this machine. The
    # profile is `host` measured and deployed with ONNX Runtime only: with `auto`, untuned TVM times ResNet-18 at
    # ~300 ms per run here, minutes of CI for nothing this test checks (TVM has its own tests).
    profile = tmp_path / "host-ort.toml"
    host = (ROOT / "edgeprune" / "targets" / "profiles" / "host.toml").read_text()
    profile.write_text(host.replace('name = "host"', 'name = "host-ort"').replace('backend = "auto"', 'backend = "onnxruntime"'))
    out = tmp_path / "out"
    args = ("compile", str(sd), "--arch", "torchvision.models:resnet18", "--arch-kwargs", "num_classes=10",
            "--input-shape", "3,64,64", "--normalize", "imagenet", "--data", str(data), "--target", str(profile),
            "--latency-target", "0.7x", "--agent", "random", "--budget", "6", "--finetune-epochs", "1",
            "--out", str(out), "--json")
    r = run_cli(*args, timeout=420)
    if r.returncode == 3 and "re-measured at" in r.stderr and "above the target" in r.stderr:
        # Seen once in CI: a candidate confirmed at 0.634x re-measured at 0.715x after fine-tuning, the machine's
        # round-to-round noise at 17% (no artifact written, exit 3: right). A user resumes such a run, which
        # fine-tunes and measures again from the stored search; so does this test, once.
        run_id = re.search(r"run (\S+) \(new\)", r.stderr).group(1)
        r = run_cli(*args, "--resume", run_id, timeout=420)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    run = out / "sd"
    assert summary["status"] == "ok" and summary["out_dir"] == str(run)
    for name in ("model.onnx", "model.pt", "report.json", "manifest.json"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    final = report["final"]
    assert report["target"]["latency_target"] == "0.7x"
    assert final["meets_latency_target"] and final["latency"]["ratio_to_baseline"] <= 0.7
    assert final["macs"] < report["baseline"]["macs"]
    norm = report["data"]["normalisation"]
    assert norm["name"] == "imagenet" and norm["source"] == "--normalize"
    assert norm["mean"] == pytest.approx([0.485, 0.456, 0.406]) and norm["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert report["data"]["input_shape"] == list(SHAPE)

    # model.pt rebuilds the pruned torchvision model (weights only, history replayed) and matches model.onnx,
    # whose batch axis is dynamic.
    loaded = load_model(run / "model.pt")
    assert loaded.arch == "torchvision.models:resnet18" and loaded.input_shape == SHAPE
    assert type(loaded.model).__module__.startswith("torchvision.models")
    assert sum(p.numel() for p in loaded.model.parameters()) < sum(p.numel() for p in model.parameters())
    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for batch in (splits.val[0][:4], torch.randn(4, *SHAPE, generator=g)):
        with torch.no_grad():
            ref = loaded.model.eval()(batch).numpy()
        got = sess.run(None, {"input": batch.numpy()})[0]
        assert got.shape == (4, 10)
        verdict = compare(ref, got)
        assert verdict.ok, verdict

    v = run_cli("verify", str(run), timeout=180)
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]


def _analyse_prune_export(factory: str):
    import torchvision

    from edgeprune.export.onnx import export_verified
    from edgeprune.model.prune import analyse, prune

    torch.manual_seed(0)
    model = getattr(torchvision.models, factory)(num_classes=10).eval()
    analysis = analyse(model, SHAPE)
    assert analysis.groups
    pruned, history = prune(model, SHAPE, analysis, tuple(g.width(0.7) for g in analysis.groups))
    assert history
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    inputs = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    _, _, verdict = export_verified(pruned.eval(), SHAPE, inputs)
    assert verdict.ok, verdict
    return analysis


# Each takes 10-15 s of CPU (more than 20 s wall on this shared 2-core machine): slow as well.
@pytest.mark.slow
def test_regnet_grouped_convolutions_are_pruned_in_equal_parts_and_export():
    pytest.importorskip("torchvision")
    analysis = _analyse_prune_export("regnet_x_400mf")
    grouped = [g for g in analysis.groups if g.parts > 1]
    assert grouped, "regnet_x_400mf's grouped 3×3 convolutions give groups with parts > 1"
    for g in grouped:
        assert g.full % g.parts == 0 and all(c % g.parts == 0 for c in g.choices)
        assert g.width(0.7) % g.parts == 0


@pytest.mark.slow
def test_shufflenet_channel_shuffle_freezes_groups_with_reasons_and_the_rest_prunes_and_exports():
    pytest.importorskip("torchvision")
    analysis = _analyse_prune_export("shufflenet_v2_x0_5")
    assert analysis.frozen, "the channels through ShuffleNetV2's channel shuffle are kept whole"
    assert all(name and reason for name, reason in analysis.frozen)
    frozen = {name for name, _ in analysis.frozen}
    assert not frozen & {g.name for g in analysis.groups}
