"""The CI example in examples/ci/ stays in step with the CLI: valid YAML, and every flag it passes exists."""

from __future__ import annotations

import re

import yaml

from edgeprune.cli import cli
from tests.conftest import ROOT


def test_the_ci_example_uses_only_real_commands_and_flags():
    text = (ROOT / "examples" / "ci" / "edgeprune.yml").read_text()
    doc = yaml.safe_load(text)
    steps = doc["jobs"]["prune"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps).replace("\\\n", " ")
    used = re.findall(r"edgeprune (\w+)([^\n]*)", runs)
    assert {cmd for cmd, _ in used} == {"compile", "verify"}
    for cmd, rest in used:
        known = {opt for p in cli.commands[cmd].params for opt in getattr(p, "opts", [])}
        for flag in re.findall(r"(--[a-z-]+)", rest):
            assert flag in known, f"edgeprune {cmd} has no {flag}"
