"""TVM compile stage: host build verified against ONNX Runtime, cross builds checked, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeprune.compile.tvm import build, export_library, import_onnx, inspect_library
from edgeprune.deploy.stage import build_artifact, check_tvm_importable
from edgeprune.deploy.verify import verify_against_ort
from edgeprune.errors import TargetError, UnsupportedLayerError
from edgeprune.export.onnx import export, simplify
from edgeprune.targets import load_target
from edgeprune.targets.profile import TvmSettings
from tests.conftest import tiny_resnet

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def tiny_onnx():
    proto, _ = simplify(export(tiny_resnet(), SHAPE))
    return proto


@pytest.fixture(scope="module")
def inputs():
    from edgeprune.data import load_data

    return load_data("shapes").calib[0][:8].numpy()  # real images, normalised as the pipeline does


def test_host_library_matches_onnxruntime(tiny_onnx, inputs, tmp_path):
    art = build_artifact(tiny_onnx, SHAPE, tiny_onnx.SerializeToString(), load_target("host"), inputs, tmp_path)
    assert art.path.is_file() and art.info["arch"] == "x86_64" and art.info["embedded_device_modules"] == []
    v = art.verification
    assert v["ok"] and v["samples"] == 8 and v["max_abs_diff"] < 1e-4 and v["top1_agreement"] == 1.0
    assert art.triple.startswith("x86_64")


def test_verification_catches_a_different_model(tiny_onnx, inputs, tmp_path):
    """The check can fail: a library compared with another model's ONNX is refused."""
    import torch

    torch.manual_seed(1)
    other, _ = simplify(export(tiny_resnet().apply(_reinit), SHAPE))
    ex, _ = build(tiny_onnx, SHAPE, load_target("host").tvm)
    lib = export_library(ex, tmp_path / "a.so", load_target("host").tvm)
    verdict = verify_against_ort(lib, other.SerializeToString(), inputs)
    assert not verdict.ok and verdict.max_abs_diff > 1e-3


def _reinit(m):
    import torch

    if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.normal_(m.weight, std=0.5)


@pytest.mark.needs_cross
def test_cross_compile_rpi4_is_an_aarch64_library(tiny_onnx, inputs, tmp_path):
    art = build_artifact(tiny_onnx, SHAPE, tiny_onnx.SerializeToString(), load_target("rpi4"), inputs, tmp_path)
    assert art.info["elf_machine"] == 183 and art.info["arch"] == "aarch64"
    assert art.triple == "aarch64-linux-gnu" and "cortex-a72" in art.target
    assert art.verification["ok"] is None and "cross-compiled" in art.verification["method"]


@pytest.mark.needs_cross
def test_cross_compile_jetson_orin_nano_carries_a_cuda_module(tiny_onnx, inputs, tmp_path):
    art = build_artifact(tiny_onnx, SHAPE, tiny_onnx.SerializeToString(), load_target("jetson-orin-nano"), inputs,
                         tmp_path)
    assert art.info["arch"] == "aarch64" and "cuda" in art.info["embedded_device_modules"]
    assert "sm_87" in art.target
    assert any("CUDA 13" in n for n in art.to_dict()["load"]["needs"])


def test_a_host_library_has_no_cuda_module_and_is_not_aarch64(tiny_onnx, tmp_path):
    ex, _ = build(tiny_onnx, SHAPE, load_target("host").tvm)
    info = inspect_library(export_library(ex, tmp_path / "h.so", load_target("host").tvm))
    assert info.arch == "x86_64" and info.embedded == ()
    from edgeprune.compile.tvm import check_library

    with pytest.raises(TargetError, match="not the target's aarch64"):
        check_library(tmp_path / "h.so", arch="aarch64", device_kind="llvm")
    with pytest.raises(TargetError, match="no embedded cuda"):
        check_library(tmp_path / "h.so", arch="x86_64", device_kind="cuda")


def test_jetson_nano_gpu_is_explained_not_built():
    reason = load_target("jetson-nano").no_tvm_reason()
    assert reason and "sm_53" in reason and "CUDA 13" in reason


def _det_model():
    node = helper.make_node("Det", ["input"], ["logits"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_an_op_tvm_cannot_import_is_named():
    with pytest.raises(UnsupportedLayerError, match="Det"):
        import_onnx(_det_model(), (3, 3))
    # Under runtime auto the search goes on with ONNX Runtime, saying why; under "tvm" it stops.
    assert "Det" in check_tvm_importable(_det_model(), load_target("host"))


def test_tvm_only_target_stops_on_an_op_tvm_cannot_import(tmp_path):
    p = tmp_path / "tvmonly.toml"
    p.write_text('name = "tvmonly"\narch = "x86_64"\n[runtime]\nbackend = "tvm"\n[tvm]\ntarget = { kind = "llvm" }\n')
    with pytest.raises(UnsupportedLayerError, match="Det.*deploys with TVM only"):
        check_tvm_importable(_det_model(), load_target(str(p)))


def test_missing_cross_compiler_says_how_to_install(tiny_onnx, tmp_path):
    s = TvmSettings(target={"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, cc="no-such-g++", cc_package="g++-x")
    ex, _ = build(tiny_onnx, SHAPE, s)
    with pytest.raises(TargetError, match="apt-get install g\\+\\+-x"):
        export_library(ex, tmp_path / "x.so", s)
    assert not (tmp_path / "x.so").exists()


def test_not_an_elf_file(tmp_path):
    (tmp_path / "f.so").write_bytes(b"hello")
    with pytest.raises(TargetError, match="not an ELF"):
        inspect_library(tmp_path / "f.so")


def test_bad_tvm_target_is_a_clear_error(tiny_onnx):
    with pytest.raises(TargetError, match="invalid TVM target"):
        build(tiny_onnx, SHAPE, TvmSettings(target={"kind": "llvm", "mcpu": 5, "bogus-option": "x"}))
