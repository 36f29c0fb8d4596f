"""Project configuration: the options a team repeats, in ``edgeprune.toml`` or ``[tool.edgeprune]``.

``find_project_config()`` looks from a folder upwards for the file; ``load_project_config()`` reads one
command's table (``[compile]`` in ``edgeprune.toml``, ``[tool.edgeprune.compile]`` in ``pyproject.toml``)
and returns its options validated, with underscore keys, relative paths resolved against the file's folder.
The caller merges them: command-line flags > project config > defaults.

Standard library only (and ``edgeprune.errors``): the CLI reads it before anything heavy is imported.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from edgeprune.errors import ProjectConfigError

FILENAME = "edgeprune.toml"
PYPROJECT = "pyproject.toml"
TABLES = ("compile",)  # one table per command that reads options from the project config

PathRule = Callable[[str], bool] | None  # a value is a path when the rule says so (None: always)


def find_project_config(start: Path | str | None = None) -> Path | None:
    """The project config that applies in ``start`` (default: the current folder), or None.

    From ``start`` upwards, the first folder with an ``edgeprune.toml``, or with a ``pyproject.toml`` that
    has a ``[tool.edgeprune]`` table (an ``edgeprune.toml`` beside it wins). The search stops at the
    filesystem root and at a folder containing ``.git`` (the repository root, checked itself first), so a
    config outside the repository never applies. A ``pyproject.toml`` without ``[tool.edgeprune]`` is
    ignored; one that mentions edgeprune but is not valid TOML is an error (it may hold the team's options).
    """
    folder = Path(os.getcwd() if start is None else start).expanduser().resolve()
    if folder.is_file():
        folder = folder.parent
    for d in (folder, *folder.parents):
        candidate = d / FILENAME
        if candidate.is_file():
            return candidate
        candidate = d / PYPROJECT
        if candidate.is_file() and _has_tool_table(candidate):
            return candidate
        if (d / ".git").exists():  # a folder (a repository) or a file (a worktree or submodule)
            return None
    return None


def load_project_config(path: Path | str, *, known: Mapping[str, type], section: str = "compile",
                        paths: Collection[str] | Mapping[str, PathRule] = (),
                        tables: Collection[str] = TABLES) -> dict:
    """The validated options of ``section`` in the project config at ``path``, with underscore keys.

    ``known`` maps each allowed option (underscore form, as the CLI's parameter) to its type: ``str``,
    ``int``, ``float`` (an integer is accepted), ``bool`` or ``tuple`` (an array of integers, returned as a
    tuple). Keys may be written with dashes or underscores (``latency-target`` or ``latency_target``).

    ``paths`` names the options whose relative values are paths relative to the config file's folder (so a
    run from a sub-folder finds them): a collection of keys (always paths), or a mapping from key to a rule
    ``rule(value) -> bool`` saying whether that value is a path (None: always), e.g.
    ``{"model": None, "out": None, "data": lambda v: v not in ("shapes", "shapes-hard", "digits"),
    "target": lambda v: v.endswith(".toml")}``. Resolved values are absolute path strings (``~`` expanded).

    ``tables`` are the command tables the file may hold; another table (a typo such as ``[compiel]``) or a
    bare option outside any table is an error. A file without the ``section`` table gives ``{}``.
    Every problem raises ``ProjectConfigError`` naming the file (and the line, where it can be found).
    """
    path = Path(path)
    text = _read(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProjectConfigError(_toml_error(path, text, e)) from None

    if path.name == PYPROJECT:
        root = doc.get("tool", {}).get("edgeprune") if isinstance(doc.get("tool"), dict) else None
        prefix = "tool.edgeprune."
        if root is None:
            return {}
        if not isinstance(root, dict):
            raise ProjectConfigError(f"{path}: [tool.edgeprune] must be a table of command tables "
                                     f"([tool.edgeprune.{section}]), got {_describe(root)}")
    else:
        root, prefix = doc, ""
    _check_tables(path, text, root, prefix, section, tables)

    table = root.get(section)
    where = f"[{prefix}{section}]"
    if table is None:
        return {}
    if not isinstance(table, dict):
        loc = f"{path}{_at(text, section, prefix[:-1] or None)}"
        raise ProjectConfigError(f"{loc}: {prefix}{section} must be a table of options ({where}), "
                                 f"got {_describe(table)}")

    types = {k.replace("-", "_"): t for k, t in known.items()}
    rules = dict(paths) if isinstance(paths, Mapping) else {k: None for k in paths}
    rules = {k.replace("-", "_"): r for k, r in rules.items()}
    base = path.resolve().parent
    out: dict = {}
    written: dict[str, str] = {}  # underscore key → key as written
    for raw, value in table.items():
        key = raw.replace("-", "_")
        loc = f"{path}{_at(text, raw, prefix + section)}"
        if key in written:
            raise ProjectConfigError(f"{loc}: option {raw!r} in {where} is given twice "
                                     f"(as {written[key]!r} and {raw!r})")
        written[key] = raw
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1, cutoff=0.6)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"known options: {', '.join(sorted(types)) or 'none'}")
            raise ProjectConfigError(f"{loc}: unknown option {raw!r} in {where}; {hint}")
        value = _check_type(loc, raw, where, value, types[key])
        if key in rules and isinstance(value, str) and (rules[key] is None or rules[key](value)):
            value = _resolve(value, base)
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectConfigError(f"{path}: project config not found") from None
    except UnicodeDecodeError as e:
        raise ProjectConfigError(f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    except OSError as e:
        raise ProjectConfigError(f"{path}: cannot read the project config ({e.strerror or e})") from None


def _toml_error(path: Path, text: str, e: tomllib.TOMLDecodeError) -> str:
    msg = str(e)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
    if m:
        return f"{path}, line {m.group(1)}, column {m.group(2)}: invalid TOML: {msg[:m.start()]}"
    m = re.search(r"\s*\(at end of document\)\s*$", msg)
    if m:
        return f"{path}, line {len(text.splitlines()) or 1} (end of file): invalid TOML: {msg[:m.start()]}"
    return f"{path}: invalid TOML: {msg}"


def _has_tool_table(path: Path) -> bool:
    """Whether a pyproject.toml has a [tool.edgeprune] table (files that never mention it are not parsed)."""
    text = _read(path)
    if "edgeprune" not in text:
        return False
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProjectConfigError(_toml_error(path, text, e)) from None
    tool = doc.get("tool")
    return isinstance(tool, dict) and "edgeprune" in tool


def _check_tables(path: Path, text: str, root: dict, prefix: str, section: str, tables: Collection[str]) -> None:
    allowed = set(tables) | {section}
    for name, value in root.items():
        if name in allowed:
            continue
        if isinstance(value, dict):
            loc = f"{path}{_at_table(text, prefix + name)}"
            close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
            hint = f"did you mean [{prefix}{close[0]}]?" if close else \
                f"known tables: {', '.join(f'[{prefix}{t}]' for t in sorted(allowed))}"
            raise ProjectConfigError(f"{loc}: unknown table [{prefix}{name}]; {hint}")
        loc = f"{path}{_at(text, name, prefix[:-1] or None)}"
        raise ProjectConfigError(f"{loc}: option {name!r} is outside a command table; put it under "
                                 f"[{prefix}{section}]")


_EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             tuple: "an array of integers"}


def _check_type(loc: str, raw: str, where: str, value, expected: type):
    if expected not in _EXPECTED:
        raise TypeError(f"known[{raw!r}]: unsupported type {expected!r} (use str, int, float, bool or tuple)")
    ok = {
        str: isinstance(value, str),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        tuple: isinstance(value, list) and len(value) > 0
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
    }[expected]
    if not ok:
        raise ProjectConfigError(f"{loc}: option {raw!r} in {where}: expected {_EXPECTED[expected]}, "
                                 f"got {_describe(value)}")
    if expected is float:
        return float(value)
    if expected is tuple:
        return tuple(value)
    return value


def _describe(value) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, list):
        return "an empty array" if not value else f"an array ({_short(value)})"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__} ({value})"  # dates and times


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _resolve(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return os.path.normpath(p if p.is_absolute() else base / p)


def _header(dotted: str, sub: bool = False) -> re.Pattern:
    """A table header ``[a.b]`` (spaces and quotes allowed; ``sub``: also ``[a.b.c]``)."""
    parts = r"\s*\.\s*".join(r"""["']?""" + re.escape(p) + r"""["']?""" for p in dotted.split("."))
    return re.compile(r"^\s*\[\s*" + parts + (r"\s*[\].]" if sub else r"\s*\]"))


def _at(text: str, key: str, table: str | None) -> str:
    """', line N' for the line that sets ``key`` in ``[table]`` (None: the root), or '' when not found.

    Best effort, for messages only: finds ``key = ...`` (bare or quoted, or a dotted ``key.x = ...``)."""
    lines = text.splitlines()
    start = 0
    if table is not None:
        header = _header(table)
        start = next((i + 1 for i, line in enumerate(lines) if header.match(line)), None)
        if start is None:
            return ""
    setting = re.compile(r"""^\s*["']?""" + re.escape(key) + r"""["']?\s*[=.]""")
    for i in range(start, len(lines)):
        if re.match(r"^\s*\[", lines[i]):
            break
        if setting.match(lines[i]):
            return f", line {i + 1}"
    return ""


def _at_table(text: str, dotted: str) -> str:
    """', line N' for the header of table ``dotted`` (or of a sub-table), or the line setting it inline."""
    header = _header(dotted, sub=True)
    for i, line in enumerate(text.splitlines()):
        if header.match(line):
            return f", line {i + 1}"
    parent, _, name = dotted.rpartition(".")
    return _at(text, name, parent or None)
