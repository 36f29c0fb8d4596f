import json
import os
import stat
import time
from pathlib import Path

import pytest

from edgeprune import outputs
from edgeprune.errors import EdgePruneError, OutputError
from edgeprune.outputs import StagedOutput, atomic_write, check_out_dir, write_failure_report

OLD_FILES = {"model.onnx": b"old onnx", "model.pt": b"old pt", "manifest.json": b'{"old": 1}\n',
             "report.json": b'{"status": "ok"}\n', "model.tvm.so": b"old library"}


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` by relative path: bytes, mode and mtime (byte-identical means all three)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_run(tmp_path) -> Path:
    final = tmp_path / "resnet20"
    final.mkdir()
    for n, data in OLD_FILES.items():
        (final / n).write_bytes(data)
    return final


def _hidden(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


def _one_line_naming(e: pytest.ExceptionInfo, path) -> None:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    assert str(path) in msg
    assert isinstance(e.value, EdgePruneError) and e.value.exit_code == 2


# ---- StagedOutput ---------------------------------------------------------------------------------------

def test_commit_replaces_the_old_folder_wholesale(tmp_path):
    final = _old_run(tmp_path)
    (tmp_path / "runs.sqlite").write_bytes(b"db")  # beside the folder: never touched
    with StagedOutput(tmp_path, "resnet20") as staged:
        assert staged.dir.parent == tmp_path and staged.dir.name.startswith(".resnet20.staging-")
        assert staged.dir.is_dir() and not any(staged.dir.iterdir())
        (staged.dir / "model.onnx").write_bytes(b"new onnx")
        (staged.dir / "report.json").write_bytes(b"new report")
        # Until the commit, the previous run's folder is what it was.
        assert (final / "model.onnx").read_bytes() == b"old onnx"
        assert staged.commit() == final
    # Only the new files: nothing of the old run survives (no stale model.pt, manifest or library).
    assert sorted(p.name for p in final.iterdir()) == ["model.onnx", "report.json"]
    assert (final / "model.onnx").read_bytes() == b"new onnx"
    assert _hidden(tmp_path) == []  # neither staging nor .old left behind
    assert (tmp_path / "runs.sqlite").read_bytes() == b"db"


def test_commit_without_a_previous_folder(tmp_path):
    staged = StagedOutput(tmp_path / "dist", "m")  # out_root created if missing
    (staged.dir / "a").write_text("x")
    assert staged.commit() == tmp_path / "dist" / "m"
    assert (tmp_path / "dist" / "m" / "a").read_text() == "x"
    staged.abort()  # after a commit: nothing happens
    assert (tmp_path / "dist" / "m" / "a").exists()
    with pytest.raises(RuntimeError):
        staged.commit()


def test_exception_inside_leaves_the_old_folder_byte_identical(tmp_path):
    final = _old_run(tmp_path)
    before = _snapshot(final)
    with pytest.raises(ValueError, match="boom"):
        with StagedOutput(tmp_path, "resnet20") as staged:
            (staged.dir / "model.onnx").write_bytes(b"half-written new onnx")
            raise ValueError("boom")
    assert _snapshot(final) == before
    assert not staged.dir.exists() and _hidden(tmp_path) == []


def test_leaving_without_commit_aborts(tmp_path):
    final = _old_run(tmp_path)
    before = _snapshot(final)
    with StagedOutput(tmp_path, "resnet20") as staged:
        (staged.dir / "model.onnx").write_bytes(b"new")
    assert _snapshot(final) == before and _hidden(tmp_path) == []


def test_failed_final_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = _old_run(tmp_path)
    before = _snapshot(final)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".resnet20.staging-"):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(outputs.os, "rename", rename)
    with pytest.raises(OutputError, match="No space left") as e:
        with StagedOutput(tmp_path, "resnet20") as staged:
            (staged.dir / "model.onnx").write_bytes(b"new")
            staged.commit()
    _one_line_naming(e, final)
    assert _snapshot(final) == before and _hidden(tmp_path) == []


def test_stale_staging_folders_are_removed_fresh_ones_kept(tmp_path):
    stale = tmp_path / ".resnet20.staging-dead"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.onnx").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    running = tmp_path / ".resnet20.staging-alive"  # another run, in progress right now
    running.mkdir()
    other = tmp_path / ".mobilenet.staging-dead"  # another model's: not ours to judge
    other.mkdir()
    os.utime(other, (two_days_ago, two_days_ago))
    staged = StagedOutput(tmp_path, "resnet20")
    assert not stale.exists() and running.is_dir() and other.is_dir()
    staged.abort()


def test_a_name_with_glob_characters(tmp_path):
    stale = tmp_path / ".net[1].staging-dead"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    with StagedOutput(tmp_path, "net[1]") as staged:
        assert not stale.exists()
        (staged.dir / "a").write_text("x")
        staged.commit()
    assert (tmp_path / "net[1]" / "a").read_text() == "x" and _hidden(tmp_path) == []


def test_a_commit_killed_between_its_renames_is_repaired(tmp_path):
    final = _old_run(tmp_path)
    before = _snapshot(final)
    moved = tmp_path / ".resnet20.old-dead"
    os.rename(final, moved)
    two_days_ago = time.time() - 2 * 86400
    os.utime(moved, (two_days_ago, two_days_ago))
    StagedOutput(tmp_path, "resnet20").abort()
    assert _snapshot(final) == before and _hidden(tmp_path) == []


def test_new_folders_and_files_get_ordinary_modes(tmp_path):
    old = os.umask(0o022)
    try:
        staged = StagedOutput(tmp_path, "m")
        atomic_write(staged.dir / "report.json", b"{}")
        final = staged.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    assert stat.S_IMODE((final / "report.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["", ".", "..", "../escape", "a/b", ".hidden"])
def test_a_name_that_is_not_one_plain_folder_is_refused(tmp_path, name):
    with pytest.raises(OutputError, match="cannot be used"):
        StagedOutput(tmp_path, name)
    with pytest.raises(OutputError, match="cannot be used"):
        write_failure_report(tmp_path, name, {})
    assert list(tmp_path.iterdir()) == []


# ---- failure report -------------------------------------------------------------------------------------

def test_failure_report_leaves_the_old_artifacts_untouched(tmp_path):
    final = _old_run(tmp_path)
    before = _snapshot(final)
    path = write_failure_report(tmp_path, "resnet20", {"status": "failed", "error": "verification", "diff": 0.5})
    assert path == final / "report.failed.json"
    assert json.loads(path.read_text()) == {"status": "failed", "error": "verification", "diff": 0.5}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    after = _snapshot(final)
    del after["report.failed.json"]
    assert after == before
    assert sorted(p.name for p in final.iterdir()) == sorted([*OLD_FILES, "report.failed.json"])
    # A later successful run replaces the whole folder: the stale failure report goes with it.
    with StagedOutput(tmp_path, "resnet20") as staged:
        (staged.dir / "report.json").write_text("{}")
        staged.commit()
    assert sorted(p.name for p in final.iterdir()) == ["report.json"]


def test_failure_report_creates_the_folder_and_replaces_an_older_one(tmp_path):
    write_failure_report(tmp_path / "dist", "m", {"n": 1, "path": Path("/x")})  # non-JSON values as text
    path = write_failure_report(tmp_path / "dist", "m", {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2}
    assert [p.name for p in path.parent.iterdir()] == ["report.failed.json"]  # no temporary files left


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(outputs.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


# ---- check_out_dir --------------------------------------------------------------------------------------

def test_check_out_dir_creates_missing_folders(tmp_path):
    out = tmp_path / "a" / "b" / "dist"
    assert check_out_dir(str(out)) == out and out.is_dir()
    assert check_out_dir(out) == out  # an existing folder is fine
    assert list(out.iterdir()) == []  # the write test left nothing behind


def test_check_out_dir_refuses_an_existing_file(tmp_path):
    f = tmp_path / "dist"
    f.write_bytes(b"not a folder")
    with pytest.raises(OutputError, match="is an existing file") as e:
        check_out_dir(f)
    _one_line_naming(e, f)
    assert f.read_bytes() == b"not a folder"


def test_check_out_dir_under_a_file(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    out = tmp_path / "afile" / "sub" / "dist"
    with pytest.raises(OutputError, match="cannot create output folder") as e:
        check_out_dir(out)
    _one_line_naming(e, out)
    assert f"{tmp_path / 'afile'} is a file" in str(e.value)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs procfs")
def test_check_out_dir_in_a_folder_nothing_can_be_created_in():
    # procfs refuses new files even to root, whatever the mode bits say.
    with pytest.raises(OutputError, match="not writable") as e:
        check_out_dir("/proc/self")
    _one_line_naming(e, "/proc/self")
    with pytest.raises(OutputError, match="cannot create output folder") as e:
        check_out_dir("/proc/self/dist")
    _one_line_naming(e, "/proc/self/dist")


def test_check_out_dir_permission_denied(tmp_path, monkeypatch):
    # What a non-root user gets in a folder without write permission (tests run as root, which ignores mode bits).
    out = tmp_path / "dist"
    out.mkdir()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(outputs.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="not writable: Permission denied") as e:
        check_out_dir(out)
    _one_line_naming(e, out)


def test_check_out_dir_cannot_create(tmp_path, monkeypatch):
    out = tmp_path / "dist"

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(OutputError, match="cannot create output folder .*Permission denied") as e:
        check_out_dir(out)
    _one_line_naming(e, out)
