"""A network of your own, importable where its checkpoints are loaded: build it with
``qrepro.models.build_model("my_networks:mobilenet_v2_small", ...)`` and every file qrepro writes
records that path, so loading rebuilds it (pruned or not) without registering anything."""
import torch.nn as nn
import torchvision


def mobilenet_v2_small(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """torchvision's MobileNetV2 at half width for 28 x 28 images: its stem reads ``in_channels``
    with stride 1 (28 -> 2 pixels after the four stride-2 stages that remain)."""
    model = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=0.5)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, 1, bias=False)
    return model
