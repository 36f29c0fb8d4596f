"""Shared fixtures: tiny models built here, saved as edgeprune checkpoints in temporary folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeprune.model.load import save_checkpoint
from edgeprune.model.zoo import CifarResNet

ROOT = Path(__file__).resolve().parents[1]

# Markers (registered in pyproject.toml) for tests that need a tool CI's set-up may fail to install
# (tools/setup_cross.sh needs apt-get and root or sudo): without the tool they are skipped, saying why.
NEEDS = {
    "needs_cross": ("aarch64-linux-gnu-g++", "the aarch64 cross compiler aarch64-linux-gnu-g++ is missing "
                    "(bash tools/setup_cross.sh installs Debian's g++-aarch64-linux-gnu; root or sudo)"),
    "needs_qemu": ("qemu-aarch64", "qemu-aarch64 is missing (sudo apt-get update && sudo apt-get install -y "
                   "qemu-user, or edgeprune device emulate --install-deps)"),
    "needs_qemu_x86": ("qemu-x86_64", "qemu-x86_64 is missing (bash tools/setup_cross.sh installs Debian's "
                       "qemu-user; root or sudo)"),
    "needs_browser": ("chromedriver", "chromedriver is missing (bash tools/setup_browser.sh installs Debian's "
                      "chromium and chromium-driver; root or sudo)"),
}


@pytest.fixture(autouse=True)
def own_history(tmp_path, monkeypatch):
    """Each test its own history file (edgeprune.history) and tuning databases (compile.tune), also for
    the CLI runs it starts: runs of other tests (or of the user) must not become a test's prior, nor
    schedule the TVM libraries a test compiles."""
    monkeypatch.setenv("EDGEPRUNE_HISTORY", str(tmp_path / "history.sqlite"))
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker, (tool, reason) in NEEDS.items():
            if item.get_closest_marker(marker) and shutil.which(tool) is None:
                item.add_marker(pytest.mark.skip(reason=reason))


def tiny_resnet(num_classes: int = 10) -> torch.nn.Module:
    """ResNet-8 with 16/32/64 channels: three prunable stages, builds in milliseconds."""
    torch.manual_seed(0)
    return CifarResNet(depth=8, num_classes=num_classes).eval()


@pytest.fixture()
def tiny_ckpt(tmp_path) -> Path:
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model=tiny_resnet(), arch="tests.conftest:tiny_resnet", arch_kwargs={},
                    input_shape=(3, 32, 32))
    return path


@pytest.fixture(scope="session")
def resnet20_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised ResNet-20 checkpoint (seeded): the pipeline's mechanics don't need accuracy."""
    from edgeprune.model.zoo import resnet20

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "resnet20.pt"
    save_checkpoint(path, model=resnet20(), arch="resnet20", arch_kwargs={"num_classes": 10}, input_shape=(3, 32, 32))
    return path


def train_tool():
    """tools/train.py as a module (tools/ is not a package): how the bundled examples and the vision
    benchmark train."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgeprune_tools_train", ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``edgeprune`` console script as a user would."""
    return subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
