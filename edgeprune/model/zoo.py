"""Model zoo written here (torchvision does not run beside the pinned CPU torch).

Every model takes N×3×32×32 inputs by default and returns N×num_classes logits.
ResNets use 1×1-conv projection shortcuts ("option B") so that Torch-Pruning can couple the
residual channels of a stage into one prunable group.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ZOO: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        ZOO[name] = fn
        return fn

    return deco


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: stages of 16/32/64 channels (He et al. 2016, CIFAR variant)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        # Each block starts as the identity (last BN's scale 0; Goyal et al. 2017): without it ResNet-56
        # sat at chance for several epochs on the built-in data.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register("resnet20")
def resnet20(num_classes: int = 10) -> nn.Module:
    return CifarResNet(20, num_classes)


@register("resnet56")
def resnet56(num_classes: int = 10) -> nn.Module:
    return CifarResNet(56, num_classes)


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG-16 with BatchNorm, CIFAR variant: 13 convs, five 2×2 pools (32→1), one linear classifier."""

    def __init__(self, num_classes: int = 10, cfg: list = _VGG16):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*_conv_bn(cin, v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register("vgg16_bn")
def vgg16_bn(num_classes: int = 10) -> nn.Module:
    return VGG(num_classes)


class MobileNetV1(nn.Module):
    """MobileNetV1 for 32×32 inputs: stride-1 stem, depthwise-separable blocks (Howard et al. 2017)."""

    _CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0):
        super().__init__()
        c = int(32 * width_mult)
        layers = [*_conv_bn(3, c), nn.ReLU(inplace=True)]
        for cout, stride in self._CFG:
            cout = int(cout * width_mult)
            layers += [*_conv_bn(c, c, 3, stride, groups=c), nn.ReLU(inplace=True)]
            layers += [*_conv_bn(c, cout, 1), nn.ReLU(inplace=True)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register("mobilenet_v1")
def mobilenet_v1(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV1(num_classes, width_mult)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, cout, 1)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32×32 inputs (Sandler et al. 2018; CIFAR variant: stride-1 stem and first stage)."""

    _CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0):
        super().__init__()
        c = int(32 * width_mult)
        layers: list[nn.Module] = [*_conv_bn(3, c), nn.ReLU6(inplace=True)]
        for t, cout, n, s in self._CFG:
            cout = int(cout * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        last = int(1280 * max(1.0, width_mult))
        layers += [*_conv_bn(c, last, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV2(num_classes, width_mult)
