"""Project config: found upwards, validated, paths resolved against the file's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeprune.errors import EdgePruneError, ProjectConfigError
from edgeprune.project import find_project_config, load_project_config

KNOWN = {"target": str, "latency_target": str, "out": str, "data": str, "agent": str, "budget": int,
         "finetune_epochs": int, "finetune_lr": float, "distill": bool, "input_shape": tuple, "model": str}
PATHS = {"model": None, "out": None, "data": lambda v: v not in ("shapes", "digits"),
         "target": lambda v: v.endswith(".toml")}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A repository root (its .git marks where the search stops) with a nested sub-folder."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "src" / "deep").mkdir(parents=True)
    return root


def problem(path: Path, **kw) -> str:
    with pytest.raises(ProjectConfigError) as e:
        load_project_config(path, known=KNOWN, **kw)
    assert isinstance(e.value, EdgePruneError) and e.value.exit_code == 2  # one line on stderr, exit 2
    return str(e.value)


# --- finding ---------------------------------------------------------------------------------------------

def test_found_upwards_from_a_sub_folder(repo, monkeypatch):
    cfg = write(repo / "edgeprune.toml", "[compile]\nbudget = 10\n")
    assert find_project_config(repo / "src" / "deep") == cfg
    monkeypatch.chdir(repo / "src" / "deep")
    assert find_project_config() == cfg  # default: the current folder
    assert find_project_config(repo) == cfg


def test_the_nearest_config_applies(repo):
    write(repo / "edgeprune.toml", "[compile]\n")
    inner = write(repo / "src" / "edgeprune.toml", "[compile]\n")
    assert find_project_config(repo / "src" / "deep") == inner


def test_edgeprune_toml_beats_pyproject_in_the_same_folder(repo):
    write(repo / "pyproject.toml", "[tool.edgeprune.compile]\nbudget = 5\n")
    cfg = write(repo / "edgeprune.toml", "[compile]\nbudget = 10\n")
    assert find_project_config(repo / "src") == cfg


def test_pyproject_with_tool_edgeprune_is_found(repo):
    py = write(repo / "pyproject.toml", "[project]\nname = 'x'\n\n[tool.edgeprune.compile]\nbudget = 5\n")
    assert find_project_config(repo / "src" / "deep") == py
    assert load_project_config(py, known=KNOWN) == {"budget": 5}


def test_pyproject_without_tool_edgeprune_is_ignored(repo):
    write(repo / "pyproject.toml", "[project]\nname = 'x'\n\n[tool.ruff]\nline-length = 120\n")
    assert find_project_config(repo / "src") is None
    # ... and the search goes on past it, up to the repository root
    write(repo / "src" / "pyproject.toml", "[project]\nname = 'sub'\n")
    cfg = write(repo / "edgeprune.toml", "[compile]\n")
    assert find_project_config(repo / "src" / "deep") == cfg


def test_a_broken_pyproject_that_never_mentions_edgeprune_is_ignored(repo):
    write(repo / "pyproject.toml", "[project\nname = 'x'\n")
    assert find_project_config(repo) is None
    write(repo / "pyproject.toml", "[tool.edgeprune.compile\nbudget = 5\n")
    with pytest.raises(ProjectConfigError, match=r"pyproject\.toml, line 1, column \d+: invalid TOML"):
        find_project_config(repo)


def test_the_search_stops_at_a_git_folder(tmp_path):
    write(tmp_path / "edgeprune.toml", "[compile]\nbudget = 10\n")  # outside the repository
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "sub").mkdir()
    assert find_project_config(root / "sub") is None
    # the repository root itself is checked before stopping
    cfg = write(root / "edgeprune.toml", "[compile]\n")
    assert find_project_config(root / "sub") == cfg


def test_a_git_file_also_marks_the_root(tmp_path):
    """A worktree or submodule has a .git file, not a folder."""
    write(tmp_path / "edgeprune.toml", "[compile]\n")
    write(tmp_path / "wt" / ".git", "gitdir: /elsewhere\n")
    assert find_project_config(tmp_path / "wt") is None


def test_no_config_anywhere_gives_none(repo):
    assert find_project_config(repo / "src" / "deep") is None


def test_start_may_be_a_file(repo):
    cfg = write(repo / "edgeprune.toml", "[compile]\n")
    model = write(repo / "src" / "model.pt", "")
    assert find_project_config(model) == cfg


# --- loading ---------------------------------------------------------------------------------------------

def test_values_are_validated_and_keys_normalised(tmp_path):
    cfg = write(tmp_path / "edgeprune.toml", """
# the team's options
[compile]
latency-target = "0.4x"
finetune_epochs = 8
finetune-lr = 1          # an integer is a number
distill = true
agent = "bo"
input-shape = [3, 64, 64]

[search]                 # another command's table
""")
    got = load_project_config(cfg, known=KNOWN, tables=("compile", "search"))
    assert got == {"latency_target": "0.4x", "finetune_epochs": 8, "finetune_lr": 1.0, "distill": True,
                   "agent": "bo", "input_shape": (3, 64, 64)}
    assert type(got) is dict and isinstance(got["finetune_lr"], float)


def test_a_file_without_the_table_gives_nothing(tmp_path):
    assert load_project_config(write(tmp_path / "edgeprune.toml", ""), known=KNOWN) == {}
    py = write(tmp_path / "pyproject.toml", "[tool.edgeprune]\n")
    assert load_project_config(py, known=KNOWN) == {}


def test_unknown_key_names_the_key_the_file_and_the_closest(tmp_path):
    cfg = write(tmp_path / "edgeprune.toml", "[compile]\nbudget = 10\nlatency-targt = '0.5x'\n")
    msg = problem(cfg)
    assert str(cfg) in msg and "line 3" in msg
    assert "unknown option 'latency-targt'" in msg and "did you mean 'latency_target'?" in msg


def test_unknown_key_without_a_close_one_lists_the_known(tmp_path):
    msg = problem(write(tmp_path / "edgeprune.toml", "[compile]\nzzz = 1\n"))
    assert "unknown option 'zzz'" in msg and "known options: agent, budget, data" in msg


def test_unknown_key_in_pyproject(tmp_path):
    py = write(tmp_path / "pyproject.toml", "[project]\nname='x'\n[tool.edgeprune.compile]\nbudgte = 3\n")
    msg = problem(py)
    assert str(py) in msg and "line 4" in msg and "[tool.edgeprune.compile]" in msg
    assert "did you mean 'budget'?" in msg


def test_a_misspelt_table_or_an_option_outside_a_table(tmp_path):
    msg = problem(write(tmp_path / "edgeprune.toml", "[compiel]\nbudget = 3\n"))
    assert "line 1" in msg and "unknown table [compiel]; did you mean [compile]?" in msg
    msg = problem(write(tmp_path / "edgeprune.toml", "budget = 3\n[compile]\n"))
    assert "line 1" in msg and "'budget' is outside a command table; put it under [compile]" in msg
    msg = problem(write(tmp_path / "pyproject.toml", "[tool.edgeprune]\nbudget = 3\n"))
    assert "line 2" in msg and "put it under [tool.edgeprune.compile]" in msg


def test_the_same_option_twice(tmp_path):
    msg = problem(write(tmp_path / "edgeprune.toml", "[compile]\nlatency-target = '0.5x'\nlatency_target = '0.4x'\n"))
    assert "given twice" in msg and "'latency-target'" in msg and "'latency_target'" in msg


@pytest.mark.parametrize("line, expected, got", [
    ('budget = "40"', "expected an integer", "got a string ('40')"),
    ("budget = 40.0", "expected an integer", "got a float (40.0)"),
    ("budget = true", "expected an integer", "got a boolean (true)"),
    ("latency-target = 0.5", "expected a string", "got a float (0.5)"),
    ('distill = "yes"', "expected true or false", "got a string ('yes')"),
    ("finetune_lr = false", "expected a number", "got a boolean (false)"),
    ('input_shape = "3,32,32"', "expected an array of integers", "got a string ('3,32,32')"),
    ("input_shape = [3, 32.0, 32]", "expected an array of integers", "got an array ([3, 32.0, 32])"),
    ("input_shape = []", "expected an array of integers", "got an empty array"),
])
def test_wrong_type_names_key_file_expected_and_got(tmp_path, line, expected, got):
    cfg = write(tmp_path / "edgeprune.toml", f"[compile]\nagent = 'bo'\n{line}\n")
    msg = problem(cfg)
    key = line.split(" =")[0]
    assert str(cfg) in msg and "line 3" in msg and f"option {key!r} in [compile]" in msg
    assert expected in msg and got in msg


@pytest.mark.parametrize("text, line", [
    ("[compile]\nbudget = \n", 2),
    ("[compile]\nbudget = 1\nbudget = 2\n", 3),
    ("[compile\n", 1),
    ("[compile]\nagent = 'bo\n", 2),
])
def test_bad_toml_names_the_file_and_line(tmp_path, text, line):
    cfg = write(tmp_path / "edgeprune.toml", text)
    msg = problem(cfg)
    assert msg.startswith(f"{cfg}, line {line}") and "invalid TOML" in msg and "\n" not in msg


def test_unreadable_files(tmp_path):
    assert "not found" in problem(tmp_path / "edgeprune.toml")
    bad = tmp_path / "edgeprune.toml"
    bad.write_bytes(b"[compile]\nagent = '\xff'\n")
    assert "not UTF-8" in problem(bad)


def test_relative_paths_resolve_against_the_config_folder(repo, monkeypatch):
    cfg = write(repo / "edgeprune.toml", """[compile]
data = "datasets/cifar"
out = "dist"
target = "boards/rpi.toml"
model = "../models/net.pt"
""")
    monkeypatch.chdir(repo / "src" / "deep")  # a run from a sub-folder
    got = load_project_config(find_project_config(), known=KNOWN, paths=PATHS)
    assert got == {"data": str(repo.resolve() / "datasets" / "cifar"), "out": str(repo.resolve() / "dist"),
                   "target": str(repo.resolve() / "boards" / "rpi.toml"),
                   "model": str(repo.resolve().parent / "models" / "net.pt")}


def test_names_absolute_paths_and_home_are_left_or_expanded(repo, monkeypatch):
    monkeypatch.setenv("HOME", str(repo / "home"))
    absolute = repo / "elsewhere" / "data.npz"
    cfg = write(repo / "edgeprune.toml", f"""[compile]
data = "shapes"
target = "rpi4"
out = "~/dist"
model = {str(absolute)!r}
""")
    got = load_project_config(cfg, known=KNOWN, paths=PATHS)
    assert got == {"data": "shapes", "target": "rpi4", "out": str(repo / "home" / "dist"), "model": str(absolute)}
    # a plain collection of keys: those values are always paths
    got = load_project_config(cfg, known=KNOWN, paths={"data"})
    assert got["data"] == os.path.join(repo.resolve(), "shapes") and got["target"] == "rpi4"


def test_an_unsupported_type_in_known_is_a_programming_error(tmp_path):
    cfg = write(tmp_path / "edgeprune.toml", "[compile]\nbudget = 1\n")
    with pytest.raises(TypeError, match="unsupported type"):
        load_project_config(cfg, known={"budget": list})
