"""The package's layers form a DAG, and the device side runs without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PKG = ROOT / "edgeprune"


def _edges() -> dict[str, set[str]]:
    """Subpackage (or top-level module) → the others it imports, anywhere in its files (function-level
    imports included: they run too)."""
    edges: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        unit = f.relative_to(PKG).with_suffix("").parts[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for m in names:
                parts = m.split(".")
                if parts[0] != "edgeprune" or len(parts) < 2 or parts[1] == unit:
                    continue
                if (PKG / parts[1]).is_dir() or (PKG / f"{parts[1]}.py").is_file():  # not a name inside a module
                    edges.setdefault(unit, set()).add(parts[1])
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(u, path):
        state[u] = "open"
        for v in sorted(edges.get(u, ())):
            if state.get(v) == "open":
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path + [v])
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u, [u])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []


def test_subpackages_import_each_other_without_cycles():
    edges = _edges()
    assert "latency" in edges and "targets" in edges["latency"]  # the graph is really read
    assert _cycles(edges) == []


def test_measurement_and_the_device_side_import_without_torch():
    """A board runs edgeprune's device server with numpy, TVM and ONNX Runtime only."""
    code = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n            raise ImportError('torch blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import edgeprune.latency, edgeprune.latency.timing, edgeprune.latency.backends.onnxruntime\n"
            "import edgeprune.latency.backends.tvmrt, edgeprune.remote.device\n"
            "from edgeprune.latency.base import discover\nprint(sorted(discover()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(ROOT), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "onnxruntime" in out.stdout and "tvm" in out.stdout
