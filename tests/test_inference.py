"""The fused inference copy (qrepro.inference) against the model it was made from, in float64."""
import pytest
import torch
import torch.nn as nn

from qrepro.inference import FusedBasicBlock, FusedConv2d, conv_bn_pairs, fuse_for_inference
from qrepro.models import build_model
from qrepro.prune import prune
from qrepro.quantize import quantize_model


def model_with_statistics(arch, scheme, in_channels=1):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=in_channels, num_classes=10)
    if scheme:
        model = quantize_model(model, scheme)
    for m in model.modules():  # BatchNorm statistics and affine terms far from the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.3, 3)
            m.weight.data.normal_(1, 0.5)
            m.bias.data.normal_(0, 0.5)
    return model.double().eval()


@pytest.mark.parametrize("scheme", [None, "bnn", "dorefa"])
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_fused_resnet20_computes_what_the_model_computes(scheme, ratio):
    model = model_with_statistics("resnet20", scheme)
    if ratio:
        model = prune(model, ratio, "l1" if scheme is None else "redundancy").eval()
    fused = fuse_for_inference(model)
    x = torch.randn(16, 1, 28, 28, dtype=torch.double)
    x_before = x.clone()
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), rtol=0, atol=1e-9)
    assert torch.equal(x, x_before)  # the in-place blocks never write into their caller's tensor
    assert sum(isinstance(m, FusedBasicBlock) for m in fused.modules()) == 9
    # every BatchNorm folded, every convolution fused, nothing left to train
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) == len(conv_bn_pairs(model)) == 21
    assert not list(fused.parameters()) or not any(p.requires_grad for p in fused.parameters())


def test_fused_resnet18_with_projection_shortcuts():
    model = model_with_statistics("resnet18", "bnn", in_channels=3)
    model = prune(model, 0.5).eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.double)
    fused = fuse_for_inference(model)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), rtol=0, atol=1e-9)
    assert sum(isinstance(m, FusedBasicBlock) for m in fused.modules()) == 8


def test_fusing_leaves_the_model_alone():
    model = model_with_statistics("resnet20", "dorefa")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse_for_inference(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
