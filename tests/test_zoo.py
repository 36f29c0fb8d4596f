import pytest
import torch

from edgeprune.model.zoo import ZOO


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_give_logits_for_32x32(name):
    model = ZOO[name](num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_resnet_depths_have_expected_parameter_counts():
    # ResNet-20 ~0.27M and ResNet-56 ~0.86M parameters (He et al. report 0.27M / 0.85M with option-A shortcuts).
    p20 = sum(p.numel() for p in ZOO["resnet20"]().parameters())
    p56 = sum(p.numel() for p in ZOO["resnet56"]().parameters())
    assert 0.26e6 < p20 < 0.29e6
    assert 0.84e6 < p56 < 0.88e6
