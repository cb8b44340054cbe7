"""The fused inference copy (qrepro.inference) against the model it was made from, in float64."""
import pytest
import torch
import torch.nn as nn

from qrepro.graph import conv_bn_pairs
from qrepro.inference import (
    FLOAT32_LANES,
    FusedBasicBlock,
    FusedConv2d,
    fold_factors,
    fold_weight,
    fuse_for_inference,
)
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


def test_fold_factors_fill_a_vector_of_lanes():
    # f filters-per-column copies must fit one vector of 16 float32 lanes (AVX-512): 3 x 4 = 12, 5 x 2 = 10
    assert [fold_factors(n, lanes=16) for n in (1, 3, 4, 5, 8, 9, 16)] == [(4, 2)] * 3 + [(2,)] * 2 + [()] * 2
    assert fold_factors(4, lanes=0) == ()  # an unmeasured CPU: no folding


@pytest.mark.parametrize("out_width", [12, 14, 13])  # folded by 4, by 2, not at all
@pytest.mark.parametrize("out_channels, kernel, padding", [(3, 3, 1), (4, 3, 0), (2, 1, 0), (4, 5, 2), (1, 3, 1)])
def test_folded_convolution_is_the_plain_one(monkeypatch, out_width, out_channels, kernel, padding):
    """Against F.conv2d itself: f adjacent output columns as f times as many filters, in channels-last."""
    monkeypatch.setitem(FLOAT32_LANES, torch.backends.cpu.get_cpu_capability(), 16)
    torch.manual_seed(out_width + out_channels)
    conv = nn.Conv2d(6, out_channels, kernel, padding=padding).double()
    fused = FusedConv2d(conv, conv.weight, conv.bias, None, None).to(memory_format=torch.channels_last)
    assert fused.folds == ((4, 2) if kernel > 1 else ())  # a 1x1 convolution would only add zeros
    x = torch.randn(3, 6, 7, out_width - 2 * padding + kernel - 1, dtype=torch.double)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = fused(x)
        assert out.shape == (3, out_channels, 7 + 2 * padding - kernel + 1, out_width)
        assert torch.allclose(out, conv(x), rtol=0, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)  # the folded output is the plain one's bytes
    w, b = fold_weight(conv.weight, conv.bias, 2)  # filter (j, c) is filter c shifted j columns right
    assert w.shape == (2 * out_channels, 6, kernel, kernel + 1) and torch.equal(b, conv.bias.repeat(2))
    assert torch.equal(w[out_channels:, ..., 1:], conv.weight) and not w[out_channels:, ..., 0].any()


def test_fused_pruned_resnet20_folds_its_narrow_convolutions(monkeypatch):
    """Stage 1 pruned by half has 8-filter convolutions: folded by 2 on a 16-lane CPU, with widths that do
    and do not divide (28: folded; 27: each falls back to the plain convolution), equal to the model."""
    monkeypatch.setitem(FLOAT32_LANES, torch.backends.cpu.get_cpu_capability(), 16)
    model = prune(model_with_statistics("resnet20", "dorefa"), 0.5, "redundancy").eval()
    fused = fuse_for_inference(model)
    folded = [n for n, m in fused.named_modules() if isinstance(m, FusedConv2d) and m.folds]
    assert folded == [f"layer1.{i}.conv1" for i in range(3)]
    assert all(fused.get_submodule(n).folds == (2,) for n in folded)
    assert not any(m.folds for m in fuse_for_inference(model, fold=False).modules() if isinstance(m, FusedConv2d))
    for size in (28, 27):
        x = torch.randn(4, 1, size, size, dtype=torch.double)
        with torch.no_grad():
            assert torch.allclose(fused(x), model(x), rtol=0, atol=1e-9)
