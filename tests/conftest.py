"""Shared fixtures: tiny models built here, saved as edgeprune checkpoints in temporary folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeprune.model.load import save_checkpoint
from edgeprune.model.zoo import CifarResNet

ROOT = Path(__file__).resolve().parents[1]


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


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``edgeprune`` console script as a user would."""
    return subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
