"""Bad input through the CLI: one clear line, the right exit code, a JSON error object under --json."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def _one_line(r, match: str, code: int = 2) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("edgeprune: error:")]
    assert len(lines) == 1 and match in lines[0], r.stderr


def test_out_naming_a_file_is_one_clear_line(tiny_ckpt, tmp_path):
    (tmp_path / "afile").write_text("x")
    _one_line(run_cli("compile", str(tiny_ckpt), "--out", str(tmp_path / "afile")), "existing file")


def test_out_inside_a_folder_that_cannot_be_written_is_one_clear_line(tiny_ckpt):
    _one_line(run_cli("compile", str(tiny_ckpt), "--out", "/proc/self/edgeprune-out"), "/proc/self/edgeprune-out")


def test_json_failure_prints_an_error_object(tiny_ckpt, tmp_path):
    r = run_cli("compile", str(tiny_ckpt), "--agent", "nope", "--out", str(tmp_path), "--json")
    _one_line(r, "unknown agent 'nope'")
    err = json.loads(r.stdout)
    assert err == {"status": "error", "error": "EdgePruneError", "message": err["message"], "exit_code": 2}
    assert "unknown agent" in err["message"]
    assert not (tmp_path / "runs.sqlite").exists()  # refused before a run was recorded


def test_an_option_the_agent_does_not_take_is_refused_at_once(tiny_ckpt, tmp_path):
    _one_line(run_cli("compile", str(tiny_ckpt), "--agent", "uniform", "--batch", "2", "--out", str(tmp_path)),
              "takes no option 'batch'")


def _cli_in(folder, *args):
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=folder, env=env)


def test_a_project_config_fills_what_the_command_line_leaves_out(tiny_ckpt, tmp_path):
    (tmp_path / ".git").mkdir()  # the repository root: the search for a config stops here
    (tmp_path / "afile").write_text("x")
    (tmp_path / "edgeprune.toml").write_text('[compile]\nagent = "nope"\nout = "afile"\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    # From a sub-folder: `out` is resolved against the config file's folder (and is a file: refused).
    _one_line(_cli_in(sub, "compile", str(tiny_ckpt)), str(tmp_path / "afile"))
    # A flag beats the file; the file's agent still applies.
    _one_line(_cli_in(sub, "compile", str(tiny_ckpt), "--out", str(tmp_path / "dist")), "unknown agent 'nope'")
    (tmp_path / "edgeprune.toml").write_text('[compile]\nlatency-targt = "0.5x"\n')
    _one_line(_cli_in(sub, "compile", str(tiny_ckpt)), "did you mean 'latency_target'?")



def _cli_here(monkeypatch, capsys, *args):
    """``edgeprune.cli.main`` in this process (no interpreter start-up: these checks take well under 2 s)."""
    import sys
    from types import SimpleNamespace

    import pytest

    from edgeprune import cli

    monkeypatch.setattr(sys, "argv", ["edgeprune", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return SimpleNamespace(returncode=e.value.code, stderr=out.err, stdout=out.out)


def test_a_bad_normalize_is_one_clear_line(tiny_ckpt, tmp_path, monkeypatch, capsys):
    _one_line(_cli_here(monkeypatch, capsys, "compile", str(tiny_ckpt), "--normalize", "0.5", "--out", str(tmp_path)),
              "--normalize '0.5'")
    _one_line(_cli_here(monkeypatch, capsys, "analyze", str(tiny_ckpt), "--normalize", "0.5,0"), "std must be > 0")


def test_data_with_other_channels_than_the_model_is_one_clear_line(tiny_ckpt, tmp_path, monkeypatch, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "grey.npz", x=rng.random((200, 1, 32, 32), dtype=np.float32), y=rng.integers(0, 10, 200))
    _one_line(_cli_here(monkeypatch, capsys, "compile", str(tiny_ckpt), "--data", str(tmp_path / "grey.npz"),
                        "--out", str(tmp_path)), "1-channel images but the model expects 3 channels")


def test_a_head_for_other_classes_suggests_arch_kwargs(tiny_ckpt, tmp_path, monkeypatch, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x=rng.random((200, 3, 48, 48), dtype=np.float32), y=rng.integers(0, 3, 200))
    _one_line(_cli_here(monkeypatch, capsys, "compile", str(tiny_ckpt), "--data", str(tmp_path / "three.npz"),
                        "--out", str(tmp_path)), "--arch-kwargs num_classes=3")


def test_weights_that_do_not_fit_are_listed_without_a_traceback(tmp_path):
    from edgeprune.model.zoo import resnet20

    import torch

    torch.save(resnet20(num_classes=7).state_dict(), tmp_path / "sd.pt")
    r = run_cli("compile", str(tmp_path / "sd.pt"), "--arch", "resnet20", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("edgeprune: error: weights in ") and "do not fit the architecture 'resnet20'" in r.stderr
    assert "fc.weight: weights (7, 64) vs model (10, 64)" in r.stderr and "pass --arch-kwargs num_classes=7" in r.stderr
    # with the hint followed, the model loads: it then meets the data's 10 classes (which proves it has 7 outputs)
    r = run_cli("compile", str(tmp_path / "sd.pt"), "--arch", "resnet20", "--arch-kwargs", "num_classes=7",
                "--data", "digits", "--out", str(tmp_path / "out"))
    _one_line(r, "the model outputs 7")


def test_model_input_errors_are_one_line(tiny_ckpt, tmp_path):
    import torch

    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    _one_line(run_cli("compile", str(tmp_path / "sd.pt"), "--arch", f"{tmp_path / 'nope.py'}:net", "--out",
                      str(tmp_path / "out")), "nope.py does not exist")
    _one_line(run_cli("compile", str(tmp_path / "sd.pt"), "--arch", "resnet20", "--arch-kwargs", "10", "--out",
                      str(tmp_path / "out")), "'10' is not name=value")
    if not torch.cuda.is_available():
        _one_line(run_cli("compile", str(tiny_ckpt), "--train-device", "cuda", "--out", str(tmp_path / "out")),
                  "--train-device cuda: no CUDA device")


def test_a_project_config_arch_file_is_relative_to_it(tmp_path):
    import torch

    from tests.model.test_load import BLOCKS, MYNETS

    (tmp_path / ".git").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mynets.py").write_text(MYNETS)
    (tmp_path / "models" / "blocks.py").write_text(BLOCKS)
    (tmp_path / "edgeprune.toml").write_text('[compile]\narch = "models/mynets.py:mynet(width=16)"\n'
                                             'arch-kwargs = "num_classes=7"\ndata = "digits"\n')
    from edgeprune.model.arch import resolve_arch

    torch.save(resolve_arch(f"{tmp_path / 'models' / 'mynets.py'}:mynet")(width=16, num_classes=7).state_dict(),
               tmp_path / "sd.pt")
    sub = tmp_path / "sub"
    sub.mkdir()
    _one_line(_cli_in(sub, "compile", str(tmp_path / "sd.pt"), "--out", str(tmp_path / "out")), "the model outputs 7")
