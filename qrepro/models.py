"""The networks: CIFAR-style ResNet-20 and torchvision's ResNet-18 by name, and any other
CNN by the import path of what builds it (``"torchvision.models:mobilenet_v2"``).

ResNet-20 (He et al. 2016, section 4.2): a 3x3 stem of 16 channels, 3 stages of 3 basic
blocks with 16/32/64 channels, global average pooling and a linear classifier.  The
stage transitions use projection shortcuts (1x1 convolution + BatchNorm, He et al.'s
option B) so that the network has the same block structure as torchvision's ResNet-18
and channels can be removed from a stage as one coupled group.  About 0.27 M parameters.

A model made by :func:`build_model` records how to make it again (``model.arch``), which is
what lets a checkpoint or a packed file of any architecture, pruned or not, be loaded.
"""
from __future__ import annotations

import importlib
import typing
from typing import Callable, Sequence

import torch.nn as nn
import torchvision

from .errors import BadInput


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``mid`` is conv1's width."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, mid: int | None = None):
        super().__init__()
        mid = mid or planes
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-6n+2 for small images; input ``(B, in_channels, H, W)``, output ``(B, num_classes)``."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        in_planes = widths[0]
        for s, planes in enumerate(widths):
            blocks = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """The CIFAR-style ResNet-20 (3 stages x 3 basic blocks, 16/32/64 channels)."""
    return CifarResNet(20, num_classes, in_channels)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (randomly initialised; no weights are downloaded)."""
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"resnet20": resnet20, "resnet18": resnet18}
BUILDER_HINT = ("name a registered architecture or a 'package.module:builder' import path, where builder is an "
                "nn.Module class or a function annotated to return one (e.g. 'torchvision.models:mobilenet_v2')")


def _returns_module(obj) -> bool:
    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    try:
        ret = typing.get_type_hints(obj).get("return")
    except Exception:  # unresolvable annotations: not a builder we can vouch for
        return False
    return isinstance(ret, type) and issubclass(ret, nn.Module)


def resolve_builder(arch: str) -> Callable[..., nn.Module]:
    """What builds ``arch``: a registered name, or ``"module:attribute"`` naming an ``nn.Module``
    class or a function annotated to return one (the check keeps a checkpoint's record from
    calling anything else)."""
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    if not isinstance(arch, str) or ":" not in arch:
        raise BadInput(f"unknown architecture {arch!r}; accepted values: {', '.join(ARCHITECTURES)}, or a "
                       f"'package.module:builder' import path ({BUILDER_HINT})")
    module_name, _, attr = arch.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise BadInput(f"architecture {arch!r} cannot be found ({type(err).__name__}: {err}): {BUILDER_HINT}; a "
                       "module of your own must be importable where the model is loaded") from None
    if not _returns_module(obj):
        raise BadInput(f"architecture {arch!r} is not an nn.Module class or a function annotated '-> nn.Module': "
                       f"{BUILDER_HINT}")
    return obj


def build_model(arch: str, **kwargs) -> nn.Module:
    """Build ``arch`` (``"resnet20"``, ``"resnet18"``, or ``"package.module:builder"``) with ``kwargs``
    (JSON values), recording both in ``model.arch`` so a checkpoint can rebuild it."""
    model = resolve_builder(arch)(**kwargs)
    if not isinstance(model, nn.Module):
        raise BadInput(f"architecture {arch!r} returned a {type(model).__name__}, not an nn.Module")
    model.arch = {"name": arch, "kwargs": dict(kwargs)}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
