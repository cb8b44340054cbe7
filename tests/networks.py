"""Networks a user brings (the kinds torchvision does not ship), and the masked reference a
pruned network is checked against."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from qrepro.prune import prune_groups
from qrepro.quantize import is_quantized


class ShortcutBlock(nn.Module):
    """The common CIFAR basic block whose projection is called ``shortcut`` (an empty
    ``Sequential`` when the shapes match)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ShortcutResNet(nn.Module):
    """A CIFAR ResNet of :class:`ShortcutBlock` (two blocks per stage), functional ReLUs,
    ``F.avg_pool2d`` and ``view(x.size(0), -1)``: the layout most CIFAR repositories use."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths=(8, 16, 32)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, cin = [], widths[0]
        for s, w in enumerate(widths):
            blocks += [ShortcutBlock(cin, w, 1 if s == 0 else 2), ShortcutBlock(w, w)]
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, out.shape[-1])
        return self.linear(out.view(out.size(0), -1))


class PlainCNN(nn.Module):
    """Convolutions with biases and no BatchNorm on the last one, max pooling, and a flatten of
    ``C x 7 x 7`` features into a hidden linear layer (each channel is 49 of its inputs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 12, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(12 * 7 * 7, 24), nn.BatchNorm1d(24), nn.ReLU(),
                                        nn.Linear(24, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters, so a wrong channel shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.2)
            bn.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def masked_reference(model: nn.Module, pruned_record: dict) -> nn.Module:
    """The unpruned model with frozen scales, whose removed channels are zeroed in every
    reader's *quantized* weight (not the latent weight); a reader behind a flatten has each
    channel's block of ``factor`` inputs zeroed."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if is_quantized(m):
            m.freeze_scale()
    groups = prune_groups(ref, pruned_record["mode"])
    for name, kept in pruned_record["kept"].items():
        g = groups[name]
        mask = torch.zeros(g.channels, dtype=torch.float64)
        mask[kept] = 1
        for reader in g.readers:
            layer = ref.get_submodule(reader)
            m = mask.repeat_interleave(g.factors[reader])
            m = m.view(1, -1, 1, 1) if isinstance(layer, nn.Conv2d) else m.view(1, -1)
            m = m.to(layer.weight.dtype)
            if is_quantized(layer):
                layer.quantized_weight = (lambda f, mk: (lambda: f() * mk))(layer.quantized_weight, m)
            else:
                layer.weight.data *= m
    return ref


def vgg11_bn_small(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """torchvision's VGG-11-BN features (every convolution and BatchNorm as torchvision builds
    them) with a 64-unit classifier instead of 4096 (100 M fewer weights for a test); the
    ``7 x 7`` pooling and the flatten into the first linear layer stay."""
    model = torchvision.models.vgg11_bn(num_classes=num_classes)
    if in_channels != 3:
        model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, num_classes))
    return model
