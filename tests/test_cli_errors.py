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
