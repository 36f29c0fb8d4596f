"""Output folders that never mislead: checked before any work, written whole or not at all.

- ``check_out_dir`` runs before anything else: an ``--out`` that is a file, cannot be created or is not
  writable is one line (``OutputError``, exit 2) instead of a traceback after minutes of search.
- ``StagedOutput`` collects every artifact of a run in a hidden staging folder next to the final one and
  swaps it in with renames on ``commit()``: a run that fails or is killed half-way leaves the previous
  ``OUT/<name>/`` exactly as it was, never a mix of old and new files.
- ``write_failure_report`` records why a run failed as ``OUT/<name>/report.failed.json`` without touching
  the previous good artifacts there; the next successful commit replaces the whole folder, so the stale
  failure report goes with it.
- ``atomic_write`` writes one file through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from edgeprune.errors import OutputError

FAILURE_REPORT = "report.failed.json"
STALE_AFTER_S = 24 * 3600.0


def _why(e: OSError) -> str:
    """The OS's reason for ``e`` as a short phrase on one line."""
    text = e.strerror or str(e) or type(e).__name__
    return " ".join(str(text).split())


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``: readers see
    the old file or the new one, never a partial one. The file gets mode 0644 (artifacts are shared)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_out_dir(out: str | Path) -> Path:
    """Make sure ``out`` is a folder this process can write to, creating it (and its parents) if missing.

    Called before any work. Raises ``OutputError`` (one line naming the path) when ``out`` is an existing
    file, when it or a parent cannot be created, or when nothing can be written inside it. Writability is
    tested by creating and removing a file, since permission bits say nothing for root or on read-only mounts.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise OutputError(f"output folder {p} is an existing file, not a folder; choose another --out")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((a for a in (p, *p.parents) if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"cannot create output folder {p}: {blocker} is a file, not a folder") from None
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(p) else ""
        raise OutputError(f"cannot create output folder {p}: {_why(e)}{where}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".edgeprune-write-test-")
    except OSError as e:
        raise OutputError(f"output folder {p} is not writable: {_why(e)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return p


def _check_name(name: str) -> str:
    # The name comes from the model file (its stem, or a checkpoint's "name" field): it must stay one
    # folder inside OUT, never a path that escapes it.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise OutputError(f"model name {name!r} cannot be used as an output folder name")
    return name


def _remove(path: Path) -> None:
    """Delete a folder tree, or a file or symlink (never following a symlink into its target)."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Best effort: make renames in ``path`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class StagedOutput:
    """A run's artifacts, written to ``.dir`` (``OUT/.<name>.staging-<random>``) and swapped into
    ``OUT/<name>`` as a whole by ``commit()``.

    As a context manager: an exception inside the ``with`` (or leaving it without ``commit()``) removes the
    staging folder and leaves ``OUT/<name>`` untouched; the exception propagates.

    Construction removes staging folders of this name older than ``stale_after`` seconds that a killed
    process left behind (and puts back a previous folder a commit killed between its two renames had moved
    aside).
    """

    def __init__(self, out_root: str | Path, name: str, *, stale_after: float = STALE_AFTER_S):
        self.out_root = Path(out_root)
        self.name = _check_name(name)
        self.final = self.out_root / self.name
        self._state = "open"
        try:
            self.out_root.mkdir(parents=True, exist_ok=True)
            self._clean_stale(stale_after)
            while True:
                staging = self.out_root / f".{self.name}.staging-{secrets.token_hex(6)}"
                try:
                    staging.mkdir()
                    break
                except FileExistsError:
                    continue
        except OSError as e:
            raise OutputError(f"cannot create a staging folder in {self.out_root}: {_why(e)}") from None
        self.dir = staging

    def _clean_stale(self, stale_after: float) -> None:
        cutoff = time.time() - stale_after
        staging, old = f".{self.name}.staging-", f".{self.name}.old-"
        for p in list(self.out_root.iterdir()):  # not glob: the name may hold glob characters
            if not p.name.startswith((staging, old)):
                continue
            try:
                if p.lstat().st_mtime > cutoff:
                    continue  # possibly another run's, in progress
            except FileNotFoundError:
                continue
            if p.name.startswith(old) and not self.final.exists() and not self.final.is_symlink():
                # A commit died between moving the previous folder aside and moving the new one in:
                # put it back (and never delete it, even if that fails).
                with contextlib.suppress(OSError):
                    os.rename(p, self.final)
                continue
            _remove(p)

    def commit(self) -> Path:
        """Replace ``OUT/<name>`` with the staging folder and return the final path.

        The previous folder is renamed to ``OUT/.<name>.old-<random>``, the staging folder renamed to
        ``OUT/<name>``, then the previous one deleted; if the second rename fails the previous folder is put
        back. Each rename is atomic; between the two, for an instant, ``OUT/<name>`` does not exist.
        """
        if self._state != "open":
            raise RuntimeError(f"staged output {self.final} was already {self._state}")
        old = None
        if self.final.exists() or self.final.is_symlink():
            old = self.out_root / f".{self.name}.old-{secrets.token_hex(6)}"
            try:
                os.rename(self.final, old)
            except OSError as e:
                raise OutputError(f"cannot move the previous {self.final} aside: {_why(e)}") from None
        try:
            os.rename(self.dir, self.final)
        except BaseException as e:
            if old is not None:
                os.rename(old, self.final)
            if isinstance(e, OSError):
                raise OutputError(f"cannot move the new artifacts into {self.final}: {_why(e)}") from None
            raise
        self._state = "committed"
        _fsync_dir(self.out_root)
        if old is not None:
            _remove(old)
        return self.final

    def abort(self) -> None:
        """Delete the staging folder (nothing in ``OUT/<name>`` changes). Does nothing after ``commit()``."""
        if self._state == "open":
            _remove(self.dir)
            self._state = "aborted"

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.abort()
        return False


def write_failure_report(out_root: str | Path, name: str, report: dict) -> Path:
    """Write ``report`` as ``OUT/<name>/report.failed.json`` (atomically, mode 0644), creating the folder if
    needed, and touch nothing else there: the previous good artifacts stay as they were. Returns its path."""
    folder = Path(out_root) / _check_name(name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FAILURE_REPORT
        atomic_write(path, (json.dumps(report, indent=2, default=str) + "\n").encode())
    except OSError as e:
        raise OutputError(f"cannot write {folder / FAILURE_REPORT}: {_why(e)}") from None
    return path
